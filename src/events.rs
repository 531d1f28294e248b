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
//! - This module is generic: it knows the audit log and nothing of what is reported. Each
//!   event is built where it happens: `backup::ops` (`backup.completed|failed`,
//!   `wal.push.refused|failed`, `pitr.check.completed|failed`, `drill.completed|failed`,
//!   `retention.deleted|locked|failed`, `offsite.completed|failed`), `daemon`
//!   (`config.loaded`, `storage.residency.checked|refused`) and `proxy` (`auth.denied`).
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

    /// A state worth an operator's attention that is not a failure of what pgvigil did
    /// (WARN, outcome `success`), e.g. "no backup yet".
    pub fn notice(event: &'static str, message: impl Into<String>) -> Self {
        Self::new(event, Outcome::Success, Level::Warn, message)
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
    pub fn for_cli(audit_file: Option<&std::path::Path>, process: &str) -> Self {
        let Some(file) = audit_file else {
            return Self::new(AuditLog::disabled(), process);
        };
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let config = SinkConfig {
            stdout: false,
            file: Some(file.to_path_buf()),
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
        let metrics =
            crate::audit::sink::AuditMetrics::register(&prometheus::Registry::new()).unwrap();
        let kinds = metrics.events.clone();
        let f = crate::audit::sink::tests::FileLog::open(&path, Some(metrics));
        let events = Events::new(f.log.clone(), "test");
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
        f.stop().await;
    }
}
