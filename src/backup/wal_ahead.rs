//! Archiving ahead (`[backup] archive_ahead`): the daemon pushes the WAL files PostgreSQL
//! has marked ready (`pg_wal/archive_status/<name>.ready`) itself, `archive_workers` at a
//! time, so that `archive_command` — `pgvigil wal-push`, one process per file, one file at
//! a time — finds each one stored with the same content and returns after one request.
//! Under a heavy write load the archiver then keeps up, and the RPO stays bounded.
//!
//! The guarantee does not change: `wal-push` exits 0 only when the file is in the
//! repository, whoever put it there, because it asks the repository and not the daemon.
//! A daemon killed mid-upload leaves no object (an upload becomes visible only when it is
//! complete), so `wal-push` then pushes the file itself; with the daemon down, archiving
//! works as before. Nothing here writes to `pg_wal`: PostgreSQL marks a file `.done` only
//! after `archive_command` returned 0. This is pgBackRest's `archive-async`, without the
//! spool: the repository is the only place that says "archived".

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::ops::Ops;
use super::wal::{classify, WalKind};
use crate::pg::{connect, ConnectOptions};

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Files this round uploaded.
    pub pushed: usize,
    /// Files that were already stored (archive_command, or a daemon before this one).
    pub present: usize,
    /// Files whose push failed (retried next round; archive_command pushes them anyway).
    pub failed: usize,
}

/// The daemon's archiving ahead: where `pg_wal` is, and what it has pushed.
pub struct Ahead {
    ops: Ops,
    /// `pg_wal` as this host sees it; found on the first round that can.
    dir: Option<PathBuf>,
    /// Files pushed (or found stored) that are still marked ready.
    done: HashSet<String>,
    /// The last error logged, so a lasting one is logged once.
    last_error: Option<String>,
    /// When the server's `archive_command` was last asked, and whether it runs wal-push.
    asked: Option<(std::time::Instant, bool)>,
}

/// How often the server is asked again whether its `archive_command` runs `wal-push`.
const REASK: std::time::Duration = std::time::Duration::from_secs(60);

impl Ahead {
    /// Archiving ahead for `ops`' primary repository.
    pub fn new(ops: Ops) -> Ahead {
        let dir = ops.settings.backup.wal_directory.clone();
        Ahead {
            ops,
            dir,
            done: HashSet::new(),
            last_error: None,
            asked: None,
        }
    }

    /// Pushes every ready file not pushed yet, `archive_workers` at a time: `.history`
    /// files first, then the others oldest first, as PostgreSQL's archiver orders them.
    pub async fn round(&mut self) -> Round {
        if !self.ours().await {
            return Round::default();
        }
        let dir = match self.wal_dir().await {
            Ok(d) => d,
            Err(e) => {
                self.say(format!("archiving ahead is waiting: {e}"));
                return Round::default();
            }
        };
        let ready = match ready_files(&dir) {
            Ok(r) => r,
            Err(e) => {
                self.say(e);
                return Round::default();
            }
        };
        self.done.retain(|n| ready.contains(n));
        let todo: Vec<String> = ready
            .into_iter()
            .filter(|n| !self.done.contains(n))
            .collect();
        let workers = self.ops.settings.backup.archive_workers;
        let ops = &self.ops;
        let results: Vec<(String, Result<bool, String>)> = futures_util::stream::iter(todo)
            .map(|name| {
                let path = dir.join(&name);
                async move {
                    let r = ops
                        .wal_push_ahead(&path)
                        .await
                        .map(|p| p.already_archived)
                        .map_err(|e| format!("{name}: {e}"));
                    (name, r)
                }
            })
            .buffered(workers)
            .collect()
            .await;
        let mut round = Round::default();
        let mut first_error = None;
        for (name, r) in results {
            match r {
                Ok(present) => {
                    if present {
                        round.present += 1;
                    } else {
                        round.pushed += 1;
                    }
                    self.done.insert(name);
                }
                Err(e) => {
                    round.failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => self.say(format!("archiving ahead failed: {e}")),
            None => self.last_error = None,
        }
        if round.pushed > 0 {
            tracing::debug!(
                event = "wal.ahead.round",
                pushed = round.pushed,
                present = round.present,
                "archived ahead"
            );
        }
        round
    }

    /// Logs `message` at WARN unless it is the one logged last.
    fn say(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(event = "wal.ahead.failed", error = %message, "archiving ahead: {message}");
            self.last_error = Some(message);
        }
    }

    /// Whether the server archives through `pgvigil wal-push` (asked once a minute): WAL
    /// archived by another tool (or not at all) is none of the daemon's business, and
    /// pushing it would fill a repository nobody asked for.
    async fn ours(&mut self) -> bool {
        if let Some((at, ours)) = self.asked {
            if at.elapsed() < REASK {
                return ours;
            }
        }
        let opts = ConnectOptions::from_settings(&self.ops.settings.postgres);
        let command = match connect(&opts, None).await {
            Ok(c) => match c.client.query_one("SHOW archive_command", &[]).await {
                Ok(row) => row.get::<_, String>(0),
                Err(e) => {
                    self.say(format!(
                        "archiving ahead is waiting: SHOW archive_command: {}",
                        crate::pg::db_error_message(&e)
                    ));
                    return false;
                }
            },
            Err(e) => {
                self.say(format!("archiving ahead is waiting: {e}"));
                return false;
            }
        };
        let ours = command.contains("wal-push");
        if !ours && self.asked.is_none_or(|(_, was)| was) {
            tracing::info!(event = "wal.ahead.off", archive_command = %command, "archiving ahead is off: the server's archive_command does not run `pgvigil wal-push`");
        }
        self.asked = Some((std::time::Instant::now(), ours));
        ours
    }

    /// `backup.wal_directory`, else the server's `data_directory` + `/pg_wal`, once it can
    /// be read here (a sidecar sees it only when the data volume is mounted).
    async fn wal_dir(&mut self) -> Result<PathBuf, String> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => {
                let opts = ConnectOptions::from_settings(&self.ops.settings.postgres);
                let c = connect(&opts, None)
                    .await
                    .map_err(|e| format!("cannot ask the server for its data_directory: {e}"))?;
                let row = c
                    .client
                    .query_one("SHOW data_directory", &[])
                    .await
                    .map_err(|e| {
                        format!(
                            "SHOW data_directory: {} (grant pg_read_all_settings, or set backup.wal_directory)",
                            crate::pg::db_error_message(&e)
                        )
                    })?;
                let data: String = row.get(0);
                let d = Path::new(&data).join("pg_wal");
                self.dir = Some(d.clone());
                d
            }
        };
        let status = dir.join("archive_status");
        std::fs::read_dir(&status).map_err(|e| {
            format!(
                "cannot read {} ({e}); mount the server's data volume, set backup.wal_directory, or set backup.archive_ahead = false",
                status.display()
            )
        })?;
        Ok(dir)
    }
}

/// The WAL files marked ready in `dir/archive_status`, `.history` first, then by name.
fn ready_files(dir: &Path) -> Result<Vec<String>, String> {
    let status = dir.join("archive_status");
    let entries =
        std::fs::read_dir(&status).map_err(|e| format!("cannot read {}: {e}", status.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let wal = name.strip_suffix(".ready")?;
            classify(wal).map(|_| wal.to_string())
        })
        .collect();
    names.sort_by_key(|n| (classify(n) != Some(WalKind::History), n.clone()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_files_are_history_first_then_oldest_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        for f in [
            "000000020000000000000005.ready",
            "000000010000000000000004.ready",
            "00000002.history.ready",
            "000000010000000000000003.done",
            "junk.ready",
            "000000010000000000000004.00000028.backup.ready",
        ] {
            std::fs::write(status.join(f), b"").unwrap();
        }
        assert_eq!(
            ready_files(dir.path()).unwrap(),
            [
                "00000002.history",
                "000000010000000000000004",
                "000000010000000000000004.00000028.backup",
                "000000020000000000000005",
            ]
        );
        let e = ready_files(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing/archive_status"), "{e}");
    }
}
