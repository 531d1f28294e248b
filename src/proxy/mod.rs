//! A streaming reverse proxy in front of PostgREST. Bodies are never buffered: the
//! response body is wrapped so that bytes are counted as they pass and the request is
//! recorded when the body ends (or the client goes away). Each request yields
//! `pgvigil_api_*` metrics with bounded labels and one `access` audit line, which never
//! contains the Authorization header, the token or query-string values. The upstream may be
//! `https://` ([`client`]); tokens are verified with a secret or the keys at `jwks_url`
//! ([`jwks`], refreshed by a task on the daemon's tracker).

pub mod client;
pub mod headers;
pub mod jwks;
pub mod jwt;
pub mod probe;
pub mod route;

mod observed;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri};
use prometheus::{HistogramVec, IntCounterVec, Registry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::config::ApiProxySettings;
use observed::{Finish, Observed};
use route::{method_label, route_of, BoundedLabels};

/// Label values for roles and upstream error codes are capped at this many.
const MAX_ROLES: usize = 64;
const MAX_ERRORS: usize = 64;
const MAX_STAGES: usize = 16;

/// Latency buckets of the API histograms, from half a millisecond (a cached response) to
/// the upstream timeout.
const API_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

crate::own_metrics! {
    /// The proxy's metrics.
    pub struct ApiMetrics {
        pub requests: IntCounterVec = PGVIGIL_API_REQUESTS_TOTAL,
        pub duration: HistogramVec = PGVIGIL_API_REQUEST_DURATION_SECONDS with API_BUCKETS,
        pub rows: IntCounterVec = PGVIGIL_API_ROWS_TOTAL,
        pub upstream_errors: IntCounterVec = PGVIGIL_API_UPSTREAM_ERRORS_TOTAL,
        pub stages: HistogramVec = PGVIGIL_API_UPSTREAM_STAGE_DURATION_SECONDS with API_BUCKETS,
    }
}

/// Everything a request handler needs.
pub(crate) struct Shared {
    settings: ApiProxySettings,
    client: client::HttpClient,
    roles: jwt::RoleResolver,
    routes: BoundedLabels,
    role_labels: BoundedLabels,
    error_labels: BoundedLabels,
    stage_labels: BoundedLabels,
    pub(crate) metrics: ApiMetrics,
    pub(crate) audit: AuditLog,
    /// `auth.denied` ops events (through the same audit log).
    pub(crate) events: crate::events::Events,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The JWT secret file is unreadable, empty, shorter than 32 bytes or readable by others.
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    #[error("registering API metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] client::TlsError),
}

/// The proxy's handler as a router (the daemon's listener serves it on `api_proxy.listen`).
/// With `jwks_url`, the key set is fetched once before this returns (a failure is logged and
/// counted, not fatal: the refresh keeps trying) and then refreshed by a task on `tracker`
/// that stops when `token` is cancelled.
pub async fn router(
    settings: ApiProxySettings,
    registry: &Registry,
    audit: AuditLog,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<axum::Router, ProxyError> {
    let secret = match &settings.jwt_secret_file {
        Some(p) => Some(crate::config::read_secret_file(
            "api_proxy.jwt_secret_file",
            p,
        )?),
        None => None,
    };
    let secret = secret.map(|mut s| {
        while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            s.pop();
        }
        s
    });
    let client = client::build(&settings)?;
    let jwks = match &settings.jwks_url {
        Some(url) => {
            let jwks = Arc::new(jwks::Jwks::new(
                url.clone(),
                client.clone(),
                settings.claims.clone(),
                registry,
            )?);
            let _ = jwks.refresh().await;
            tracker.spawn(jwks.clone().run(settings.jwks_refresh, token));
            Some(jwks)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        roles: jwt::RoleResolver::new(
            settings.role_claim_key.clone(),
            settings.anon_role.clone(),
            secret.as_deref(),
            jwks,
            &settings.claims,
        ),
        routes: BoundedLabels::new(settings.max_routes),
        role_labels: BoundedLabels::new(MAX_ROLES),
        error_labels: BoundedLabels::new(MAX_ERRORS),
        stage_labels: BoundedLabels::new(MAX_STAGES),
        metrics: ApiMetrics::register(registry)?,
        events: crate::events::Events::new(audit.clone(), "run"),
        audit,
        client,
        settings,
    });
    Ok(axum::Router::new().fallback(handle).with_state(shared))
}

fn request_id(req: &Request<Body>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(random_request_id)
}

/// A version-4 UUID from a fast per-thread generator: request ids need uniqueness, not
/// secrecy, and a getrandom syscall per request is measurable at proxy rates.
fn random_request_id() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

fn upstream_uri(base: &Uri, req_uri: &Uri) -> Option<Uri> {
    let prefix = base.path().trim_end_matches('/');
    let pq = req_uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority()?.as_str())
        .path_and_query(format!("{prefix}{pq}"))
        .build()
        .ok()
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Body> {
    let body = serde_json::json!({"code": code, "message": message, "details": null, "hint": null});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request<Body>,
) -> Response<Body> {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = shared.routes.label(route_of(req.uri().path()));
    let request_id = request_id(&req);
    let identity = shared
        .roles
        .identify(
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
        )
        .await;
    let role_label = shared.role_labels.label(&identity.role);
    let mut finish = Finish {
        shared: shared.clone(),
        start,
        method,
        route,
        role_label,
        identity,
        request_id: request_id.clone(),
        code: 0,
        rows: None,
        total: None,
        upstream_error: None,
    };

    let Some(uri) = upstream_uri(&shared.settings.upstream, req.uri()) else {
        finish.code = 400;
        let resp = error_response(
            StatusCode::BAD_REQUEST,
            "PGVIGIL400",
            "bad request target",
            &request_id,
        );
        finish.complete(0);
        return resp;
    };
    // An HTTP/2 client (ALPN on a TLS listener) names the host in the URI's authority,
    // not in a Host header.
    let client_authority = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    *req.uri_mut() = uri;
    // The upstream connection speaks HTTP/1.1 whatever the client spoke: hyper refuses to
    // send an HTTP/2 request over it (every h2 request was a 502 before).
    *req.version_mut() = axum::http::Version::HTTP_11;
    let original_host = req.headers_mut().remove("host").or(client_authority);
    headers::strip_hop_by_hop(req.headers_mut());
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(host) = original_host {
        h.insert("x-forwarded-host", host);
    }
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    // What the client spoke to this listener (PostgREST builds Location and OpenAPI URLs
    // from it).
    let proto = if shared.settings.listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));

    let sent =
        tokio::time::timeout(shared.settings.upstream_timeout, shared.client.request(req)).await;
    let upstream = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(event = "proxy.upstream.failed", error = %e, "upstream request failed");
            finish.code = 502;
            finish.upstream_error = Some("upstream_unreachable".into());
            let resp = error_response(
                StatusCode::BAD_GATEWAY,
                "PGVIGIL502",
                "upstream unreachable",
                &request_id,
            );
            finish.complete(0);
            return resp;
        }
        Err(_) => {
            finish.code = 504;
            finish.upstream_error = Some("upstream_timeout".into());
            let resp = error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "PGVIGIL504",
                "upstream timed out",
                &request_id,
            );
            finish.complete(0);
            return resp;
        }
    };

    let (mut parts, body) = upstream.into_parts();
    finish.code = parts.status.as_u16();
    if let Some((rows, total)) = parts
        .headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(headers::content_range)
    {
        finish.rows = Some(rows);
        finish.total = total;
    }
    finish.upstream_error = parts
        .headers
        .get("proxy-status")
        .and_then(|v| v.to_str().ok())
        .and_then(headers::proxy_status_error);
    if let Some(st) = parts
        .headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
    {
        for (stage, secs) in headers::server_timing(st) {
            let stage = shared.stage_labels.label(&stage);
            shared
                .metrics
                .stages
                .with_label_values(&[stage.as_str()])
                .observe(secs);
        }
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        parts.headers.insert("x-request-id", v);
    }
    Response::from_parts(parts, Body::new(Observed::new(body, finish)))
}
