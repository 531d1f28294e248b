//! `wal-push` runs as a short-lived process (archive_command), so its metrics cannot live in
//! its own registry: it reports each push to the daemon over loopback
//! (`POST /internal/wal-push`), best effort and bounded by 200 ms. A daemon that is not
//! running costs nothing and changes no exit code.

use std::time::Duration;

use crate::config::Settings;

/// Reports one push to the local daemon.
pub async fn wal_push(settings: &Settings, ok: bool, seconds: f64) {
    let port = settings.server.listen.port();
    let body = serde_json::json!({"ok": ok, "seconds": seconds}).to_string();
    let send = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "POST /internal/wal-push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await?;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), send).await;
}
