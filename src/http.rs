//! The metrics server's routes: `/metrics` (Prometheus text or OpenMetrics, by `Accept`),
//! `/healthz` (the process is alive), `/readyz` (every readiness condition met; the body
//! lists the ones that are not), the status page (`/` and `/status`, and `/status.json`:
//! built from the daemon's cached facts and its own health, never from a repository read)
//! and `/internal/wal-push` (reports from `wal-push` processes). This module only routes:
//! it reads the daemon's readiness through the [`Readiness`] trait and never changes it,
//! and the listener itself is `daemon::listener`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::backup::metrics::WalMetrics;
use crate::backup::wal_report::{self, WalPushReport};
use crate::collectors::Scraper;
use crate::metrics::{encode, family, Format};

/// What `/readyz` reads: the conditions the daemon still waits for (empty when ready).
pub trait Readiness: Send + Sync {
    /// The unmet conditions, for humans.
    fn unmet(&self) -> Vec<String>;
}

/// Shared state of the HTTP handlers.
pub struct HttpState {
    pub scraper: Arc<Scraper>,
    pub registry: prometheus::Registry,
    pub readiness: Arc<dyn Readiness>,
    /// Where `wal-push` reports land.
    pub wal_metrics: WalMetrics,
    /// The facts of the status page, kept up to date by the daemon's loops.
    pub status: Arc<crate::status::cache::Cache>,
}

/// The kubelet probes: open without credentials unless `server.protect_probes`.
pub const PROBE_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Builds the router. Authentication wraps it (`daemon::auth`), so every route here is
/// protected when credentials are configured, except the probes and the loopback-only
/// wal-push report.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(wal_report::PATH, axum::routing::post(wal_push_report))
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .with_state(state)
}

/// The status of the daemon's cached facts, with its own health (None before it has any).
fn status(state: &HttpState) -> Option<crate::status::Status> {
    let daemon = crate::status::Daemon {
        url: String::new(),
        reachable: true,
        error: None,
        version: Some(crate::VERSION.to_string()),
        unmet: state.readiness.unmet(),
        failing_collectors: state.scraper.failing(),
    };
    // The wal-push reports keep the RPO current between two PITR checks.
    let pushed = state.wal_metrics.last_pushed.get();
    let last_push = (pushed > 0.0)
        .then(|| chrono::DateTime::from_timestamp_millis((pushed * 1000.0) as i64))
        .flatten();
    state.status.status(Some(daemon), last_push)
}

async fn status_page(State(state): State<Arc<HttpState>>) -> Response {
    match status(&state) {
        Some(s) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            crate::status::page::render(&s),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no status yet\n").into_response(),
    }
}

async fn status_json(State(state): State<Arc<HttpState>>) -> Response {
    match status(&state).map(|s| serde_json::to_string_pretty(&s)) {
        Some(Ok(body)) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no status yet\n").into_response(),
    }
}

/// `wal-push` processes report each push here; only loopback peers are accepted (the
/// archive_command runs in the same pod or host).
async fn wal_push_report(
    State(state): State<Arc<HttpState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Bytes,
) -> StatusCode {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN;
    }
    match serde_json::from_slice::<WalPushReport>(&body) {
        Ok(r) if r.is_valid() => {
            state.wal_metrics.pushed(r.ok, r.seconds);
            StatusCode::NO_CONTENT
        }
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let unmet = state.readiness.unmet();
    if unmet.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", unmet.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = state.scraper.scrape().await;
    let mut own = family::from_registry(state.registry.gather());
    let mut families = Vec::with_capacity(snapshot.families.len() + own.len());
    families.extend(snapshot.families.iter().cloned());
    families.append(&mut own);
    let body = encode(&families, format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
