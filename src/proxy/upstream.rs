//! The proxy's connections to its one upstream: a pool of HTTP/1.1 connections per worker
//! thread, as nginx keeps its `keepalive` pool per worker. hyper-util's general client
//! serves any number of hosts: per request it builds and hashes a pool key, takes a lock,
//! races a checkout against a connect and spawns a task that waits to put the connection
//! back; with one upstream and one thread, a stack of idle connections does the same job.
//!
//! A connection goes back to the pool when its response body ended ([`Idle::release`],
//! called by the response body's wrapper): then it is ready for the next request. One
//! that fails before the request was written (the upstream closed it while idle) is
//! dropped and the request is sent on another, so a stale keep-alive connection never
//! turns into a 502. `https://` upstreams are spoken over rustls with the proxy's client
//! configuration (`api_proxy.upstream_ca_file` or the system roots), HTTP/1.1 by ALPN.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// What the proxy sends upstream: the client's body as it comes, or cut off at
/// `api_proxy.max_body_bytes` when its length was not declared.
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Limited<Incoming>>;

/// How many idle connections one worker keeps (nginx's `keepalive` in the benchmarks is
/// 64 per worker; PostgREST holds a database connection only while a request runs).
const MAX_IDLE: usize = 256;

/// Why a request did not reach the upstream or got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connecting to {0}: timed out after {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP with {0}: {1}")]
    Http(String, hyper::Error),
}

/// One worker's connections to the upstream.
pub struct Upstream {
    /// `host:port`, for connecting and for messages.
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
}

/// A connection whose response is still being read; [`Idle::release`] puts it back in the
/// pool once the body ended.
pub struct Idle {
    upstream: Arc<Upstream>,
    sender: SendRequest<UpstreamBody>,
}

impl Idle {
    /// The response body ended: the connection may carry the next request.
    pub fn release(self) {
        if let Ok(mut idle) = self.upstream.idle.lock() {
            if idle.len() < MAX_IDLE && !self.sender.is_closed() {
                idle.push(self.sender);
            }
        }
    }
}

impl Upstream {
    /// Connections to `scheme://host:port` (TLS with `tls` for `https`).
    pub fn new(
        scheme: &axum::http::uri::Scheme,
        authority: &axum::http::uri::Authority,
        tls: &rustls::ClientConfig,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let https = scheme == &axum::http::uri::Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = if https {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host} is not a name TLS can verify: {e}"))?;
            let mut config = tls.clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            address: format!("{}:{port}", authority.host()),
            tls,
            connect_timeout,
            idle: Mutex::default(),
        })
    }

    /// Connections to the same place with a pool of their own (one per worker thread).
    pub fn fresh(&self) -> Self {
        Self {
            address: self.address.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            idle: Mutex::default(),
        }
    }

    /// An idle connection that is ready, if the pool has one.
    async fn pooled(&self) -> Option<SendRequest<UpstreamBody>> {
        // Bounded by the pool's size: each pass removes one connection.
        loop {
            let mut sender = self.idle.lock().ok()?.pop()?;
            // Ready once the conn task saw the end of the previous response; closed when
            // the upstream hung up meanwhile.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Sends `req` on an idle connection, or a new one; the connection comes back with the
    /// response, to be released when its body ended.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Idle), UpstreamError> {
        // Bounded by the pool's size: a connection that could not take the request is
        // dropped.
        while let Some(mut sender) = self.pooled().await {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.idle(sender))),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closed meanwhile; try another.
                    Some(back) => req = back,
                    None => return Err(UpstreamError::Http(self.address.clone(), e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Http(self.address.clone(), e))?;
        Ok((resp, self.idle(sender)))
    }

    fn idle(self: &Arc<Self>, sender: SendRequest<UpstreamBody>) -> Idle {
        Idle {
            upstream: self.clone(),
            sender,
        }
    }

    /// A new connection, its task spawned on this thread's runtime.
    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(self.address.clone(), self.connect_timeout))?
        .map_err(|e| UpstreamError::Connect(self.address.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let http = |e| UpstreamError::Http(self.address.clone(), e);
        let sender = match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(http)?;
                tokio::spawn(drive(conn));
                sender
            }
            Some((connector, name)) => {
                let stream = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| {
                    UpstreamError::ConnectTimeout(self.address.clone(), self.connect_timeout)
                })?
                .map_err(|e| UpstreamError::Tls(self.address.clone(), e))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
                tokio::spawn(drive(conn));
                sender
            }
        };
        Ok(sender)
    }
}

/// Drives one upstream connection until it closes.
async fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(event = "proxy.upstream.connection", error = %e, "upstream connection ended");
    }
}
