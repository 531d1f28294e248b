//! The daemon's custody of the repositories: the periodic residency (and Object Lock)
//! check of every store, the scheduled retention run (on the primary repository and the
//! off-site one), the scheduled off-site copy, and their metrics and audit events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use super::retention::{self, Outcome as RetentionOutcome, Policy};
use crate::config::Settings;
use crate::events::Events;
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

/// Checks every store now and every `every` until cancelled; `checked` turns true after
/// the first round (readiness waits for it).
pub async fn residency_loop(
    stores: Vec<Custodied>,
    metrics: CustodyMetrics,
    events: Events,
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
            events.residency_checked(s.label, &s.guard.describe(), &verdict);
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
    events: &Events,
) -> Result<retention::Report, super::Error> {
    let label = store.label;
    let observe = |o: &RetentionOutcome| {
        let counter = metrics
            .retention_deleted
            .with_label_values(&[label, o.object.reason.label()]);
        events.retention_outcome(label, o, Some(&counter));
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
    events: Events,
) -> JobFn {
    Arc::new(move || {
        let (settings, stores, metrics, events) = (
            settings.clone(),
            stores.clone(),
            metrics.clone(),
            events.clone(),
        );
        Box::pin(async move {
            let policy = Policy {
                recovery_window: settings.retention.recovery_window,
                min_backups: settings.retention.min_backups,
            };
            let mut summary = Vec::new();
            for store in &stores {
                match apply_retention(store, policy, &metrics, &events).await {
                    Ok(r) => summary.push(format!(
                        "{}: kept {} backup(s), deleted {} object(s), {} locked",
                        store.label,
                        r.kept.len(),
                        r.deleted_objects,
                        r.locked_objects
                    )),
                    Err(super::Error::Skipped(why)) => return (Outcome::Skipped, why),
                    Err(e) => {
                        events.retention_failed(store.label, &e, Some(&metrics.retention_failures));
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
pub fn offsite_job(primary: Repo, offsite: Repo, metrics: CustodyMetrics, events: Events) -> JobFn {
    Arc::new(move || {
        let (primary, offsite, metrics, events) = (
            primary.clone(),
            offsite.clone(),
            metrics.clone(),
            events.clone(),
        );
        Box::pin(async move {
            let result = super::offsite::run(&primary, &offsite).await;
            if let Err(super::Error::Skipped(why)) = &result {
                return (Outcome::Skipped, why.clone());
            }
            events.offsite_finished(
                &offsite.store.describe(),
                result.as_ref(),
                Some(&metrics.offsite_failures),
            );
            match result {
                Ok(r) => {
                    metrics
                        .offsite_last_success
                        .set(r.finished.timestamp_millis() as f64 / 1000.0);
                    (
                        Outcome::Success,
                        format!(
                            "backup {} copied to {} ({} objects, {} bytes)",
                            r.backup_id, r.destination, r.objects_copied, r.bytes_copied
                        ),
                    )
                }
                Err(e) => (Outcome::Failure, e.to_string()),
            }
        })
    })
}
