//! Writes audit events as hash-chained JSON lines to stdout and, optionally, an append-only
//! file, from one background task.
//!
//! Callers append serialized, unsealed lines to a shared buffer; the writer takes the buffer
//! every 20 ms (or as soon as it holds 256 KiB, or when someone waits in [`AuditLog::flushed`]),
//! seals every line for each sink (`seq`, `prev`, `hash`: see `chain.rs`) and writes each
//! sink's batch with one `write_all` (stdout under its lock, so the daemon's log lines, which
//! share stdout, never land inside an audit line). The hot path (the API proxy) therefore serializes from typed
//! fields and never hashes, waits on the terminal, or wakes a thread per request.
//!
//! Invariants:
//! - Each sink has its own chain. stdout starts a new chain (seq 1, prev = zeros) per process;
//!   the file continues the chain of its last complete line, also across restarts and across
//!   processes: every batch is appended under an exclusive `flock`, and when the file grew
//!   since this process last wrote (a CLI command appended), the chain is re-read from it.
//! - A partial last line (a crash during a write) is cut off when the file is opened.
//! - The file is synced (`fdatasync`) after every batch, before [`AuditLog::flushed`]
//!   resolves: the database tailer advances its persisted cursor only after that, so a crash
//!   never loses lines the database no longer offers. Batches coalesce for 20 ms, so this is
//!   at most ~50 syncs a second whatever the rate.
//! - A failing file write (disk full, a removed directory) is retried every second with the
//!   same lines, in order, until it succeeds; meanwhile [`AuditLog::health`] names the error
//!   (`/readyz` lists it), `pgvigil_audit_write_failures_total` counts it and `flushed`
//!   waits, which holds the tailer back (backpressure) instead of losing rows. A closed
//!   stdout cannot come back: the writer stops, loudly.
//! - The buffer is bounded ([`MAX_PENDING`]): past it, lines of emitters that cannot wait
//!   (the API proxy's access lines, ops events) are dropped and counted in
//!   `pgvigil_audit_dropped_lines_total` rather than growing memory without limit. The
//!   tailer never fills it: it waits for each batch. On shutdown everything buffered is
//!   written once more.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::chain::{self, Chain};
use super::event::{Event, EventKind};

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const FLUSH_AT: usize = 256 * 1024;
/// How much may wait for a sink before new lines are dropped (and counted).
pub const MAX_PENDING: usize = 64 * 1024 * 1024;
/// What a line written in place ([`AuditLog::emit_with`]) is assumed to take, for the
/// [`MAX_PENDING`] check made before it is written.
const LINE_HINT: usize = 1024;
/// How long a failed file write waits before it is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

crate::own_metrics! {
    /// The audit writer's metrics.
    pub struct AuditMetrics {
        pub events: IntCounterVec = PGVIGIL_AUDIT_EVENTS_TOTAL,
        pub write_failures: IntCounter = PGVIGIL_AUDIT_WRITE_FAILURES_TOTAL,
        pub dropped: IntCounter = PGVIGIL_AUDIT_DROPPED_LINES_TOTAL,
    }
}

/// Why a sink could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("audit file {}: {step}: {source} (audit.file)", path.display())]
    File {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The disk of the audit file is full: names the file, the directory and its free
    /// space. The lines wait in memory and are retried; nothing half-written stays.
    #[error("audit file {}: {message}; its lines are held back and retried every second (audit.file)", path.display())]
    Full { path: PathBuf, message: String },
    #[error("the audit writer has stopped (a sink failed; see the log)")]
    Stopped,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Lines queued since the start (never decreases).
    queued: u64,
}

#[derive(Debug)]
struct Shared {
    buf: Mutex<Pending>,
    wake: Notify,
    /// Someone waits in `flushed`: skip the coalescing pause.
    urgent: AtomicBool,
    /// Lines written to every sink, and whether the writer has stopped.
    written: watch::Sender<(u64, bool)>,
    metrics: Option<AuditMetrics>,
    /// `pgvigil_audit_events_total` of each kind, looked up once (a labelled lookup hashes
    /// and locks, per line).
    kind_events: Option<[IntCounter; 3]>,
    /// What is wrong with a sink right now (None when writes succeed).
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn set_failure(&self, failure: Option<String>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = failure;
        }
    }
}

/// Where audit lines go: `[audit] stdout` and `file`.
#[derive(Debug, Clone, Default)]
pub struct SinkConfig {
    /// Write to the process's stdout (the daemon; what log collectors read).
    pub stdout: bool,
    /// Append to this file as well.
    pub file: Option<PathBuf>,
}

/// A handle for emitting audit events; cheap to clone. A log without sinks discards.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
}

impl AuditLog {
    /// A log that writes to stdout (or discards everything when `stdout` is false).
    /// Kept for callers that need no file sink and no metric.
    pub fn start(stdout: bool, tracker: &TaskTracker, token: CancellationToken) -> Self {
        let config = SinkConfig { stdout, file: None };
        // Without a file nothing can fail to open.
        Self::open(&config, None, tracker, token).unwrap_or_else(|_| Self::disabled())
    }

    /// A log that discards everything.
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    /// Opens the configured sinks (the file is created if missing and its chain recovered)
    /// and starts the writer task, counting into `metrics` when given.
    pub fn open(
        config: &SinkConfig,
        metrics: Option<AuditMetrics>,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Self, SinkError> {
        let file = match &config.file {
            Some(p) => Some(FileSink::open(p)?),
            None => None,
        };
        if !config.stdout && file.is_none() {
            return Ok(Self::disabled());
        }
        let kind_events = metrics.as_ref().map(|m| {
            [EventKind::Ops, EventKind::Data, EventKind::Access]
                .map(|k| m.events.with_label_values(&[k.as_str()]))
        });
        let shared = Arc::new(Shared {
            buf: Mutex::new(Pending::default()),
            wake: Notify::new(),
            urgent: AtomicBool::new(false),
            written: watch::channel((0, false)).0,
            metrics,
            kind_events,
            failure: Mutex::new(None),
        });
        tracker.spawn(write_loop(shared.clone(), config.stdout, file, token));
        Ok(Self {
            shared: Some(shared),
        })
    }

    /// True when lines go somewhere.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// What is wrong with the audit sinks now (a write failing and being retried, lines
    /// dropped, the writer stopped), or None when they are healthy.
    pub fn health(&self) -> Option<String> {
        let shared = self.shared.as_ref()?;
        if shared.written.borrow().1 {
            return Some("the audit writer has stopped".into());
        }
        shared.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Queues one event, serialized here (on the caller's thread) as one line without
    /// `seq`, `prev` and `hash`; the writer adds them.
    pub fn emit(&self, event: Event) {
        let Some(shared) = &self.shared else { return };
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, &event).is_err() {
            return;
        }
        line.push(b'\n');
        self.queue(shared, event.kind, 1, line.len(), |buf| {
            buf.extend_from_slice(&line)
        });
    }

    /// Queues `lines` lines already serialized by the caller, each a JSON object followed by
    /// `\n` (the database tailer builds them from the row's JSON text).
    pub fn emit_serialized(&self, kind: EventKind, bytes: &[u8], lines: u64) {
        let Some(shared) = &self.shared else { return };
        self.queue(shared, kind, lines, bytes.len(), |buf| {
            buf.extend_from_slice(bytes)
        });
    }

    /// Queues one line that `write` appends to the queue itself (a JSON object in the event
    /// schema without `seq`, `prev` and `hash`, no newline): the API proxy writes its
    /// access lines this way, with no buffer of their own and no serializer in between.
    pub fn emit_with(&self, kind: EventKind, write: impl FnOnce(&mut Vec<u8>)) {
        let Some(shared) = &self.shared else { return };
        self.queue(shared, kind, 1, LINE_HINT, |buf| {
            write(buf);
            buf.push(b'\n');
        });
    }

    /// Appends `lines` lines of about `len` bytes with `append` (which must end each line
    /// with `\n`) unless that would take the queue past [`MAX_PENDING`].
    fn queue(
        &self,
        shared: &Shared,
        kind: EventKind,
        lines: u64,
        len: usize,
        append: impl FnOnce(&mut Vec<u8>),
    ) {
        // Wake the writer only when the buffer stops being empty (it then coalesces for
        // FLUSH_EVERY) or fills up: no wakeup per line under load, none at all when idle.
        let (wake, dropped) = match shared.buf.lock() {
            Ok(mut buf) if buf.bytes.len() + len > MAX_PENDING => {
                // Counted as queued and written, so `flushed` does not wait for them.
                buf.queued += lines;
                (false, true)
            }
            Ok(mut buf) => {
                let was_empty = buf.bytes.is_empty();
                append(&mut buf.bytes);
                buf.queued += lines;
                (was_empty || buf.bytes.len() >= FLUSH_AT, false)
            }
            Err(_) => (false, true),
        };
        if let Some(m) = &shared.metrics {
            if dropped {
                m.dropped.inc_by(lines);
            } else if let Some(counters) = &shared.kind_events {
                counters[kind as usize].inc_by(lines);
            }
        }
        if dropped {
            shared.set_failure(Some(format!(
                "audit lines are being dropped: more than {} MiB wait for a failing sink",
                MAX_PENDING >> 20
            )));
            tracing::error!(
                event = "audit.dropped",
                lines,
                kind = kind.as_str(),
                "audit line dropped: the audit sink is failing and its queue is full"
            );
        }
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Waits until every line queued before this call has been written to every sink.
    /// Fails when the writer stopped (a sink failed, or the daemon is shutting down and
    /// the lines could not be written).
    pub async fn flushed(&self) -> Result<(), SinkError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let target = match shared.buf.lock() {
            Ok(b) => b.queued,
            Err(_) => return Err(SinkError::Stopped),
        };
        let mut rx = shared.written.subscribe();
        if rx.borrow().0 >= target {
            return Ok(());
        }
        shared.urgent.store(true, Ordering::Release);
        shared.wake.notify_one();
        let written = rx
            .wait_for(|(written, stopped)| *written >= target || *stopped)
            .await
            .map(|w| w.0)
            .unwrap_or(0);
        if written >= target {
            Ok(())
        } else {
            Err(SinkError::Stopped)
        }
    }
}

fn take(shared: &Shared) -> (Vec<u8>, u64) {
    shared
        .buf
        .lock()
        .map(|mut b| (std::mem::take(&mut b.bytes), b.queued))
        .unwrap_or_default()
}

/// Seals every line of `chunk` onto `chain`.
fn seal(chain: &mut Chain, chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 2);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', chunk).chain(std::iter::once(chunk.len())) {
        let line = &chunk[start..end];
        if !line.is_empty() {
            chain.seal_into(line, &mut out);
        }
        start = end + 1;
    }
    out
}

async fn write_loop(
    shared: Arc<Shared>,
    stdout: bool,
    mut file: Option<FileSink>,
    token: CancellationToken,
) {
    /// Tells waiters in `flushed` that nothing more will be written, however the loop ends.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.written.send_modify(|w| w.1 = true);
        }
    }
    let _stopped = Stopped(&shared);
    let mut stdout_chain = Chain::default();
    // A chunk already on stdout whose file append failed: retried (file only) before
    // anything newer, so the file keeps every line in order.
    let mut retry: Option<(Vec<u8>, u64)> = None;
    loop {
        let mut stopping = if retry.is_some() {
            tokio::select! {
                _ = token.cancelled() => true,
                _ = tokio::time::sleep(RETRY_EVERY) => false,
            }
        } else {
            tokio::select! {
                _ = token.cancelled() => true,
                _ = shared.wake.notified() => false,
            }
        };
        if retry.is_none() && !stopping && !shared.urgent.swap(false, Ordering::AcqRel) {
            // Coalesce: let more lines arrive, unless the buffer is already full.
            stopping = tokio::select! {
                _ = token.cancelled() => true,
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = shared.wake.notified() => false,
            };
        }
        // Lines emitted while the last chunk was written are taken on the next turn; when
        // stopping, keep taking until the buffer is empty (one more try for a failing file).
        loop {
            let (chunk, upto, on_stdout) = match retry.take() {
                Some((chunk, upto)) => (chunk, upto, false),
                None => {
                    let (chunk, upto) = take(&shared);
                    (chunk, upto, stdout)
                }
            };
            let drained = chunk.is_empty();
            if !drained {
                let sealed = on_stdout.then(|| seal(&mut stdout_chain, &chunk));
                let f = file.take();
                let written = tokio::task::spawn_blocking(move || {
                    // The log lines of `tracing` also go to stdout, through the same
                    // lock: holding it for the whole batch keeps lines from interleaving.
                    let out = match sealed {
                        Some(sealed) => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&sealed).and_then(|()| out.flush())
                        }
                        None => Ok(()),
                    };
                    let mut f = f;
                    let appended = match (&out, &mut f) {
                        (Ok(()), Some(f)) => f.append(&chunk),
                        _ => Ok(()),
                    };
                    (f, out, appended, chunk)
                })
                .await;
                match written {
                    Ok((f, Ok(()), Ok(()), _)) => {
                        file = f;
                        if shared.failure.lock().is_ok_and(|f| f.is_some()) {
                            tracing::info!(
                                event = "audit.file.recovered",
                                "the audit file is written again"
                            );
                            shared.set_failure(None);
                        }
                    }
                    Ok((_, Err(e), _, _)) => {
                        // stdout is gone (a closed pipe): it cannot come back.
                        shared.set_failure(Some(format!("audit stdout failed: {e}")));
                        if let Some(m) = &shared.metrics {
                            m.write_failures.inc();
                        }
                        tracing::error!(event = "audit.stdout.failed", error = %e, "cannot write audit lines to stdout; audit writer stopped");
                        return;
                    }
                    Ok((f, _, Err(e), chunk)) => {
                        file = f;
                        if let Some(m) = &shared.metrics {
                            m.write_failures.inc();
                        }
                        tracing::error!(event = "audit.file.failed", error = %e, "cannot write the audit file; retrying every second, nothing is acknowledged until it works");
                        shared.set_failure(Some(e.to_string()));
                        retry = Some((chunk, upto));
                        if stopping {
                            return;
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::error!(event = "audit.file.failed", error = %e, "audit writer panicked");
                        shared.set_failure(Some(format!("the audit writer failed: {e}")));
                        return;
                    }
                }
            }
            shared.written.send_modify(|w| w.0 = upto);
            if !stopping || drained {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

/// The append-only file sink: an open file, its chain, and the length it had after this
/// process's last write.
#[derive(Debug)]
struct FileSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    chain: Chain,
    known_len: u64,
}

impl FileSink {
    fn open(path: &Path) -> Result<Self, SinkError> {
        let err = |step| {
            let path = path.to_path_buf();
            move |source| SinkError::File { path, step, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err("creating its directory"))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(err("opening"))?;
        let mut sink = Self {
            path: path.to_path_buf(),
            file: Some(file),
            chain: Chain::default(),
            known_len: u64::MAX,
        };
        sink.with_lock(|_, _| Ok(0))
            .map_err(err("recovering the chain"))?;
        Ok(sink)
    }

    /// Runs `f` with the file locked and the chain current (re-read if another process
    /// appended, and a partial last line cut off).
    fn with_lock(
        &mut self,
        f: impl FnOnce(&mut std::fs::File, &mut Chain) -> std::io::Result<u64>,
    ) -> std::io::Result<()> {
        use nix::fcntl::{Flock, FlockArg};
        let file = match self.file.take() {
            Some(f) => f,
            // Lost with an earlier failure (e.g. the lock could not be taken): open again.
            None => std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)?,
        };
        let mut locked = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        let result = (|| {
            let len = locked.metadata()?.len();
            if len != self.known_len {
                // The last complete line, however long (a row can be megabytes).
                let (last, complete) = chain::last_line(&mut locked)?;
                if complete < len {
                    tracing::warn!(event = "audit.file.truncated", file = %self.path.display(), bytes = len - complete, "cutting off a partial last line (an earlier write was interrupted)");
                    locked.set_len(complete)?;
                }
                self.chain = match &last {
                    None => Chain::default(),
                    Some(last) => {
                        let s = chain::check_line(last).map_err(|e| {
                            std::io::Error::other(format!(
                                "its last line does not verify ({e}); move the file aside to start a new chain"
                            ))
                        })?;
                        Chain {
                            seq: s.seq,
                            prev: s.hash,
                        }
                    }
                };
                self.known_len = complete;
            }
            let written = match f(&mut locked, &mut self.chain) {
                Ok(w) => w,
                Err(e) => {
                    // Nothing half-written may stay: cut back to where this write began
                    // (best effort; a partial last line is also cut on the next open).
                    let _ = locked.set_len(self.known_len);
                    return Err(e);
                }
            };
            self.known_len += written;
            Ok(())
        })();
        match locked.unlock() {
            Ok(file) => self.file = Some(file),
            Err((locked, errno)) => {
                drop(locked);
                return Err(std::io::Error::from(errno));
            }
        }
        result
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), SinkError> {
        let path = self.path.clone();
        self.with_lock(|file, chain| {
            // Sealed on a copy: a failed write leaves the chain where the file is, so the
            // retry seals the same lines onto the same line.
            let mut next = chain.clone();
            let sealed = seal(&mut next, chunk);
            file.write_all(&sealed)?;
            file.flush()?;
            // Durable before `flushed` resolves (and the tailer's cursor moves).
            file.sync_data()?;
            *chain = next;
            Ok(sealed.len() as u64)
        })
        .map_err(|source| {
            if crate::disk::is_full(&source) {
                let dir = path.parent().unwrap_or(&path);
                return SinkError::Full {
                    message: crate::disk::full_message(dir),
                    path,
                };
            }
            SinkError::File {
                path,
                step: "appending",
                source,
            }
        })
    }
}

/// The newest `kind: "data"` line of an audit file, within the last 64 MiB: its
/// `details.id` and `details.transaction_id`. The tailer uses it on start to skip rows
/// already in the file when the daemon stopped between writing them and committing its
/// cursor (after checking that the row still exists with that transaction id).
pub fn last_data_id(path: &Path) -> Result<Option<(i64, i64)>, SinkError> {
    let err = |step| {
        let path = path.to_path_buf();
        move |source| SinkError::File { path, step, source }
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err("opening")(e)),
    };
    let (lines, _) = chain::read_tail(&mut file, chain::TAIL_WINDOW).map_err(err("reading"))?;
    #[derive(serde::Deserialize)]
    struct Line {
        kind: String,
        details: Details,
    }
    #[derive(serde::Deserialize)]
    struct Details {
        id: i64,
        transaction_id: i64,
    }
    for l in &lines {
        const DATA: &[u8] = b"\"kind\":\"data\"";
        if !l.windows(DATA.len()).any(|w| w == DATA) {
            continue;
        }
        if let Ok(line) = serde_json::from_slice::<Line>(l) {
            if line.kind == "data" {
                return Ok(Some((line.details.id, line.details.transaction_id)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::event::Outcome;

    /// An audit log writing only to `path`, with its tracker and token; `stop` ends it.
    pub(crate) struct FileLog {
        pub log: AuditLog,
        tracker: TaskTracker,
        token: CancellationToken,
    }

    impl FileLog {
        pub(crate) fn open(path: &Path, metrics: Option<AuditMetrics>) -> Self {
            let tracker = TaskTracker::new();
            let token = CancellationToken::new();
            let config = SinkConfig {
                stdout: false,
                file: Some(path.to_path_buf()),
            };
            let log = AuditLog::open(&config, metrics, &tracker, token.clone()).unwrap();
            Self {
                log,
                tracker,
                token,
            }
        }

        /// Stops the writer and waits for it.
        pub(crate) async fn stop(self) {
            self.token.cancel();
            self.tracker.close();
            self.tracker.wait().await;
        }
    }

    fn event(i: u64) -> Event {
        Event {
            ts: crate::audit::event::now_rfc3339(),
            kind: EventKind::Ops,
            event: "test.event",
            outcome: Outcome::Success,
            actor: serde_json::json!({"process": "test"}),
            target: serde_json::json!({"i": i}),
            details: serde_json::Value::Null,
        }
    }

    async fn write_events(path: &Path, range: std::ops::Range<u64>) {
        let f = FileLog::open(path, None);
        for i in range {
            f.log.emit(event(i));
        }
        f.log.flushed().await.unwrap();
        f.stop().await;
    }

    #[tokio::test]
    async fn a_reopened_file_continues_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        write_events(&path, 0..5).await;
        write_events(&path, 5..8).await;
        let v = chain::verify_file(&path).unwrap();
        assert_eq!((v.lines, v.first_seq, v.last_seq), (8, Some(1), Some(8)));
        let text = std::fs::read_to_string(&path).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["target"]["i"], 7);
        assert_eq!(last["kind"], "ops");
    }

    #[tokio::test]
    async fn a_partial_last_line_is_cut_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        write_events(&path, 0..3).await;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"ts":"2026-"#).unwrap();
        drop(f);
        write_events(&path, 3..4).await;
        let v = chain::verify_file(&path).unwrap();
        assert_eq!((v.lines, v.last_seq), (4, Some(4)));
    }

    #[tokio::test]
    async fn a_line_longer_than_the_tail_window_still_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let f = FileLog::open(&path, None);
        let log = f.log.clone();
        let mut big = event(0);
        big.details = serde_json::json!({ "blob": "x".repeat(3 << 20) });
        log.emit(big);
        log.flushed().await.unwrap();
        f.stop().await;
        write_events(&path, 1..2).await;
        let v = chain::verify_file(&path).unwrap();
        assert_eq!((v.lines, v.last_seq), (2, Some(2)));
    }

    #[tokio::test]
    async fn a_failing_file_is_loud_counted_and_holds_acknowledgements_back() {
        // /dev/full answers every write with ENOSPC: a full disk.
        let metrics = AuditMetrics::register(&prometheus::Registry::new()).unwrap();
        let f = FileLog::open(Path::new("/dev/full"), Some(metrics.clone()));
        assert_eq!(f.log.health(), None);
        f.log.emit(event(1));
        // Not acknowledged: the tailer's cursor would not move.
        let waited = tokio::time::timeout(Duration::from_millis(300), f.log.flushed()).await;
        assert!(waited.is_err(), "flushed must wait while the file fails");
        let health = f.log.health().unwrap_or_default();
        // Named: the file, the directory that is full and its free space.
        assert!(
            health.contains("/dev/full")
                && health.contains("/dev is full")
                && health.contains("free"),
            "{health}"
        );
        assert!(metrics.write_failures.get() >= 1);
        // Past the cap, lines that cannot wait are dropped and counted, not buffered.
        let big = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_PENDING >> 20) + 2 {
            f.log.emit_serialized(EventKind::Access, &big, 1);
        }
        assert!(metrics.dropped.get() >= 1);
        f.stop().await;
    }

    #[tokio::test]
    async fn flushed_waits_for_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let f = FileLog::open(&path, None);
        let log = f.log.clone();
        for i in 0..1000 {
            log.emit(event(i));
        }
        log.flushed().await.unwrap();
        // Written before the writer's coalescing pause could have elapsed on its own.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1000
        );
        f.stop().await;
        assert!(log.flushed().await.is_ok(), "nothing queued: still ok");
    }

    #[test]
    fn last_data_id_finds_the_newest_data_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        assert_eq!(last_data_id(&path).unwrap(), None);
        std::fs::write(
            &path,
            "{\"kind\":\"data\",\"details\":{\"id\":7,\"transaction_id\":3}}\n{\"kind\":\"data\",\"details\":{\"id\":9,\"transaction_id\":4}}\n{\"kind\":\"ops\",\"details\":{}}\n",
        )
        .unwrap();
        assert_eq!(last_data_id(&path).unwrap(), Some((9, 4)));
    }
}
