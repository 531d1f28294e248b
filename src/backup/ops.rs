//! The backup operations, one function each: backup, verify, drill, retention, off-site copy
//! and WAL push. The CLI (`pgvigil backup`, …) and the daemon's scheduled jobs both call
//! these, so each operation does its work, emits its operational event (log line, metric and
//! audit line together) and sets its metrics in exactly one place. Callers only render the
//! result: the CLI prints it, the daemon records it in the job history.
//!
//! An [`Ops`] is the context every operation needs: the validated settings, the repositories
//! (primary, and off-site when configured), the event sink and the metrics. The daemon keeps
//! one for its lifetime; a CLI command builds one with [`Ops::for_cli`], whose metrics live in
//! a registry nobody scrapes.
//!
//! The jobs that two sidecars must not run at once (backup, retention, off-site copy) run
//! under their lease ([`Ops::under`]): a scheduled run under the one the scheduler took, a
//! CLI run under one it takes itself. Under a lease every repository of the context is
//! fenced by it, so an operation cannot write or delete anything once the lease is lost.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::basebackup::{self, Taken};
use super::catalog::{BackupInfo, BackupKind};
use super::drill::{self, Evidence};
use super::metrics::OpsMetrics;
use super::offsite::{self, CopyReport};
use super::pitr::{self, ArchiverState};
use super::progress::{Progress, Unit};
use super::retention::{self, Fate, Policy};
use super::wal::{self, Pushed};
use super::{wal_report, Error};
use crate::config::Settings;
use crate::events::{Events, Op};
use crate::metrics::own::unix_seconds;
use crate::pg::binaries::server_user_can_reach;
use crate::store::lease::Lease;
use crate::store::{Repo, Which};

/// The `store` label of the primary repository.
const PRIMARY: &str = Which::Primary.label();
/// The `store` label of the off-site repository.
const OFFSITE: &str = Which::Offsite.label();

/// A repository and its `store` label (`primary` or `offsite`).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub label: &'static str,
    pub repo: Repo,
}

/// What every operation needs; cheap to clone.
#[derive(Clone)]
pub struct Ops {
    pub settings: Arc<Settings>,
    pub primary: Repo,
    pub offsite: Option<Repo>,
    pub events: Events,
    pub metrics: OpsMetrics,
    /// `pitr.check.no_backup` was said (once per process).
    pub no_backup_said: Arc<std::sync::atomic::AtomicBool>,
    /// The repository binding, checked once per five minutes by this process's pushes.
    pub binding: Arc<wal::BindingMemo>,
    /// The job lease this context runs under ([`Ops::under`]); its repositories are fenced.
    pub lease: Option<Lease>,
}

/// How far this host's clock may be from the repository's before retention, which deletes
/// by time, refuses to run.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);

/// Who archives a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archiver {
    /// `archive_command` (`pgvigil wal-push`), a process of its own.
    Command,
    /// The daemon, ahead of `archive_command`.
    Ahead,
}

impl Ops {
    /// The context of a CLI command: its events go to `[audit] file` (see
    /// [`Events::for_cli`]); call [`Ops::close`] before the process exits.
    pub fn for_cli(
        settings: Settings,
        primary: Repo,
        offsite: Option<Repo>,
        process: &str,
    ) -> Result<Self, prometheus::Error> {
        let events = Events::for_cli(settings.audit.file.as_deref(), process);
        Ok(Self {
            settings: Arc::new(settings),
            primary,
            offsite,
            events,
            metrics: OpsMetrics::unregistered()?,
            no_backup_said: Arc::default(),
            binding: Arc::default(),
            lease: None,
        })
    }

    /// This context under `lease`: every repository write and delete is fenced by it.
    pub fn under(&self, lease: &Lease) -> Ops {
        Ops {
            primary: lease.fence(&self.primary),
            offsite: self.offsite.as_ref().map(|r| lease.fence(r)),
            lease: Some(lease.clone()),
            ..self.clone()
        }
    }

    /// Takes the lease of `job` in the primary repository; `Error::Skipped` naming the
    /// holder when another sidecar has it.
    pub async fn take_lease(&self, job: &str) -> Result<Lease, Error> {
        Lease::acquire(&self.primary, job, self.settings.storage.lease_ttl)
            .await
            .map_err(|e| match e {
                crate::store::Error::Held { message, .. } => Error::Skipped(message),
                e => e.into(),
            })
    }

    /// Runs `op` under the lease of `job`: the one this context is already under (a
    /// scheduled run of that job), or one taken now and released after (a CLI run, or a
    /// job that shares another's lease: the incremental backup job takes the backup lease,
    /// so no two backups ever run at once on a repository).
    async fn leased<T, F, Fut>(&self, job: &str, op: F) -> Result<T, Error>
    where
        F: FnOnce(Ops) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        if self.lease.as_ref().is_some_and(|l| l.job() == job) {
            return op(self.clone()).await;
        }
        let lease = self.take_lease(job).await?;
        let result = op(self.under(&lease)).await;
        lease.release().await;
        result
    }

    /// Writes the queued audit lines (CLI commands).
    pub async fn close(self) {
        self.events.close().await;
    }

    /// The primary and, when configured, the off-site repository, with their labels.
    pub fn stores(&self) -> Vec<Labelled> {
        std::iter::once(Labelled {
            label: PRIMARY,
            repo: self.primary.clone(),
        })
        .chain(self.offsite.clone().map(|repo| Labelled {
            label: OFFSITE,
            repo,
        }))
        .collect()
    }

    fn repository(&self) -> String {
        self.primary.store.describe()
    }

    // --- backup -----------------------------------------------------------------------

    /// Takes a base backup into the primary repository (`backup.completed|failed`; a
    /// skipped run, another sidecar's turn, is only logged): `want` full, or incremental on
    /// the newest backup (PostgreSQL 17+, `summarize_wal = on`), which falls back to a full
    /// backup with a `backup.incremental.fallback` warning when it cannot be taken.
    /// `progress` counts the bytes read against the size of the databases, asked before the
    /// backup starts.
    pub async fn backup(
        &self,
        progress: Arc<Progress>,
        want: BackupKind,
    ) -> Result<BackupInfo, Error> {
        let m = &self.metrics.backup;
        let expected = expected_backup_size(&self.settings.postgres).await;
        progress.begin("backup", Unit::Bytes, expected);
        m.running.set(1.0);
        let result = self
            .leased("backup", |ops| async move {
                basebackup::run(&ops.settings, &ops.primary, progress, want).await
            })
            .await;
        m.running.set(0.0);
        let repository = self.repository();
        if let Ok(Taken {
            info,
            fallback: Some(why),
        }) = &result
        {
            self.events.emit(
                Op::notice(
                    "backup.incremental.fallback",
                    format!("took a full backup instead of an incremental one: {why}"),
                )
                .target(json!({ "repository": repository, "backup": info.id }))
                .details(json!({ "reason": why })),
            );
        }
        let result = result.map(|taken| taken.info);
        self.emit_result(
            &result,
            "backup.skipped",
            |info| {
                Op::success(
                    "backup.completed",
                    format!("{} backup {} completed", info.kind.as_str(), info.id),
                )
                .target(json!({ "repository": repository, "backup": info.id }))
                .details(json!({
                    "kind": info.kind.as_str(),
                    "parent": info.parent,
                    "raw_bytes": info.raw_bytes,
                    "stored_bytes": info.stored_bytes,
                    "seconds": info.duration_seconds,
                    "start_lsn": info.start_lsn,
                    "stop_lsn": info.stop_lsn,
                    "timeline": info.timeline,
                }))
            },
            |e| {
                failed("backup.failed", "backup failed", e)
                    .target(json!({ "repository": repository }))
                    .count(&m.failures)
            },
        );
        m.refresh(&self.primary).await;
        result
    }

    /// Records a `pg_upgrade` of the server (`repo.upgraded`): binds the repository to the
    /// upgraded cluster, keeping the previous system's backups and WAL restorable.
    pub async fn upgrade(&self) -> Result<wal::Rebound, Error> {
        let result = async {
            let id = basebackup::identity(&self.settings, "records an upgrade").await?;
            let backups = super::catalog::list(&self.primary).await?;
            wal::rebind_after_upgrade(
                &self.primary,
                id.system_identifier,
                id.server_version_num,
                &backups,
            )
            .await
        }
        .await;
        let repository = self.repository();
        match &result {
            Ok(rebound) => self.events.emit(
                Op::success("repo.upgraded", "repository bound to the upgraded cluster")
                    .target(json!({ "repository": repository }))
                    .details(json!(rebound)),
            ),
            Err(e) => self.events.emit(
                failed("repo.upgrade.failed", "recording the upgrade failed", e)
                    .target(json!({ "repository": repository })),
            ),
        }
        result
    }

    // --- WAL --------------------------------------------------------------------------

    /// Archives one WAL file (`archive_command`). Successful pushes are not audited (one per
    /// 16 MB of WAL); failures and refusals are. The push is reported to the local daemon,
    /// which owns the WAL metrics.
    pub async fn wal_push(&self, path: &Path) -> Result<Pushed, Error> {
        self.archive(path, Archiver::Command).await
    }

    /// Archives one WAL file ahead of `archive_command` (the daemon; see
    /// [`super::wal_ahead`]): the same push, events and metrics, without the report to the
    /// daemon, which this is.
    pub async fn wal_push_ahead(&self, path: &Path) -> Result<Pushed, Error> {
        self.archive(path, Archiver::Ahead).await
    }

    async fn archive(&self, path: &Path, by: Archiver) -> Result<Pushed, Error> {
        let start = tokio::time::Instant::now();
        let level = self.settings.backup.compression_level;
        let result = wal::push(&self.primary, path, level, &self.binding).await;
        let seconds = start.elapsed().as_secs_f64();
        let report = wal_report::WalPushReport {
            ok: result.is_ok(),
            seconds,
        };
        self.metrics.wal.pushed(report.ok, seconds);
        if by == Archiver::Command {
            wal_report::send(&self.settings.server, &report).await;
        }
        let ahead = by == Archiver::Ahead;
        match &result {
            Ok(pushed) => tracing::info!(
                event = if pushed.already_archived { "wal.push.duplicate" } else { "wal.push.completed" },
                ahead,
                wal = %pushed.name, raw_bytes = pushed.raw_bytes, stored_bytes = pushed.stored_bytes, seconds,
                "archived"
            ),
            // Archiving ahead retries every round and archive_command pushes the file
            // anyway: its failures are logged by the loop, once per distinct error.
            Err(_) if ahead => {}
            Err(e) => {
                let wal = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let op = if e.kind() == "refused" {
                    Op::refused("wal.push.refused", "WAL push refused")
                } else {
                    Op::failure("wal.push.failed", "WAL push failed")
                };
                self.events.emit(
                    op.target(json!({ "repository": self.repository(), "wal": wal }))
                        .details(json!({ "kind": e.kind(), "error": e.to_string() })),
                );
            }
        }
        result
    }

    // --- verify -----------------------------------------------------------------------

    /// Checks WAL continuity and the recovery window (`pitr.check.completed|failed`).
    pub async fn verify(&self) -> Result<pitr::Report, Error> {
        let archiver = archiver_state(&self.settings.postgres).await;
        let result = pitr::verify(&self.primary, archiver).await;
        let target = json!({ "repository": self.repository() });
        let op = match &result {
            Ok(r) if r.backups == 0 => {
                // A state, not a failure to shout about every check: said once per process
                // at WARN (with when the first backup comes), then at DEBUG.
                if self
                    .no_backup_said
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::debug!(event = "pitr.check.no_backup", "no backup yet");
                    self.metrics.publish_check(r);
                    return result;
                }
                Op::notice(
                    "pitr.check.no_backup",
                    format!(
                        "no backup yet, nothing can be restored; the first one {}",
                        first_backup_due(&self.settings.backup)
                    ),
                )
            }
            Ok(r) if r.ok => Op::success("pitr.check.completed", "PITR continuity verified")
                .details(json!({
                    "segments_checked": r.segments_checked,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                    "archive_age_seconds": r.archive_age_seconds,
                })),
            Ok(r) => Op::failure("pitr.check.failed", "PITR continuity broken").details(json!({
                "missing": r.missing.len(),
                "first_missing": r.missing.first(),
                "problems": r.problems,
            })),
            Err(e) => Op::failure("pitr.check.failed", "PITR check could not run")
                .details(json!({ "error": e.to_string() })),
        };
        self.events.emit(op.target(target));
        if let Ok(r) = &result {
            self.metrics.publish_check(r);
        }
        result
    }

    // --- drill ------------------------------------------------------------------------

    /// Restores a backup to a point in time in a private postmaster and checks it
    /// (`drill.completed|failed`). `target` overrides the randomly drawn point; `progress`
    /// follows the restore, the replay and the checks.
    pub async fn drill(
        &self,
        target: Option<DateTime<Utc>>,
        patience: Duration,
        progress: Arc<Progress>,
    ) -> Evidence {
        let m = &self.metrics.drill;
        let copy_to = self.settings.drill.work_dir.as_path();
        let evidence = match server_user_exe(Some(copy_to)) {
            Ok(exe) => {
                let (settings, repo) = (&self.settings, &self.primary);
                drill::run(settings, repo, &exe, target, patience, progress).await
            }
            Err(e) => Evidence::failed_to_start(e.to_string()),
        };
        m.last_duration.set(evidence.timings.total_seconds);
        if let Some(skew) = evidence.target_skew_seconds {
            m.last_skew.set(skew);
        }
        let target = json!({
            "repository": self.repository(),
            "drill": evidence.id,
            "backup": evidence.backup_id,
        });
        let details = json!({
            "rto_seconds": evidence.timings.total_seconds,
            "target_time": evidence.target_time,
            "target_skew_seconds": evidence.target_skew_seconds,
            "error": evidence.error,
        });
        let op = if evidence.success {
            m.last_success.set(unix_seconds(Utc::now()));
            Op::success(
                "drill.completed",
                format!("restore drill {} passed", evidence.id),
            )
        } else {
            Op::failure(
                "drill.failed",
                format!("restore drill {} failed", evidence.id),
            )
            .count(&m.failures)
        };
        self.events.emit(op.target(target).details(details));
        evidence
    }

    // --- retention --------------------------------------------------------------------

    /// Applies retention to every repository, primary first (`retention.deleted|locked`
    /// per object, `retention.failed`). Stops at the first repository that fails. A run
    /// that is not a dry run runs under the retention lease and is recorded in the primary
    /// repository ([`retention::last`]).
    pub async fn retention(
        &self,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<Vec<retention::Report>, Error> {
        if dry_run {
            return self
                .retention_in_each(true, progress, &mut Vec::new())
                .await;
        }
        self.leased("retention", |ops| async move {
            let mut done = Vec::new();
            let result = match ops.trust_the_clock() {
                Ok(()) => ops.retention_in_each(false, progress, &mut done).await,
                Err(e) => Err(e),
            };
            let record = retention::Record {
                finished: Utc::now(),
                error: result.as_ref().err().map(ToString::to_string),
                stores: done,
            };
            if let Err(e) = retention::remember(&ops.primary, &record).await {
                tracing::warn!(event = "retention.record.failed", error = %e, "could not record the retention run");
            }
            result
        })
        .await
    }

    /// Refuses to go on when this host's clock and the repository's (the time the store
    /// stamped on the lease) are further apart than [`CLOCK_TOLERANCE`]: retention deletes
    /// by time, and a clock that jumped ahead would delete what the real window needs.
    fn trust_the_clock(&self) -> Result<(), Error> {
        let Some(skew) = self.lease.as_ref().and_then(Lease::clock_skew) else {
            return Ok(());
        };
        let tolerance = chrono::Duration::from_std(CLOCK_TOLERANCE).unwrap_or_default();
        if skew.abs() <= tolerance {
            return Ok(());
        }
        let now = Utc::now();
        Err(Error::Refused(format!(
            "this host's clock reads {} but {} stamped the lease it just wrote with {}: {} apart, \
             more than {}s; retention deletes by time, so it does not run until the clocks agree \
             (check NTP on this host)",
            now.to_rfc3339(),
            self.repository(),
            (now - skew).to_rfc3339(),
            humantime::format_duration(skew.abs().to_std().unwrap_or_default()),
            CLOCK_TOLERANCE.as_secs()
        )))
    }

    /// Retention in every store; `done` receives the record of each store it finished.
    async fn retention_in_each(
        &self,
        dry_run: bool,
        progress: &Progress,
        done: &mut Vec<retention::StoreRecord>,
    ) -> Result<Vec<retention::Report>, Error> {
        let m = &self.metrics.retention;
        let policy = Policy {
            recovery_window: self.settings.retention.recovery_window,
            min_backups: self.settings.retention.min_backups,
        };
        let mut reports = Vec::new();
        for Labelled { label, repo } in self.stores() {
            let repository = repo.store.describe();
            let observe = |o: &retention::Handled| {
                let counter = m
                    .deleted
                    .with_label_values(&[label, o.object.reason.label()]);
                if let Some(op) = retention_op(o, &counter) {
                    let target =
                        json!({ "store": label, "repository": repository, "key": o.object.key });
                    self.events.emit(op.target(target));
                }
            };
            match retention::run(&repo, policy, Utc::now(), dry_run, &observe, progress).await {
                Ok(report) => {
                    if !dry_run {
                        m.locked
                            .with_label_values(&[label])
                            .set(report.locked_objects as f64);
                    }
                    done.push(retention::StoreRecord::of(label, &report));
                    reports.push(report);
                }
                Err(e) => {
                    self.events.emit(
                        failed("retention.failed", "retention failed", &e)
                            .target(json!({ "store": label, "repository": repository }))
                            .count(&m.failures),
                    );
                    return Err(e);
                }
            }
        }
        if !dry_run {
            m.last_run.set(unix_seconds(Utc::now()));
        }
        Ok(reports)
    }

    // --- off-site copy ----------------------------------------------------------------

    /// Copies the newest valid backup and its WAL to the off-site repository
    /// (`offsite.completed|failed`), counting the bytes copied into `progress`. Fails when
    /// none is configured.
    pub async fn offsite(&self, progress: &Progress) -> Result<CopyReport, Error> {
        let dest = self.offsite_repo()?.store.describe();
        let m = &self.metrics.offsite;
        let result = self
            .leased("offsite", |ops| async move {
                offsite::run(&ops.primary, ops.offsite_repo()?, progress).await
            })
            .await;
        if let Ok(r) = &result {
            m.last_success.set(unix_seconds(r.finished));
        }
        self.emit_result(
            &result,
            "offsite.skipped",
            |r| {
                Op::success(
                    "offsite.completed",
                    format!("backup {} copied off-site and verified", r.backup_id),
                )
                .target(json!({ "destination": r.destination, "backup": r.backup_id }))
                .details(json!({
                    "objects_copied": r.objects_copied,
                    "server_side": r.server_side,
                    "objects_present": r.objects_present,
                    "bytes": r.bytes_copied,
                    "wal_files": r.wal_files,
                }))
            },
            |e| {
                failed("offsite.failed", "off-site copy failed", e)
                    .target(json!({ "destination": dest }))
                    .count(&m.failures)
            },
        );
        result
    }
}

impl Ops {
    /// The off-site repository, or the error naming the setting that configures it.
    fn offsite_repo(&self) -> Result<&Repo, Error> {
        self.offsite.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no off-site repository configured; set [offsite] url = \"s3://bucket/prefix\"",
                self.settings.file.display()
            ))
        })
    }

    /// Emits the event of an operation's result: `ok` builds it on success, `failure` on an
    /// error; a skipped run (not this sidecar's turn: a standby, or another holds the lease)
    /// is only logged, as `skipped`.
    fn emit_result<T>(
        &self,
        result: &Result<T, Error>,
        skipped: &'static str,
        ok: impl FnOnce(&T) -> Op,
        failure: impl FnOnce(&Error) -> Op,
    ) {
        match result {
            Ok(v) => self.events.emit(ok(v)),
            Err(Error::Skipped(why)) => {
                tracing::info!(event = skipped, reason = %why, "skipped: not this sidecar's turn")
            }
            Err(e) => self.events.emit(failure(e)),
        }
    }
}

/// When the first backup will be taken, for people ("the first one ...").
pub fn first_backup_due(b: &crate::config::BackupSettings) -> String {
    match b.schedule.cron() {
        None => "comes when you run `pgvigil backup` (backup.schedule is off)".into(),
        Some(_) if b.initial_backup => {
            "is taken by `pgvigil run` shortly after it starts (backup.initial_backup)".into()
        }
        Some(cron) => match cron.find_next_occurrence(&Utc::now(), false) {
            Ok(t) => format!("is scheduled for {} (backup.schedule)", t.to_rfc3339()),
            Err(_) => "has no scheduled time (backup.schedule)".into(),
        },
    }
}

/// A failure event carrying the error's kind and message.
fn failed(event: &'static str, message: &str, e: &Error) -> Op {
    Op::failure(event, message).details(json!({ "kind": e.kind(), "error": e.to_string() }))
}

/// `retention.deleted` (counted) or `retention.locked` for one object; nothing in a dry run.
fn retention_op(o: &retention::Handled, deleted: &prometheus::IntCounter) -> Option<Op> {
    let d = &o.object;
    let op = match &o.fate {
        Fate::Deleted => {
            Op::success("retention.deleted", format!("deleted {}", d.key)).count(deleted)
        }
        Fate::Locked { until } => Op::success(
            "retention.locked",
            format!(
                "{} is due but under Object Lock until {until}; left in place",
                d.key
            ),
        ),
        Fate::WouldDelete => return None,
    };
    Some(op.details(json!({ "reason": d.reason.label(), "why": d.why, "bytes": d.bytes })))
}

/// The one row `sql` returns, on a connection of its own (None if PostgreSQL cannot be
/// asked: these answers are best effort).
async fn ask(pg: &crate::config::PostgresSettings, sql: &str) -> Option<tokio_postgres::Row> {
    let conn = crate::pg::connect(&crate::pg::ConnectOptions::from_settings(pg), None)
        .await
        .ok()?;
    conn.client.query_one(sql, &[]).await.ok()
}

/// Whether the server is a primary (None if it cannot be asked).
pub async fn is_primary(pg: &crate::config::PostgresSettings) -> Option<bool> {
    let row = ask(pg, "SELECT pg_is_in_recovery()").await?;
    Some(!row.get::<_, bool>(0))
}

/// What a base backup is expected to read, in bytes: the size of every database the role
/// may measure, and one WAL segment (`-X fetch` puts the WAL of the backup into its tar)
/// (None if it cannot be asked).
pub async fn expected_backup_size(pg: &crate::config::PostgresSettings) -> Option<u64> {
    let row = ask(
        pg,
        "SELECT ((SELECT sum(pg_database_size(oid)) FROM pg_database \
                  WHERE has_database_privilege(oid, 'CONNECT')) \
                 + pg_size_bytes(current_setting('wal_segment_size')))::int8",
    )
    .await?;
    row.get::<_, Option<i64>>(0)
        .and_then(|n| u64::try_from(n).ok())
}

/// Asks PostgreSQL what it last archived (None if it cannot be asked).
pub async fn archiver_state(pg: &crate::config::PostgresSettings) -> Option<ArchiverState> {
    let row = ask(
        pg,
        "SELECT last_archived_wal, last_archived_time FROM pg_stat_archiver",
    )
    .await?;
    Some(ArchiverState {
        last_archived_wal: row.get(0),
        last_archived_time: row
            .get::<_, Option<std::time::SystemTime>>(1)
            .map(DateTime::<Utc>::from),
    })
}

/// `<this binary> wal-fetch -c <absolute config path>`: the prefix of the `restore_command`
/// of restores and drills (PostgreSQL appends `%f %p`). The command runs as the PostgreSQL
/// server user, so both must be reachable by it: when the binary is not (pgvigil run as root
/// from a private path, as `make dev` builds it) and `copy_to` is given, a copy the server
/// user can execute is placed there (drills); otherwise, and for an unreadable config file,
/// the error says what the server user cannot reach before anything is restored.
pub fn wal_fetch_command(config: &Path, copy_to: Option<&Path>) -> Result<String, Error> {
    let config = std::fs::canonicalize(config)
        .map_err(super::io(format!("resolving {}", config.display())))?;
    if !server_user_can_reach(&config, false) {
        return Err(unreachable("read", &config));
    }
    Ok(format!(
        "{} wal-fetch -c {}",
        server_user_exe(copy_to)?.display(),
        config.display()
    ))
}

fn unreachable(what: &str, path: &Path) -> Error {
    Error::Refused(format!(
        "the PostgreSQL server user cannot {what} {} (restore_command runs as that user); \
         make it reachable, e.g. `make install` for the binary (/usr/local/bin/pgvigil) and a \
         config file the server user can read",
        path.display()
    ))
}

/// This binary as the server user can execute it: itself, or a copy in `copy_to`.
pub fn server_user_exe(copy_to: Option<&Path>) -> Result<std::path::PathBuf, Error> {
    let exe = std::env::current_exe()
        .map_err(super::io("finding the pgvigil binary for restore_command"))?;
    if server_user_can_reach(&exe, true) {
        Ok(exe)
    } else if let Some(dir) = copy_to {
        copy_binary(&exe, dir)
    } else {
        Err(unreachable("execute", &exe))
    }
}

/// A copy of `exe` in `dir/bin/` that the server user can execute (kept between drills and
/// replaced when the binary changed).
fn copy_binary(exe: &Path, dir: &Path) -> Result<std::path::PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    let dest = bin.join("pgvigil");
    let step = |what: &str| super::io(format!("{what} {}", dest.display()));
    std::fs::create_dir_all(&bin).map_err(step("creating the directory of"))?;
    for d in [dir, bin.as_path()] {
        let mode = std::fs::metadata(d)
            .map_err(step("inspecting"))?
            .permissions()
            .mode();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711))
            .map_err(step("making searchable the directory of"))?;
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(&dest) != len(exe) {
        let tmp = bin.join(".pgvigil.tmp");
        std::fs::copy(exe, &tmp).map_err(step("copying the binary to"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(step("chmod"))?;
        std::fs::rename(&tmp, &dest).map_err(step("renaming into"))?;
    }
    if !server_user_can_reach(&dest, true) {
        return Err(Error::Refused(format!(
            "the PostgreSQL server user cannot execute {} (drill.work_dir must be reachable by it)",
            dest.display()
        )));
    }
    Ok(dest)
}
