//! The one place where pgvigil binds a port and serves HTTP on it: the metrics server
//! (`server.listen`) and the API proxy (`api_proxy.listen`) both go through [`serve`], so
//! what a public listener needs (TLS, timeouts, connection caps) is added here once for both.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::StartError;

/// Binds `addr` (the configuration key `key` names it in errors), then serves `router` on it
/// until `token` is cancelled, as a task of `tracker`. Returns the bound address (a port of 0
/// picks a free one). The handlers see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    key: &'static str,
    addr: SocketAddr,
    router: axum::Router,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<SocketAddr, StartError> {
    let bind = |source| StartError::Bind { key, addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    tracker.spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(event = "http.failed", listener = key, error = %e, "HTTP server failed");
        }
    });
    Ok(bound)
}
