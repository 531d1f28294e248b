//! Writes audit events as JSON lines on stdout from a background task, in batches (one
//! write and flush per batch), so a request never waits on the terminal or the log
//! collector. The channel is unbounded on purpose: an audit line is never dropped; if stdout
//! stalls, memory grows instead, which `pgvigil_audit_queue` would show (issue: audit log).

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event::Event;

/// A handle for emitting audit events; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

impl AuditLog {
    /// A log that writes to stdout (or discards everything when `stdout` is false).
    pub fn start(stdout: bool, tracker: &TaskTracker, token: CancellationToken) -> Self {
        if !stdout {
            return Self { tx: None };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(write_loop(rx, token));
        Self { tx: Some(tx) }
    }

    /// Queues one event.
    pub fn emit(&self, event: Event) {
        self.emit_record(&event);
    }

    /// Queues any record in the event schema, serialized here (on the caller's thread, from
    /// typed fields: no intermediate JSON tree) as one line.
    pub fn emit_record<T: serde::Serialize>(&self, record: &T) {
        if let Some(tx) = &self.tx {
            let mut line = Vec::with_capacity(384);
            if serde_json::to_writer(&mut line, record).is_ok() {
                line.push(b'\n');
                let _ = tx.send(line);
            }
        }
    }
}

async fn write_loop(mut rx: mpsc::UnboundedReceiver<Vec<u8>>, token: CancellationToken) {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = token.cancelled() => {
                // Drain what is queued, then stop.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        append(&mut buf, &first);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(e) => append(&mut buf, &e),
                Err(_) => break,
            }
        }
        if out.write_all(&buf).await.is_err() || out.flush().await.is_err() {
            // stdout is gone (closed pipe): nothing sensible left to do with the lines.
            break;
        }
        buf.clear();
    }
}

fn append(buf: &mut Vec<u8>, line: &[u8]) {
    buf.extend_from_slice(line);
}
