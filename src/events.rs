//! Operational events: one call writes the log line, bumps the metric and queues the
//! `kind: "ops"` audit line together, so logs, metrics and the audit trail never drift apart.
//!
//! # API (for every module that reports what pgvigil did)
//!
//! ```ignore
//! use crate::events::{Events, Op};
//! events.emit(
//!     Op::success("retention.deleted", "deleted an expired backup")
//!         .target(json!({"repository": repo.store.describe(), "backup": id}))
//!         .details(json!({"bytes": n}))
//!         .count(&metrics.deleted),          // optional: any IntCounter to bump
//! );
//! events.emit(Op::failure("storage.residency.refused", "bucket outside the residency policy")
//!     .target(json!({"bucket": b, "region": r})));
//! ```
//!
//! - Emitted today: `config.loaded`, `backup.completed|failed`, `wal.push.refused|failed`,
//!   `pitr.check.completed|failed`, `drill.completed|failed`, `auth.denied` (API proxy),
//!   `storage.residency.checked|refused`, `retention.deleted|locked|failed`,
//!   `offsite.completed|failed`.
//! - `event` is a stable dotted name (`backup.completed`, `wal.push.refused`,
//!   `retention.deleted`, `drill.failed`, `config.loaded`, `auth.denied`); dashboards and
//!   SIEM rules match on it, so never rename one.
//! - `Op::success` logs at INFO, `Op::failure` at ERROR, `Op::refused` (a policy said no:
//!   residency, a WAL segment of another cluster) at WARN with outcome `failure`.
//! - `target` says what was acted on (repository, backup id, WAL segment, bucket), `details`
//!   carries numbers and reasons. Never put secrets (passwords, DSNs with passwords, tokens)
//!   in either: they end up in log collectors.
//! - The daemon's [`Events`] writes audit lines to stdout and `[audit] file`. Short-lived CLI
//!   commands (`backup`, `wal-push`, `drill`, `verify`) open theirs with [`Events::for_cli`]:
//!   their stdout is the command's output (or PostgreSQL's log for `wal-push`), so their
//!   audit lines go to `[audit] file` only, when set, and the log line goes to stderr. Call
//!   [`Events::close`] before the process exits so the file is written.
//! - `Events` is cheap to clone; [`Events::disabled`] only logs (tests, tools).

use prometheus::IntCounter;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::event::now_rfc3339;
use crate::audit::{AuditLog, Event, EventKind, Outcome, SinkConfig};
use crate::config::Settings;

/// How loud an event is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Warn,
    Error,
}

/// One operational event, built with [`Op::success`], [`Op::failure`] or [`Op::refused`].
#[derive(Debug, Clone)]
pub struct Op {
    event: &'static str,
    outcome: Outcome,
    level: Level,
    message: String,
    target: Value,
    details: Value,
    counter: Option<IntCounter>,
}

impl Op {
    /// Something pgvigil did worked (INFO).
    pub fn success(event: &'static str, message: impl Into<String>) -> Self {
        Self::new(event, Outcome::Success, Level::Info, message)
    }

    /// Something pgvigil did failed (ERROR).
    pub fn failure(event: &'static str, message: impl Into<String>) -> Self {
        Self::new(event, Outcome::Failure, Level::Error, message)
    }

    /// A policy refused an action (WARN, outcome `failure`).
    pub fn refused(event: &'static str, message: impl Into<String>) -> Self {
        Self::new(event, Outcome::Failure, Level::Warn, message)
    }

    fn new(
        event: &'static str,
        outcome: Outcome,
        level: Level,
        message: impl Into<String>,
    ) -> Self {
        Self {
            event,
            outcome,
            level,
            message: message.into(),
            target: Value::Null,
            details: Value::Null,
            counter: None,
        }
    }

    /// What was acted on.
    pub fn target(mut self, target: Value) -> Self {
        self.target = target;
        self
    }

    /// Numbers and reasons.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A counter to increment with the event.
    pub fn count(mut self, counter: &IntCounter) -> Self {
        self.counter = Some(counter.clone());
        self
    }
}

/// Emits operational events; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    audit: AuditLog,
    actor: Value,
    cli: Option<(TaskTracker, CancellationToken)>,
}

impl Events {
    /// Events of the daemon (`process` names it in `actor`, e.g. "run").
    pub fn new(audit: AuditLog, process: &str) -> Self {
        Self {
            audit,
            actor: actor(process),
            cli: None,
        }
    }

    /// Events that are only logged.
    pub fn disabled() -> Self {
        Self::new(AuditLog::disabled(), "pgvigil")
    }

    /// Events of a short-lived CLI command: audit lines go to `[audit] file` only (none
    /// when it is not set). Call [`Events::close`] before exiting. An audit file that cannot
    /// be opened is logged (`audit.file.failed`) and the command goes on: a failing
    /// `wal-push` would otherwise stop WAL archiving until the disk fills.
    pub fn for_cli(settings: &Settings, process: &str) -> Self {
        let Some(file) = &settings.audit.file else {
            return Self::new(AuditLog::disabled(), process);
        };
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let config = SinkConfig {
            stdout: false,
            file: Some(file.clone()),
        };
        match AuditLog::open(&config, None, &tracker, token.clone()) {
            Ok(audit) => Self {
                audit,
                actor: actor(process),
                cli: Some((tracker, token)),
            },
            Err(e) => {
                tracing::error!(event = "audit.file.failed", error = %e, "cannot open the audit file; this command's audit lines are lost");
                Self::new(AuditLog::disabled(), process)
            }
        }
    }

    /// The audit log behind these events (the proxy and the tailer write to it directly).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Writes the log line, bumps the counter and queues the audit line.
    pub fn emit(&self, op: Op) {
        let outcome = match op.outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        };
        let (target, details) = (&op.target, &op.details);
        match op.level {
            Level::Info => {
                tracing::info!(event = op.event, outcome, %target, %details, "{}", op.message)
            }
            Level::Warn => {
                tracing::warn!(event = op.event, outcome, %target, %details, "{}", op.message)
            }
            Level::Error => {
                tracing::error!(event = op.event, outcome, %target, %details, "{}", op.message)
            }
        }
        if let Some(c) = &op.counter {
            c.inc();
        }
        let mut details = op.details;
        if let Value::Object(m) = &mut details {
            m.entry("message")
                .or_insert_with(|| Value::String(op.message.clone()));
        } else if details.is_null() {
            details = serde_json::json!({ "message": op.message });
        }
        self.audit.emit(Event {
            ts: now_rfc3339(),
            kind: EventKind::Ops,
            event: op.event,
            outcome: op.outcome,
            actor: self.actor.clone(),
            target: op.target,
            details,
        });
    }

    /// Writes what is queued (CLI events: then stops their writer). The daemon's events are
    /// written by its own writer; for them this only waits for the queue.
    pub async fn close(self) {
        if let Err(e) = self.audit.flushed().await {
            tracing::warn!(event = "audit.file.failed", error = %e, "audit lines of this command may be missing from the audit file");
        }
        if let Some((tracker, token)) = self.cli {
            token.cancel();
            tracker.close();
            tracker.wait().await;
        }
    }

    // --- the operational events that exist today --------------------------------------

    /// `config.loaded`: a configuration file was read and validated.
    pub fn config_loaded(&self, settings: &Settings) {
        self.emit(
            Op::success("config.loaded", "configuration loaded")
                .target(serde_json::json!({ "file": settings.file.display().to_string() })),
        );
    }

    /// `backup.completed`.
    pub fn backup_completed(&self, repo: &str, info: &crate::backup::catalog::BackupInfo) {
        self.emit(
            Op::success("backup.completed", format!("backup {} completed", info.id))
                .target(serde_json::json!({ "repository": repo, "backup": info.id }))
                .details(serde_json::json!({
                    "raw_bytes": info.raw_bytes,
                    "stored_bytes": info.stored_bytes,
                    "seconds": info.duration_seconds,
                    "start_lsn": info.start_lsn,
                    "stop_lsn": info.stop_lsn,
                    "timeline": info.timeline,
                })),
        );
    }

    /// `backup.failed`; `counter` is `pgvigil_backup_failures_total` in the daemon.
    pub fn backup_failed(
        &self,
        repo: &str,
        error: &crate::backup::Error,
        counter: Option<&IntCounter>,
    ) {
        let mut op = Op::failure("backup.failed", "backup failed")
            .target(serde_json::json!({ "repository": repo }))
            .details(serde_json::json!({ "kind": error.kind(), "error": error.to_string() }));
        if let Some(c) = counter {
            op = op.count(c);
        }
        self.emit(op);
    }

    /// `wal.push.refused` (another cluster's WAL, a segment archived with other content) or
    /// `wal.push.failed` (anything else).
    pub fn wal_push_failed(&self, repo: &str, wal: &str, error: &crate::backup::Error) {
        let refused = error.kind() == "refused";
        let op = if refused {
            Op::refused("wal.push.refused", "WAL push refused")
        } else {
            Op::failure("wal.push.failed", "WAL push failed")
        };
        self.emit(
            op.target(serde_json::json!({ "repository": repo, "wal": wal }))
                .details(serde_json::json!({ "kind": error.kind(), "error": error.to_string() })),
        );
    }

    /// `drill.completed` or `drill.failed`; `counter` is `pgvigil_drill_failures_total`.
    pub fn drill_finished(
        &self,
        repo: &str,
        ev: &crate::backup::drill::Evidence,
        counter: Option<&IntCounter>,
    ) {
        let target =
            serde_json::json!({ "repository": repo, "drill": ev.id, "backup": ev.backup_id });
        let details = serde_json::json!({
            "rto_seconds": ev.timings.total_seconds,
            "target_time": ev.target_time,
            "target_skew_seconds": ev.target_skew_seconds,
            "error": ev.error,
        });
        let op = if ev.success {
            Op::success("drill.completed", format!("restore drill {} passed", ev.id))
        } else {
            let mut op = Op::failure("drill.failed", format!("restore drill {} failed", ev.id));
            if let Some(c) = counter {
                op = op.count(c);
            }
            op
        };
        self.emit(op.target(target).details(details));
    }

    /// `pitr.check.completed` or `pitr.check.failed` (a gap, or the check could not run).
    pub fn pitr_checked(&self, repo: &str, report: Result<&crate::backup::pitr::Report, String>) {
        let target = serde_json::json!({ "repository": repo });
        let op = match report {
            Ok(r) if r.ok => Op::success("pitr.check.completed", "PITR continuity verified")
                .details(serde_json::json!({
                    "segments_checked": r.segments_checked,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                    "archive_age_seconds": r.archive_age_seconds,
                })),
            Ok(r) => Op::failure("pitr.check.failed", "PITR continuity broken").details(
                serde_json::json!({
                    "missing": r.missing.len(),
                    "first_missing": r.missing.first(),
                    "problems": r.problems,
                }),
            ),
            Err(e) => Op::failure("pitr.check.failed", "PITR check could not run")
                .details(serde_json::json!({ "error": e })),
        };
        self.emit(op.target(target));
    }

    /// `storage.residency.checked` or `storage.residency.refused` (the bucket is outside
    /// the policy, its location cannot be read, or Object Lock is asked for and missing).
    pub fn residency_checked(&self, store: &str, url: &str, verdict: &crate::store::Verdict) {
        let op = if verdict.ok {
            Op::success("storage.residency.checked", verdict.message.clone())
        } else {
            Op::refused("storage.residency.refused", verdict.message.clone())
        };
        self.emit(
            op.target(serde_json::json!({ "store": store, "repository": url }))
                .details(serde_json::json!({
                    "region": verdict.region,
                    "object_lock": verdict.object_lock,
                })),
        );
    }

    /// `retention.deleted` or `retention.locked` for one object; `counter` is
    /// `pgvigil_retention_deleted_objects_total{store,reason}` in the daemon.
    pub fn retention_outcome(
        &self,
        store: &str,
        outcome: &crate::backup::retention::Outcome,
        counter: Option<&IntCounter>,
    ) {
        use crate::backup::retention::Fate;
        let o = &outcome.object;
        let target = serde_json::json!({ "store": store, "key": o.key });
        let details = serde_json::json!({
            "reason": o.reason.label(),
            "why": o.why,
            "bytes": o.bytes,
        });
        let op = match &outcome.fate {
            Fate::Deleted => {
                let op = Op::success("retention.deleted", format!("deleted {}", o.key));
                match counter {
                    Some(c) => op.count(c),
                    None => op,
                }
            }
            Fate::Locked { until } => Op::success(
                "retention.locked",
                format!(
                    "{} is due but under Object Lock until {until}; left in place",
                    o.key
                ),
            ),
            Fate::WouldDelete => return,
        };
        self.emit(op.target(target).details(details));
    }

    /// `retention.failed`; `counter` is `pgvigil_retention_failures_total`.
    pub fn retention_failed(
        &self,
        store: &str,
        error: &crate::backup::Error,
        counter: Option<&IntCounter>,
    ) {
        let mut op = Op::failure("retention.failed", "retention failed")
            .target(serde_json::json!({ "store": store }))
            .details(serde_json::json!({ "kind": error.kind(), "error": error.to_string() }));
        if let Some(c) = counter {
            op = op.count(c);
        }
        self.emit(op);
    }

    /// `offsite.completed` or `offsite.failed`; `counter` is
    /// `pgvigil_offsite_failures_total`.
    pub fn offsite_finished(
        &self,
        destination: &str,
        result: Result<&crate::backup::offsite::CopyReport, &crate::backup::Error>,
        counter: Option<&IntCounter>,
    ) {
        let op = match result {
            Ok(r) => Op::success(
                "offsite.completed",
                format!("backup {} copied off-site and verified", r.backup_id),
            )
            .target(serde_json::json!({ "destination": r.destination, "backup": r.backup_id }))
            .details(serde_json::json!({
                "objects_copied": r.objects_copied,
                "server_side": r.server_side,
                "objects_present": r.objects_present,
                "bytes": r.bytes_copied,
                "wal_files": r.wal_files,
            })),
            Err(e) => {
                let op = Op::failure("offsite.failed", "off-site copy failed")
                    .target(serde_json::json!({ "destination": destination }))
                    .details(serde_json::json!({ "kind": e.kind(), "error": e.to_string() }));
                match counter {
                    Some(c) => op.count(c),
                    None => op,
                }
            }
        };
        self.emit(op);
    }
}

fn actor(process: &str) -> Value {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    serde_json::json!({
        "process": format!("pgvigil {process}"),
        "pid": std::process::id(),
        "host": host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_writes_the_audit_line_and_bumps_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let config = SinkConfig {
            stdout: false,
            file: Some(path.clone()),
        };
        let kinds =
            prometheus::IntCounterVec::new(prometheus::Opts::new("k", "k"), &["kind"]).unwrap();
        let audit = AuditLog::open(&config, Some(kinds.clone()), &tracker, token.clone()).unwrap();
        let events = Events::new(audit, "test");
        let counter = IntCounter::new("c", "c").unwrap();
        events.emit(
            Op::refused("wal.push.refused", "WAL of another cluster")
                .target(serde_json::json!({"wal": "000000010000000000000003"}))
                .count(&counter),
        );
        events.audit().flushed().await.unwrap();
        assert_eq!(counter.get(), 1);
        assert_eq!(kinds.with_label_values(&["ops"]).get(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["kind"], "ops");
        assert_eq!(v["event"], "wal.push.refused");
        assert_eq!(v["outcome"], "failure");
        assert_eq!(v["target"]["wal"], "000000010000000000000003");
        assert_eq!(v["details"]["message"], "WAL of another cluster");
        assert_eq!(v["actor"]["process"], "pgvigil test");
        assert_eq!(v["seq"], 1);
        token.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
