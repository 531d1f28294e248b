//! The daemon's side of backups: the scheduled backup job, the metrics describing the
//! repository (refreshed from the catalog, so backups taken by `pgvigil backup` count too),
//! and the WAL push reports that `wal-push` processes send over loopback.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};
use tokio_util::sync::CancellationToken;

use super::basebackup::{self, Progress};
use super::{catalog, Error};
use crate::config::Settings;
use crate::metrics::catalogue::{self as cat, MetricDef};
use crate::schedule::{JobFn, Outcome};
use crate::store::Repo;

/// Backup and WAL metrics of the daemon.
#[derive(Clone)]
pub struct BackupMetrics {
    pub last_success: Gauge,
    pub last_duration: Gauge,
    pub last_size: GaugeVec,
    pub failures: IntCounter,
    pub running: Gauge,
    pub count: Gauge,
    pub wal_push: IntCounterVec,
    pub wal_push_duration: Histogram,
    pub wal_last_pushed: Gauge,
    pub next_run: GaugeVec,
}

fn opts(d: &MetricDef) -> Opts {
    Opts::new(d.name, d.help)
}

impl BackupMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let d = &cat::PGVIGIL_WAL_PUSH_DURATION_SECONDS;
        let m = Self {
            last_success: Gauge::with_opts(opts(
                &cat::PGVIGIL_BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS,
            ))?,
            last_duration: Gauge::with_opts(opts(&cat::PGVIGIL_BACKUP_LAST_DURATION_SECONDS))?,
            last_size: GaugeVec::new(
                opts(&cat::PGVIGIL_BACKUP_LAST_SIZE_BYTES),
                cat::PGVIGIL_BACKUP_LAST_SIZE_BYTES.labels,
            )?,
            failures: IntCounter::with_opts(opts(&cat::PGVIGIL_BACKUP_FAILURES_TOTAL))?,
            running: Gauge::with_opts(opts(&cat::PGVIGIL_BACKUP_RUNNING))?,
            count: Gauge::with_opts(opts(&cat::PGVIGIL_BACKUPS))?,
            wal_push: IntCounterVec::new(
                opts(&cat::PGVIGIL_WAL_PUSH_TOTAL),
                cat::PGVIGIL_WAL_PUSH_TOTAL.labels,
            )?,
            wal_push_duration: Histogram::with_opts(HistogramOpts::new(d.name, d.help).buckets(
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ))?,
            wal_last_pushed: Gauge::with_opts(opts(
                &cat::PGVIGIL_WAL_LAST_PUSHED_TIMESTAMP_SECONDS,
            ))?,
            next_run: GaugeVec::new(
                opts(&cat::PGVIGIL_JOB_NEXT_RUN_TIMESTAMP_SECONDS),
                cat::PGVIGIL_JOB_NEXT_RUN_TIMESTAMP_SECONDS.labels,
            )?,
        };
        r.register(Box::new(m.last_success.clone()))?;
        r.register(Box::new(m.last_duration.clone()))?;
        r.register(Box::new(m.last_size.clone()))?;
        r.register(Box::new(m.failures.clone()))?;
        r.register(Box::new(m.running.clone()))?;
        r.register(Box::new(m.count.clone()))?;
        r.register(Box::new(m.wal_push.clone()))?;
        r.register(Box::new(m.wal_push_duration.clone()))?;
        r.register(Box::new(m.wal_last_pushed.clone()))?;
        r.register(Box::new(m.next_run.clone()))?;
        // Both outcomes exist from the start, so rate() and alerts see zeros, not gaps.
        m.wal_push.with_label_values(&["success"]);
        m.wal_push.with_label_values(&["failure"]);
        Ok(m)
    }

    /// Records a push reported by a `wal-push` process.
    pub fn wal_pushed(&self, ok: bool, seconds: f64) {
        self.wal_push
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        self.wal_push_duration.observe(seconds);
        if ok {
            self.wal_last_pushed
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Sets the repository gauges from the catalog.
    pub async fn refresh(&self, repo: &Repo) {
        match catalog::newest(repo).await {
            Ok((count, newest)) => {
                self.count.set(count as f64);
                if let Some(b) = newest {
                    self.last_success
                        .set(b.stop_time.timestamp_millis() as f64 / 1000.0);
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

/// The body of the scheduled backup job.
pub fn backup_job(
    settings: Arc<Settings>,
    repo: Repo,
    metrics: BackupMetrics,
    events: crate::events::Events,
) -> JobFn {
    Arc::new(move || {
        let (settings, repo, metrics, events) = (
            settings.clone(),
            repo.clone(),
            metrics.clone(),
            events.clone(),
        );
        Box::pin(async move {
            metrics.running.set(1.0);
            let result = basebackup::run(&settings, &repo, Arc::new(Progress::default())).await;
            metrics.running.set(0.0);
            let outcome = match result {
                Ok(info) => {
                    events.backup_completed(&repo.store.describe(), &info);
                    (
                        Outcome::Success,
                        format!("backup {} ({} bytes stored)", info.id, info.stored_bytes),
                    )
                }
                Err(Error::Skipped(why)) => {
                    tracing::info!(event = "backup.skipped", reason = %why, "scheduled backup skipped");
                    (Outcome::Skipped, why)
                }
                Err(e) => {
                    events.backup_failed(&repo.store.describe(), &e, Some(&metrics.failures));
                    (Outcome::Failure, e.to_string())
                }
            };
            metrics.refresh(&repo).await;
            outcome
        })
    })
}

/// Refreshes the repository gauges now and every `every` until cancelled.
pub async fn refresh_loop(
    metrics: BackupMetrics,
    repo: Repo,
    every: Duration,
    token: CancellationToken,
) {
    loop {
        metrics.refresh(&repo).await;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// PITR, heartbeat and drill metrics.
#[derive(Clone)]
pub struct PitrMetrics {
    pub window_start: Gauge,
    pub window_end: Gauge,
    pub missing: Gauge,
    pub continuity_ok: Gauge,
    pub last_check: Gauge,
    pub archive_age: Gauge,
    pub heartbeat_lag: Gauge,
    pub drill_last_success: Gauge,
    pub drill_last_duration: Gauge,
    pub drill_last_skew: Gauge,
    pub drill_failures: IntCounter,
}

impl PitrMetrics {
    /// Creates and registers the metrics.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let g = |d: &MetricDef| Gauge::with_opts(opts(d));
        let m = Self {
            window_start: g(&cat::PGVIGIL_PITR_WINDOW_START_TIMESTAMP_SECONDS)?,
            window_end: g(&cat::PGVIGIL_PITR_WINDOW_END_TIMESTAMP_SECONDS)?,
            missing: g(&cat::PGVIGIL_PITR_MISSING_SEGMENTS)?,
            continuity_ok: g(&cat::PGVIGIL_PITR_CONTINUITY_OK)?,
            last_check: g(&cat::PGVIGIL_PITR_LAST_CHECK_TIMESTAMP_SECONDS)?,
            archive_age: g(&cat::PGVIGIL_WAL_ARCHIVE_AGE_SECONDS)?,
            heartbeat_lag: g(&cat::PGVIGIL_HEARTBEAT_LAG_SECONDS)?,
            drill_last_success: g(&cat::PGVIGIL_DRILL_LAST_SUCCESS_TIMESTAMP_SECONDS)?,
            drill_last_duration: g(&cat::PGVIGIL_DRILL_LAST_DURATION_SECONDS)?,
            drill_last_skew: g(&cat::PGVIGIL_DRILL_LAST_TARGET_SKEW_SECONDS)?,
            drill_failures: IntCounter::with_opts(opts(&cat::PGVIGIL_DRILL_FAILURES_TOTAL))?,
        };
        for c in [
            &m.window_start,
            &m.window_end,
            &m.missing,
            &m.continuity_ok,
            &m.last_check,
            &m.archive_age,
            &m.heartbeat_lag,
            &m.drill_last_success,
            &m.drill_last_duration,
            &m.drill_last_skew,
        ] {
            r.register(Box::new(c.clone()))?;
        }
        r.register(Box::new(m.drill_failures.clone()))?;
        Ok(m)
    }

    /// Publishes a verification report.
    pub fn publish(&self, report: &super::pitr::Report) {
        let ts = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        self.window_start
            .set(report.window_start.map(ts).unwrap_or(0.0));
        self.window_end
            .set(report.window_end.map(ts).unwrap_or(0.0));
        self.missing.set(report.missing.len() as f64);
        self.continuity_ok.set(if report.ok { 1.0 } else { 0.0 });
        if let Some(a) = report.archive_age_seconds {
            self.archive_age.set(a);
        }
        self.last_check.set(ts(chrono::Utc::now()));
    }
}

/// Asks PostgreSQL what it last archived (None if it cannot be asked).
pub async fn archiver_state(
    pg: &crate::config::PostgresSettings,
) -> Option<super::pitr::ArchiverState> {
    let conn = crate::pg::connect(&crate::pg::ConnectOptions::from_settings(pg), None)
        .await
        .ok()?;
    let row = conn
        .client
        .query_one(
            "SELECT last_archived_wal, last_archived_time FROM pg_stat_archiver",
            &[],
        )
        .await
        .ok()?;
    Some(super::pitr::ArchiverState {
        last_archived_wal: row.get(0),
        last_archived_time: row
            .get::<_, Option<std::time::SystemTime>>(1)
            .map(chrono::DateTime::<chrono::Utc>::from),
    })
}

/// Runs the PITR check now and every `every` until cancelled.
pub async fn verify_loop(
    settings: Arc<Settings>,
    repo: Repo,
    metrics: PitrMetrics,
    every: Duration,
    events: crate::events::Events,
    token: CancellationToken,
) {
    loop {
        let archiver = archiver_state(&settings.postgres).await;
        match super::pitr::verify(&repo, archiver).await {
            Ok(report) => {
                events.pitr_checked(&repo.store.describe(), Ok(&report));
                metrics.publish(&report);
            }
            Err(e) => events.pitr_checked(&repo.store.describe(), Err(e.to_string())),
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The body of the scheduled drill job. The restore_command runs this binary's wal-fetch
/// with the daemon's own config file.
pub fn drill_job(
    settings: Arc<Settings>,
    repo: Repo,
    metrics: PitrMetrics,
    events: crate::events::Events,
) -> JobFn {
    Arc::new(move || {
        let (settings, repo, metrics, events) = (
            settings.clone(),
            repo.clone(),
            metrics.clone(),
            events.clone(),
        );
        Box::pin(async move {
            let wal_fetch = match (
                std::env::current_exe(),
                std::fs::canonicalize(&settings.file),
            ) {
                (Ok(exe), Ok(cfg)) => format!("{} wal-fetch -c {}", exe.display(), cfg.display()),
                (e1, e2) => {
                    let why = format!(
                        "cannot build restore_command (binary {:?}, config {:?})",
                        e1.err(),
                        e2.err()
                    );
                    events.emit(
                        crate::events::Op::failure("drill.failed", why.clone())
                            .count(&metrics.drill_failures),
                    );
                    return (Outcome::Failure, why);
                }
            };
            let ev = super::drill::run(
                &settings,
                &repo,
                &wal_fetch,
                None,
                Duration::from_secs(7200),
            )
            .await;
            metrics.drill_last_duration.set(ev.timings.total_seconds);
            if let Some(skew) = ev.target_skew_seconds {
                metrics.drill_last_skew.set(skew);
            }
            if ev.success {
                metrics
                    .drill_last_success
                    .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                events.drill_finished(&repo.store.describe(), &ev, None);
                (
                    Outcome::Success,
                    format!("drill {} passed in {:.1}s", ev.id, ev.timings.total_seconds),
                )
            } else {
                events.drill_finished(&repo.store.describe(), &ev, Some(&metrics.drill_failures));
                let why = ev.error.clone().unwrap_or_else(|| "failed".into());
                (Outcome::Failure, why)
            }
        })
    })
}
