//! The HTTP listeners (metrics server and API proxy) with real TLS: a real Prometheus
//! scraping over HTTPS with basic auth from an exporter-toolkit web config file, mutual
//! TLS, certificate rotation without restart, slow-header and idle connections, the
//! connection cap, the proxy's body limit and the refusal of weak secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::https::{client_config, https_get};
use crate::harness::prometheus::TempPrometheus;
use crate::harness::tls::{CertFiles, TestPki};
use crate::harness::{self, eventually};

const DEAD_PG: &str = "postgresql://postgres@127.0.0.1:1/postgres";
const PASSWORD: &str = "correct horse battery staple";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn der_of(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert)
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()))
        .to_vec()
}

/// Settings loaded from a real file (so `server.web_config_file` is read as in production).
fn settings_from_file(dir: &Path, toml: &str) -> pgvigil::config::Settings {
    let path = dir.join("pgvigil.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
    let env = |_: &str| None;
    pgvigil::config::load(&path, &env).unwrap_or_else(|e| panic!("config: {e}\n{toml}"))
}

#[tokio::test]
async fn prometheus_scrapes_over_https_with_basic_auth_from_a_web_config_file() {
    let mut pki = TestPki::new("listeners-ca");
    let server = pki.server("metrics", &[]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hash = bcrypt::hash(PASSWORD, 6).unwrap_or_else(|e| panic!("{e}"));
    // Relative paths in the web config are relative to its directory.
    std::fs::copy(&server.cert, dir.path().join("server.crt")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&server.key, dir.path().join("server.key")).unwrap_or_else(|e| panic!("{e}"));
    harness::make_private(&dir.path().join("server.key"));
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = settings_from_file(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nweb_config_file = \"{}\"\n[postgres]\ndsn = \"{DEAD_PG}\"\n[audit]\nstdout = false\n",
            web.display()
        ),
    );
    let running = harness::daemon(settings).await;
    let addr = running.addr;
    let config = client_config(&pki.ca_cert, None);

    let (status, text, _) = https_get(
        addr,
        config.clone(),
        "/metrics",
        Some(&basic("prometheus", PASSWORD)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    assert!(text.contains("pgvigil_build_info"), "{text}");
    for auth in [
        Some(basic("prometheus", "wrong")),
        Some(basic("nobody", PASSWORD)),
        None,
    ] {
        let (status, text, _) = https_get(addr, config.clone(), "/metrics", auth.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 401, "{auth:?}: {text}");
        assert!(
            text.contains("WWW-Authenticate") || text.contains("www-authenticate"),
            "{text}"
        );
    }
    let (status, _, _) = https_get(addr, config.clone(), "/", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 401, "the index page is protected too");
    let (status, _, _) = https_get(addr, config.clone(), "/healthz", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "probes stay open");
    // Plain HTTP on the TLS port gets no metrics.
    assert!(harness::get_text(&format!("http://{addr}/metrics"))
        .await
        .is_err());

    let prometheus = TempPrometheus::start_with(
        &format!(
            "  - job_name: pgvigil\n    scheme: https\n    tls_config:\n      ca_file: {}\n    \
             basic_auth:\n      username: prometheus\n      password: '{PASSWORD}'\n    \
             static_configs:\n      - targets: ['{addr}']\n",
            pki.ca_cert.display()
        ),
        &[],
    )
    .await;
    eventually(Duration::from_secs(60), || async {
        let up = prometheus.query("up{job=\"pgvigil\"}").await?;
        let build = prometheus
            .query("pgvigil_build_info{job=\"pgvigil\"}")
            .await?;
        match (up.first(), build.first()) {
            (Some(u), Some(b)) if u["value"][1] == "1" && b["value"][1] == "1" => Ok(()),
            _ => Err(format!(
                "up={up:?} build_info={build:?}\n{}",
                prometheus.log_tail()
            )),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

fn tls_toml(server: &CertFiles, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{extra}\n[postgres]\ndsn = \"{DEAD_PG}\"\n[audit]\nstdout = false\n",
        server.cert.display(),
        server.key.display()
    )
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let mut pki = TestPki::new("mtls-ca");
    let server = pki.server("mtls-server", &[]);
    let client = pki.client("mtls-client", "prometheus");
    let (mut other, _) = crate::harness::tls::other_ca("mtls-other");
    let stranger = other.client("stranger", "prometheus");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = settings_from_file(
        dir.path(),
        &tls_toml(
            &server,
            &format!(
                "tls_client_ca_file = \"{}\"\ntls_min_version = \"1.3\"",
                pki.ca_cert.display()
            ),
        ),
    );
    let running = harness::daemon(settings).await;
    let (status, _, _) = https_get(
        running.addr,
        client_config(&pki.ca_cert, Some(&client)),
        "/metrics",
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("with a certificate: {e}"));
    assert_eq!(status, 200);
    for (what, config) in [
        ("no certificate", client_config(&pki.ca_cert, None)),
        (
            "a certificate from another CA",
            client_config(&pki.ca_cert, Some(&stranger)),
        ),
    ] {
        let r = https_get(running.addr, config, "/metrics", None).await;
        assert!(r.is_err(), "{what}: served {r:?}");
    }
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn rotated_certificate_files_are_served_without_restart() {
    let mut pki = TestPki::new("rotate-ca");
    let first = pki.server("rotate-1", &[]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The daemon reads these two paths; rotation writes over them.
    let live = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let install = |from: &CertFiles| {
        std::fs::copy(&from.cert, &live.cert).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(&from.key, &live.key).unwrap_or_else(|e| panic!("{e}"));
        harness::make_private(&live.key);
    };
    install(&first);
    let running = harness::daemon(settings_from_file(dir.path(), &tls_toml(&live, ""))).await;
    let config = client_config(&pki.ca_cert, None);
    let (_, _, leaf) = https_get(running.addr, config.clone(), "/healthz", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leaf, der_of(&first.cert));

    let second = pki.server("rotate-2", &[]);
    install(&second);
    let (_, _, leaf) = https_get(running.addr, config.clone(), "/healthz", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        leaf,
        der_of(&second.cert),
        "the next connection sees the new certificate"
    );

    // A half-written certificate keeps the previous one in service.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nMIIB")
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, _, leaf) = https_get(running.addr, config.clone(), "/healthz", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    assert_eq!(leaf, der_of(&second.cert));
    running.shutdown(Duration::from_secs(5)).await;
}

/// Reads until the peer closes; Ok(bytes read) on close, Err on the patience running out.
async fn read_until_closed(s: &mut TcpStream, patience: Duration) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "still open after {patience:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_header_and_idle_connections_are_closed_after_their_timeouts() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n[postgres]\ndsn = \"{DEAD_PG}\"\n[audit]\nstdout = false\n"
    );
    let env = |_: &str| None;
    let settings =
        pgvigil::config::parse(&text, Path::new("t.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let running = harness::daemon(settings).await;

    let mut slow = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    slow.write_all(b"GET /healthz HT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = read_until_closed(&mut slow, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("slow header: {e}"));
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "served a half request"
    );

    let mut idle = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = read_until_closed(&mut idle, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("idle keep-alive: {e}"));
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{got:?}"
    );

    let mut silent = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    read_until_closed(&mut silent, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("a client that sends nothing: {e}"));
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_served_again_below_it() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n[postgres]\ndsn = \"{DEAD_PG}\"\n[audit]\nstdout = false\n"
    );
    let env = |_: &str| None;
    let settings =
        pgvigil::config::parse(&text, Path::new("t.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let running = harness::daemon(settings).await;
    let held_a = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let held_b = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The accept loop takes both slots (bounded wait: each accept is immediate).
    let mut third = eventually(Duration::from_secs(10), || async {
        let mut s = TcpStream::connect(running.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let got = read_until_closed(&mut s, Duration::from_secs(2)).await;
        match got {
            Ok(b) if b.is_empty() => Ok(s),
            other => Err(format!("not refused: {other:?}")),
        }
    })
    .await;
    let mut buf = [0u8; 16];
    assert_eq!(
        third.read(&mut buf).await.unwrap_or(0),
        0,
        "refused means closed"
    );
    drop(held_a);
    drop(held_b);
    eventually(Duration::from_secs(10), || async {
        harness::get_text(&format!("http://{}/healthz", running.addr)).await
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{e}"));
    p
}

#[tokio::test]
async fn empty_short_or_readable_bearer_tokens_stop_the_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = "b".repeat(40);
    for (name, text, mode, expect) in [
        ("empty", "\n", 0o600, "is empty"),
        ("short", "hunter2\n", 0o600, "at least 32"),
        ("readable", good.as_str(), 0o644, "must not read"),
    ] {
        let p = secret_file(dir.path(), name, text, mode);
        let settings = harness::settings(DEAD_PG, "[audit]\nstdout = false\n");
        let mut settings = settings;
        settings.server.bearer_token_file = Some(p.clone());
        let err = match pgvigil::App::start(settings).await {
            Ok(r) => {
                r.shutdown(Duration::from_secs(5)).await;
                panic!("{name}: started");
            }
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("server.bearer_token_file") && err.contains(expect),
            "{name}: {err}"
        );
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
    // A good token works, and both it and nothing else open /metrics.
    let p = secret_file(dir.path(), "good", &format!("{good}\n"), 0o600);
    let mut settings = harness::settings(DEAD_PG, "[audit]\nstdout = false\n");
    settings.server.bearer_token_file = Some(p);
    let running = harness::daemon(settings).await;
    let url = running.metrics_url();
    let client = harness::http_client();
    let status = |auth: Option<String>| {
        let mut req = client.get(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(status(Some(format!("Bearer {good}"))).await, 200);
    assert_eq!(
        status(Some(format!("Bearer {}", "x".repeat(40)))).await,
        401
    );
    assert_eq!(status(None).await, 401);
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_proxy_answers_413_to_bodies_over_max_body_bytes() {
    // On the daemon's runtime (workers = 0) and on three worker threads sharing the port.
    for workers in [0, 3] {
        let fake = crate::harness::postgrest::FakePostgrest::start().await;
        let settings = harness::settings(
            DEAD_PG,
            &format!(
                "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nmax_body_bytes = 100\nworkers = {workers}\n[audit]\nstdout = false\n",
                fake.api
            ),
        );
        let running = harness::daemon(settings).await;
        let proxy = running.proxy_addr.unwrap_or_else(|| panic!("no proxy"));
        let client = harness::http_client();
        let post = |len: usize| {
            client
                .post(format!("http://{proxy}/articles"))
                .header("Content-Type", "application/json")
                .body("x".repeat(len))
                .send()
        };
        let big = post(1000).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(big.status().as_u16(), 413, "workers = {workers}");
        assert!(
            big.headers().contains_key("x-request-id"),
            "a refused request has a request id too"
        );
        let small = post(10).await.unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(small.status().as_u16(), 413);
        // Separate connections land on any worker; every request is counted once.
        for _ in 0..8 {
            let fresh = harness::http_client();
            let r = fresh
                .get(format!("http://{proxy}/articles"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status().as_u16(), 200, "workers = {workers}");
        }
        let s = harness::scrape(&running).await;
        let count = |code: &str, method: &str| {
            s.metric("pgvigil_api_requests_total")
                .label("code", code)
                .label("method", method)
                .value()
        };
        assert_eq!(count("413", "POST"), Some(1.0), "workers = {workers}");
        assert_eq!(count("200", "GET"), Some(8.0), "workers = {workers}");
        running.shutdown(Duration::from_secs(5)).await;
    }
}
