//! The long-running process (`pgvigil run`, and in-process in the tests): [`App::start`]
//! wires the parts together and returns a [`Running`] handle that stops them.
//!
//! What lives here and nowhere else: the order things start in, the readiness latch
//! (`ready.rs`), the one listener function (`listener.rs`, for the metrics server and the API
//! proxy), the repositories' custody loop (`custody.rs`: residency and Object Lock checks),
//! the periodic loops (`loops.rs`: PITR check, catalog refresh, warm-up) and the scheduled
//! job bodies (`jobs.rs`). The work itself is done by the modules below: a job body is a
//! call into `backup::ops`, the same function the CLI calls.
//!
//! Every task is spawned on one `TaskTracker` and stops on one `CancellationToken`, passed
//! explicitly (no globals), so tests can run several daemons in one process.

pub mod auth;
pub mod custody;
pub mod jobs;
pub mod listener;
pub mod loops;
pub mod ready;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backup::metrics::OpsMetrics;
use crate::backup::ops::Ops;
use crate::collectors::{postgres::PostgresCollector, Collector, ScrapeMetrics, Scraper};
use crate::config::Settings;
use crate::events::{Events, Op};
use crate::metrics::catalogue as cat;
use crate::metrics::own::create;
use crate::{audit, collectors, http, proxy, store, VERSION};
use prometheus::GaugeVec;
use ready::{Condition, Readiness};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source} ({key})")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The bearer token file is unreadable, empty, short or readable by others.
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    /// A listener's certificate, key or client CA cannot be loaded.
    #[error(transparent)]
    Tls(Box<tls::TlsError>),
    #[error("{key}: response header {name:?} is not a valid header")]
    Header { key: &'static str, name: String },
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error("opening the repository: {0}")]
    Store(#[from] store::Error),
    #[error("opening the audit log: {0}")]
    Audit(#[from] audit::sink::SinkError),
}

impl From<tls::TlsError> for StartError {
    fn from(e: tls::TlsError) -> Self {
        // Boxed: the TLS error carries paths and rustls errors, and every start function
        // returns this type.
        StartError::Tls(Box::new(e))
    }
}

/// The daemon.
#[derive(Debug)]
pub struct App;

/// A started daemon: its addresses and the handles to stop it.
pub struct Running {
    /// Where /metrics is served.
    pub addr: SocketAddr,
    /// Where the API proxy listens, when configured.
    pub proxy_addr: Option<SocketAddr>,
    token: CancellationToken,
    tracker: TaskTracker,
    scraper: Arc<Scraper>,
    readiness: Arc<Readiness>,
    status: Arc<crate::status::cache::Cache>,
}

impl App {
    /// Starts every part of the daemon and serves HTTP. Returns once listening.
    pub async fn start(settings: Settings) -> Result<Running, StartError> {
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = prometheus::Registry::new();
        create::<GaugeVec>(&registry, &cat::PGVIGIL_BUILD_INFO)?
            .with_label_values(&[VERSION])
            .set(1.0);
        // The standard process_* families (CPU, memory, file descriptors, start time).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for w in &settings.server.warnings {
            tracing::warn!(event = "config.ignored", file = ?settings.server.web_config_file, "{w}");
        }
        let bearer_token = read_bearer_token(&settings)?;
        let stores = custody::open_stores(&settings).await?;
        let readiness = Arc::new(Readiness::new(
            [Condition::ConfigLoaded, Condition::FirstScrape]
                .into_iter()
                .chain(stores.iter().map(|s| Condition::Residency(s.label))),
        ));

        let audit = audit::AuditLog::open(
            &audit::SinkConfig {
                stdout: settings.audit.stdout,
                file: settings.audit.file.clone(),
            },
            Some(audit::sink::AuditMetrics::register(&registry)?),
            &tracker,
            token.clone(),
        )?;
        readiness.watch_audit(audit.clone());
        let events = Events::new(audit.clone(), "run");
        events.emit(
            Op::success("config.loaded", "configuration loaded")
                .target(serde_json::json!({ "file": settings.file.display().to_string() })),
        );
        readiness.met(Condition::ConfigLoaded);
        if let Some(table) = &settings.audit.table {
            tracker.spawn(audit::tail::run(
                audit::tail::Tailer {
                    connect: crate::pg::ConnectOptions::from_settings(&settings.postgres),
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
            Some(p) => {
                let proxy =
                    proxy::start(p.clone(), &registry, audit.clone(), &tracker, token.clone())
                        .await?;
                let addr = listener::serve(
                    "api_proxy.listen",
                    p.listen,
                    &p.listener,
                    &|| listener::Service::Handler(proxy.handler()),
                    &tracker,
                    token.clone(),
                )
                .await?;
                tracing::info!(event = "proxy.started", listen = %addr, upstream = %p.upstream, "API proxy started");
                Some(addr)
            }
            None => None,
        };

        let scraper = Arc::new(start_scraper(&settings, &registry, &tracker, &token)?);
        tracker.spawn(loops::warm_up(
            scraper.clone(),
            readiness.clone(),
            token.clone(),
        ));

        let ops = Ops {
            settings: Arc::new(settings.clone()),
            primary: stores[0].repo.clone(),
            offsite: stores.get(1).map(|s| s.repo.clone()),
            events: events.clone(),
            metrics: OpsMetrics::register(&registry)?,
            no_backup_said: Arc::default(),
            binding: Arc::default(),
            lease: None,
        };
        for s in ops.stores() {
            ops.metrics.retention.init_store(s.label);
        }
        let status = Arc::new(crate::status::cache::Cache::new(
            ops.settings.clone(),
            ops.primary.clone(),
            &stores,
        ));
        custody::start(
            stores,
            &registry,
            events,
            readiness.clone(),
            status.clone(),
            &tracker,
            token.clone(),
        )?;
        loops::restore_remembered(&ops).await;
        loops::start(&ops, &registry, status.clone(), &tracker, &token)?;
        jobs::schedule(&ops, &registry, status.clone(), &tracker, &token)?;

        let state = Arc::new(http::HttpState {
            scraper: scraper.clone(),
            registry,
            readiness: readiness.clone(),
            wal_metrics: ops.metrics.wal.clone(),
            status: status.clone(),
        });
        let auth = Arc::new(auth::Auth::new(
            bearer_token,
            settings.server.basic_auth_users.clone(),
            settings.server.protect_probes,
            &[crate::backup::wal_report::PATH],
            http::PROBE_PATHS,
        ));
        let router = http::router(state).layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::require,
        ));
        let scheme = if settings.server.listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let addr = listener::serve(
            "server.listen",
            settings.server.listen,
            &settings.server.listener,
            &|| listener::Service::Router(router.clone()),
            &tracker,
            token.clone(),
        )
        .await?;
        tracing::info!(event = "daemon.started", listen = %addr, scheme, auth = auth.enabled(), probes_protected = auth.protects_probes(), postgres = %settings.postgres.dsn_display, version = VERSION, "pgvigil started");
        Ok(Running {
            addr,
            proxy_addr,
            token,
            tracker,
            scraper,
            readiness,
            status,
        })
    }
}

fn read_bearer_token(settings: &Settings) -> Result<Option<Vec<u8>>, StartError> {
    let Some(p) = &settings.server.bearer_token_file else {
        return Ok(None);
    };
    Ok(Some(crate::config::read_secret_file(
        "server.bearer_token_file",
        p,
    )?))
}

/// The PostgreSQL collector (its connection task starts now) and the other sources.
fn start_scraper(
    settings: &Settings,
    registry: &prometheus::Registry,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> Result<Scraper, StartError> {
    let postgres = PostgresCollector::start(settings.postgres.clone(), token.clone(), tracker);
    let mut others: Vec<Box<dyn Collector>> = Vec::new();
    if let Some(c) = collectors::pgbouncer::PgbouncerCollector::new(&settings.pgbouncer) {
        others.push(Box::new(c));
    }
    if let Some(p) = &settings.postgrest {
        others.push(Box::new(collectors::postgrest::PostgrestCollector::new(
            p.clone(),
        )));
    }
    Ok(Scraper::new(
        postgres,
        others,
        ScrapeMetrics::register(registry)?,
    ))
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

    /// The URL of /metrics (plain HTTP; with TLS, use `https://` and [`Running::addr`]).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// The scraper, for tests that count collections.
    pub fn scraper(&self) -> &Arc<Scraper> {
        &self.scraper
    }

    /// Has the status page re-read the repository now (something was written to it from
    /// outside the daemon, e.g. `pgvigil dev`'s first backup).
    pub fn status_changed(&self) {
        self.status.changed();
    }

    /// The readiness conditions not met yet (what `/readyz` lists).
    pub fn unmet_conditions(&self) -> Vec<Condition> {
        self.readiness.unmet()
    }
}
