//! The daemon's custody of its repositories: each is opened behind the residency guard, and
//! asked where it is (and whether Object Lock is on) at start and every
//! [`RESIDENCY_RECHECK`]. A store whose location is allowed meets its readiness condition;
//! every check sets `pgvigil_storage_residency_ok{store}` and
//! `pgvigil_storage_object_lock_enabled{store}` and emits `storage.residency.checked` or
//! `storage.residency.refused`.

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
use crate::store::{self, Guarded, ObjectStore, Repo, Verdict, Which};

/// How often the daemon asks every bucket where it is.
pub const RESIDENCY_RECHECK: Duration = Duration::from_secs(900);

/// A repository the daemon looks after: its `store` label, its guard and the repository.
#[derive(Clone)]
pub struct Watched {
    pub label: &'static str,
    pub guard: Arc<Guarded>,
    pub repo: Repo,
}

/// Opens the primary repository and, when configured, the off-site one.
pub async fn open_stores(settings: &Settings) -> Result<Vec<Watched>, StartError> {
    if settings.storage.residency == store::Residency::Any {
        tracing::warn!(
            event = "storage.residency.disabled",
            "storage.residency = \"any\": bucket locations are not checked"
        );
    }
    let mut which = vec![Which::Primary];
    if settings.offsite.is_some() {
        which.push(Which::Offsite);
    }
    let mut stores = Vec::new();
    for w in which {
        let (repo, guard) = Repo::open_guarded(settings, w).await?;
        stores.push(Watched {
            label: w.label(),
            guard,
            repo,
        });
    }
    Ok(stores)
}

crate::own_metrics! {
    /// Residency and Object Lock gauges, per store.
    struct ResidencyMetrics {
        residency_ok: GaugeVec = PGVIGIL_STORAGE_RESIDENCY_OK,
        object_lock_enabled: GaugeVec = PGVIGIL_STORAGE_OBJECT_LOCK_ENABLED,
    }
}

/// Starts the residency loop over `stores`.
pub fn start(
    stores: Vec<Watched>,
    registry: &Registry,
    events: Events,
    readiness: Arc<Readiness>,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<(), StartError> {
    let metrics = ResidencyMetrics::register(registry)?;
    tracker.spawn(periodically(RESIDENCY_RECHECK, token, move || {
        let (stores, metrics, events, readiness) = (
            stores.clone(),
            metrics.clone(),
            events.clone(),
            readiness.clone(),
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
