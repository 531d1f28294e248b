//! The daemon's custody of its repositories: each is opened behind the residency guard, and
//! asked where it is (and whether Object Lock is on) at start and every
//! [`RESIDENCY_RECHECK`]. A store whose location is allowed meets its readiness condition;
//! every check sets `pgvigil_storage_residency_ok{store}` and
//! `pgvigil_storage_object_lock_enabled{store}`, emits `storage.residency.checked` or
//! `storage.residency.refused`, and tells the status page (with when the Object Lock of the
//! oldest backup ends).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{GaugeVec, Registry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::loops::periodically;
use super::ready::{Condition, Readiness};
use super::StartError;
use crate::config::Settings;
use crate::events::{Events, Op};
use crate::status::cache::Cache;
use crate::status::read::oldest_lock;
use crate::store::{self, ObjectStore, Opened, Repo, Verdict};

/// How often the daemon asks every bucket where it is.
pub const RESIDENCY_RECHECK: Duration = Duration::from_secs(900);

/// Opens the primary repository and, when configured, the off-site one.
pub async fn open_stores(settings: &Settings) -> Result<Vec<Opened>, StartError> {
    if settings.storage.residency == store::Residency::Any {
        tracing::warn!(
            event = "storage.residency.disabled",
            "storage.residency = \"any\": bucket locations are not checked"
        );
    }
    Ok(Repo::open_all(settings).await?)
}

crate::own_metrics! {
    /// Residency and Object Lock gauges, per store.
    struct ResidencyMetrics {
        residency_ok: GaugeVec = PGVIGIL_STORAGE_RESIDENCY_OK,
        object_lock_enabled: GaugeVec = PGVIGIL_STORAGE_OBJECT_LOCK_ENABLED,
    }
}

/// Starts the residency loop over `stores`; each verdict (and when the lock of the oldest
/// backup ends) also goes to the status page.
pub fn start(
    stores: Vec<Opened>,
    registry: &Registry,
    events: Events,
    readiness: Arc<Readiness>,
    status: Arc<Cache>,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<(), StartError> {
    let metrics = ResidencyMetrics::register(registry)?;
    tracker.spawn(periodically(RESIDENCY_RECHECK, token, move || {
        let (stores, metrics, events, readiness, status) = (
            stores.clone(),
            metrics.clone(),
            events.clone(),
            readiness.clone(),
            status.clone(),
        );
        async move {
            for s in &stores {
                let verdict = s.guard.check().await;
                let flag = |b: bool| if b { 1.0 } else { 0.0 };
                metrics
                    .residency_ok
                    .with_label_values(&[s.label])
                    .set(flag(verdict.ok));
                metrics
                    .object_lock_enabled
                    .with_label_values(&[s.label])
                    .set(flag(verdict.ok && verdict.object_lock));
                events.emit(residency_event(s.label, &s.guard.describe(), &verdict));
                if verdict.ok {
                    readiness.met(Condition::Residency(s.label));
                }
                status.custody(s.label, &verdict, oldest_lock(&s.repo).await);
            }
        }
    }));
    Ok(())
}

/// `storage.residency.checked`, or `storage.residency.refused` (the bucket is outside the
/// policy, its location cannot be read, or Object Lock is asked for and missing).
fn residency_event(store: &str, url: &str, verdict: &Verdict) -> Op {
    let op = if verdict.ok {
        Op::success("storage.residency.checked", verdict.message.clone())
    } else {
        Op::refused("storage.residency.refused", verdict.message.clone())
    };
    op.target(serde_json::json!({ "store": store, "repository": url }))
        .details(serde_json::json!({
            "region": verdict.region,
            "object_lock": verdict.object_lock,
        }))
}
