//! Writes audit events as JSON lines on stdout from a background task. Callers append
//! serialized lines to a shared buffer; the writer flushes it every 20 ms, or as soon as it
//! holds 256 KiB, with one write per flush. A request therefore never waits on the terminal
//! or the log collector, and the proxy does not wake a thread per request. The buffer is
//! unbounded on purpose: an audit line is never dropped; if stdout stalls, memory grows.
//! On shutdown everything buffered is written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event::Event;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const FLUSH_AT: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    wake: Notify,
}

/// A handle for emitting audit events; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
}

impl AuditLog {
    /// A log that writes to stdout (or discards everything when `stdout` is false).
    pub fn start(stdout: bool, tracker: &TaskTracker, token: CancellationToken) -> Self {
        if !stdout {
            return Self { shared: None };
        }
        let shared = Arc::new(Shared::default());
        tracker.spawn(write_loop(shared.clone(), token));
        Self {
            shared: Some(shared),
        }
    }

    /// Queues one event.
    pub fn emit(&self, event: Event) {
        self.emit_record(&event);
    }

    /// Queues any record in the event schema, serialized here (on the caller's thread, from
    /// typed fields: no intermediate JSON tree) as one line.
    pub fn emit_record<T: serde::Serialize>(&self, record: &T) {
        let Some(shared) = &self.shared else { return };
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        // Wake the writer only when the buffer stops being empty (it then coalesces for
        // FLUSH_EVERY) or fills up: no wakeup per line under load, none at all when idle.
        let wake = match shared.buf.lock() {
            Ok(mut buf) => {
                let was_empty = buf.is_empty();
                buf.extend_from_slice(&line);
                was_empty || buf.len() >= FLUSH_AT
            }
            Err(_) => false,
        };
        if wake {
            shared.wake.notify_one();
        }
    }
}

fn take(shared: &Shared) -> Vec<u8> {
    shared
        .buf
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

async fn write_loop(shared: Arc<Shared>, token: CancellationToken) {
    let mut out = tokio::io::stdout();
    loop {
        let mut stopping = tokio::select! {
            _ = token.cancelled() => true,
            _ = shared.wake.notified() => false,
        };
        if !stopping {
            // Coalesce: let more lines arrive, unless the buffer is already full.
            stopping = tokio::select! {
                _ = token.cancelled() => true,
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = shared.wake.notified() => false,
            };
        }
        let chunk = take(&shared);
        if !chunk.is_empty() && (out.write_all(&chunk).await.is_err() || out.flush().await.is_err())
        {
            // stdout is gone (closed pipe): nothing sensible left to do with the lines.
            return;
        }
        if stopping {
            // Lines emitted while the last chunk was written.
            let rest = take(&shared);
            let _ = out.write_all(&rest).await;
            let _ = out.flush().await;
            return;
        }
    }
}
