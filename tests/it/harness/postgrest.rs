//! A stand-in for PostgREST (which cannot be installed on these machines): it serves the
//! responses PostgREST documents — `Content-Range` (`0-24/*`, `0-24/100` with
//! `Prefer: count=exact`), `Proxy-Status: PostgREST; error=PGRST116` with PostgREST's error
//! JSON, `Server-Timing` stages — and an admin server with `/live`, `/ready` (200 or 503)
//! and `/metrics` with the `pgrst_*` families of PostgREST's observability docs. The API can
//! be served over HTTPS ([`FakePostgrest::start_tls`]), as PostgREST behind TLS would be.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

/// The admin /metrics payload, as PostgREST 12 documents it.
pub const ADMIN_METRICS: &str = "# HELP pgrst_schema_cache_query_time_seconds The query time in seconds of the last schema cache load
# TYPE pgrst_schema_cache_query_time_seconds gauge
pgrst_schema_cache_query_time_seconds 1.5e-2
# HELP pgrst_schema_cache_loads_total The total number of times the schema cache was loaded
# TYPE pgrst_schema_cache_loads_total counter
pgrst_schema_cache_loads_total{status=\"FAIL\"} 352.0
pgrst_schema_cache_loads_total{status=\"SUCCESS\"} 3.0
# HELP pgrst_db_pool_max Max pool connections
# TYPE pgrst_db_pool_max gauge
pgrst_db_pool_max 10.0
# HELP pgrst_db_pool_waiting Requests waiting to acquire a pool connection
# TYPE pgrst_db_pool_waiting gauge
pgrst_db_pool_waiting 0.0
# HELP pgrst_db_pool_available Available connections in the pool
# TYPE pgrst_db_pool_available gauge
pgrst_db_pool_available 1.0
# HELP pgrst_db_pool_timeouts_total The total number of pool connection timeouts
# TYPE pgrst_db_pool_timeouts_total counter
pgrst_db_pool_timeouts_total 7.0
";

/// What the upstream saw and how it should behave.
#[derive(Default)]
pub struct UpstreamState {
    pub ready: AtomicBool,
    /// Headers of every API request received.
    pub seen: Mutex<Vec<HeaderMap>>,
}

/// A running stand-in: API on `api`, admin server on `admin`.
pub struct FakePostgrest {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub state: Arc<UpstreamState>,
    token: CancellationToken,
}

impl Drop for FakePostgrest {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn pgrst_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"code": code, "message": message, "details": null, "hint": null});
    (
        status,
        [
            ("content-type", "application/json; charset=utf-8"),
            ("proxy-status", &format!("PostgREST; error={code}")),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn articles(
    State(s): State<Arc<UpstreamState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    s.seen.lock().map(|mut v| v.push(headers.clone())).ok();
    let limit: usize = q
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(25);
    let rows: Vec<serde_json::Value> = (0..limit)
        .map(|i| serde_json::json!({"id": i, "title": format!("article {i}")}))
        .collect();
    let exact = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("count=exact"));
    let range = match (limit, exact) {
        (0, true) => "*/0".to_string(),
        (0, false) => "*/*".to_string(),
        (n, true) => format!("0-{}/100", n - 1),
        (n, false) => format!("0-{}/*", n - 1),
    };
    let mut resp = (
        StatusCode::OK,
        [
            (
                "content-type",
                "application/json; charset=utf-8".to_string(),
            ),
            ("content-range", range),
            (
                "server-timing",
                "jwt;dur=0.1, parse;dur=0.2, plan;dur=0.3, transaction;dur=1.5, response;dur=0.4"
                    .to_string(),
            ),
        ],
        serde_json::Value::Array(rows).to_string(),
    )
        .into_response();
    if let Some(id) = headers.get("x-request-id") {
        resp.headers_mut().insert("x-seen-request-id", id.clone());
    }
    resp
}

async fn missing(State(s): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    s.seen.lock().map(|mut v| v.push(headers)).ok();
    pgrst_error(
        StatusCode::NOT_ACCEPTABLE,
        "PGRST116",
        "JSON object requested, multiple (or no) rows returned",
    )
}

async fn unavailable(State(s): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    s.seen.lock().map(|mut v| v.push(headers)).ok();
    pgrst_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "PGRST001",
        "Database client error. Retrying the connection.",
    )
}

async fn login(State(s): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    s.seen.lock().map(|mut v| v.push(headers)).ok();
    (
        [("content-type", "application/json")],
        "{\"token\":\"opaque\"}",
    )
        .into_response()
}

async fn slow() -> Response {
    tokio::time::sleep(Duration::from_secs(10)).await;
    "late".into_response()
}

async fn big() -> Response {
    // 4 MiB in 64 KiB chunks, streamed.
    let chunks =
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024])));
    Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
}

async fn ready(State(s): State<Arc<UpstreamState>>) -> StatusCode {
    if s.ready.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn serve(router: Router, token: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
    });
    addr
}

impl FakePostgrest {
    /// Starts the API and admin listeners on free loopback ports.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Like [`FakePostgrest::start`], with the API served over HTTPS with `cert`.
    pub async fn start_tls(cert: &super::tls::CertFiles) -> Self {
        Self::start_with(Some(cert)).await
    }

    async fn start_with(cert: Option<&super::tls::CertFiles>) -> Self {
        let state = Arc::new(UpstreamState {
            ready: AtomicBool::new(true),
            ..Default::default()
        });
        let token = CancellationToken::new();
        let api = Router::new()
            .route("/articles", get(articles))
            .route("/missing", get(missing))
            .route("/unavailable", get(unavailable))
            .route("/rpc/login", post(login))
            .route("/slow", get(slow))
            .route("/big", get(big))
            .with_state(state.clone());
        let admin = Router::new()
            .route("/live", get(|| async { StatusCode::OK }))
            .route("/ready", get(ready))
            .route(
                "/metrics",
                get(|| async {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        ADMIN_METRICS,
                    )
                }),
            )
            .with_state(state.clone());
        Self {
            api: super::https::serve(api, cert, token.clone()).await,
            admin: serve(admin, token.clone()).await,
            state,
            token,
        }
    }

    /// Stops both listeners.
    pub fn stop(&self) {
        self.token.cancel();
    }
}
