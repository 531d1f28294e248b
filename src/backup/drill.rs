//! Restore drills: prove a backup by restoring it. Pick a target time in the recovery
//! window (at least one run in three inside its oldest day, where retention bugs show),
//! restore the newest backup that ended before it into `drill.work_dir` (after checking the
//! free space), run `pg_verifybackup`, start a private postmaster (unix socket only,
//! `archive_mode = off`, WAL through `pgvigil wal-fetch`), wait until recovery reaches the
//! target, and check: the heartbeat row lies within `[T - heartbeat_interval - 1s, T]`,
//! `pg_amcheck` passes on every database, and the user's SQL checks return what they
//! expect. The evidence (RTO split into download, replay and checks; target skew; bytes)
//! goes to `state/drills/<id>.json`. Everything is removed afterwards, whatever happened:
//! the guard below stops the postmaster and deletes the directory on drop, which also runs
//! when the drill future is dropped on timeout or SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::catalog::{self, Target};
use super::progress::{Progress, Unit};
use super::restore::{restore_reporting, RestoreRequest, TargetAction};
use super::{pitr, Error};
use crate::config::Settings;
use crate::pg::binaries::{PgBinaries, Search};
use crate::pg::{TempCluster, TempClusterOptions};
use crate::store::{layout, Repo};

/// One check's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub download_seconds: f64,
    pub replay_seconds: f64,
    pub checks_seconds: f64,
    pub total_seconds: f64,
}

/// The drill's evidence, stored as `state/drills/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    pub id: String,
    pub success: bool,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub target_time: Option<DateTime<Utc>>,
    /// The target was drawn from the oldest day of the window.
    pub oldest_day: bool,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub backup_id: Option<String>,
    pub bytes_restored: u64,
    /// Target time minus the last replayed commit.
    pub target_skew_seconds: Option<f64>,
    pub timings: Timings,
    pub checks: Vec<CheckResult>,
}

impl Evidence {
    /// The evidence of a drill started at `started_at`, before anything happened.
    fn new(started_at: DateTime<Utc>) -> Self {
        Self {
            id: started_at.format(ID_FORMAT).to_string(),
            success: false,
            error: None,
            started_at,
            finished_at: None,
            target_time: None,
            oldest_day: false,
            window_start: None,
            window_end: None,
            backup_id: None,
            bytes_restored: 0,
            target_skew_seconds: None,
            timings: Timings::default(),
            checks: Vec::new(),
        }
    }

    /// The evidence of a drill that could not start (nothing was restored or stored).
    pub fn failed_to_start(error: String) -> Self {
        let now = Utc::now();
        Self {
            error: Some(error),
            finished_at: Some(now),
            ..Self::new(now)
        }
    }
}

/// A drill's id: its start time, `20261203T085835Z`.
const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Stops the postmaster and deletes the drill directory when dropped.
struct Cleanup {
    dir: PathBuf,
    cluster: Option<TempCluster>,
    wal: Option<super::wal_serve::WalServer>,
    /// Held while the drill runs: a directory whose lock is free belongs to a crashed one.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(self.cluster.take());
        drop(self.wal.take());
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(event = "drill.cleanup.failed", dir = %self.dir.display(), error = %e, "could not remove the drill directory");
            }
        }
    }
}

/// The lock file a running drill holds in its directory.
const LOCK: &str = ".drill.lock";

fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let path = dir.join(LOCK);
    let file =
        std::fs::File::create(&path).map_err(super::io(format!("creating {}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| Error::Invalid(format!("locking {}: {e}", path.display())))
}

/// Whether `name` is a drill id (`20261203T085835Z`), the only directories swept.
fn is_drill_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Removes what drills killed before their cleanup ran left in `work`: a directory named
/// like a drill whose lock is free. A postmaster still running in it (it outlives a killed
/// pgvigil) is stopped first: the pid in its `postmaster.pid`, if that process's working
/// directory is that data directory (so no other process is ever signalled).
async fn sweep_crashed(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name();
        if !is_drill_id(&name.to_string_lossy()) || !dir.is_dir() || dir.is_symlink() {
            continue;
        }
        let lock = std::fs::File::open(dir.join(LOCK)).ok().map(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
        });
        if lock == Some(false) {
            continue; // a drill is running there
        }
        stop_orphan_postmaster(&dir.join("data")).await;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::warn!(event = "drill.swept", dir = %dir.display(), "removed the directory of a drill that did not finish")
            }
            Err(e) => {
                tracing::error!(event = "drill.cleanup.failed", dir = %dir.display(), error = %e, "could not remove the directory of a crashed drill")
            }
        }
    }
}

async fn stop_orphan_postmaster(data: &Path) {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let ours = match (cwd, std::fs::canonicalize(data)) {
        (Some(cwd), Ok(data)) => cwd == data,
        _ => false,
    };
    if !ours || pid <= 1 {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
    for _ in 0..100 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When the newest successful drill in the repository finished (the daemon's
/// `pgvigil_drill_last_success_timestamp_seconds` survives restarts through this). Reads
/// evidence newest first, at most 100 files.
pub async fn last_success(repo: &Repo) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Stored {
        success: bool,
        finished_at: Option<DateTime<Utc>>,
    }
    let mut keys: Vec<String> = repo
        .store
        .list(&repo.key(&layout::drills_prefix()))
        .await
        .ok()?
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    for key in keys.iter().rev().take(100) {
        let Ok(body) = repo.store.get_bytes(key).await else {
            continue;
        };
        if let Ok(Stored {
            success: true,
            finished_at: Some(t),
        }) = serde_json::from_slice(&body)
        {
            return Some(t);
        }
    }
    None
}

/// Brings `known` (record key → evidence) up to date with the records of the drills that
/// started at or after `since`, reading only those it does not hold yet (a record's name is
/// its start time, so older ones are not read at all).
pub async fn refresh(
    repo: &Repo,
    since: DateTime<Utc>,
    known: &mut BTreeMap<String, Evidence>,
) -> Result<(), Error> {
    let prefix = repo.key(&layout::drills_prefix());
    let first = repo.key(&layout::drill_record(&since.format(ID_FORMAT).to_string()));
    let recent = |key: &str| key >= first.as_str();
    super::records::refresh(repo, &prefix, recent, "drill.evidence.invalid", known).await
}

/// How many drills the repository remembers (for the one-in-three oldest-day rule).
async fn drill_count(repo: &Repo) -> usize {
    repo.store
        .list(&repo.key(&layout::drills_prefix()))
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

fn pick_target(start: DateTime<Utc>, end: DateTime<Utc>, oldest_day: bool) -> DateTime<Utc> {
    // Times come from backup.json and listings: no arithmetic here may overflow.
    let end = match start.checked_add_signed(chrono::Duration::days(1)) {
        Some(day) if oldest_day => end.min(day),
        _ => end,
    };
    let span = end.signed_duration_since(start).num_milliseconds().max(0) as f64;
    start
        .checked_add_signed(chrono::Duration::milliseconds(
            (fastrand::f64() * span) as i64,
        ))
        .unwrap_or(start)
}

/// Runs a drill. `pgvigil` is this binary as the server user runs it (its restore_command
/// is `<pgvigil> wal-fetch --socket <drill dir>/wal.sock %f %p`). `progress` goes through
/// the phases of the RTO split: the restore (bytes against the backup's raw size), the
/// replay and the checks.
pub async fn run(
    settings: &Settings,
    repo: &Repo,
    pgvigil: &Path,
    requested: Option<DateTime<Utc>>,
    patience: Duration,
    progress: Arc<Progress>,
) -> Evidence {
    let started = Instant::now();
    let mut ev = Evidence::new(Utc::now());
    let id = ev.id.clone();
    let result = drill(
        settings, repo, pgvigil, requested, patience, &mut ev, progress,
    )
    .await;
    ev.timings.total_seconds = started.elapsed().as_secs_f64();
    ev.finished_at = Some(Utc::now());
    match result {
        Ok(()) => ev.success = ev.checks.iter().all(|c| c.ok),
        Err(e) => ev.error = Some(e.to_string()),
    }
    if ev.error.is_none() && !ev.success {
        let failed: Vec<&str> = ev
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        ev.error = Some(format!("checks failed: {}", failed.join(", ")));
    }
    if let Err(e) = super::records::write(repo, &repo.key(&layout::drill_record(&id)), &ev).await {
        tracing::warn!(event = "drill.evidence.failed", error = %e, "could not store the drill evidence");
    }
    ev
}

async fn drill(
    settings: &Settings,
    repo: &Repo,
    pgvigil: &Path,
    requested: Option<DateTime<Utc>>,
    patience: Duration,
    ev: &mut Evidence,
    progress: Arc<Progress>,
) -> Result<(), Error> {
    let report = pitr::verify(repo, None).await?;
    // After an upgrade, drills prove the newest chain (the one a restore today would use);
    // the older chain is checked by verify's listing.
    let (Some(start), Some(end)) = (
        report.chain_start.or(report.window_start),
        report.window_end,
    ) else {
        return Err(Error::Refused(
            "there is no recovery window yet: no backup, or no transaction committed after the oldest backup ended has been archived".into(),
        ));
    };
    ev.window_start = Some(start);
    ev.window_end = Some(end);
    let target = match requested {
        Some(t) if t < start || t > end => {
            return Err(Error::Refused(format!(
                "target {t} is outside the recovery window {start} .. {end}"
            )))
        }
        Some(t) => t,
        None => {
            ev.oldest_day = drill_count(repo).await % 3 == 0;
            pick_target(start, end, ev.oldest_day)
        }
    };
    ev.target_time = Some(target);
    // Only a backup whose chain and objects are whole (verify's listing) is drilled.
    let backups: Vec<_> = catalog::list(repo)
        .await?
        .into_iter()
        .filter(|b| !report.broken.contains_key(&b.id))
        .collect();
    let backup = catalog::select(&backups, None, &Target::Time(target), &report.lineage)?.clone();
    ev.backup_id = Some(backup.id.clone());

    // A data directory is readable only by its own major: 15's backup needs 15's binaries
    // even where 17 is installed too.
    let major = backup.pg_major();
    let bins = PgBinaries::server(
        &Search::from_settings(&settings.postgres),
        major,
        &format!("the drill of backup {} (PostgreSQL {major})", backup.id),
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let work = &settings.drill.work_dir;
    std::fs::create_dir_all(work).map_err(super::io(format!(
        "creating drill.work_dir {}",
        work.display()
    )))?;
    // raw_bytes comes from backup.json: saturate rather than overflow.
    let needed = backup
        .raw_bytes
        .saturating_add(backup.raw_bytes / 5)
        .saturating_add(256 << 20);
    if let Some(free) = super::free_bytes(work) {
        if free < needed {
            return Err(Error::Refused(format!(
                "drill.work_dir {} has {} MiB free; restoring backup {} needs about {} MiB",
                work.display(),
                free >> 20,
                backup.id,
                needed >> 20
            )));
        }
    }
    sweep_crashed(work).await;
    let dir = work.join(&ev.id);
    std::fs::create_dir_all(&dir).map_err(super::io(format!("creating {}", dir.display())))?;
    let mut guard = Cleanup {
        dir: dir.clone(),
        cluster: None,
        wal: None,
        _lock: lock_dir(&dir)?,
    };
    // The WAL server's read-ahead writes into the directory: it is stopped (and waited
    // for) before the directory goes, whatever happened.
    let result: Result<(), Error> = async {
        crate::pg::binaries::chown_to_server_user(&dir)
            .map_err(super::io("chown drill directory"))?;
        let data = dir.join("data");
        // WAL reaches the postmaster through the drill, not through the repository's
        // credentials in its environment (see wal_serve).
        let socket = dir.join("wal.sock");
        let read_ahead = match settings.backup.wal_prefetch {
            0 => None,
            depth => Some(super::wal_serve::ReadAhead {
                spool: super::wal_prefetch::Spool::open(&dir.join("prefetch"))?,
                depth,
                workers: settings.backup.wal_prefetch_workers,
            }),
        };
        guard.wal = Some(super::wal_serve::start(repo.clone(), &socket, read_ahead)?);
        let restore_command = format!(
            "{} wal-fetch --socket {} %f %p",
            pgvigil.display(),
            bins.guest_path(&socket)
                .map_err(|e| Error::Invalid(e.to_string()))?
                .display()
        );

        // Download and unpack.
        let t = Instant::now();
        let restored = restore_reporting(
            repo,
            &RestoreRequest {
                to: data.clone(),
                backup: Some(backup.id.clone()),
                target: Target::Time(target),
                action: TargetAction::Promote,
                restore_command,
                keep_archiving: false,
                binaries: Search::from_settings(&settings.postgres),
            },
            progress.clone(),
        )
        .await?;
        ev.bytes_restored = restored.bytes;
        // The restored tree belongs to the user the binaries of its major run as (a chroot's
        // postgres uid differs from the host's).
        if bins.runner != crate::pg::binaries::Runner::Host {
            bins.chown_tree_to_server_user(&dir)
                .map_err(super::io(format!("chown {}", dir.display())))?;
        }
        ev.timings.download_seconds = t.elapsed().as_secs_f64();

        // pg_verifybackup before the postmaster touches anything (it ignores recovery.signal
        // and postgresql.auto.conf, which restore wrote).
        let t_checks_a = Instant::now();
        let mut verify = bins
            .command("pg_verifybackup")
            .map_err(|e| Error::Invalid(e.to_string()))?;
        verify.arg(
            bins.guest_path(&data)
                .map_err(|e| Error::Invalid(e.to_string()))?,
        );
        ev.checks.push(run_check("pg_verifybackup", verify).await);
        // Only the drill connects, over a private socket: trust is safe and independent of the
        // source cluster's pg_hba.conf.
        super::unpack::replace_no_follow(&data.join("pg_hba.conf"), b"local all all trust\n")
            .map_err(super::io("writing pg_hba.conf"))?;
        bins.chown_to_server_user(&data.join("pg_hba.conf"))
            .map_err(super::io("chown pg_hba.conf"))?;
        let mut checks_seconds = t_checks_a.elapsed().as_secs_f64();

        // Replay until the target is reached and the server promoted.
        progress.begin(format!("replay to {target}"), Unit::Objects, None);
        let t = Instant::now();
        let opts = TempClusterOptions {
            // Only what a private replay needs: the source's max_connections and friends must
            // stay (recovery refuses lower values), and so must its preloaded libraries.
            // Nothing reaches out: no archiving, no replication connection, no logical
            // replication apply workers (subscriptions), no pg_cron jobs (a placeholder setting
            // where pg_cron is not loaded); and none of pgvigil's environment.
            settings: vec![
                ("archive_mode".into(), "off".into()),
                ("primary_conninfo".into(), "''".into()),
                ("max_logical_replication_workers".into(), "0".into()),
                ("cron.launch_active_jobs".into(), "off".into()),
            ],
            unix_socket_only: true,
            parent_dir: Some(dir.clone()),
            env: Vec::new(),
            binaries: Some(bins.clone()),
            clear_env: true,
        };
        let cluster = TempCluster::adopt(&data, opts)
            .await
            .map_err(|e| Error::Invalid(format!("the restored cluster did not start: {e}")))?;
        let socket = cluster.socket_config("postgres");
        guard.cluster = Some(cluster);
        // A unix socket in the drill's own directory: no TLS to negotiate.
        let (client, conn, _) = crate::pg::establish(
            &socket,
            &crate::config::PgTls::disabled(),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| Error::Postgres(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let deadline = Instant::now() + patience;
        loop {
            let in_recovery = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map(|r| r.get::<_, bool>(0));
            match in_recovery {
                Ok(false) => break,
                Ok(true) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(true) => {
                    return Err(Error::Refused(format!(
                        "recovery did not reach {target} within {patience:?}"
                    )))
                }
                Err(_) => {
                    let log = guard
                        .cluster
                        .as_ref()
                        .map(|c| c.log_tail())
                        .unwrap_or_default();
                    let last = log
                        .lines()
                        .rev()
                        .find(|l| {
                            l.contains("FATAL")
                                || l.contains("restored log file")
                                || l.contains("LOG:  redo")
                        })
                        .unwrap_or("")
                        .to_string();
                    return Err(Error::Refused(format!(
                        "recovery to {target} failed: {last}"
                    )));
                }
            }
        }
        ev.timings.replay_seconds = t.elapsed().as_secs_f64();
        let last_replay: Option<std::time::SystemTime> = client
            .query_one("SELECT pg_last_xact_replay_timestamp()", &[])
            .await
            .ok()
            .and_then(|r| r.get(0));
        ev.target_skew_seconds = last_replay
            .map(|t| (target - DateTime::<Utc>::from(t)).num_milliseconds() as f64 / 1000.0);

        // Checks on the restored cluster.
        progress.begin("checks", Unit::Objects, None);
        let t = Instant::now();
        let hb = settings.pitr.heartbeat_interval;
        if !hb.is_zero() {
            let row = client
                .query_one("SELECT max(ts) FROM pgvigil.heartbeat", &[])
                .await;
            let lower = target
                - chrono::Duration::from_std(hb + Duration::from_secs(1)).unwrap_or_default();
            ev.checks.push(
                match row.map(|r| r.get::<_, Option<std::time::SystemTime>>(0)) {
                    Ok(Some(ts)) => {
                        let ts = DateTime::<Utc>::from(ts);
                        CheckResult {
                            name: "heartbeat".into(),
                            ok: ts >= lower && ts <= target,
                            detail: format!(
                                "heartbeat at {ts}, expected within [{lower}, {target}]"
                            ),
                        }
                    }
                    Ok(None) => CheckResult {
                        name: "heartbeat".into(),
                        ok: false,
                        detail: "pgvigil.heartbeat is empty".into(),
                    },
                    Err(e) => CheckResult {
                        name: "heartbeat".into(),
                        ok: false,
                        detail: format!(
                            "reading pgvigil.heartbeat: {}",
                            crate::pg::db_error_message(&e)
                        ),
                    },
                },
            );
        }
        if settings.drill.amcheck {
            if let Some(c) = guard.cluster.as_ref() {
                let mut cmd = bins
                    .command("pg_amcheck")
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let socket = bins
                    .guest_path(c.socket_dir())
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                cmd.arg("-h").arg(socket).args([
                    "-p",
                    &c.port().to_string(),
                    "-U",
                    "postgres",
                    "--all",
                    "--install-missing",
                ]);
                ev.checks.push(run_check("pg_amcheck", cmd).await);
            }
        }
        for check in &settings.drill.checks {
            let got = client.simple_query(&check.sql).await;
            let first = got.as_ref().ok().and_then(|msgs| {
                msgs.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("").to_string())
                    }
                    _ => None,
                })
            });
            ev.checks.push(match (got, first) {
                (Err(e), _) => CheckResult {
                    name: check.name.clone(),
                    ok: false,
                    detail: crate::pg::db_error_message(&e),
                },
                (Ok(_), Some(v)) => CheckResult {
                    name: check.name.clone(),
                    ok: v == check.expect,
                    detail: format!("got {v:?}, expected {:?}", check.expect),
                },
                (Ok(_), None) => CheckResult {
                    name: check.name.clone(),
                    ok: false,
                    detail: "the query returned no row".into(),
                },
            });
        }
        checks_seconds += t.elapsed().as_secs_f64();
        ev.timings.checks_seconds = checks_seconds;
        drop(client);
        Ok(())
    }
    .await;
    if let Some(wal) = guard.wal.take() {
        wal.stop().await;
    }
    drop(guard);
    result
}

async fn run_check(name: &str, mut cmd: std::process::Command) -> CheckResult {
    let out =
        tokio::task::spawn_blocking(move || cmd.stdin(std::process::Stdio::null()).output()).await;
    match out {
        Ok(Ok(o)) if o.status.success() => CheckResult {
            name: name.into(),
            ok: true,
            detail: "passed".into(),
        },
        Ok(Ok(o)) => {
            let mut text = String::from_utf8_lossy(&o.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stdout));
            CheckResult {
                name: name.into(),
                ok: false,
                detail: format!("{}: {}", o.status, crate::pg::process_tail(&text, 1000)),
            }
        }
        Ok(Err(e)) => CheckResult {
            name: name.into(),
            ok: false,
            detail: format!("could not run: {e}"),
        },
        Err(e) => CheckResult {
            name: name.into(),
            ok: false,
            detail: format!("task failed: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_fall_inside_the_window_and_the_oldest_day() {
        let start: DateTime<Utc> = "2026-10-19T02:00:00Z".parse().unwrap();
        let end: DateTime<Utc> = "2026-11-23T02:00:00Z".parse().unwrap();
        for _ in 0..200 {
            let t = pick_target(start, end, false);
            assert!(t >= start && t <= end);
            let t = pick_target(start, end, true);
            assert!(t >= start && t <= start + chrono::Duration::days(1));
        }
    }

    #[test]
    fn targets_at_the_end_of_the_calendar_do_not_overflow() {
        // Times come from backup.json: the latest chrono can hold is a valid (if hostile)
        // stop time, and `start + 1 day` overflowed.
        let end = DateTime::<Utc>::MAX_UTC;
        let start = end - chrono::Duration::hours(1);
        for oldest_day in [false, true] {
            let t = pick_target(start, end, oldest_day);
            assert!(t >= start && t <= end, "{t}");
        }
        assert_eq!(pick_target(end, start, true), end);
    }
}
