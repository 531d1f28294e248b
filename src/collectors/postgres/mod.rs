//! The PostgreSQL collector. Owns the connection budget: one persistent session for the
//! cluster-wide queries (kept by a background task that reconnects with backoff), and at
//! most `max_database_connections` short-lived sessions for per-database queries, which
//! run only when the slow cache is refreshed. A scrape therefore issues a fixed number of
//! statements whatever the number of databases or tables.

mod activity;
mod cluster;
mod custom;
mod database;
mod io;
mod replication;
mod settings;
mod statements;
mod tables;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{Mutex, RwLock, Semaphore};
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use super::spec::{Built, QuerySpec};
use super::ScrapeMetrics;
use crate::config::PostgresSettings;
use crate::metrics::{catalogue as cat, Family};
use crate::pg::{connect, db_error_message, ConnectOptions};

/// The cluster-wide queries run on every scrape.
const FAST: &[&QuerySpec] = &[
    &database::STAT_DATABASE,
    &activity::ACTIVITY,
    &activity::ACTIVITY_FOLDED,
    &activity::LONG_RUNNING,
    &activity::PROCESS_IDLE,
    &database::PER_DATABASE,
    &activity::LOCKS,
    &replication::STAT_REPLICATION,
    &replication::SLOTS,
    &cluster::CLUSTER,
    &cluster::WAL_DIR,
    &cluster::ROLES,
    &io::STAT_IO,
];

/// A live session with its queries prepared for the server's version.
struct Session {
    client: Client,
    version: i32,
    fast: Vec<(Built, Statement)>,
    /// pg_stat_statements in the DSN's database, if installed.
    statements: Option<statements::Installed>,
}

/// Results of the expensive collectors, reused for `slow_collectors_interval`.
struct SlowCache {
    families: Vec<Family>,
    at: Instant,
}

struct Inner {
    settings: PostgresSettings,
    opts: ConnectOptions,
    session: RwLock<Option<Arc<Session>>>,
    slow: Mutex<Option<SlowCache>>,
    slow_refreshing: AtomicBool,
    db_connections: Semaphore,
    custom: custom::CustomQueries,
    /// Connection attempts made so far; a scrape before the first one waits for it.
    attempts: tokio::sync::watch::Sender<u64>,
}

/// Collects PostgreSQL metrics; cheap to clone.
#[derive(Clone)]
pub struct PostgresCollector {
    inner: Arc<Inner>,
}

impl PostgresCollector {
    /// Creates the collector and starts its connection task (stops on `token`).
    pub fn start(
        settings: PostgresSettings,
        token: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        let opts = ConnectOptions::from_settings(&settings);
        let inner = Arc::new(Inner {
            db_connections: Semaphore::new(settings.max_database_connections),
            custom: custom::CustomQueries::new(settings.queries.clone()),
            settings,
            opts,
            session: RwLock::new(None),
            slow: Mutex::new(None),
            slow_refreshing: AtomicBool::new(false),
            attempts: tokio::sync::watch::Sender::new(0),
        });
        tracker.spawn(maintain(inner.clone(), token));
        Self { inner }
    }

    /// Whether a session is currently open.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .session
            .read()
            .await
            .as_ref()
            .is_some_and(|s| !s.client.is_closed())
    }
}

#[async_trait::async_trait]
impl super::Collector for PostgresCollector {
    /// Runs one collection into `out`; returns whether PostgreSQL was up.
    async fn collect(&self, metrics: &ScrapeMetrics, out: &mut Vec<Family>) -> bool {
        // Right after start, wait (bounded) for the first connection attempt rather than
        // reporting a down server that was never tried.
        let mut attempts = self.inner.attempts.subscribe();
        if *attempts.borrow() == 0 {
            let patience = self.inner.settings.connect_timeout + Duration::from_millis(500);
            let _ = tokio::time::timeout(patience, attempts.wait_for(|n| *n > 0)).await;
        }
        let session = self.inner.session.read().await.clone();
        let up = match session {
            Some(s) if !s.client.is_closed() => self.collect_session(&s, metrics, out).await,
            _ => false,
        };
        if !up {
            // Never serve values from before the outage: pg_up 0 and nothing else.
            out.clear();
            for spec in FAST {
                metrics.record(spec.name, Duration::ZERO, false);
            }
        }
        if let Some(server) = &self.inner.settings.server_label {
            add_server_label(out, server);
        }
        let mut fam = Family::new(&cat::PG_UP);
        fam.push(Vec::<String>::new(), if up { 1.0 } else { 0.0 });
        out.insert(0, fam);
        up
    }
}

/// The families postgres_exporter 0.19 labels with `server` (its built-in legacy maps and
/// `pg_settings`); `[postgres] server_label` adds it to the same ones.
static SERVER_LABELLED: &[&crate::metrics::MetricDef] = &[
    &cat::PG_STAT_ACTIVITY_COUNT,
    &cat::PG_STAT_ACTIVITY_MAX_TX_DURATION,
    &cat::PG_STAT_REPLICATION_PG_CURRENT_WAL_LSN_BYTES,
    &cat::PG_STAT_REPLICATION_PG_WAL_LSN_DIFF,
    &cat::PG_STAT_REPLICATION_REPLY_TIME,
    &cat::PG_REPLICATION_SLOTS_ACTIVE,
    &cat::PG_REPLICATION_SLOTS_PG_WAL_LSN_DIFF,
    &cat::PG_STAT_ARCHIVER_ARCHIVED_COUNT,
    &cat::PG_STAT_ARCHIVER_FAILED_COUNT,
    &cat::PG_STAT_ARCHIVER_LAST_ARCHIVE_AGE,
    &cat::PG_STAT_DATABASE_CONFLICTS_CONFL_TABLESPACE,
    &cat::PG_STAT_DATABASE_CONFLICTS_CONFL_LOCK,
    &cat::PG_STAT_DATABASE_CONFLICTS_CONFL_SNAPSHOT,
    &cat::PG_STAT_DATABASE_CONFLICTS_CONFL_BUFFERPIN,
    &cat::PG_STAT_DATABASE_CONFLICTS_CONFL_DEADLOCK,
    &cat::PG_SETTINGS,
];

/// Adds `server="<host:port>"` to every sample of the families in [`SERVER_LABELLED`].
fn add_server_label(out: &mut [Family], server: &str) {
    for fam in out.iter_mut() {
        if SERVER_LABELLED.iter().any(|d| d.matches(&fam.name)) {
            for sample in &mut fam.samples {
                sample
                    .labels
                    .push((std::borrow::Cow::Borrowed("server"), server.to_string()));
            }
        }
    }
}

impl PostgresCollector {
    async fn collect_session(
        &self,
        s: &Arc<Session>,
        metrics: &ScrapeMetrics,
        out: &mut Vec<Family>,
    ) -> bool {
        let timeout = self.inner.settings.statement_timeout;
        // The queries are issued together: tokio-postgres pipelines them on one connection.
        let results = join_all(s.fast.iter().map(|(built, stmt)| async move {
            let start = Instant::now();
            let res = tokio::time::timeout(timeout, s.client.query(stmt, &[])).await;
            (built, start.elapsed(), res)
        }))
        .await;
        for (built, took, res) in results {
            match res {
                Ok(Ok(rows)) => {
                    built.read(&rows, out);
                    metrics.record(built.name, took, true);
                }
                Ok(Err(e)) => {
                    tracing::warn!(event = "collector.failed", collector = built.name, error = %db_error_message(&e), "collector failed");
                    metrics.record(built.name, took, false);
                }
                Err(_) => {
                    tracing::warn!(event = "collector.timeout", collector = built.name, timeout = ?timeout, "collector timed out");
                    metrics.record(built.name, took, false);
                }
            }
        }
        if s.client.is_closed() {
            return false;
        }
        self.slow_families(s, metrics, out).await;
        self.inner
            .custom
            .collect(&s.client, &self.inner.opts, metrics, out)
            .await;
        !s.client.is_closed()
    }

    /// Appends the cached expensive results; refreshes them when stale (in the background,
    /// except the very first time, so the first scrape already has them).
    async fn slow_families(
        &self,
        s: &Arc<Session>,
        metrics: &ScrapeMetrics,
        out: &mut Vec<Family>,
    ) {
        let interval = self.inner.settings.slow_collectors_interval;
        let need_sync = {
            let cache = self.inner.slow.lock().await;
            match cache.as_ref() {
                Some(c) => {
                    if c.at.elapsed() >= interval
                        && !self.inner.slow_refreshing.swap(true, Ordering::AcqRel)
                    {
                        let this = self.clone();
                        let s = s.clone();
                        let metrics = metrics.clone();
                        tokio::spawn(async move {
                            this.refresh_slow(&s, &metrics).await;
                            this.inner.slow_refreshing.store(false, Ordering::Release);
                        });
                    }
                    false
                }
                None => true,
            }
        };
        if need_sync && !self.inner.slow_refreshing.swap(true, Ordering::AcqRel) {
            self.refresh_slow(s, metrics).await;
            self.inner.slow_refreshing.store(false, Ordering::Release);
        }
        if let Some(c) = self.inner.slow.lock().await.as_ref() {
            out.extend(c.families.iter().cloned());
        }
    }

    async fn refresh_slow(&self, s: &Arc<Session>, metrics: &ScrapeMetrics) {
        let inner = &self.inner;
        let timeout = inner.settings.statement_timeout;
        let mut families = Vec::new();
        let (settings_res, sizes_res, statements_res, tables_res) = tokio::join!(
            timed(metrics, "settings", timeout, server_settings(&inner.opts)),
            timed(
                metrics,
                "database_size",
                timeout,
                database::collect_sizes(&s.client, s.version)
            ),
            timed(
                metrics,
                "statements",
                timeout,
                statements::collect(
                    &s.client,
                    s.statements.as_ref(),
                    inner.settings.top_statements
                )
            ),
            // Per-database work has its own per-connection timeouts inside.
            timed(
                metrics,
                "tables",
                timeout * 4,
                tables::collect(
                    &s.client,
                    &inner.opts,
                    &inner.settings,
                    &inner.db_connections,
                    s.version
                )
            ),
        );
        for res in [settings_res, sizes_res, statements_res, tables_res] {
            families.extend(res);
        }
        *inner.slow.lock().await = Some(SlowCache {
            families,
            at: Instant::now(),
        });
    }
}

/// Errors a collector query can return.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("{0}")]
    Postgres(String),
    #[error(transparent)]
    Connect(#[from] crate::pg::conn::ConnectError),
}

impl From<tokio_postgres::Error> for CollectError {
    fn from(e: tokio_postgres::Error) -> Self {
        CollectError::Postgres(db_error_message(&e))
    }
}

/// Runs one collector future under a timeout, records it, and returns its families
/// (none on failure).
async fn timed(
    metrics: &ScrapeMetrics,
    name: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<Vec<Family>, CollectError>>,
) -> Vec<Family> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(f)) => {
            metrics.record(name, start.elapsed(), true);
            f
        }
        Ok(Err(e)) => {
            tracing::warn!(event = "collector.failed", collector = name, error = %e, "collector failed");
            metrics.record(name, start.elapsed(), false);
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(event = "collector.timeout", collector = name, timeout = ?timeout, "collector timed out");
            metrics.record(name, start.elapsed(), false);
            Vec::new()
        }
    }
}

/// `pg_settings` as every other session sees it: read over a short session without
/// pgvigil's own `statement_timeout`/`lock_timeout` startup options (bounded by the
/// caller's client-side timeout instead), which would otherwise be what it shows.
async fn server_settings(opts: &ConnectOptions) -> Result<Vec<Family>, CollectError> {
    let opts = ConnectOptions {
        session_limits: false,
        ..opts.clone()
    };
    let conn = connect(&opts, None).await?;
    settings::collect(&conn.client).await
}

async fn open_session(
    inner: &Inner,
) -> Result<(Arc<Session>, tokio::task::JoinHandle<()>), CollectError> {
    let conn = connect(&inner.opts, None).await?;
    let version = conn.server_version_num;
    let mut fast = Vec::with_capacity(FAST.len());
    for spec in FAST {
        if let Some(built) = spec.build(version) {
            let stmt = conn.client.prepare(&built.sql).await.map_err(|e| {
                CollectError::Postgres(format!(
                    "preparing collector {}: {}",
                    built.name,
                    db_error_message(&e)
                ))
            })?;
            fast.push((built, stmt));
        }
    }
    let statements = statements::installed(&conn.client).await?;
    Ok((
        Arc::new(Session {
            client: conn.client,
            version,
            fast,
            statements,
        }),
        conn.driver,
    ))
}

/// Keeps one session open: connect, wait for it to close, reconnect with backoff
/// (250 ms doubling to 5 s, so `pg_up` recovers within seconds of a restart).
async fn maintain(inner: Arc<Inner>, token: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    let mut was_up = None;
    loop {
        let attempt = tokio::select! {
            _ = token.cancelled() => return,
            r = open_session(&inner) => r,
        };
        if let Ok((session, _)) = &attempt {
            // Publish the session before counting the attempt, so a waiting scrape sees it.
            *inner.slow.lock().await = None;
            *inner.session.write().await = Some(session.clone());
        }
        inner.attempts.send_modify(|n| *n += 1);
        match attempt {
            Ok((session, driver)) => {
                backoff = Duration::from_millis(250);
                tracing::info!(event = "postgres.connected", target = %inner.settings.dsn_display, server_version_num = session.version, "connected to PostgreSQL");
                was_up = Some(true);
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = driver => {}
                }
                *inner.session.write().await = None;
                tracing::warn!(event = "postgres.disconnected", target = %inner.settings.dsn_display, "lost the PostgreSQL connection; reconnecting");
            }
            Err(e) => {
                if was_up != Some(false) {
                    tracing::warn!(event = "postgres.connect.failed", target = %inner.settings.dsn_display, error = %e, "cannot connect to PostgreSQL; retrying with backoff");
                    was_up = Some(false);
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spec the collector runs, fast and slow.
    fn all_specs() -> impl Iterator<Item = &'static QuerySpec> {
        FAST.iter()
            .copied()
            .chain(database::SLOW_SPECS.iter().copied())
            .chain([&tables::TABLES, &tables::INDEXES, &statements::STATEMENTS])
    }

    #[test]
    fn the_catalogue_says_which_major_has_each_family() {
        use crate::metrics::catalogue::{exists_on, PG_MAJORS};
        for major in 13..=18u32 {
            let built: Vec<&str> = all_specs()
                .filter_map(|s| s.build(major as i32 * 10000))
                .flat_map(|b| b.values.into_iter().map(|d| d.name))
                .collect();
            for (def, _, _) in PG_MAJORS {
                assert_eq!(
                    built.contains(&def.name),
                    exists_on(def, major),
                    "{} on PostgreSQL {major}",
                    def.name
                );
            }
            for name in &built {
                let def = crate::metrics::catalogue::lookup(name).unwrap();
                assert!(exists_on(def, major), "{name} on {major}");
            }
        }
    }

    #[test]
    fn every_spec_builds_for_supported_versions_and_labels_match() {
        for v in [130000, 140000, 150000, 160000, 170000, 180000] {
            for spec in all_specs() {
                let Some(b) = spec.build(v) else { continue };
                assert!(b.sql.starts_with("SELECT "), "{}", b.sql);
                for def in &b.values {
                    assert_eq!(
                        def.labels.len(),
                        spec.labels.len(),
                        "{} in {}",
                        def.name,
                        spec.name
                    );
                }
            }
        }
    }
}
