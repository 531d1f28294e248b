//! The integration harness: real PostgreSQL clusters (TempCluster from the library), the
//! daemon started in-process, a parser and matcher for scraped metrics, and a bounded
//! `eventually` instead of fixed sleeps. A missing server binary is a hard failure with the
//! install command in its message, never a skip.

#![allow(dead_code)]

pub mod backup;
pub mod chromium;
pub mod https;
pub mod jwks;
pub mod majors;
/// The one generator of the Kubernetes manifests, shared with `make generate`.
#[path = "../../../examples/generate_manifests/manifests.rs"]
pub mod manifests;
pub mod moto;
pub mod postgrest;
pub mod process;
pub mod prometheus;
pub mod promql;
pub mod relay;
pub mod s3_relay;
pub mod shipped;
pub mod tls;
pub mod tmpfs;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use pgvigil::config::{self, Settings};
use pgvigil::pg::{TempCluster, TempClusterOptions};
use pgvigil::{App, Running};

/// A cluster with pg_stat_statements preloaded, as most tests want.
pub async fn cluster() -> TempCluster {
    cluster_with(Vec::new()).await
}

/// A cluster with extra postgresql.conf settings.
pub async fn cluster_with(extra: Vec<(&str, &str)>) -> TempCluster {
    let mut settings = vec![
        (
            "shared_preload_libraries".to_string(),
            "'pg_stat_statements'".to_string(),
        ),
        ("pg_stat_statements.track".to_string(), "'all'".to_string()),
    ];
    settings.extend(
        extra
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    match TempCluster::start(TempClusterOptions {
        settings,
        ..Default::default()
    })
    .await
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start a test PostgreSQL (install it with `make deps`): {e}"),
    }
}

/// A superuser client to `db` on `cluster`.
pub async fn client(cluster: &TempCluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) =
        match tokio_postgres::connect(&cluster.dsn(db), tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => panic!("connecting to {}: {e}", cluster.dsn(db)),
        };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Runs SQL (several statements allowed), panicking with the server's message on error.
pub async fn exec(client: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql).await {
        panic!("{sql}: {}", pgvigil::pg::db_error_message(&e));
    }
}

/// The first column of the one row `sql` returns, panicking with the server's message.
pub async fn query_value<T>(client: &tokio_postgres::Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    match client.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(e) => panic!("{sql}: {}", pgvigil::pg::db_error_message(&e)),
    }
}

/// Settings parsed from TOML through the real config loader; listens on a free port.
pub fn settings(dsn: &str, extra_toml: &str) -> Settings {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[postgres]\ndsn = \"{dsn}\"\n{extra_toml}\n"
    );
    let env = |_: &str| None;
    match config::parse(&text, Path::new("test.toml"), &env) {
        Ok(s) => s,
        Err(e) => panic!("test config: {e}\n{text}"),
    }
}

/// Starts the daemon in-process. Its initial backup is off (most tests' repositories are
/// not theirs to fill); [`daemon_as_configured`] keeps it.
pub async fn daemon(mut settings: Settings) -> Running {
    settings.backup.initial_backup = false;
    daemon_as_configured(settings).await
}

/// Starts the daemon in-process with `settings` unchanged.
pub async fn daemon_as_configured(settings: Settings) -> Running {
    match App::start(settings).await {
        Ok(r) => r,
        Err(e) => panic!("starting pgvigil: {e}"),
    }
}

/// Waits until /readyz says ready.
pub async fn wait_ready(running: &Running) {
    let url = format!("http://{}/readyz", running.addr);
    eventually(Duration::from_secs(30), || async {
        let status = http_client()
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("readyz {status}"))
        }
    })
    .await;
}

/// An HTTP client for talking to the daemon (loopback only).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// The body of a GET of `url` (loopback), or the error as text: for `eventually`.
pub async fn get_text(url: &str) -> Result<String, String> {
    http_client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}

/// Scrapes /metrics as Prometheus text.
pub async fn scrape(running: &Running) -> Scrape {
    scrape_with(running, None).await.1
}

/// Scrapes with an Accept header; returns the content type and the parsed page.
pub async fn scrape_with(running: &Running, accept: Option<&str>) -> (String, Scrape) {
    let mut req = http_client().get(running.metrics_url());
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => panic!("scraping {}: {e}", running.metrics_url()),
    };
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading scrape body: {e}"));
    (ct, Scrape::parse(&body))
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition page.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format (enough for pgvigil's own output: quoted values with escapes).
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => panic!("bad sample line {line:?}"),
            };
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match name_labels.split_once('{') {
                None => (name_labels.to_string(), BTreeMap::new()),
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Self {
            text: text.to_string(),
            samples,
        }
    }

    /// Starts a matcher for `name`.
    pub fn metric(&self, name: &str) -> Matcher<'_> {
        Matcher {
            scrape: self,
            name: name.to_string(),
            labels: Vec::new(),
        }
    }

    /// Distinct metric names on the page.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim_start_matches(',')
            .to_string();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            panic!("bad labels {s:?}");
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => break,
                },
                '"' => break,
                c => val.push(c),
            }
        }
        out.insert(key, val);
    }
    out
}

/// Selects samples by name and labels: `scrape.metric("pg_up").value()`.
pub struct Matcher<'a> {
    scrape: &'a Scrape,
    name: String,
    labels: Vec<(String, String)>,
}

impl<'a> Matcher<'a> {
    /// Requires a label value.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    /// Every matching sample.
    pub fn all(&self) -> Vec<&'a Sample> {
        let scrape: &'a Scrape = self.scrape;
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.name == self.name && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .collect()
    }

    /// The value of the one matching sample, or None if there is none; panics if several.
    pub fn value(&self) -> Option<f64> {
        let all = self.all();
        assert!(
            all.len() <= 1,
            "{} {:?} matches {} samples",
            self.name,
            self.labels,
            all.len()
        );
        all.first().map(|s| s.value)
    }

    /// Like `value`, but an error message naming the metric when missing.
    pub fn get(&self) -> Result<f64, String> {
        self.value()
            .ok_or_else(|| format!("no sample {} {:?}", self.name, self.labels))
    }
}

/// Retries `f` until it returns Ok, at most `patience`; panics with the last error.
pub async fn eventually<T, F, Fut>(patience: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("still failing after {patience:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits (at most 60 s) until the server behind `c` has left recovery: a restored cluster
/// reached its target and promoted, or a promoted standby finished.
pub async fn wait_promoted(c: &tokio_postgres::Client) {
    eventually(Duration::from_secs(60), || async {
        let in_recovery: bool = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if in_recovery {
            Err("still in recovery".to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

/// Checks that a system binary exists, failing with the install command if not.
pub fn require_binary(path: &str, package: &str) {
    if !Path::new(path).exists() {
        panic!(
            "{path} is missing: install it with `apt-get install {package}` (or run `make deps`)"
        );
    }
}

/// The pgvigil binary at a path the `postgres` OS user can execute (archive_command and
/// restore_command run as postgres, and the build directory may be under /root). Copied
/// once per test run.
pub fn pgvigil_bin() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join("pgvigil-test-bin");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        // Copies of earlier runs (bounded: one directory, files older than an hour).
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok());
            if old.is_some_and(|age| age > std::time::Duration::from_secs(3600)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let dest = dir.join(format!("pgvigil-{}", std::process::id()));
        std::fs::copy(env!("CARGO_BIN_EXE_pgvigil"), &dest)
            .unwrap_or_else(|e| panic!("copying pgvigil: {e}"));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        dest
    })
    .clone()
}

/// A directory the `postgres` OS user owns (for repositories and configs it must use).
pub fn postgres_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgvigil-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A command for the pgvigil binary that runs as the `postgres` OS user when the tests run
/// as root: in production the CLI, archive_command and the daemon all run as one user, and
/// the repository's files must be writable by all of them.
pub fn pgvigil_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(pgvigil_bin());
    cmd.args(args).env("RUST_LOG", "warn");
    as_server_user(&mut cmd);
    cmd
}

/// A command for the pgvigil binary under libfaketime, its wall clock `offset` away from
/// the real one ("+40d", "-40s"), as `pgvigil_command` (the postgres user when root).
/// Only the wall clock moves: timers keep their real pace.
pub fn pgvigil_command_at(offset: &str, args: &[&str]) -> std::process::Command {
    // libfaketime preloaded into pgvigil itself, not through the `faketime` wrapper: the
    // wrapper forks and waits, so killing it (by its pid, on drop) left pgvigil running.
    const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    require_binary(LIBFAKETIME, "faketime");
    let mut cmd = std::process::Command::new(pgvigil_bin());
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    as_server_user(&mut cmd);
    cmd
}

/// Runs `pgvigil_command_at(offset, args)` with `env`; returns success, stdout, stderr.
pub fn run_pgvigil_at(
    offset: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (bool, String, String) {
    outcome(pgvigil_command_at(offset, args).envs(env.iter().map(|(k, v)| (k, v))))
}

/// Makes `cmd` run as the `postgres` OS user when the tests run as root.
pub fn as_server_user(cmd: &mut std::process::Command) {
    if let Ok(Some((uid, gid))) = pgvigil::pg::binaries::server_user() {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    }
}

/// Runs the pgvigil binary (as `pgvigil_command`) with `args`; returns success, stdout
/// and stderr.
pub fn run_pgvigil(args: &[&str]) -> (bool, String, String) {
    outcome(&mut pgvigil_command(args))
}

/// Like `run_pgvigil`, with extra environment (e.g. AWS credentials for S3).
pub fn run_pgvigil_env(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    outcome(pgvigil_command(args).envs(env.iter().map(|(k, v)| (k, v))))
}

/// Runs `cmd` to its end: success, stdout and stderr.
fn outcome(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes `path` mode 0600: pgvigil refuses secret and key files that others may read.
pub fn make_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
}
