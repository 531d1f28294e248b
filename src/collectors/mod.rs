//! Collection: what a scrape runs and how. `Scraper::scrape` is single-flight (concurrent
//! scrapes share one collection), each collector runs under its own timeout and reports
//! `pgvigil_scrape_collector_duration_seconds` / `pgvigil_scrape_collector_success`, and a
//! source that is down yields its `*_up 0` instead of stale values.

pub mod pgbouncer;
pub mod postgres;
pub mod postgrest;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Gauge, GaugeVec, IntCounter};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Family;

crate::own_metrics! {
    /// Scrape bookkeeping metrics (pgvigil's own).
    pub struct ScrapeMetrics {
        pub duration: GaugeVec = PGVIGIL_SCRAPE_COLLECTOR_DURATION_SECONDS,
        pub success: GaugeVec = PGVIGIL_SCRAPE_COLLECTOR_SUCCESS,
        pub scrapes: IntCounter = PGVIGIL_SCRAPES_TOTAL,
        pub pe_duration: GaugeVec = PG_SCRAPE_COLLECTOR_DURATION_SECONDS,
        pub pe_success: GaugeVec = PG_SCRAPE_COLLECTOR_SUCCESS,
        pub last_error: Gauge = PG_EXPORTER_LAST_SCRAPE_ERROR,
        pub last_duration: Gauge = PG_EXPORTER_LAST_SCRAPE_DURATION_SECONDS,
        pub pe_scrapes: IntCounter = PG_EXPORTER_SCRAPES_TOTAL,
    }
}

impl ScrapeMetrics {
    /// Records one collector run.
    pub fn record(&self, collector: &str, took: Duration, ok: bool) {
        let ok_value = if ok { 1.0 } else { 0.0 };
        for (duration, success) in [
            (&self.duration, &self.success),
            (&self.pe_duration, &self.pe_success),
        ] {
            duration
                .with_label_values(&[collector])
                .set(took.as_secs_f64());
            success.with_label_values(&[collector]).set(ok_value);
        }
    }

    /// The collectors whose last run failed, by name.
    pub fn failing(&self) -> Vec<String> {
        use prometheus::core::Collector as _;
        self.success
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_gauge().get_value() == 0.0)
            .filter_map(|m| m.get_label().first().map(|l| l.value().to_string()))
            .collect()
    }

    /// Whether any collector's last run failed.
    fn any_failed(&self) -> bool {
        !self.failing().is_empty()
    }
}

/// A source of metrics (PostgreSQL, each PgBouncer, PostgREST). Every source is added the
/// same way: it appends its families to `out`, records each of its runs in `metrics`
/// (`pgvigil_scrape_collector_*{collector}`), emits its own `*_up` family, and says whether
/// the source answered. A collector never fails a scrape: a source that is down is a value.
#[async_trait::async_trait]
pub trait Collector: Send + Sync {
    /// Runs one collection into `out`; returns whether the source was up.
    async fn collect(&self, metrics: &ScrapeMetrics, out: &mut Vec<Family>) -> bool;
}

/// The result of one collection, shared by every scrape that waited for it.
pub struct Snapshot {
    pub families: Vec<Family>,
    pub finished: Instant,
    /// Whether PostgreSQL answered (pg_up).
    pub postgres_up: bool,
}

/// Runs collections; one at a time, results shared.
pub struct Scraper {
    postgres: postgres::PostgresCollector,
    /// The other sources, in the order their families are served.
    others: Vec<Box<dyn Collector>>,
    metrics: ScrapeMetrics,
    last: Mutex<Option<Arc<Snapshot>>>,
}

impl Scraper {
    /// A scraper over PostgreSQL and the other configured sources.
    pub fn new(
        postgres: postgres::PostgresCollector,
        others: Vec<Box<dyn Collector>>,
        metrics: ScrapeMetrics,
    ) -> Self {
        Self {
            postgres,
            others,
            metrics,
            last: Mutex::new(None),
        }
    }

    /// The collectors whose last run failed (no collection is started).
    pub fn failing(&self) -> Vec<String> {
        self.metrics.failing()
    }

    /// Collects now, or joins a collection already under way.
    pub async fn scrape(&self) -> Arc<Snapshot> {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(snap) = last.as_ref() {
            // Finished after we arrived: it started before us and is as fresh as ours
            // would be. This is what makes concurrent scrapes share one collection.
            if snap.finished >= arrived {
                return snap.clone();
            }
        }
        self.metrics.scrapes.inc();
        self.metrics.pe_scrapes.inc();
        let mut families = Vec::with_capacity(128);
        let metrics = &self.metrics;
        // Sources are independent: one being slow or down never delays or hides another.
        let (postgres_up, others) = tokio::join!(
            self.postgres.collect(metrics, &mut families),
            futures_util::future::join_all(self.others.iter().map(|c| async move {
                let mut out = Vec::new();
                c.collect(metrics, &mut out).await;
                out
            }))
        );
        families.extend(others.into_iter().flatten());
        let failed = !postgres_up || self.metrics.any_failed();
        self.metrics.last_error.set(if failed { 1.0 } else { 0.0 });
        self.metrics
            .last_duration
            .set(arrived.elapsed().as_secs_f64());
        let snap = Arc::new(Snapshot {
            families,
            finished: Instant::now(),
            postgres_up,
        });
        *last = Some(snap.clone());
        snap
    }

    /// The PostgreSQL collector (for status and tests).
    pub fn postgres(&self) -> &postgres::PostgresCollector {
        &self.postgres
    }
}
