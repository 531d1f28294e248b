//! A real Prometheus (Debian package `prometheus`) on a free loopback port, with its config,
//! rule files and TSDB in a temp dir; killed on drop. Used to check that the shipped
//! dashboards' queries return data from what pgvigil really exports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{http_client, require_binary};

pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// A running Prometheus.
pub struct TempPrometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TempPrometheus {
    /// Starts Prometheus scraping `target` (job `job`) every second and evaluating
    /// `rule_files` every second; waits (bounded) until it is ready.
    pub async fn start(job: &str, target: SocketAddr, rule_files: &[PathBuf]) -> Self {
        Self::start_with(
            &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"),
            rule_files,
        )
        .await
    }

    /// Starts Prometheus with `scrape_configs` given as YAML list items (indented two
    /// spaces, e.g. with `scheme: https`, `tls_config` and `basic_auth`).
    pub async fn start_with(scrape_configs: &str, rule_files: &[PathBuf]) -> Self {
        require_binary(PROMETHEUS_BIN, "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("pgvigil-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n{scrape_configs}",
            rules.concat()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
        // The port is chosen before Prometheus binds it; if another process takes it in
        // between, Prometheus exits with "address already in use" and another port is tried.
        for attempt in 1..=3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let log = std::fs::File::create(dir.path().join("prometheus.log"))
                .unwrap_or_else(|e| panic!("{e}"));
            let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
            let mut child = Command::new(PROMETHEUS_BIN)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {PROMETHEUS_BIN}: {e}"));
            match wait_ready(&mut child, addr, dir.path()).await {
                Ok(()) => return Self { child, dir, addr },
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt == 3 || !log.contains("address already in use") {
                        panic!("prometheus did not start on {addr}: {log}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Runs an instant query; returns the result vector (or an error with Prometheus's
    /// message, e.g. a parse error).
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let resp = http_client()
            .get(&url)
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
        if body["status"] != "success" {
            return Err(format!("{expr}: {}", body));
        }
        match &body["data"]["result"] {
            serde_json::Value::Array(v) => Ok(v.clone()),
            // Scalars and strings: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The last lines of Prometheus's log.
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    /// Where the config and TSDB live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 30 s) until /-/ready answers 200; Err with the log if Prometheus exits.
async fn wait_ready(child: &mut Child, addr: SocketAddr, dir: &Path) -> Result<(), String> {
    let url = format!("http://{addr}/-/ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}):\n{}", log_tail(dir)));
        }
        match http_client().get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(format!("not ready after 30 s:\n{}", log_tail(dir)))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The last lines of the Prometheus log in `dir`.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A loopback port nobody listens on right now (Prometheus takes the port as a flag).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}
