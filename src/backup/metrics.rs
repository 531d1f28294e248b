//! The metrics of the backup operations, one struct per concern, each created from the
//! catalogue by `register`. The operations in `ops.rs` set them, in the daemon and in the CLI
//! alike; a CLI command registers them in a registry of its own that nobody scrapes
//! ([`OpsMetrics::unregistered`]), so that one code path serves both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{Gauge, GaugeVec, Histogram, IntCounter, IntCounterVec, Registry};

use super::{catalog, pitr, retention};
use crate::metrics::own::unix_seconds;
use crate::own_metrics;
use crate::store::Repo;

own_metrics! {
    /// Base backups in the repository, refreshed from the catalog (so backups taken by
    /// `pgvigil backup` count too).
    pub struct BackupMetrics {
        pub last_success: Gauge = PGVIGIL_BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS,
        pub last_duration: Gauge = PGVIGIL_BACKUP_LAST_DURATION_SECONDS,
        pub last_size: GaugeVec = PGVIGIL_BACKUP_LAST_SIZE_BYTES,
        pub failures: IntCounter = PGVIGIL_BACKUP_FAILURES_TOTAL,
        pub running: Gauge = PGVIGIL_BACKUP_RUNNING,
        pub count: Gauge = PGVIGIL_BACKUPS,
    }
}

impl BackupMetrics {
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

/// Buckets of `pgvigil_wal_push_duration_seconds`: a local push takes milliseconds, a
/// segment to a distant bucket seconds.
const WAL_PUSH_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

own_metrics! {
    /// WAL archiving, as reported by `wal-push` processes.
    pub struct WalMetrics {
        pub push: IntCounterVec = PGVIGIL_WAL_PUSH_TOTAL,
        pub push_duration: Histogram = PGVIGIL_WAL_PUSH_DURATION_SECONDS with WAL_PUSH_BUCKETS,
        pub last_pushed: Gauge = PGVIGIL_WAL_LAST_PUSHED_TIMESTAMP_SECONDS,
    }
}

impl WalMetrics {
    /// Both outcomes exist from the start, so rate() and alerts see zeros, not gaps.
    fn init(self) -> Self {
        self.push.with_label_values(&["success"]);
        self.push.with_label_values(&["failure"]);
        self
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

own_metrics! {
    /// The PITR check: recovery window, continuity and archive age.
    pub struct PitrMetrics {
        pub window_start: Gauge = PGVIGIL_PITR_WINDOW_START_TIMESTAMP_SECONDS,
        pub window_end: Gauge = PGVIGIL_PITR_WINDOW_END_TIMESTAMP_SECONDS,
        pub missing: Gauge = PGVIGIL_PITR_MISSING_SEGMENTS,
        pub unrestorable: Gauge = PGVIGIL_BACKUPS_UNRESTORABLE,
        pub continuity_ok: Gauge = PGVIGIL_PITR_CONTINUITY_OK,
        pub last_check: Gauge = PGVIGIL_PITR_LAST_CHECK_TIMESTAMP_SECONDS,
        pub archive_age: Gauge = PGVIGIL_WAL_ARCHIVE_AGE_SECONDS,
    }
}

impl PitrMetrics {
    /// Publishes a verification report (through [`OpsMetrics::publish_check`], which also
    /// keeps when the newest WAL was archived).
    fn publish(&self, report: &pitr::Report) {
        self.window_start
            .set(report.window_start.map(unix_seconds).unwrap_or(0.0));
        self.window_end
            .set(report.window_end.map(unix_seconds).unwrap_or(0.0));
        self.missing.set(report.missing.len() as f64);
        self.unrestorable.set(report.broken.len() as f64);
        self.continuity_ok.set(if report.ok { 1.0 } else { 0.0 });
        if let Some(a) = report.archive_age_seconds {
            self.archive_age.set(a);
        }
        self.last_check.set(unix_seconds(chrono::Utc::now()));
    }
}

own_metrics! {
    /// Restore drills.
    pub struct DrillMetrics {
        pub last_success: Gauge = PGVIGIL_DRILL_LAST_SUCCESS_TIMESTAMP_SECONDS,
        pub last_duration: Gauge = PGVIGIL_DRILL_LAST_DURATION_SECONDS,
        pub last_skew: Gauge = PGVIGIL_DRILL_LAST_TARGET_SKEW_SECONDS,
        pub failures: IntCounter = PGVIGIL_DRILL_FAILURES_TOTAL,
    }
}

own_metrics! {
    /// Retention runs, per store.
    pub struct RetentionMetrics {
        pub last_run: Gauge = PGVIGIL_RETENTION_LAST_RUN_TIMESTAMP_SECONDS,
        pub deleted: IntCounterVec = PGVIGIL_RETENTION_DELETED_OBJECTS_TOTAL,
        pub locked: GaugeVec = PGVIGIL_RETENTION_LOCKED_OBJECTS,
        pub failures: IntCounter = PGVIGIL_RETENTION_FAILURES_TOTAL,
    }
}

impl RetentionMetrics {
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

own_metrics! {
    /// The off-site copy.
    pub struct OffsiteMetrics {
        pub last_success: Gauge = PGVIGIL_OFFSITE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        pub failures: IntCounter = PGVIGIL_OFFSITE_FAILURES_TOTAL,
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
    /// When the newest WAL file was archived as the last PITR check saw it (Unix seconds
    /// as `f64` bits; 0: not known yet).
    archived_at: Arc<AtomicU64>,
}

impl OpsMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            backup: BackupMetrics::register(r)?,
            wal: WalMetrics::register(r)?.init(),
            pitr: PitrMetrics::register(r)?,
            drill: DrillMetrics::register(r)?,
            retention: RetentionMetrics::register(r)?,
            offsite: OffsiteMetrics::register(r)?,
            archived_at: Arc::default(),
        })
    }

    /// Publishes a PITR check's report.
    pub fn publish_check(&self, report: &pitr::Report) {
        self.pitr.publish(report);
        if let Some(age) = report.archive_age_seconds {
            let at = unix_seconds(chrono::Utc::now()) - age;
            self.archived_at.store(at.to_bits(), Ordering::Relaxed);
        }
    }

    /// Brings `pgvigil_wal_archive_age_seconds` to now: seconds since the newer of the
    /// archive the last PITR check saw (`pg_stat_archiver`) and the last successful push
    /// this daemon heard of (a `wal-push` report, or its own archiving ahead). The daemon
    /// runs it every second, so the RPO gauge moves between checks (every `check_interval`)
    /// instead of standing still, and alerts on it fire on time.
    pub fn refresh_archive_age(&self) {
        let checked = f64::from_bits(self.archived_at.load(Ordering::Relaxed));
        let newest = checked.max(self.wal.last_pushed.get());
        if newest > 0.0 {
            let age = (unix_seconds(chrono::Utc::now()) - newest).max(0.0);
            self.pitr.archive_age.set(age);
        }
    }

    /// Metrics in a registry of their own, for a CLI command (nothing scrapes it).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Self::register(&Registry::new())
    }
}
