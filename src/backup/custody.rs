//! The daemon's custody of the repositories: the periodic residency (and Object Lock)
//! check of every store, the scheduled retention run (on the primary repository and the
//! off-site one), the scheduled off-site copy, and their metrics and audit events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::retention::{self, Fate, Outcome as RetentionOutcome, Policy};
use crate::audit::{AuditLog, Event, EventKind, Outcome as AuditOutcome};
use crate::config::Settings;
use crate::metrics::catalogue::{self as cat, MetricDef};
use crate::schedule::{JobFn, Outcome};
use crate::store::{Guarded, ObjectStore, Repo};

/// How often the daemon asks every bucket where it is.
pub const RESIDENCY_RECHECK: Duration = Duration::from_secs(900);

/// The `store` label of the primary repository.
pub const PRIMARY: &str = "primary";
/// The `store` label of the off-site repository.
pub const OFFSITE: &str = "offsite";

/// A repository the daemon looks after: its label, its guarded store and the repository.
#[derive(Clone)]
pub struct Custodied {
    pub label: &'static str,
    pub guard: Arc<Guarded>,
    pub repo: Repo,
}

/// Retention, residency, Object Lock and off-site metrics.
#[derive(Clone)]
pub struct CustodyMetrics {
    pub residency_ok: GaugeVec,
    pub object_lock_enabled: GaugeVec,
    pub retention_last_run: Gauge,
    pub retention_deleted: IntCounterVec,
    pub retention_locked: GaugeVec,
    pub retention_failures: IntCounter,
    pub offsite_last_success: Gauge,
    pub offsite_failures: IntCounter,
}

fn opts(d: &MetricDef) -> Opts {
    Opts::new(d.name, d.help)
}

impl CustodyMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let vec = |d: &MetricDef| GaugeVec::new(opts(d), d.labels);
        let m = Self {
            residency_ok: vec(&cat::PGVIGIL_STORAGE_RESIDENCY_OK)?,
            object_lock_enabled: vec(&cat::PGVIGIL_STORAGE_OBJECT_LOCK_ENABLED)?,
            retention_last_run: Gauge::with_opts(opts(
                &cat::PGVIGIL_RETENTION_LAST_RUN_TIMESTAMP_SECONDS,
            ))?,
            retention_deleted: IntCounterVec::new(
                opts(&cat::PGVIGIL_RETENTION_DELETED_OBJECTS_TOTAL),
                cat::PGVIGIL_RETENTION_DELETED_OBJECTS_TOTAL.labels,
            )?,
            retention_locked: vec(&cat::PGVIGIL_RETENTION_LOCKED_OBJECTS)?,
            retention_failures: IntCounter::with_opts(opts(
                &cat::PGVIGIL_RETENTION_FAILURES_TOTAL,
            ))?,
            offsite_last_success: Gauge::with_opts(opts(
                &cat::PGVIGIL_OFFSITE_LAST_SUCCESS_TIMESTAMP_SECONDS,
            ))?,
            offsite_failures: IntCounter::with_opts(opts(&cat::PGVIGIL_OFFSITE_FAILURES_TOTAL))?,
        };
        r.register(Box::new(m.residency_ok.clone()))?;
        r.register(Box::new(m.object_lock_enabled.clone()))?;
        r.register(Box::new(m.retention_last_run.clone()))?;
        r.register(Box::new(m.retention_deleted.clone()))?;
        r.register(Box::new(m.retention_locked.clone()))?;
        r.register(Box::new(m.retention_failures.clone()))?;
        r.register(Box::new(m.offsite_last_success.clone()))?;
        r.register(Box::new(m.offsite_failures.clone()))?;
        Ok(m)
    }

    /// Creates the labelled series of `store` at zero, so rate() and alerts see zeros from
    /// the start rather than gaps.
    pub fn init_store(&self, store: &str) {
        for reason in [
            retention::Reason::ExpiredBackup,
            retention::Reason::ExpiredWal,
            retention::Reason::Orphan,
        ] {
            self.retention_deleted
                .with_label_values(&[store, reason.label()]);
        }
        self.retention_locked.with_label_values(&[store]).set(0.0);
    }
}

/// One audit line for an operational event of this module.
fn ops_event(
    event: &'static str,
    ok: bool,
    target: serde_json::Value,
    details: serde_json::Value,
) -> Event {
    Event {
        ts: crate::audit::event::now_rfc3339(),
        kind: EventKind::Ops,
        event,
        outcome: if ok {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        },
        actor: json!("pgvigil"),
        target,
        details,
    }
}

/// Checks every store now and every `every` until cancelled; `checked` turns true after
/// the first round (readiness waits for it).
pub async fn residency_loop(
    stores: Vec<Custodied>,
    metrics: CustodyMetrics,
    audit: AuditLog,
    checked: Arc<AtomicBool>,
    every: Duration,
    token: CancellationToken,
) {
    loop {
        for s in &stores {
            let verdict = s.guard.check().await;
            metrics
                .residency_ok
                .with_label_values(&[s.label])
                .set(if verdict.ok { 1.0 } else { 0.0 });
            metrics
                .object_lock_enabled
                .with_label_values(&[s.label])
                .set(if verdict.ok && verdict.object_lock {
                    1.0
                } else {
                    0.0
                });
            if verdict.ok {
                tracing::info!(event = "storage.residency.ok", store = s.label, location = %s.guard.describe(), detail = %verdict.message, "store location checked");
            } else {
                audit.emit(ops_event(
                    "storage.residency.refused",
                    false,
                    json!({"store": s.label, "url": s.guard.describe()}),
                    json!({"region": verdict.region, "reason": verdict.message}),
                ));
            }
        }
        checked.store(true, Ordering::Release);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Applies retention to one repository, counting and auditing every deletion.
pub async fn apply_retention(
    store: &Custodied,
    policy: Policy,
    metrics: &CustodyMetrics,
    audit: &AuditLog,
) -> Result<retention::Report, super::Error> {
    let label = store.label;
    let observe = |o: &RetentionOutcome| match &o.fate {
        Fate::Deleted => {
            metrics
                .retention_deleted
                .with_label_values(&[label, o.object.reason.label()])
                .inc();
            audit.emit(ops_event(
                "retention.deleted",
                true,
                json!({"store": label, "key": o.object.key}),
                json!({"reason": o.object.reason.label(), "why": o.object.why, "bytes": o.object.bytes}),
            ));
        }
        Fate::Locked { until } => audit.emit(ops_event(
            "retention.locked",
            true,
            json!({"store": label, "key": o.object.key}),
            json!({"reason": o.object.reason.label(), "locked_until": until}),
        )),
        Fate::WouldDelete => {}
    };
    let report = retention::run(&store.repo, policy, Utc::now(), false, &observe).await?;
    metrics
        .retention_locked
        .with_label_values(&[label])
        .set(report.locked_objects as f64);
    Ok(report)
}

/// The body of the scheduled retention job: the primary repository, then the off-site one.
pub fn retention_job(
    settings: Arc<Settings>,
    stores: Vec<Custodied>,
    metrics: CustodyMetrics,
    audit: AuditLog,
) -> JobFn {
    Arc::new(move || {
        let (settings, stores, metrics, audit) = (
            settings.clone(),
            stores.clone(),
            metrics.clone(),
            audit.clone(),
        );
        Box::pin(async move {
            let policy = Policy {
                recovery_window: settings.retention.recovery_window,
                min_backups: settings.retention.min_backups,
            };
            let mut summary = Vec::new();
            for store in &stores {
                match apply_retention(store, policy, &metrics, &audit).await {
                    Ok(r) => summary.push(format!(
                        "{}: kept {} backup(s), deleted {} object(s), {} locked",
                        store.label,
                        r.kept.len(),
                        r.deleted_objects,
                        r.locked_objects
                    )),
                    Err(super::Error::Skipped(why)) => return (Outcome::Skipped, why),
                    Err(e) => {
                        metrics.retention_failures.inc();
                        tracing::error!(event = "retention.failed", store = store.label, error = %e, "retention failed");
                        audit.emit(ops_event(
                            "retention.failed",
                            false,
                            json!({"store": store.label}),
                            json!({"error": e.to_string()}),
                        ));
                        return (Outcome::Failure, e.to_string());
                    }
                }
            }
            metrics
                .retention_last_run
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
            (Outcome::Success, summary.join("; "))
        })
    })
}

/// The body of the scheduled off-site copy.
pub fn offsite_job(
    primary: Repo,
    offsite: Repo,
    metrics: CustodyMetrics,
    audit: AuditLog,
) -> JobFn {
    Arc::new(move || {
        let (primary, offsite, metrics, audit) = (
            primary.clone(),
            offsite.clone(),
            metrics.clone(),
            audit.clone(),
        );
        Box::pin(async move {
            match super::offsite::run(&primary, &offsite).await {
                Ok(r) => {
                    metrics
                        .offsite_last_success
                        .set(r.finished.timestamp_millis() as f64 / 1000.0);
                    audit.emit(ops_event(
                        "offsite.completed",
                        true,
                        json!({"destination": r.destination, "backup": r.backup_id}),
                        json!({"objects_copied": r.objects_copied, "server_side": r.server_side, "bytes": r.bytes_copied, "objects_present": r.objects_present}),
                    ));
                    (
                        Outcome::Success,
                        format!(
                            "backup {} copied to {} ({} objects, {} bytes)",
                            r.backup_id, r.destination, r.objects_copied, r.bytes_copied
                        ),
                    )
                }
                Err(super::Error::Skipped(why)) => (Outcome::Skipped, why),
                Err(e) => {
                    metrics.offsite_failures.inc();
                    tracing::error!(event = "offsite.failed", error = %e, "off-site copy failed");
                    audit.emit(ops_event(
                        "offsite.failed",
                        false,
                        json!({"destination": offsite.store.describe()}),
                        json!({"error": e.to_string()}),
                    ));
                    (Outcome::Failure, e.to_string())
                }
            }
        })
    })
}
