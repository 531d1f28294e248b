//! The metrics of the backup operations, one struct per concern, each created from the
//! catalogue by `register`. The operations in `ops.rs` set them, in the daemon and in the CLI
//! alike; a CLI command registers them in a registry of its own that nobody scrapes
//! ([`OpsMetrics::unregistered`]), so that one code path serves both.

use prometheus::{Gauge, GaugeVec, Histogram, IntCounter, IntCounterVec, Registry};

use super::{catalog, pitr, retention};
use crate::metrics::catalogue as cat;
use crate::metrics::own::{counter, counter_vec, gauge, gauge_vec, histogram, unix_seconds};
use crate::store::Repo;

/// Base backups in the repository, refreshed from the catalog (so backups taken by
/// `pgvigil backup` count too).
#[derive(Clone)]
pub struct BackupMetrics {
    pub last_success: Gauge,
    pub last_duration: Gauge,
    pub last_size: GaugeVec,
    pub failures: IntCounter,
    pub running: Gauge,
    pub count: Gauge,
}

impl BackupMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            last_success: gauge(r, &cat::PGVIGIL_BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS)?,
            last_duration: gauge(r, &cat::PGVIGIL_BACKUP_LAST_DURATION_SECONDS)?,
            last_size: gauge_vec(r, &cat::PGVIGIL_BACKUP_LAST_SIZE_BYTES)?,
            failures: counter(r, &cat::PGVIGIL_BACKUP_FAILURES_TOTAL)?,
            running: gauge(r, &cat::PGVIGIL_BACKUP_RUNNING)?,
            count: gauge(r, &cat::PGVIGIL_BACKUPS)?,
        })
    }

    /// Sets the repository gauges from the catalog.
    pub async fn refresh(&self, repo: &Repo) {
        match catalog::newest(repo).await {
            Ok((count, newest)) => {
                self.count.set(count as f64);
                if let Some(b) = newest {
                    self.last_success.set(unix_seconds(b.stop_time));
                    self.last_duration.set(b.duration_seconds);
                    self.last_size
                        .with_label_values(&["raw"])
                        .set(b.raw_bytes as f64);
                    self.last_size
                        .with_label_values(&["stored"])
                        .set(b.stored_bytes as f64);
                }
            }
            Err(e) => {
                tracing::warn!(event = "backup.catalog.failed", error = %e, "cannot list backups")
            }
        }
    }
}

/// WAL archiving, as reported by `wal-push` processes.
#[derive(Clone)]
pub struct WalMetrics {
    pub push: IntCounterVec,
    pub push_duration: Histogram,
    pub last_pushed: Gauge,
}

impl WalMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            push: counter_vec(r, &cat::PGVIGIL_WAL_PUSH_TOTAL)?,
            push_duration: histogram(
                r,
                &cat::PGVIGIL_WAL_PUSH_DURATION_SECONDS,
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            )?,
            last_pushed: gauge(r, &cat::PGVIGIL_WAL_LAST_PUSHED_TIMESTAMP_SECONDS)?,
        };
        // Both outcomes exist from the start, so rate() and alerts see zeros, not gaps.
        m.push.with_label_values(&["success"]);
        m.push.with_label_values(&["failure"]);
        Ok(m)
    }

    /// Records one push.
    pub fn pushed(&self, ok: bool, seconds: f64) {
        self.push
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        self.push_duration.observe(seconds);
        if ok {
            self.last_pushed.set(unix_seconds(chrono::Utc::now()));
        }
    }
}

/// The PITR check: recovery window, continuity and archive age.
#[derive(Clone)]
pub struct PitrMetrics {
    pub window_start: Gauge,
    pub window_end: Gauge,
    pub missing: Gauge,
    pub continuity_ok: Gauge,
    pub last_check: Gauge,
    pub archive_age: Gauge,
}

impl PitrMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            window_start: gauge(r, &cat::PGVIGIL_PITR_WINDOW_START_TIMESTAMP_SECONDS)?,
            window_end: gauge(r, &cat::PGVIGIL_PITR_WINDOW_END_TIMESTAMP_SECONDS)?,
            missing: gauge(r, &cat::PGVIGIL_PITR_MISSING_SEGMENTS)?,
            continuity_ok: gauge(r, &cat::PGVIGIL_PITR_CONTINUITY_OK)?,
            last_check: gauge(r, &cat::PGVIGIL_PITR_LAST_CHECK_TIMESTAMP_SECONDS)?,
            archive_age: gauge(r, &cat::PGVIGIL_WAL_ARCHIVE_AGE_SECONDS)?,
        })
    }

    /// Publishes a verification report.
    pub fn publish(&self, report: &pitr::Report) {
        self.window_start
            .set(report.window_start.map(unix_seconds).unwrap_or(0.0));
        self.window_end
            .set(report.window_end.map(unix_seconds).unwrap_or(0.0));
        self.missing.set(report.missing.len() as f64);
        self.continuity_ok.set(if report.ok { 1.0 } else { 0.0 });
        if let Some(a) = report.archive_age_seconds {
            self.archive_age.set(a);
        }
        self.last_check.set(unix_seconds(chrono::Utc::now()));
    }
}

/// Restore drills.
#[derive(Clone)]
pub struct DrillMetrics {
    pub last_success: Gauge,
    pub last_duration: Gauge,
    pub last_skew: Gauge,
    pub failures: IntCounter,
}

impl DrillMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            last_success: gauge(r, &cat::PGVIGIL_DRILL_LAST_SUCCESS_TIMESTAMP_SECONDS)?,
            last_duration: gauge(r, &cat::PGVIGIL_DRILL_LAST_DURATION_SECONDS)?,
            last_skew: gauge(r, &cat::PGVIGIL_DRILL_LAST_TARGET_SKEW_SECONDS)?,
            failures: counter(r, &cat::PGVIGIL_DRILL_FAILURES_TOTAL)?,
        })
    }
}

/// Retention runs, per store.
#[derive(Clone)]
pub struct RetentionMetrics {
    pub last_run: Gauge,
    pub deleted: IntCounterVec,
    pub locked: GaugeVec,
    pub failures: IntCounter,
}

impl RetentionMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            last_run: gauge(r, &cat::PGVIGIL_RETENTION_LAST_RUN_TIMESTAMP_SECONDS)?,
            deleted: counter_vec(r, &cat::PGVIGIL_RETENTION_DELETED_OBJECTS_TOTAL)?,
            locked: gauge_vec(r, &cat::PGVIGIL_RETENTION_LOCKED_OBJECTS)?,
            failures: counter(r, &cat::PGVIGIL_RETENTION_FAILURES_TOTAL)?,
        })
    }

    /// Creates the labelled series of `store` at zero, so rate() and alerts see zeros from
    /// the start rather than gaps.
    pub fn init_store(&self, store: &str) {
        for reason in [
            retention::Reason::ExpiredBackup,
            retention::Reason::ExpiredWal,
            retention::Reason::Orphan,
        ] {
            self.deleted.with_label_values(&[store, reason.label()]);
        }
        self.locked.with_label_values(&[store]).set(0.0);
    }
}

/// The off-site copy.
#[derive(Clone)]
pub struct OffsiteMetrics {
    pub last_success: Gauge,
    pub failures: IntCounter,
}

impl OffsiteMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            last_success: gauge(r, &cat::PGVIGIL_OFFSITE_LAST_SUCCESS_TIMESTAMP_SECONDS)?,
            failures: counter(r, &cat::PGVIGIL_OFFSITE_FAILURES_TOTAL)?,
        })
    }
}

/// Every metric the operations set.
#[derive(Clone)]
pub struct OpsMetrics {
    pub backup: BackupMetrics,
    pub wal: WalMetrics,
    pub pitr: PitrMetrics,
    pub drill: DrillMetrics,
    pub retention: RetentionMetrics,
    pub offsite: OffsiteMetrics,
}

impl OpsMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            backup: BackupMetrics::register(r)?,
            wal: WalMetrics::register(r)?,
            pitr: PitrMetrics::register(r)?,
            drill: DrillMetrics::register(r)?,
            retention: RetentionMetrics::register(r)?,
            offsite: OffsiteMetrics::register(r)?,
        })
    }

    /// Metrics in a registry of their own, for a CLI command (nothing scrapes it).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Self::register(&Registry::new())
    }
}
