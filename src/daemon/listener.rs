//! The one place where pgvigil binds a port and serves HTTP on it: the metrics server
//! (`server.listen`) and the API proxy (`api_proxy.listen`) both go through [`serve`], so
//! what a public listener needs is done here once for both:
//!
//! - TLS (`tls.rs`): certificate, key and client CA re-read when they change on disk;
//!   ALPN offers `h2` and `http/1.1` (only `http/1.1` when `http2` is off).
//! - The TLS handshake and each request's headers must arrive within
//!   `header_read_timeout` (slowloris); a connection with no bytes moving for
//!   `idle_timeout` is shut down gracefully (a request in flight still finishes; one that
//!   still has not after another `idle_timeout` is dropped).
//! - At most `max_connections` connections are served at once. Excess connections are
//!   **refused**: accepted and closed at once (the client sees the connection closed or
//!   reset, and retries), not queued, so a flood cannot pile up work or file descriptors
//!   behind the cap. Refusals are logged (`http.connection.refused`) at most every 10 s.
//! - Configured response headers (exporter-toolkit `http_server_config.headers`).
//!
//! Handlers see the peer address as `ConnectInfo<SocketAddr>`, as with `axum::serve`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::Reloading;
use super::StartError;
use crate::config::ListenerSettings;

/// What a listener serves.
#[derive(Clone)]
pub enum Service {
    /// An axum router: the metrics server (routes, authentication, the status page).
    Router(axum::Router),
    /// One handler for every request, without routing or extractors: the API proxy, where
    /// axum's per-request work (the request's extensions, a boxed body, the route lookup)
    /// is measurable.
    Handler(crate::proxy::Handler),
}

/// What one listener serves with: everything a connection task needs, shared.
struct Shared {
    key: &'static str,
    service: Service,
    /// Added to every response (`http_server_config.headers`).
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    tls: Option<Arc<Reloading>>,
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    token: CancellationToken,
}

/// Binds `addr` (the configuration key `key` names it in errors), then serves what `make`
/// builds on it with `settings` (TLS, timeouts, connection cap, headers, worker
/// threads) until `token` is cancelled, as tasks of `tracker`. Returns the bound address (a
/// port of 0 picks a free one). TLS files that cannot be loaded stop the start.
///
/// With `settings.workers` = 0 the listener runs on the daemon's runtime and `make` is
/// called once. With N ≥ 1 it runs on N threads of its own, each a single-threaded runtime
/// with its own `SO_REUSEPORT` socket on the same address (the kernel spreads connections
/// over them) and its own router from `make`: a request, its upstream connection and its
/// response body then stay on one thread, with no wake-ups across threads.
pub async fn serve(
    key: &'static str,
    addr: SocketAddr,
    settings: &ListenerSettings,
    make: &dyn Fn() -> Service,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<SocketAddr, StartError> {
    let tls = match &settings.tls {
        Some(t) => Some(Arc::new(Reloading::load(key, t.clone(), settings.http2)?)),
        None => None,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if !settings.http2 {
        builder = builder.http1_only();
    }
    let bind = |source| StartError::Bind { key, addr, source };
    let headers = Arc::new(parse_headers(key, &settings.headers)?);
    let shared = |service| -> Result<Arc<Shared>, StartError> {
        Ok(Arc::new(Shared {
            key,
            service,
            headers: headers.clone(),
            tls: tls.clone(),
            builder: builder.clone(),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            token: token.clone(),
        }))
    };
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    if settings.workers == 0 {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        tracker.spawn(accept_loop(
            listener,
            shared(make())?,
            slots,
            tracker.clone(),
        ));
        return Ok(bound);
    }
    // Bind every socket before serving on any, so that a failure leaves nothing behind.
    let first = reuseport_socket(addr).map_err(bind)?;
    let bound = first.local_addr().map_err(bind)?;
    let mut sockets = vec![first];
    for _ in 1..settings.workers {
        sockets.push(reuseport_socket(bound).map_err(bind)?);
    }
    for (i, socket) in sockets.into_iter().enumerate() {
        let shared = shared(make())?;
        let slots = slots.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind)?;
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("{}-{i}", key.split('.').next().unwrap_or(key)))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(socket) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(event = "http.listener.failed", listener = shared.key, worker = i, error = %e, "listener worker cannot serve its socket");
                            return;
                        }
                    };
                    let conns = TaskTracker::new();
                    accept_loop(listener, shared, slots, conns.clone()).await;
                    conns.close();
                    conns.wait().await;
                });
                let _ = done.send(());
            })
            .map_err(bind)?;
        tracker.spawn(async move {
            let _ = finished.await;
        });
    }
    Ok(bound)
}

/// A listening socket on `addr` that other sockets may share (`SO_REUSEPORT`), as a std
/// listener so that a worker's own runtime can take it.
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// The configured response headers, parsed once.
fn parse_headers(
    key: &'static str,
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, StartError> {
    headers
        .iter()
        .map(|(n, v)| {
            let bad = || StartError::Header {
                key,
                name: n.clone(),
            };
            Ok((
                HeaderName::try_from(n.as_str()).map_err(|_| bad())?,
                HeaderValue::try_from(v.as_str()).map_err(|_| bad())?,
            ))
        })
        .collect()
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    conns: TaskTracker,
) {
    let mut refused = 0u64;
    let mut last_report: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shared.token.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(event = "http.accept.failed", listener = shared.key, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    event = "http.connection.refused",
                    listener = shared.key,
                    refused,
                    "connection cap reached; refusing connections"
                );
                last_report = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(connection(shared.clone(), stream, peer, permit));
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    match &shared.tls {
        None => drive(&shared, TokioIo::new(io), peer, &activity).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            match tokio::time::timeout(shared.header_read_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => drive(&shared, TokioIo::new(stream), peer, &activity).await,
                Ok(Err(e)) => {
                    tracing::debug!(event = "http.tls.handshake.failed", listener = shared.key, peer = %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(event = "http.tls.handshake.timeout", listener = shared.key, peer = %peer, "TLS handshake timed out");
                }
            }
        }
    }
}

async fn drive<I>(shared: &Shared, io: I, peer: SocketAddr, activity: &Activity)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use futures_util::future::{Either, FutureExt};
    let (service, headers) = (shared.service.clone(), shared.headers.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let answered = match &service {
            Service::Router(router) => {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                Either::Left(tower_service::Service::call(&mut router, req))
            }
            Service::Handler(handle) => Either::Right(
                handle(req, peer).map(Ok::<axum::response::Response, std::convert::Infallible>),
            ),
        };
        let headers = headers.clone();
        answered.map(move |resp| {
            resp.map(|mut resp| {
                for (n, v) in headers.iter() {
                    resp.headers_mut().insert(n.clone(), v.clone());
                }
                resp
            })
        })
    });
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = shared.idle_timeout;
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let mut closing_since: Option<Instant> = None;
    // When bytes were last seen moving, to the tick's precision.
    let mut last_moved = Instant::now();
    // Made once: a new one per pass would register with the token and unregister again
    // every time the connection's task runs (twice per proxied request).
    let cancelled = shared.token.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(event = "http.connection.error", listener = shared.key, peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut cancelled, if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            _ = tick.tick() => {
                if activity.take() {
                    last_moved = Instant::now();
                }
                let idle_for = last_moved.elapsed();
                match closing_since {
                    None if idle_for >= idle => {
                        tracing::debug!(event = "http.connection.idle", listener = shared.key, peer = %peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(Instant::now());
                    }
                    Some(since) if since.elapsed() >= idle && idle_for >= idle => return,
                    _ => {}
                }
            }
        }
    }
}

/// Whether bytes moved on a connection since the connection's task last looked. A flag, not
/// a clock: reading the clock on every read and write was measurable at proxy rates; the
/// idle check reads it once per tick instead.
struct Activity {
    moved: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            moved: AtomicBool::new(true),
        }
    }

    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Whether bytes moved since the last call.
    fn take(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A TCP stream that records when bytes move (below TLS, so handshakes count too).
    struct Tracked {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
