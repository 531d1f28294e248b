//! A fault-injecting HTTP relay on a loopback port in front of another server (moto): it
//! reads each HTTP/1.1 request, and forwards it unless a rule the test injected says
//! otherwise, answering with an error status (500, 503 `SlowDown`), answering late,
//! dropping the connection before the request reaches the server, dropping it after the
//! server acted but before the answer (the write landed, the client never hears), or
//! holding the request until the test opens a gate (to kill or stop the client at a known
//! point; a client that went away meanwhile is not forwarded, as a server would drop a
//! truncated request). A test can also cut it (every connection dropped, the port closed)
//! and restore it on the same port: a server that vanishes mid-request, while the server
//! behind it keeps its state. Every request is recorded with what was done to it.
//!
//! Each forwarded request goes to the server on a fresh connection with `Connection:
//! close`, and the answer goes back with `Connection: close`, so the relay only needs to
//! know where requests end (`Content-Length`; the AWS SDK sends no chunked bodies here).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A point the test controls: requests held at it wait until it is opened.
#[derive(Default)]
pub struct Gate {
    arrived: AtomicUsize,
    open: AtomicBool,
    notify: Notify,
}

impl Gate {
    /// How many requests reached the gate so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Waits (at most `patience`) until a request reached the gate; `what` names it in the
    /// failure.
    pub async fn reached(&self, patience: Duration, what: &str) {
        super::eventually(patience, || async {
            if self.arrived() > 0 {
                Ok(())
            } else {
                Err(format!("{what}: nothing reached the gate yet"))
            }
        })
        .await;
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// What the relay does to a request a rule matches.
#[derive(Clone)]
pub enum Fault {
    /// Answer this status with an S3 error body carrying `code` (e.g. 503 `SlowDown`).
    Status(u16, &'static str),
    /// Forward after this long (a slow server).
    Delay(Duration),
    /// Close the connection without forwarding (the request never arrives).
    DropBefore,
    /// Forward, then close the connection without answering (it happened; nobody heard).
    DropAfter,
    /// Wait at the gate, then forward (unless the client went away meanwhile).
    Hold(Arc<Gate>),
}

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::Status(s, c) => format!("{s} {c}"),
            Fault::Delay(d) => format!("delay {d:?}"),
            Fault::DropBefore => "drop before".into(),
            Fault::DropAfter => "drop after".into(),
            Fault::Hold(_) => "hold".into(),
        }
    }
}

struct Rule {
    method: String,
    path_contains: String,
    times: usize,
    fault: Fault,
}

/// One request the relay saw: method, target (path and query), and the fault applied
/// (None: forwarded as it was).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub fault: Option<String>,
    /// Whether it reached the server behind the relay.
    pub forwarded: bool,
}

#[derive(Default)]
struct Faults {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

impl Faults {
    /// The fault for a request, using up one of its rule's times.
    fn take(&mut self, method: &str, target: &str) -> Option<Fault> {
        let rule = self.rules.iter_mut().find(|r| {
            r.times > 0
                && (r.method.is_empty() || r.method == method)
                && target.contains(&r.path_contains)
        })?;
        rule.times -= 1;
        Some(rule.fault.clone())
    }
}

/// A running relay.
pub struct Relay {
    pub addr: SocketAddr,
    target: SocketAddr,
    token: Arc<Mutex<CancellationToken>>,
    faults: Arc<Mutex<Faults>>,
}

/// A request read from the client: its head (without the final blank line), method,
/// target and body.
struct Request {
    head_lines: Vec<String>,
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Reads one request; None at a clean end of the connection or on anything unreadable.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head_lines = Vec::new();
    // Bounded: no test request has more than 200 header lines.
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head_lines.push(line);
    }
    let mut first = head_lines.first()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let header = |name: &str| {
        head_lines.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .ok()?;
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.ok()?;
    Some(Request {
        head_lines,
        method,
        target,
        body,
    })
}

/// `lines` with any `Connection` header replaced by `Connection: close`, as bytes ending
/// with the blank line.
fn head_with_close(lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for l in lines {
        if l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Sends `req` to `target` on a fresh connection and returns the whole answer (read to
/// its end), with `Connection: close` in its head.
async fn forward(target: SocketAddr, req: &Request) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(target).await.ok()?;
    up.write_all(&head_with_close(&req.head_lines)).await.ok()?;
    up.write_all(&req.body).await.ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await.ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let mut out = head_with_close(&lines);
    out.extend_from_slice(&answer[split + 4..]);
    Some(out)
}

fn error_answer(status: u16, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test relay</Message><RequestId>relay</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether the client closed its side (a read returns end of stream).
async fn client_gone(reader: &mut BufReader<TcpStream>) {
    let mut byte = [0u8; 1];
    loop {
        match reader.get_mut().read(&mut byte).await {
            Ok(0) | Err(_) => return,
            // Bytes after a complete request: not expected from the SDK; ignore them.
            Ok(_) => {}
        }
    }
}

async fn handle(inbound: TcpStream, target: SocketAddr, faults: Arc<Mutex<Faults>>) {
    let mut reader = BufReader::new(inbound);
    let Some(req) = read_request(&mut reader).await else {
        return;
    };
    let fault = faults
        .lock()
        .ok()
        .and_then(|mut f| f.take(&req.method, &req.target));
    let record = |forwarded: bool| {
        if let Ok(mut f) = faults.lock() {
            f.seen.push(Seen {
                method: req.method.clone(),
                target: req.target.clone(),
                fault: fault.as_ref().map(Fault::name),
                forwarded,
            });
        }
    };
    let answer = match &fault {
        Some(Fault::Status(status, code)) => {
            record(false);
            error_answer(*status, code)
        }
        Some(Fault::DropBefore) => {
            record(false);
            return;
        }
        Some(Fault::DropAfter) => {
            let _ = forward(target, &req).await;
            record(true);
            return;
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(*d).await;
            record(true);
            match forward(target, &req).await {
                Some(a) => a,
                None => return,
            }
        }
        Some(Fault::Hold(gate)) => {
            gate.arrived.fetch_add(1, Ordering::SeqCst);
            let gone = tokio::select! {
                _ = gate.wait() => false,
                _ = client_gone(&mut reader) => true,
            };
            if gone {
                record(false);
                return;
            }
            record(true);
            match forward(target, &req).await {
                Some(a) => a,
                None => return,
            }
        }
        None => {
            record(true);
            match forward(target, &req).await {
                Some(a) => a,
                None => return,
            }
        }
    };
    let mut inbound = reader.into_inner();
    let _ = inbound.write_all(&answer).await;
    let _ = inbound.shutdown().await;
}

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((inbound, _)) = accepted else {
            continue;
        };
        let token = token.clone();
        let faults = faults.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = handle(inbound, target, faults) => {}
            }
        });
    }
}

impl Relay {
    /// Relays a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let token = CancellationToken::new();
        let faults = Arc::new(Mutex::new(Faults::default()));
        tokio::spawn(serve(listener, target, faults.clone(), token.clone()));
        Self {
            addr,
            target,
            token: Arc::new(Mutex::new(token)),
            faults,
        }
    }

    /// A relay in front of `moto`.
    pub async fn in_front_of(moto: &super::moto::MotoServer) -> Self {
        let target: SocketAddr = moto
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        Self::start(target).await
    }

    /// `http://<addr>`: the endpoint clients use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `times` requests with `method` ("" for any) whose
    /// target (path and query) contains `path_contains`. Rules are tried in the order
    /// they were added.
    pub fn inject(&self, method: &str, path_contains: &str, times: usize, fault: Fault) {
        if let Ok(mut f) = self.faults.lock() {
            f.rules.push(Rule {
                method: method.to_string(),
                path_contains: path_contains.to_string(),
                times,
                fault,
            });
        }
    }

    /// Holds the next request matching `method` and `path_contains` at a new gate.
    pub fn hold(&self, method: &str, path_contains: &str) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.inject(method, path_contains, 1, Fault::Hold(gate.clone()));
        gate
    }

    /// Removes every rule (requests pass as they are from now on).
    pub fn clear(&self) {
        if let Ok(mut f) = self.faults.lock() {
            f.rules.clear();
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.faults
            .lock()
            .map(|f| f.seen.clone())
            .unwrap_or_default()
    }

    /// Drops every connection and closes the port.
    pub fn cut(&self) {
        if let Ok(t) = self.token.lock() {
            t.cancel();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebinding {}: {e}", self.addr));
        let token = CancellationToken::new();
        if let Ok(mut t) = self.token.lock() {
            *t = token.clone();
        }
        tokio::spawn(serve(listener, self.target, self.faults.clone(), token));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}
