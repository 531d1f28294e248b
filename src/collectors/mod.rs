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

use prometheus::{GaugeVec, IntCounter, Opts, Registry};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::{catalogue as cat, Family};

/// Scrape bookkeeping metrics (pgvigil's own).
#[derive(Clone)]
pub struct ScrapeMetrics {
    pub duration: GaugeVec,
    pub success: GaugeVec,
    pub scrapes: IntCounter,
}

impl ScrapeMetrics {
    /// Creates and registers the scrape metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = GaugeVec::new(
            Opts::new(
                cat::PGVIGIL_SCRAPE_COLLECTOR_DURATION_SECONDS.name,
                cat::PGVIGIL_SCRAPE_COLLECTOR_DURATION_SECONDS.help,
            ),
            cat::PGVIGIL_SCRAPE_COLLECTOR_DURATION_SECONDS.labels,
        )?;
        let success = GaugeVec::new(
            Opts::new(
                cat::PGVIGIL_SCRAPE_COLLECTOR_SUCCESS.name,
                cat::PGVIGIL_SCRAPE_COLLECTOR_SUCCESS.help,
            ),
            cat::PGVIGIL_SCRAPE_COLLECTOR_SUCCESS.labels,
        )?;
        let scrapes = IntCounter::new(
            cat::PGVIGIL_SCRAPES_TOTAL.name,
            cat::PGVIGIL_SCRAPES_TOTAL.help,
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(success.clone()))?;
        registry.register(Box::new(scrapes.clone()))?;
        Ok(Self {
            duration,
            success,
            scrapes,
        })
    }

    /// Records one collector run.
    pub fn record(&self, collector: &str, took: Duration, ok: bool) {
        self.duration
            .with_label_values(&[collector])
            .set(took.as_secs_f64());
        self.success
            .with_label_values(&[collector])
            .set(if ok { 1.0 } else { 0.0 });
    }
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
    postgrest: Option<postgrest::PostgrestCollector>,
    pgbouncer: Option<pgbouncer::PgbouncerCollector>,
    metrics: ScrapeMetrics,
    last: Mutex<Option<Arc<Snapshot>>>,
}

impl Scraper {
    /// A scraper over the given collectors.
    pub fn new(
        postgres: postgres::PostgresCollector,
        postgrest: Option<postgrest::PostgrestCollector>,
        pgbouncer: Option<pgbouncer::PgbouncerCollector>,
        metrics: ScrapeMetrics,
    ) -> Self {
        Self {
            postgres,
            postgrest,
            pgbouncer,
            metrics,
            last: Mutex::new(None),
        }
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
        let mut families = Vec::with_capacity(128);
        let mut rest_families = Vec::new();
        let mut bouncer_families = Vec::new();
        // Sources are independent: one being slow or down never delays or hides another.
        let (postgres_up, rest, bouncers) = tokio::join!(
            self.postgres.collect(&self.metrics, &mut families),
            async {
                match &self.postgrest {
                    Some(c) => Some(c.collect(&mut rest_families).await),
                    None => None,
                }
            },
            async {
                match &self.pgbouncer {
                    Some(c) => c.collect(&mut bouncer_families).await,
                    None => Vec::new(),
                }
            }
        );
        if let Some((ok, took)) = rest {
            self.metrics.record("postgrest", took, ok);
        }
        for b in bouncers {
            self.metrics
                .record(&format!("pgbouncer:{}", b.instance), b.took, b.up);
        }
        families.append(&mut bouncer_families);
        families.append(&mut rest_families);
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
