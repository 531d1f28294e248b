//! pgvigil: a PostgreSQL operations sidecar. `App::start` runs the daemon in-process (the
//! binary and the tests both use it); the modules below hold configuration, metrics,
//! collectors and PostgreSQL plumbing.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![allow(missing_debug_implementations)]

pub mod audit;
pub mod backup;
pub mod check;
pub mod cli;
pub mod collectors;
pub mod commands;
pub mod config;
pub mod dev;
pub mod events;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod proxy;
pub mod schedule;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collectors::{postgres::PostgresCollector, ScrapeMetrics, Scraper};
use crate::config::Settings;

/// pgvigil's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source} (server.listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read bearer token file {path}: {source} (server.bearer_token_file)")]
    BearerToken {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error("opening the repository: {0}")]
    Store(#[from] store::Error),
    #[error("opening the audit log: {0}")]
    Audit(#[from] audit::sink::SinkError),
}

/// The daemon.
pub struct App;

/// A started daemon: its address and the handles to stop it.
pub struct Running {
    /// Where /metrics is served.
    pub addr: SocketAddr,
    /// Where the API proxy listens, when configured.
    pub proxy_addr: Option<SocketAddr>,
    token: CancellationToken,
    tracker: TaskTracker,
    scraper: Arc<Scraper>,
}

impl App {
    /// Binds the listener, starts the collectors and serves HTTP. Returns once listening.
    pub async fn start(settings: Settings) -> Result<Running, StartError> {
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = prometheus::Registry::new();
        let scrape_metrics = ScrapeMetrics::register(&registry)?;
        let build = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                metrics::catalogue::PGVIGIL_BUILD_INFO.name,
                metrics::catalogue::PGVIGIL_BUILD_INFO.help,
            ),
            metrics::catalogue::PGVIGIL_BUILD_INFO.labels,
        )?;
        build.with_label_values(&[VERSION]).set(1.0);
        registry.register(Box::new(build))?;

        let bearer_token = match &settings.server.bearer_token_file {
            Some(p) => Some(
                tokio::fs::read_to_string(p)
                    .await
                    .map_err(|source| StartError::BearerToken {
                        path: p.display().to_string(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };

        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.server.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.server.listen,
            source,
        })?;

        let audit_events = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                metrics::catalogue::PGVIGIL_AUDIT_EVENTS_TOTAL.name,
                metrics::catalogue::PGVIGIL_AUDIT_EVENTS_TOTAL.help,
            ),
            metrics::catalogue::PGVIGIL_AUDIT_EVENTS_TOTAL.labels,
        )?;
        registry.register(Box::new(audit_events.clone()))?;
        let audit = audit::AuditLog::open(
            &audit::SinkConfig {
                stdout: settings.audit.stdout,
                file: settings.audit.file.clone(),
            },
            Some(audit_events),
            &tracker,
            token.clone(),
        )?;
        let events = events::Events::new(audit.clone(), "run");
        events.config_loaded(&settings);
        if let Some(table) = &settings.audit.table {
            tracker.spawn(audit::tail::run(
                audit::tail::Tailer {
                    connect: pg::ConnectOptions::from_settings(&settings.postgres),
                    table: table.clone(),
                    redact_columns: settings.audit.redact_columns.clone(),
                    audit: audit.clone(),
                    file: settings.audit.file.clone(),
                    metrics: audit::tail::TailMetrics::register(&registry)?,
                    batch: 5000,
                    poll: Duration::from_secs(1),
                },
                token.clone(),
            ));
        }
        let proxy_addr = match &settings.api_proxy {
            Some(p) => Some(
                proxy::start(p.clone(), &registry, audit.clone(), &tracker, token.clone()).await?,
            ),
            None => None,
        };

        let postgres = PostgresCollector::start(settings.postgres.clone(), token.clone(), &tracker);
        let postgrest = settings
            .postgrest
            .clone()
            .map(collectors::postgrest::PostgrestCollector::new);
        let pgbouncer = collectors::pgbouncer::PgbouncerCollector::new(&settings.pgbouncer);
        let scraper = Arc::new(Scraper::new(postgres, postgrest, pgbouncer, scrape_metrics));
        let ready = Arc::new(AtomicBool::new(false));
        let residency_checked = Arc::new(AtomicBool::new(false));
        tracker.spawn(warm_up(
            scraper.clone(),
            ready.clone(),
            residency_checked.clone(),
            token.clone(),
        ));

        if settings.storage.residency == store::Residency::Any {
            tracing::warn!(
                event = "storage.residency.disabled",
                "storage.residency = \"any\": bucket locations are not checked"
            );
        }
        let primary = open_custodied(store::Which::Primary, &settings).await?;
        let repo = primary.repo.clone();
        let offsite = match &settings.offsite {
            Some(_) => Some(open_custodied(store::Which::Offsite, &settings).await?),
            None => None,
        };
        let custodied: Vec<_> = std::iter::once(primary.clone())
            .chain(offsite.clone())
            .collect();
        let custody_metrics = backup::custody::CustodyMetrics::register(&registry)?;
        for c in &custodied {
            custody_metrics.init_store(c.label);
        }
        tracker.spawn(backup::custody::residency_loop(
            custodied.clone(),
            custody_metrics.clone(),
            events.clone(),
            residency_checked,
            backup::custody::RESIDENCY_RECHECK,
            token.clone(),
        ));
        // What the repository remembers, so a restarted daemon does not report "never".
        let unix = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        if let Some(last) = backup::offsite::last(&repo).await {
            custody_metrics
                .offsite_last_success
                .set(unix(last.finished));
        }
        let retention_history = schedule::load_history(&repo, "retention").await;
        if let (Some(schedule::Outcome::Success), Some(t)) = (
            retention_history.last_outcome,
            retention_history.last_finished,
        ) {
            custody_metrics.retention_last_run.set(unix(t));
        }
        let backup_metrics = backup::jobs::BackupMetrics::register(&registry)?;
        let pitr_metrics = backup::jobs::PitrMetrics::register(&registry)?;
        if let Some(t) = backup::drill::last_success(&repo).await {
            pitr_metrics.drill_last_success.set(unix(t));
        }
        let shared_settings = Arc::new(settings.clone());
        tracker.spawn(backup::jobs::verify_loop(
            shared_settings.clone(),
            repo.clone(),
            pitr_metrics.clone(),
            settings.pitr.check_interval,
            events.clone(),
            token.clone(),
        ));
        if !settings.pitr.heartbeat_interval.is_zero() {
            tracker.spawn(backup::heartbeat::run(
                settings.postgres.clone(),
                settings.pitr.heartbeat_interval,
                pitr_metrics.heartbeat_lag.clone(),
                token.clone(),
            ));
        }
        tracker.spawn(backup::jobs::refresh_loop(
            backup_metrics.clone(),
            repo.clone(),
            Duration::from_secs(60),
            token.clone(),
        ));
        // Scheduled jobs never overlap.
        let exclusive = Arc::new(tokio::sync::Mutex::new(()));
        let next_run = backup_metrics.next_run.clone();
        let schedule_job = |job: &'static str, when: &config::Schedule, body: schedule::JobFn| {
            let Some(cron) = when.cron().cloned() else {
                return;
            };
            let next_run = next_run.clone();
            tracker.spawn(schedule::run_job(
                job,
                cron,
                repo.clone(),
                exclusive.clone(),
                body,
                move |t| next_run.with_label_values(&[job]).set(t.timestamp() as f64),
                token.clone(),
            ));
        };
        schedule_job(
            "drill",
            &settings.drill.schedule,
            backup::jobs::drill_job(
                shared_settings.clone(),
                repo.clone(),
                pitr_metrics.clone(),
                events.clone(),
            ),
        );
        schedule_job(
            "backup",
            &settings.backup.schedule,
            backup::jobs::backup_job(
                shared_settings.clone(),
                repo.clone(),
                backup_metrics.clone(),
                events.clone(),
            ),
        );
        schedule_job(
            "retention",
            &settings.retention.schedule,
            backup::custody::retention_job(
                shared_settings.clone(),
                custodied,
                custody_metrics.clone(),
                events.clone(),
            ),
        );
        if let (Some(o), Some(offsite)) = (&settings.offsite, &offsite) {
            schedule_job(
                "offsite",
                &o.schedule,
                backup::custody::offsite_job(
                    repo.clone(),
                    offsite.repo.clone(),
                    custody_metrics.clone(),
                    events.clone(),
                ),
            );
        }

        let state = Arc::new(http::HttpState {
            scraper: scraper.clone(),
            registry,
            ready,
            bearer_token,
            backup_metrics: Some(backup_metrics),
        });
        let router = http::router(state);
        let shutdown = token.clone();
        tracker.spawn(async move {
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(event = "http.failed", error = %e, "HTTP server failed");
            }
        });
        tracing::info!(event = "daemon.started", listen = %addr, postgres = %settings.postgres.dsn_display, version = VERSION, "pgvigil started");
        Ok(Running {
            addr,
            proxy_addr,
            token,
            tracker,
            scraper,
        })
    }
}

/// Opens a repository guarded by the configured residency policy.
async fn open_custodied(
    which: store::Which,
    settings: &Settings,
) -> Result<backup::custody::Custodied, StartError> {
    let (repo, guard) = store::Repo::open_guarded(settings, which).await?;
    Ok(backup::custody::Custodied {
        label: which.label(),
        repo,
        guard,
    })
}

/// Collects once a second until the first success, so /readyz turns true without waiting
/// for Prometheus to scrape; readiness also waits for the first residency check.
async fn warm_up(
    scraper: Arc<Scraper>,
    ready: Arc<AtomicBool>,
    residency_checked: Arc<AtomicBool>,
    token: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    // Bounded by the daemon's lifetime; stops at the first success.
    loop {
        if ready.load(Ordering::Acquire) {
            return;
        }
        if residency_checked.load(Ordering::Acquire)
            && scraper.postgres().is_connected().await
            && scraper.scrape().await.postgres_up
        {
            ready.store(true, Ordering::Release);
            return;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

impl Running {
    /// Stops everything and waits (at most `grace`) for tasks to finish.
    pub async fn shutdown(self, grace: Duration) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(event = "daemon.shutdown.timeout", grace = ?grace, "tasks still running after the grace period");
        }
        tracing::info!(event = "daemon.stopped", "pgvigil stopped");
    }

    /// The URL of /metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// The scraper, for tests that count collections.
    pub fn scraper(&self) -> &Arc<Scraper> {
        &self.scraper
    }
}
