//! The daemon's periodic work that is not a cron job: the PITR check (`pitr.check_interval`),
//! the heartbeat table (`pitr.heartbeat_interval`), archiving WAL ahead of
//! `archive_command` (`backup.archive_ahead`), the refresh of the backup gauges and of the
//! status page's facts from the repository (every minute, so backups and drills run by the
//! CLI count too, and right after a job), the warm-up that makes `/readyz` turn true
//! without waiting for Prometheus, and the gauges a restarted daemon restores from what the
//! repository remembers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ready::{Condition, Readiness};
use super::StartError;
use crate::backup::ops::Ops;
use crate::backup::{drill, heartbeat, offsite, wal_ahead};
use crate::collectors::Scraper;
use crate::metrics::catalogue as cat;
use crate::metrics::own::{create, unix_seconds};
use crate::schedule::{self, JobOutcome};
use crate::status::cache::Cache;

/// How often the backup gauges are refreshed from the catalog.
const CATALOG_REFRESH: Duration = Duration::from_secs(60);
/// How often `pgvigil_wal_archive_age_seconds` is brought to now.
const ARCHIVE_AGE_TICK: Duration = Duration::from_secs(1);
/// How often archiving ahead looks for WAL files marked ready.
const ARCHIVE_AHEAD_POLL: Duration = Duration::from_millis(500);

/// Runs `round` now and then every `every` until `token` is cancelled.
pub async fn periodically<F, Fut>(every: Duration, token: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    // Bounded by the daemon's lifetime: the token ends it.
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = round() => {}
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Starts the PITR check, the heartbeat, archiving ahead and the catalog refresh; the
/// check and the refresh also keep `status` (the status page's facts) up to date.
pub fn start(
    ops: &Ops,
    registry: &Registry,
    status: Arc<Cache>,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> Result<(), StartError> {
    let (verify, checked) = (ops.clone(), status.clone());
    tracker.spawn(periodically(
        ops.settings.pitr.check_interval,
        token.clone(),
        move || {
            let (ops, status) = (verify.clone(), checked.clone());
            async move {
                // The outcome is an event and metrics, and the status page's WAL facts.
                status.checked(&ops.verify().await);
            }
        },
    ));
    let pitr = &ops.settings.pitr;
    if !pitr.heartbeat_interval.is_zero() {
        tracker.spawn(heartbeat::run(
            ops.settings.postgres.clone(),
            pitr.heartbeat_interval,
            create(registry, &cat::PGVIGIL_HEARTBEAT_LAG_SECONDS)?,
            token.clone(),
        ));
    }
    // The RPO gauge, brought to now between PITR checks.
    let aging = ops.metrics.clone();
    tracker.spawn(periodically(ARCHIVE_AGE_TICK, token.clone(), move || {
        aging.refresh_archive_age();
        std::future::ready(())
    }));
    if ops.settings.backup.archive_ahead {
        let ahead = Arc::new(tokio::sync::Mutex::new(wal_ahead::Ahead::new(ops.clone())));
        tracker.spawn(periodically(ARCHIVE_AHEAD_POLL, token.clone(), move || {
            let ahead = ahead.clone();
            async move {
                ahead.lock().await.round().await;
            }
        }));
    }
    let (metrics, repo, ops) = (ops.metrics.backup.clone(), ops.primary.clone(), ops.clone());
    let token = token.clone();
    tracker.spawn(async move {
        // Bounded by the daemon's lifetime: the token ends it.
        loop {
            let round = async {
                let (_, changed) = tokio::join!(metrics.refresh(&repo), status.refresh());
                // A backup came or went (taken by the CLI, or deleted): the window the last
                // check found is out of date. A check that found WAL missing is repeated
                // every round until the WAL is there.
                if changed || status.recheck() {
                    status.checked(&ops.verify().await);
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = round => {}
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(CATALOG_REFRESH) => {}
                _ = status.wait_changed() => {}
            }
        }
    });
    Ok(())
}

/// Sets the gauges of the last off-site copy, retention run and drill from the repository,
/// so a restarted daemon does not report "never".
pub async fn restore_remembered(ops: &Ops) {
    let m = &ops.metrics;
    if let Some(last) = offsite::last(&ops.primary).await {
        m.offsite.last_success.set(unix_seconds(last.finished));
    }
    let retention = schedule::load_history(&ops.primary, "retention").await;
    if let (Some(JobOutcome::Success), Some(t)) = (retention.last_outcome, retention.last_finished)
    {
        m.retention.last_run.set(unix_seconds(t));
    }
    if let Some(t) = drill::last_success(&ops.primary).await {
        m.drill.last_success.set(unix_seconds(t));
    }
}

/// Collects every 250 ms until a scrape reaches PostgreSQL, so `/readyz` turns true without
/// waiting for Prometheus to scrape.
pub async fn warm_up(scraper: Arc<Scraper>, readiness: Arc<Readiness>, token: CancellationToken) {
    // Bounded by the daemon's lifetime; stops at the first success.
    while !readiness.is_met(Condition::FirstScrape) {
        if scraper.postgres().is_connected().await && scraper.scrape().await.postgres_up {
            readiness.met(Condition::FirstScrape);
            return;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
