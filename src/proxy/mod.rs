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
pub mod upstream;

mod observed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::config::ApiProxySettings;
use observed::{Finish, Observed};
use route::{method_label, route_of, BoundedLabels};
use upstream::UpstreamBody;

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

/// What every request handler shares, whatever thread it runs on.
pub(crate) struct Shared {
    settings: ApiProxySettings,
    target: Target,
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
    #[error("api_proxy.upstream {0} names no host")]
    Upstream(String),
}

/// A handler's state: the shared part, and the upstream connections and metric handles of
/// the worker thread it runs on.
struct Worker {
    shared: Arc<Shared>,
    upstream: Arc<upstream::Upstream>,
    /// The request metrics of each (route, method, code, role) seen on this worker, so that
    /// recording a request neither hashes its label values nor takes the metric families'
    /// locks. Keyed by the interned labels' addresses (they live as long as the process).
    handles: std::sync::Mutex<HashMap<HandleKey, Arc<RequestHandles>>>,
    /// The `X-Forwarded-For` value of the last peer that sent none (formatting an address
    /// took ~1,400 instructions a request; behind a gateway the peers are few).
    last_peer: std::sync::Mutex<Option<(std::net::IpAddr, HeaderValue)>>,
}

type HandleKey = (usize, &'static str, u16, usize);

/// The metrics one request records.
struct RequestHandles {
    requests: IntCounter,
    duration: Histogram,
    rows: IntCounter,
}

/// Entries a worker's handle cache may hold before it starts over (the label values are
/// bounded, so only an unusual mix of codes gets here).
const MAX_HANDLES: usize = 4096;

impl Worker {
    /// `ip` as an `X-Forwarded-For` value.
    fn peer_header(&self, ip: std::net::IpAddr) -> Option<HeaderValue> {
        let mut last = self.last_peer.lock().ok()?;
        if let Some((seen, value)) = &*last {
            if *seen == ip {
                return Some(value.clone());
            }
        }
        let value = HeaderValue::from_str(&ip.to_string()).ok()?;
        *last = Some((ip, value.clone()));
        Some(value)
    }

    /// The handles for these labels, made by `make` the first time.
    fn handles(
        &self,
        route: &'static str,
        method: &'static str,
        code: u16,
        role: &'static str,
        make: impl FnOnce() -> RequestHandles,
    ) -> Arc<RequestHandles> {
        let key = (
            route.as_ptr() as usize,
            method,
            code,
            role.as_ptr() as usize,
        );
        let mut map = match self.handles.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        if map.len() >= MAX_HANDLES {
            map.clear();
        }
        let h = Arc::new(make());
        map.insert(key, h.clone());
        h
    }
}

/// What the listener calls with every request and its peer (the proxy needs no routing).
pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
            SocketAddr,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// The proxy, ready to be served: [`Proxy::handler`] makes the handler of one worker thread.
pub struct Proxy {
    shared: Arc<Shared>,
    /// Where each worker's upstream connections go (checked at start).
    upstream: upstream::Upstream,
}

impl Proxy {
    /// The handler of one listener worker, with upstream connections of its own.
    pub fn handler(&self) -> Handler {
        let worker = Arc::new(Worker {
            shared: self.shared.clone(),
            upstream: Arc::new(self.upstream.fresh()),
            handles: std::sync::Mutex::default(),
            last_peer: std::sync::Mutex::default(),
        });
        Arc::new(move |req, peer| Box::pin(handle(worker.clone(), peer, req)))
    }
}

/// The proxy (the daemon's listener serves its routers on `api_proxy.listen`). With
/// `jwks_url`, the key set is fetched once before this returns (a failure is logged and
/// counted, not fatal: the refresh keeps trying) and then refreshed by a task on `tracker`
/// that stops when `token` is cancelled.
pub async fn start(
    settings: ApiProxySettings,
    registry: &Registry,
    audit: AuditLog,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<Proxy, ProxyError> {
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
    let clients = client::Clients::new(&settings)?;
    let target = Target::new(&settings.upstream)
        .ok_or_else(|| ProxyError::Upstream(settings.upstream.to_string()))?;
    let upstream = clients
        .upstream(&target.scheme, &target.authority)
        .map_err(|why| ProxyError::Upstream(format!("{}: {why}", settings.upstream)))?;
    let jwks = match &settings.jwks_url {
        Some(url) => {
            let jwks = Arc::new(jwks::Jwks::new(
                url.clone(),
                clients.client(),
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
        target,
        settings,
    });
    Ok(Proxy { shared, upstream })
}

/// The request's `X-Request-Id` when it is a sane one (printable ASCII, at most 128 bytes),
/// else a new one. Kept as a header value: it is sent upstream and back to the client, and
/// a clone shares its bytes.
fn request_id(headers: &axum::http::HeaderMap) -> HeaderValue {
    headers
        .get(&headers::X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(random_request_id)
}

/// A version-4 UUID from a fast per-thread generator: request ids need uniqueness, not
/// secrecy, and a getrandom syscall per request is measurable at proxy rates.
fn random_request_id() -> HeaderValue {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::from_bytes(b)
        .hyphenated()
        .encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Where requests go: the upstream's scheme and authority, and its path prefix (empty when
/// the upstream URL has none, the common case, in which the request's path and query are
/// passed on as they are, without copying).
struct Target {
    scheme: axum::http::uri::Scheme,
    authority: axum::http::uri::Authority,
    /// The `Host` header the upstream gets (its own authority, as any HTTP client sends;
    /// the client's Host goes in `X-Forwarded-Host`).
    host: HeaderValue,
    prefix: String,
}

impl Target {
    fn new(base: &Uri) -> Option<Self> {
        let authority = base.authority()?.clone();
        Some(Self {
            scheme: base
                .scheme()
                .cloned()
                .unwrap_or(axum::http::uri::Scheme::HTTP),
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            authority,
            prefix: base.path().trim_end_matches('/').to_string(),
        })
    }

    /// The upstream request target of a request, in origin form (`/path?query`, under the
    /// upstream's path prefix), as HTTP/1.1 sends it to a server.
    fn uri(&self, req_uri: &Uri) -> Option<Uri> {
        let pq = match req_uri.path_and_query() {
            Some(pq) if self.prefix.is_empty() => pq.clone(),
            pq => {
                let pq = pq.map(|p| p.as_str()).unwrap_or("/");
                axum::http::uri::PathAndQuery::try_from(format!("{}{pq}", self.prefix)).ok()?
            }
        };
        Uri::from_parts({
            let mut parts = axum::http::uri::Parts::default();
            parts.path_and_query = Some(pq);
            parts
        })
        .ok()
    }
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let body = serde_json::json!({"code": code, "message": message, "details": null, "hint": null});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID, request_id.clone());
    resp
}

/// The client's `Content-Length` above `api_proxy.max_body_bytes`: answered 413 before
/// anything reaches the upstream. A chunked body is cut off at the limit instead (the
/// upstream request then fails); a request without a body is passed as it is.
fn limit_body(req: Request<Incoming>, max: u64) -> Result<Request<UpstreamBody>, u64> {
    use http_body::Body as _;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(max);
    }
    if req.body().is_end_stream() || declared.is_some() {
        // hyper itself stops a body at its declared length.
        return Ok(req.map(Either::Left));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    Ok(req.map(|b| Either::Right(http_body_util::Limited::new(b, limit))))
}

async fn handle(worker: Arc<Worker>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let shared = &worker.shared;
    let method = method_label(req.method());
    let route = shared.routes.label(route_of(req.uri().path()));
    let request_id = request_id(req.headers());
    let identity = shared
        .roles
        .identify(
            req.headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .await;
    let role_label = shared.role_labels.label(&identity.role);
    let mut finish = Finish {
        worker: worker.clone(),
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
    let refuse = |mut finish: Finish, status: StatusCode, code: &str, message: &str| {
        finish.code = status.as_u16();
        let resp = error_response(status, code, message, &finish.request_id);
        finish.complete(0);
        resp
    };

    let mut req = match limit_body(req, shared.settings.max_body_bytes) {
        Ok(req) => req,
        Err(max) => {
            let message = format!("request body larger than {max} bytes");
            return refuse(
                finish,
                StatusCode::PAYLOAD_TOO_LARGE,
                "PGVIGIL413",
                &message,
            );
        }
    };
    let Some(uri) = shared.target.uri(req.uri()) else {
        return refuse(
            finish,
            StatusCode::BAD_REQUEST,
            "PGVIGIL400",
            "bad request target",
        );
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
    let original_host = req
        .headers_mut()
        .remove(axum::http::header::HOST)
        .or(client_authority);
    headers::strip_hop_by_hop(req.headers_mut());
    let h = req.headers_mut();
    h.insert(axum::http::header::HOST, shared.target.host.clone());
    h.insert(headers::X_REQUEST_ID, request_id.clone());
    if let Some(host) = original_host {
        h.insert(headers::X_FORWARDED_HOST, host);
    }
    let xff = match h
        .get(&headers::X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("{prev}, {}", peer.ip())))
                .ok()
        }
        None => worker.peer_header(peer.ip()),
    };
    if let Some(v) = xff {
        h.insert(headers::X_FORWARDED_FOR, v);
    }
    // What the client spoke to this listener (PostgREST builds Location and OpenAPI URLs
    // from it).
    let proto = if shared.settings.listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    h.insert(headers::X_FORWARDED_PROTO, HeaderValue::from_static(proto));

    let sent =
        tokio::time::timeout(shared.settings.upstream_timeout, worker.upstream.send(req)).await;
    let upstream = match sent {
        Ok(Ok(answered)) => answered,
        Ok(Err(e)) => {
            tracing::debug!(event = "proxy.upstream.failed", error = %e, "upstream request failed");
            finish.upstream_error = Some("upstream_unreachable".into());
            return refuse(
                finish,
                StatusCode::BAD_GATEWAY,
                "PGVIGIL502",
                "upstream unreachable",
            );
        }
        Err(_) => {
            finish.upstream_error = Some("upstream_timeout".into());
            return refuse(
                finish,
                StatusCode::GATEWAY_TIMEOUT,
                "PGVIGIL504",
                "upstream timed out",
            );
        }
    };

    let (mut parts, body) = upstream.into_parts();
    finish.code = parts.status.as_u16();
    if let Some((rows, total)) = parts
        .headers
        .get(&headers::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::content_range)
    {
        finish.rows = Some(rows);
        finish.total = total;
    }
    finish.upstream_error = parts
        .headers
        .get(&headers::PROXY_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::proxy_status_error);
    if let Some(st) = parts
        .headers
        .get(&headers::SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
    {
        for (stage, secs) in headers::server_timing(st) {
            let stage = shared.stage_labels.label(&stage);
            shared
                .metrics
                .stages
                .with_label_values(&[stage])
                .observe(secs);
        }
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(headers::X_REQUEST_ID, request_id);
    Response::from_parts(parts, Body::new(Observed::new(body, finish)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uris_keep_the_query_and_the_upstream_prefix() {
        let plain = Target::new(&"http://127.0.0.1:3000".parse().unwrap()).unwrap();
        let req: Uri = "/articles?id=eq.1&select=title".parse().unwrap();
        assert_eq!(
            plain.uri(&req).unwrap().to_string(),
            "/articles?id=eq.1&select=title"
        );
        assert_eq!(plain.host, "127.0.0.1:3000");
        let prefixed = Target::new(&"https://api.internal/rest/".parse().unwrap()).unwrap();
        assert_eq!(
            prefixed.uri(&req).unwrap().to_string(),
            "/rest/articles?id=eq.1&select=title"
        );
        assert_eq!(prefixed.host, "api.internal");
        assert!(Target::new(&"/no-host".parse().unwrap()).is_none());
    }

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let with = |v: &str| {
            let req = Request::builder()
                .header("x-request-id", v)
                .body(Body::empty())
                .unwrap();
            request_id(req.headers())
        };
        assert_eq!(with("abc-123").to_str().unwrap(), "abc-123");
        let made = with(&"x".repeat(200));
        let made = made.to_str().unwrap();
        assert_eq!(made.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(made).unwrap().get_version_num(), 4);
    }
}
