//! `wal-push` runs as a short-lived process (archive_command), so the WAL metrics cannot live
//! in its own registry: it reports each push to the local daemon
//! (`POST /internal/wal-push`), best effort and bounded by 200 ms. A daemon that is not
//! running costs nothing and changes no exit code. The wire format is [`WalPushReport`],
//! defined here once for the sender and the daemon's HTTP handler.

use std::time::Duration;

/// The daemon's route that receives the reports.
pub const PATH: &str = "/internal/wal-push";

/// One push, as `wal-push` reports it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WalPushReport {
    pub ok: bool,
    pub seconds: f64,
}

impl WalPushReport {
    /// Whether the numbers are usable (a report is input from another process).
    pub fn is_valid(&self) -> bool {
        self.seconds.is_finite() && self.seconds >= 0.0
    }
}

/// Sends one report to the daemon `server` configures (through its one client,
/// [`crate::local_daemon`], so a daemon listening with TLS gets it too).
pub async fn send(server: &crate::config::ServerSettings, report: &WalPushReport) {
    let Ok(body) = serde_json::to_string(report) else {
        return;
    };
    // The report path is open without credentials; a token file is not read per segment.
    let Ok(daemon) = crate::local_daemon::LocalDaemon::new(server, false) else {
        return;
    };
    let _ = daemon
        .post_json(PATH, body, Duration::from_millis(200))
        .await;
}
