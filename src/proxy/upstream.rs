//! The proxy's connections to its one upstream, and HTTP/1.1 spoken on them in the task of
//! the request itself.
//!
//! Why not hyper's client: its HTTP/1 connection is a task of its own, fed by a channel,
//! answering through a oneshot and streaming the body through another channel. For each
//! request that task was polled three times and the client connection's task woke it and
//! was woken back, which cost more instructions than everything else the proxy does per
//! request (callgrind: ~17,000 of ~45,000 on the worker thread). Here the request is
//! written and the response head read by the handler's own future, and the body is read by
//! the response body the client's connection polls: no task, no channel, no wake-up in
//! between. What it speaks is the narrow part of HTTP/1.1 a reverse proxy needs, with
//! httparse (hyper's parser) for the response head:
//!
//! - requests: the head as the handler built it; a body with a declared length is sent as
//!   it is, one without is sent chunked;
//! - responses: `1xx` (but `101`) are skipped; the body is framed by `Transfer-Encoding:
//!   chunked`, else `Content-Length`, else by the end of the connection, and is empty for
//!   `HEAD`, `204` and `304`; conflicting lengths are refused (a 502), as is a head larger
//!   than 64 KiB or with more than 100 headers.
//!
//! Connections live in a pool per worker thread, as nginx keeps its `keepalive` pool per
//! worker. One goes back when its response body was read to the end, the response allowed
//! it (HTTP/1.1, no `Connection: close`, a length or chunked framing) and nothing follows
//! it. A pooled connection is checked before use: one the upstream closed meanwhile (or
//! sent anything on) is dropped. A request that meets a closed connection anyway is sent
//! again on a new one when that cannot repeat its effect: its head could not be written,
//! or it is a `GET`/`HEAD`/`OPTIONS` without a body that got no byte of answer. So a stale
//! keep-alive connection never turns into a 502. `https://` upstreams are spoken over
//! rustls with the proxy's client configuration (`api_proxy.upstream_ca_file` or the
//! system roots), HTTP/1.1 by ALPN.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What the proxy sends upstream: the client's body as it comes, or cut off at
/// `api_proxy.max_body_bytes` when its length was not declared.
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Limited<Incoming>>;

/// How many idle connections one worker keeps (nginx's `keepalive` in the benchmarks is
/// 64 per worker; PostgREST holds a database connection only while a request runs).
const MAX_IDLE: usize = 256;
/// The largest response head read, and the most headers in it (hyper's limits).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_LINE: usize = 4096;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Why a request did not reach the upstream or got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0}: {1}")]
    Connect(String, io::Error),
    #[error("connecting to {0}: timed out after {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("TLS with {0}: {1}")]
    Tls(String, io::Error),
    #[error("talking to {0}: {1}")]
    Io(String, io::Error),
    #[error("{0} closed the connection before it answered")]
    Closed(String),
    #[error("the response of {0} cannot be passed on: {1}")]
    Protocol(String, &'static str),
    #[error("reading the request body: {0}")]
    RequestBody(String),
}

/// One worker's connections to the upstream.
pub struct Upstream {
    /// `host:port`, for connecting and for messages.
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

/// A TCP or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection and what was read from it but not yet used.
struct Conn {
    io: Stream,
    buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection can take a request: nothing to read and not closed. A
    /// read polled with a no-op waker answers that without waiting.
    fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
}

/// A response head as read.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this response.
    keep_alive: bool,
}

/// Why an exchange on one connection failed, and whether the request may be sent again.
enum Failed {
    /// Nothing of the request can have been acted on.
    Unsent(UpstreamError),
    Sent(UpstreamError),
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

    /// An idle connection that is still open, if the pool has one.
    fn pooled(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        // Bounded by the pool's size: each pass removes one connection.
        while let Some(mut conn) = idle.pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn release(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Sends `req` on an idle connection, or a new one, and reads the response head; the
    /// body is read as the response's body is polled, and puts the connection back in the
    /// pool when it ended.
    pub async fn send<B>(
        self: &Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, UpstreamError>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let chunked = has_body
            && !parts
                .headers
                .contains_key(axum::http::header::CONTENT_LENGTH);
        let mut head = Vec::with_capacity(512);
        encode_head(&parts, chunked, &mut head);
        let head_only = parts.method == Method::HEAD;
        let repeatable =
            !has_body && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut body = has_body.then_some(body);
        if let Some(mut conn) = self.pooled() {
            match self
                .exchange(&mut conn, &head, &mut body, chunked, repeatable, head_only)
                .await
            {
                Ok(h) => return Ok(self.respond(conn, h)),
                Err(Failed::Unsent(e)) => {
                    tracing::debug!(event = "proxy.upstream.stale", error = %e, "a pooled upstream connection was closed; sending on a new one");
                }
                Err(Failed::Sent(e)) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        match self
            .exchange(&mut conn, &head, &mut body, chunked, false, head_only)
            .await
        {
            Ok(h) => Ok(self.respond(conn, h)),
            Err(Failed::Unsent(e) | Failed::Sent(e)) => Err(e),
        }
    }

    /// Writes the request and reads the response head on `conn`. `repeatable`: a request
    /// that got no byte of answer may be sent again.
    async fn exchange<B>(
        &self,
        conn: &mut Conn,
        head: &[u8],
        body: &mut Option<B>,
        chunked: bool,
        repeatable: bool,
        head_only: bool,
    ) -> Result<Head, Failed>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let io_err = |e| UpstreamError::Io(self.address.clone(), e);
        // A head that could not be written is an incomplete request: nothing acts on it.
        if let Err(e) = conn.io.write_all(head).await {
            return Err(Failed::Unsent(io_err(e)));
        }
        if let Some(mut b) = body.take() {
            self.write_body(conn, &mut b, chunked)
                .await
                .map_err(Failed::Sent)?;
        }
        conn.io.flush().await.map_err(|e| Failed::Sent(io_err(e)))?;
        // Bounded: each pass reads more (up to MAX_HEAD) or skips a whole 1xx head, and
        // the caller's `upstream_timeout` bounds an upstream that keeps sending 1xx heads.
        loop {
            match parse_head(&mut conn.buf, head_only) {
                Ok(Some(h)) if h.status.is_informational() => continue,
                Ok(Some(h)) => return Ok(h),
                Ok(None) if conn.buf.len() >= MAX_HEAD => {
                    return Err(Failed::Sent(UpstreamError::Protocol(
                        self.address.clone(),
                        "a response head larger than 64 KiB",
                    )))
                }
                Ok(None) => {}
                Err(why) => {
                    return Err(Failed::Sent(UpstreamError::Protocol(
                        self.address.clone(),
                        why,
                    )))
                }
            }
            let nothing_yet = conn.buf.is_empty();
            match std::future::poll_fn(|cx| conn.poll_fill(cx)).await {
                Ok(0) if nothing_yet && repeatable => {
                    return Err(Failed::Unsent(UpstreamError::Closed(self.address.clone())))
                }
                Ok(0) => return Err(Failed::Sent(UpstreamError::Closed(self.address.clone()))),
                Ok(_) => {}
                Err(e) if nothing_yet && repeatable => return Err(Failed::Unsent(io_err(e))),
                Err(e) => return Err(Failed::Sent(io_err(e))),
            }
        }
    }

    /// Sends the request body: as it comes when its length was declared, else chunked.
    async fn write_body<B>(
        &self,
        conn: &mut Conn,
        body: &mut B,
        chunked: bool,
    ) -> Result<(), UpstreamError>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let io_err = |e| UpstreamError::Io(self.address.clone(), e);
        // Bounded by the body, which hyper ends at its declared length or `Limited` at
        // `max_body_bytes`.
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| UpstreamError::RequestBody(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                conn.io.write_all(size.as_bytes()).await.map_err(io_err)?;
                conn.io.write_all(&data).await.map_err(io_err)?;
                conn.io.write_all(b"\r\n").await.map_err(io_err)?;
            } else {
                conn.io.write_all(&data).await.map_err(io_err)?;
            }
        }
        if chunked {
            conn.io.write_all(b"0\r\n\r\n").await.map_err(io_err)?;
        }
        Ok(())
    }

    fn respond(self: &Arc<Self>, conn: Conn, head: Head) -> Response<ResponseBody> {
        let mut body = ResponseBody {
            upstream: self.clone(),
            conn: Some(conn),
            state: Decode::from(head.framing),
            keep_alive: head.keep_alive,
        };
        if body.state == Decode::Done {
            body.end();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// A new connection.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.address.clone(), self.connect_timeout))?
            .map_err(|e| UpstreamError::Connect(self.address.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let io = match &self.tls {
            None => Stream::Plain(tcp),
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
                Stream::Tls(Box::new(stream))
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }
}

/// The request line and headers, in HTTP/1.1. Method, target and header values were
/// validated by `http` (no CR or LF can be in them).
fn encode_head(parts: &axum::http::request::Parts, chunked: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a complete response head at the start of `buf` and removes it from there;
/// `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Where each header's name and value are in the head: (name start, name length,
    // value start, value length), so that the head can be cut off the buffer and its
    // values shared rather than copied. u32: a head is read only while under MAX_HEAD, so
    // it ends within MAX_HEAD + READ_CHUNK bytes. Neither array is zeroed as a whole
    // (that was 6,000 instructions a request): httparse fills what it uses.
    let mut at = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, minor, count) = {
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err("more than 100 headers"),
            Err(_) => return Err("not an HTTP/1.x response head"),
        };
        let base = buf.as_ptr() as usize;
        let offset = |p: *const u8| u32::try_from(p as usize - base).unwrap_or(u32::MAX);
        let length = |n: usize| u32::try_from(n).unwrap_or(0);
        for (slot, h) in at.iter_mut().zip(resp.headers.iter()) {
            *slot = (
                offset(h.name.as_ptr()),
                length(h.name.len()),
                offset(h.value.as_ptr()),
                length(h.value.len()),
            );
        }
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(0),
            resp.headers.len(),
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| "a status code out of range")?;
    if code == 101 {
        return Err("a protocol switch (101), which the proxy does not pass on");
    }
    let mut headers = HeaderMap::with_capacity(count);
    let (mut length, mut chunked, mut te, mut close) = (None::<u64>, false, false, minor == 0);
    for &(n, nl, v, vl) in &at[..count] {
        let (n, v) = (n as usize, v as usize);
        let (n_end, v_end) = (n + nl as usize, v + vl as usize);
        let name = head
            .get(n..n_end)
            .and_then(|b| HeaderName::from_bytes(b).ok())
            .ok_or("a bad header name")?;
        if v_end > head.len() {
            return Err("a bad header value");
        }
        let value = HeaderValue::from_maybe_shared(head.slice(v..v_end))
            .map_err(|_| "a bad header value")?;
        if name == axum::http::header::CONTENT_LENGTH {
            let n = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or("a bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Length values");
            }
            length = Some(n);
        } else if name == axum::http::header::TRANSFER_ENCODING {
            te = true;
            // Only the last coding decides (RFC 9112 6.3).
            chunked = value
                .to_str()
                .ok()
                .and_then(|s| s.rsplit(',').next())
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name == axum::http::header::CONNECTION {
            let v = value.to_str().unwrap_or("");
            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                close = true;
            } else if minor == 0
                && v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
            {
                close = false;
            }
        }
        headers.append(name, value);
    }
    let framing = if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if te {
        // With a Content-Length too, the message is ambiguous for anything between: no
        // reuse after it (RFC 9112 6.3).
        if length.is_some() {
            close = true;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::Eof
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Eof
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive: !close && framing != Framing::Eof,
    }))
}

/// Where a response body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    /// A chunked body: at a chunk-size line, inside a chunk (bytes left), at the CRLF after
    /// a chunk, in the trailers.
    ChunkSize,
    Chunk(u64),
    ChunkEnd,
    Trailers,
    Eof,
    Done,
}

/// A response body, read from the upstream connection as it is polled. At its end the
/// connection goes back to the pool (when the response allowed it); dropped before, it
/// closes the connection.
pub struct ResponseBody {
    upstream: Arc<Upstream>,
    conn: Option<Conn>,
    state: Decode,
    keep_alive: bool,
}

impl ResponseBody {
    /// The body ended: its connection may carry the next request.
    fn end(&mut self) {
        self.state = Decode::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.upstream.release(conn);
            }
        }
    }

    fn failed(&mut self, why: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.state = Decode::Done;
        self.conn = None;
        Poll::Ready(Some(Err(why)))
    }

    fn protocol(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let address = self.upstream.address.clone();
        self.failed(UpstreamError::Protocol(address, why))
    }
}

/// Where the line at the start of `buf` ends (its CRLF), or what to do without one: wait for more,
/// or refuse a line longer than [`MAX_LINE`] (`too_long` says which line).
fn next_line(buf: &[u8], too_long: &'static str) -> Result<usize, Step> {
    match memchr::memmem::find(buf, b"\r\n") {
        Some(end) => Ok(end),
        None if buf.len() > MAX_LINE => Err(Step::Bad(too_long)),
        None => Err(Step::More),
    }
}

/// What the bytes buffered so far give a body in `state`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Body bytes (the state moved past them).
    Data(Bytes),
    /// The body ended (the state is `Done`).
    End,
    /// More bytes are needed.
    More,
    /// The upstream broke HTTP/1.1 framing.
    Bad(&'static str),
}

/// One step of a response body's framing over what is buffered; no I/O, so that the
/// framing can be fuzzed on its own (`fuzzing::upstream_response`).
fn step(state: &mut Decode, buf: &mut BytesMut) -> Step {
    // Bounded: each pass consumes buffered bytes or returns.
    loop {
        match *state {
            Decode::Done => return Step::End,
            Decode::Length(left) | Decode::Chunk(left) if !buf.is_empty() => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *state = match *state {
                    Decode::Length(_) if left == 0 => Decode::Done,
                    Decode::Length(_) => Decode::Length(left),
                    _ if left == 0 => Decode::ChunkEnd,
                    _ => Decode::Chunk(left),
                };
                return Step::Data(data);
            }
            Decode::Eof if !buf.is_empty() => return Step::Data(buf.split().freeze()),
            Decode::ChunkSize => {
                let end = match next_line(buf, "a chunk-size line longer than 4 KiB") {
                    Ok(end) => end,
                    Err(step) => return step,
                };
                // `size[;extensions]`, hex digits only.
                let digits = buf[..end].split(|b| *b == b';').next().unwrap_or(&[]);
                let digits = digits.trim_ascii();
                let size = (!digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit))
                    .then(|| std::str::from_utf8(digits).ok())
                    .flatten()
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                buf.advance(end + 2);
                *state = match size {
                    Some(0) => Decode::Trailers,
                    Some(n) => Decode::Chunk(n),
                    None => return Step::Bad("a bad chunk size"),
                };
            }
            Decode::ChunkEnd if buf.len() >= 2 => {
                if &buf[..2] != b"\r\n" {
                    return Step::Bad("a chunk not followed by CRLF");
                }
                buf.advance(2);
                *state = Decode::ChunkSize;
            }
            Decode::Trailers => {
                let end = match next_line(buf, "a trailer line longer than 4 KiB") {
                    Ok(end) => end,
                    Err(step) => return step,
                };
                buf.advance(end + 2);
                if end == 0 {
                    *state = Decode::Done;
                    return Step::End;
                }
                // A trailer: not forwarded.
            }
            _ => return Step::More,
        }
    }
}

/// Parses `input` as a response head and the body after it, as the proxy reads them
/// (`fuzzing::upstream_response`): the body's bytes in order, and whether it ended or was
/// refused (None when the head is incomplete).
pub(crate) fn decode_all(input: &[u8], head_only: bool) -> Option<(Vec<Bytes>, Step)> {
    let mut buf = BytesMut::from(input);
    let head = match parse_head(&mut buf, head_only) {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(why) => return Some((Vec::new(), Step::Bad(why))),
    };
    let mut state = Decode::from(head.framing);
    let mut data = Vec::new();
    // Bounded: every Data step consumes at least one byte of the input.
    loop {
        match step(&mut state, &mut buf) {
            Step::Data(d) => data.push(d),
            other => return Some((data, other)),
        }
    }
}

impl From<Framing> for Decode {
    fn from(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Decode::Done,
            Framing::Length(n) => Decode::Length(n),
            Framing::Chunked => Decode::ChunkSize,
            Framing::Eof => Decode::Eof,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        // Bounded: each pass consumes buffered bytes, reads more, or ends.
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut this.state, &mut conn.buf) {
                Step::Data(data) => {
                    if this.state == Decode::Done {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    this.end();
                    return Poll::Ready(None);
                }
                Step::Bad(why) => return this.protocol(why),
                Step::More => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == Decode::Eof => {
                    this.keep_alive = false;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let address = this.upstream.address.clone();
                    return this.failed(UpstreamError::Closed(address));
                }
                Ok(_) => {}
                Err(e) => {
                    let address = this.upstream.address.clone();
                    return this.failed(UpstreamError::Io(address, e));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, head_only: bool) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let head = parse_head(&mut buf, head_only)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("incomplete"));
        (head, buf)
    }

    #[test]
    fn heads_are_framed_as_http_1_1_says() {
        let (h, rest) = parsed(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Range: 0-0/*\r\n\r\n[]",
            false,
        );
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-range"], "0-0/*");
        assert_eq!(&rest[..], b"[]");
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        // Neither: until the connection closes, which then cannot be reused.
        let (h, _) = parsed("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.keep_alive), (Framing::Eof, false));
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), false));
        // HTTP/1.0 keeps the connection only when it says so.
        let (h, _) = parsed("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = parsed(
            "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nConnection: Keep-Alive\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        // No body: HEAD, 204, 304, whatever the length says.
        for (text, head_only) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                false,
            ),
        ] {
            let (h, _) = parsed(text, head_only);
            assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true), "{text}");
        }
        // Chunked and a length: chunked, and no reuse.
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn bodies_decode_by_their_framing() {
        let decoded = |text: &[u8]| {
            let (body, end) = decode_all(text, false).unwrap_or_else(|| panic!("no head"));
            (
                body.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>(),
                end,
            )
        };
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let with = |rest: &[u8]| [&chunked[..], rest].concat();
        assert_eq!(
            decoded(&with(b"5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nt: 1\r\n\r\n")),
            (b"hello!".to_vec(), Step::End)
        );
        // Cut anywhere: what is there so far, then a wait for more.
        assert_eq!(decoded(&with(b"5\r\nhel")), (b"hel".to_vec(), Step::More));
        assert_eq!(
            decoded(&with(b"5\r\nhello\r")),
            (b"hello".to_vec(), Step::More)
        );
        for bad in [
            &b"zz\r\n"[..],
            b"+5\r\nhello\r\n",
            b"10000000000000000\r\n",
            b"1\r\nabc",
        ] {
            assert!(
                matches!(decoded(&with(bad)).1, Step::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decoded(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello, and more"),
            (b"hello".to_vec(), Step::End)
        );
        assert_eq!(
            decoded(b"HTTP/1.1 200 OK\r\n\r\nto the end"),
            (b"to the end".to_vec(), Step::More)
        );
        assert_eq!(
            decoded(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
            (Vec::new(), Step::End)
        );
    }

    #[test]
    fn bad_and_partial_heads() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut buf, false).unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad.as_bytes());
            assert!(parse_head(&mut buf, false).is_err(), "{bad}");
        }
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes());
        assert_eq!(
            parse_head(&mut buf, false).err(),
            Some("more than 100 headers")
        );
    }

    /// A scripted upstream on loopback: for each connection, for each request (read up to
    /// the end of its head, then its body: chunked up to `0\r\n\r\n`, else by
    /// `content-length`), the next canned response is written in pieces; after a response
    /// marked `close` the connection is closed. Returns the address, the requests as read
    /// and the count of accepted connections.
    async fn scripted(
        responses: Vec<(&'static str, bool)>,
    ) -> (
        String,
        Arc<Mutex<Vec<String>>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen2, accepted2) = (seen.clone(), accepted.clone());
        let script = Arc::new(Mutex::new(responses.into_iter()));
        tokio::spawn(async move {
            // Bounded by the test: the runtime ends with it.
            while let Ok((mut s, _)) = listener.accept().await {
                accepted2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (seen, script) = (seen2.clone(), script.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Bounded by the script.
                    loop {
                        let complete = |got: &[u8]| {
                            let text = String::from_utf8_lossy(got).to_lowercase();
                            let end = text.find("\r\n\r\n")?;
                            if text[..end].contains("transfer-encoding: chunked") {
                                text[end + 4..].find("0\r\n\r\n").map(|i| end + 4 + i + 5)
                            } else {
                                let len = text[..end]
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                                (text.len() >= end + 4 + len).then_some(end + 4 + len)
                            }
                        };
                        while complete(&got).is_none() {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let end = complete(&got).unwrap();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&got[..end]).into_owned());
                        got.drain(..end);
                        let Some((resp, close)) = script.lock().unwrap().next() else {
                            return;
                        };
                        // In small pieces, so that every state meets a buffer boundary.
                        for piece in resp.as_bytes().chunks(7) {
                            s.write_all(piece).await.unwrap();
                            s.flush().await.unwrap();
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen, accepted)
    }

    async fn body_of(resp: Response<ResponseBody>) -> String {
        use http_body_util::BodyExt;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn bodies_are_framed_and_connections_reused_only_when_safe() {
        let (addr, seen, accepted) = scripted(vec![
            // chunked, with an extension and a trailer
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n", false),
            // a 100 Continue first, then the answer to the chunked POST
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", false),
            // HEAD: a length, no body
            ("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", false),
            // no length: the body ends with the connection
            ("HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ])
        .await;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let upstream = Arc::new(
            Upstream::new(
                &axum::http::uri::Scheme::HTTP,
                &addr.parse().unwrap(),
                &tls,
                Duration::from_secs(5),
            )
            .unwrap(),
        );
        let get = |method: &str| {
            Request::builder()
                .method(method)
                .uri("/articles?select=id")
                .header("host", &addr)
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        let resp = upstream.send(get("GET")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(resp).await, "hello, world");
        // A body without a declared length goes chunked.
        let stream = futures_util::stream::iter(
            ["{\"a\":", "1}"]
                .map(|s| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(s)))),
        );
        let post = Request::builder()
            .method("POST")
            .uri("/rpc/f")
            .header("host", &addr)
            .body(http_body_util::StreamBody::new(stream))
            .unwrap();
        let resp = upstream.send(post).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(body_of(resp).await, "ok");
        let resp = upstream.send(get("HEAD")).await.unwrap();
        assert_eq!(resp.headers()["content-length"], "9");
        assert!(resp.body().is_end_stream());
        assert_eq!(body_of(resp).await, "");
        let resp = upstream.send(get("GET")).await.unwrap();
        assert_eq!(body_of(resp).await, "until the end");
        // That connection ended with its body: the next request needs a new one.
        let resp = upstream.send(get("GET")).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 5);
        assert!(
            seen[0].starts_with("GET /articles?select=id HTTP/1.1\r\nhost: "),
            "{}",
            seen[0]
        );
        assert!(
            seen[1]
                .contains("transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n"),
            "{}",
            seen[1]
        );
        assert!(seen[2].starts_with("HEAD "));
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let req = Request::builder()
            .method("POST")
            .uri("/rpc/f?x=1")
            .header("host", "up:3000")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /rpc/f?x=1 HTTP/1.1\r\nhost: up:3000\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
