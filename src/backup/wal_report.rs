//! `wal-push` runs as a short-lived process (archive_command), so the WAL metrics cannot live
//! in its own registry: it reports each push to the local daemon over loopback
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

/// Sends one report to the daemon listening on `port` of the loopback interface.
pub async fn send(port: u16, report: &WalPushReport) {
    let Ok(body) = serde_json::to_string(report) else {
        return;
    };
    let send = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await?;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), send).await;
}
