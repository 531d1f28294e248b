//! The API proxy and the PostgREST admin scraper, against the PostgREST stand-in.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::harness::jwks::{JwksServer, TestKey};
use crate::harness::postgrest::FakePostgrest;
use crate::harness::tls::TestPki;
use crate::harness::{daemon, eventually, http_client, scrape, settings, Scrape};

const SECRET: &str = "reallyreallyreallyreallyreallysafe";
const DEAD_PG: &str = "postgresql://postgres@127.0.0.1:1/postgres";

/// An HS256 token; an `exp` an hour ahead is added unless the claims have one (the proxy
/// requires `exp` by default).
fn token(mut claims: serde_json::Value, secret: &str) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = (jsonwebtoken::get_current_timestamp() + 3600).into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn proxy_toml(fake: &FakePostgrest, secret_file: &std::path::Path, extra: &str) -> String {
    format!(
        "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\njwt_secret_file = \"{}\"\nmax_routes = 4\n{extra}\n[postgrest]\nadmin_url = \"http://{}\"\n[audit]\nstdout = false\n",
        fake.api,
        secret_file.display(),
        fake.admin
    )
}

fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("jwt");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap_or_else(|e| panic!("{e}"));
    // Secret files readable by others are refused at start.
    crate::harness::make_private(&p);
    p
}

/// A PostgREST stand-in and a daemon proxying to it; returns the proxy's base URL too.
async fn proxy_daemon(extra: &str) -> (FakePostgrest, tempfile::TempDir, pgvigil::Running, String) {
    let fake = FakePostgrest::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let running = daemon(settings(
        DEAD_PG,
        &proxy_toml(&fake, &secret_file(&dir), extra),
    ))
    .await;
    let base = format!(
        "http://{}",
        running.proxy_addr.unwrap_or_else(|| panic!("no proxy"))
    );
    (fake, dir, running, base)
}

fn count(s: &Scrape, route: &str, method: &str, code: &str, role: &str) -> f64 {
    s.metric("pgvigil_api_requests_total")
        .label("route", route)
        .label("method", method)
        .label("code", code)
        .label("role", role)
        .value()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_counts_routes_roles_codes_and_rows() {
    let (_fake, _dir, running, base) = proxy_daemon("").await;
    let c = http_client();
    let author = format!(
        "Bearer {}",
        token(serde_json::json!({"role": "author", "sub": "u-42"}), SECRET)
    );
    let forged = format!(
        "Bearer {}",
        token(
            serde_json::json!({"role": "admin"}),
            "not-the-secret-not-the-secret-!!"
        )
    );

    for _ in 0..3 {
        let r = c
            .get(format!("{base}/articles?select=id,title"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body.as_array().map(Vec::len), Some(25));
    }
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/articles?limit=10"))
            .header("authorization", &author)
            .header("prefer", "count=exact")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok()),
            Some("0-9/100")
        );
    }
    let r = c
        .get(format!("{base}/missing"))
        .header("authorization", &author)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 406);
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/unavailable"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 503);
    }
    let r = c
        .post(format!("{base}/rpc/login"))
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/not-a-route"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/articles"))
        .header("authorization", &forged)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.status(),
        200,
        "the proxy forwards; PostgREST itself rejects bad tokens"
    );

    // Bodies stream through intact.
    let big = c
        .get(format!("{base}/big"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(big.bytes().await.map(|b| b.len()).unwrap_or(0), 4 << 20);

    let s = eventually(Duration::from_secs(5), || async {
        let s = scrape(&running).await;
        // The last request is recorded when its body ends; wait for it.
        if s.metric("pgvigil_api_request_duration_seconds_count")
            .label("route", "other")
            .all()
            .len()
            == 1
            && count(&s, "other", "GET", "200", "anon") == 1.0
        {
            Ok(s)
        } else {
            Err("big body not recorded yet".to_string())
        }
    })
    .await;
    assert_eq!(count(&s, "/articles", "GET", "200", "anon"), 3.0);
    assert_eq!(count(&s, "/articles", "GET", "200", "author"), 2.0);
    assert_eq!(count(&s, "/articles", "GET", "200", "invalid_token"), 1.0);
    assert_eq!(count(&s, "/missing", "GET", "406", "author"), 1.0);
    assert_eq!(count(&s, "/unavailable", "GET", "503", "anon"), 2.0);
    assert_eq!(count(&s, "/rpc/login", "POST", "200", "anon"), 1.0);
    // max_routes = 4: /articles, /missing, /unavailable, /rpc/login; the rest is "other".
    assert_eq!(count(&s, "other", "GET", "404", "anon"), 1.0);
    assert_eq!(
        s.metric("pgvigil_api_rows_total")
            .label("route", "/articles")
            .label("method", "GET")
            .value(),
        Some(3.0 * 25.0 + 2.0 * 10.0 + 25.0)
    );
    assert_eq!(
        s.metric("pgvigil_api_upstream_errors_total")
            .label("route", "/missing")
            .label("error", "PGRST116")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        s.metric("pgvigil_api_upstream_errors_total")
            .label("route", "/unavailable")
            .label("error", "PGRST001")
            .value(),
        Some(2.0)
    );
    assert_eq!(
        s.metric("pgvigil_api_request_duration_seconds_count")
            .label("route", "/articles")
            .label("method", "GET")
            .value(),
        Some(6.0)
    );
    assert_eq!(
        s.metric("pgvigil_api_upstream_stage_duration_seconds_count")
            .label("stage", "transaction")
            .value(),
        Some(6.0)
    );
    // The 5xx ratio is computable from the metrics alone.
    let all: f64 = s
        .metric("pgvigil_api_requests_total")
        .all()
        .iter()
        .map(|x| x.value)
        .sum();
    let errors: f64 = s
        .metric("pgvigil_api_requests_total")
        .all()
        .iter()
        .filter(|x| x.labels.get("code").is_some_and(|c| c.starts_with('5')))
        .map(|x| x.value)
        .sum();
    assert_eq!((errors, all), (2.0, 12.0));
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_request_ids_and_drops_hop_by_hop_headers() {
    let (fake, _dir, running, base) = proxy_daemon("").await;
    let c = http_client();
    let r = c
        .get(format!("{base}/articles"))
        .header("x-request-id", "req-123")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("authorization", "Bearer abc.def.ghi")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-123")
    );
    assert_eq!(
        r.headers()
            .get("x-seen-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-123")
    );
    let r = c
        .get(format!("{base}/articles"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let generated = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID is generated: {generated:?}");
    assert_eq!(
        r.headers()
            .get("x-seen-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(generated.as_str())
    );

    let seen = fake
        .state
        .seen
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let first = &seen[0];
    assert!(
        first.get("x-hop").is_none(),
        "a header named in Connection must not be forwarded"
    );
    assert_eq!(
        first.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer abc.def.ghi")
    );
    assert!(first.get("x-forwarded-for").is_some());
    assert_eq!(
        first.get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
        Some("http"),
        "a plain listener forwards proto http"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_dead_upstreams_are_bounded() {
    let (fake, _dir, running, base) = proxy_daemon("upstream_timeout = \"1s\"").await;
    let c = http_client();
    let t = Instant::now();
    let r = c
        .get(format!("{base}/slow"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 504);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );

    fake.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = c
        .get(format!("{base}/articles"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 502);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let s = scrape(&running).await;
    assert_eq!(count(&s, "/slow", "GET", "504", "anon"), 1.0);
    assert_eq!(count(&s, "/articles", "GET", "502", "anon"), 1.0);
    assert_eq!(
        s.metric("pgvigil_api_upstream_errors_total")
            .label("route", "/articles")
            .label("error", "upstream_unreachable")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        s.metric("pgvigil_api_upstream_errors_total")
            .label("route", "/slow")
            .label("error", "upstream_timeout")
            .value(),
        Some(1.0)
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgrest_admin_metrics_pass_through_and_readiness_follows() {
    let fake = FakePostgrest::start().await;
    let text = format!(
        "[postgrest]\nadmin_url = \"http://{}\"\ntimeout = \"500ms\"\n[audit]\nstdout = false\n",
        fake.admin
    );
    let running = daemon(settings(DEAD_PG, &text)).await;
    let s = scrape(&running).await;
    assert_eq!(s.metric("pgvigil_postgrest_up").value(), Some(1.0));
    assert_eq!(s.metric("pgvigil_postgrest_ready").value(), Some(1.0));
    assert_eq!(s.metric("pgrst_db_pool_timeouts_total").value(), Some(7.0));
    assert_eq!(
        s.metric("pgrst_schema_cache_loads_total")
            .label("status", "SUCCESS")
            .value(),
        Some(3.0)
    );
    assert!(s
        .text
        .contains("# TYPE pgrst_db_pool_timeouts_total counter"));
    assert!(s
        .text
        .contains("# HELP pgrst_db_pool_max Max pool connections"));

    fake.state.ready.store(false, Ordering::Release);
    let s = scrape(&running).await;
    assert_eq!(s.metric("pgvigil_postgrest_ready").value(), Some(0.0));
    assert_eq!(s.metric("pgvigil_postgrest_up").value(), Some(1.0));

    fake.stop();
    let t = Instant::now();
    let s = scrape(&running).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.metric("pgvigil_postgrest_up").value(), Some(0.0));
    assert!(
        s.metric("pgrst_db_pool_max").value().is_none(),
        "no stale pgrst_* series"
    );
    assert_eq!(
        s.metric("pg_up").value(),
        Some(0.0),
        "the rest of the page is intact"
    );
    assert_eq!(
        s.metric("pg_exporter_last_scrape_error").value(),
        Some(1.0),
        "PostgreSQL down is a scrape error, as postgres_exporter says"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_no_secrets() {
    let fake = FakePostgrest::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = secret_file(&dir);
    let cfg = dir.path().join("pgvigil.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{DEAD_PG}\"\n[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\njwt_secret_file = \"{}\"\n[backup]\ninitial_backup = false\n",
        fake.api,
        secret.display()
    );
    std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgvigil"))
        .args(["run", "-c", &cfg.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let started = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .find(|l| l.contains("\"event\":\"proxy.started\""))
        .unwrap_or_else(|| panic!("no proxy.started line"));
    let v: serde_json::Value = serde_json::from_str(&started).unwrap_or_else(|e| panic!("{e}"));
    let listen = v["listen"].as_str().unwrap_or("").to_string();

    let jwt = token(
        serde_json::json!({"role": "author", "sub": "user-7"}),
        SECRET,
    );
    let c = http_client();
    let r = c
        .get(format!(
            "http://{listen}/articles?password=eq.hunter2&limit=3"
        ))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let r = c
        .get(format!("http://{listen}/missing"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = r.bytes().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("{e}"));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let all = format!("{}\n{}", rest.join("\n"), stderr);
    for secret in [jwt.as_str(), "hunter2", "Bearer", SECRET] {
        assert!(!all.contains(secret), "{secret:?} leaked into the logs");
    }
    let access: Vec<serde_json::Value> = rest
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "access")
        .collect();
    assert_eq!(access.len(), 2, "{rest:?}");
    let a = &access[0];
    assert_eq!(a["event"], "api.request");
    assert_eq!(a["target"]["route"], "/articles");
    assert_eq!(a["target"]["method"], "GET");
    assert_eq!(a["actor"]["role"], "author");
    assert_eq!(a["actor"]["role_verified"], true);
    assert_eq!(a["actor"]["sub"], "user-7");
    assert_eq!(a["details"]["code"], 200);
    assert_eq!(a["details"]["rows"], 3);
    assert!(a["details"]["bytes"].as_u64().unwrap_or(0) > 0);
    assert!(a["details"]["latency_ms"].as_f64().is_some());
    assert!(a["details"]["request_id"]
        .as_str()
        .is_some_and(|s| s.len() == 36));
    assert!(a["ts"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('.')));
    let b = &access[1];
    assert_eq!(b["details"]["upstream_error"], "PGRST116");
    assert_eq!(b["actor"]["role"], "anon");
}

// --- https upstreams and JWKS ----------------------------------------------------------

const AUD: &str = "pgvigil-test";

/// Claims that pass the JWKS daemons' rules (audience, exp), with `role`.
fn good_claims(role: &str) -> serde_json::Value {
    serde_json::json!({"role": role, "sub": "u-1", "aud": AUD,
                       "exp": jsonwebtoken::get_current_timestamp() + 600})
}

/// A daemon proxying to `upstream` (a URL) with the keys at `jwks_url`, refreshed every
/// `refresh`.
async fn jwks_daemon(
    upstream: &str,
    jwks_url: &str,
    refresh: &str,
    extra: &str,
) -> (pgvigil::Running, String) {
    let text = format!(
        "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\njwks_url = \"{jwks_url}\"\njwks_refresh = \"{refresh}\"\njwt_audience = \"{AUD}\"\n{extra}\n[audit]\nstdout = false\n"
    );
    let running = daemon(settings(DEAD_PG, &text)).await;
    let base = format!(
        "http://{}",
        running.proxy_addr.unwrap_or_else(|| panic!("no proxy"))
    );
    (running, base)
}

/// Sends GET /articles with `token` and returns the status.
async fn get_with(base: &str, token: Option<&str>) -> u16 {
    let mut req = http_client().get(format!("{base}/articles?limit=1"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

/// Waits until the request counter for `role` on GET /articles reaches `n`.
async fn wait_count(running: &pgvigil::Running, role: &str, n: f64) -> Scrape {
    eventually(Duration::from_secs(5), || async {
        let s = scrape(running).await;
        let got = count(&s, "/articles", "GET", "200", role);
        if got >= n {
            Ok(s)
        } else {
            Err(format!("{role}: {got} of {n} requests recorded"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reaches_an_https_upstream_trusting_only_the_configured_ca() {
    let mut pki = TestPki::new("upstream");
    let cert = pki.server("postgrest", &[]);
    let fake = FakePostgrest::start_tls(&cert).await;
    let text = |ca: &std::path::Path| {
        format!(
            "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"https://127.0.0.1:{}\"\nupstream_ca_file = \"{}\"\n[audit]\nstdout = false\n",
            fake.api.port(),
            ca.display()
        )
    };
    let running = daemon(settings(DEAD_PG, &text(&pki.ca_cert))).await;
    let base = format!(
        "http://{}",
        running.proxy_addr.unwrap_or_else(|| panic!("no proxy"))
    );
    let r = http_client()
        .get(format!("{base}/articles?limit=3"))
        .header("x-request-id", "tls-1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some("0-2/*")
    );
    let _ = r.bytes().await;
    let seen = fake
        .state
        .seen
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    assert_eq!(
        seen.last()
            .and_then(|h| h.get("x-request-id"))
            .and_then(|v| v.to_str().ok()),
        Some("tls-1"),
        "the upstream saw the request over TLS"
    );
    wait_count(&running, "anon", 1.0).await;
    running.shutdown(Duration::from_secs(5)).await;

    // A CA that did not sign the upstream's certificate: no connection, a 502.
    let (_other, other_ca) = crate::harness::tls::other_ca("elsewhere");
    let running = daemon(settings(DEAD_PG, &text(&other_ca))).await;
    let base = format!(
        "http://{}",
        running.proxy_addr.unwrap_or_else(|| panic!("no proxy"))
    );
    assert_eq!(get_with(&base, None).await, 502);
    let s = scrape(&running).await;
    assert_eq!(
        s.metric("pgvigil_api_upstream_errors_total")
            .label("route", "/articles")
            .label("error", "upstream_unreachable")
            .value(),
        Some(1.0)
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_of_every_family_verify_and_rotate_without_restart() {
    let mut pki = TestPki::new("idp");
    let cert = pki.server("idp", &[]);
    let fake = FakePostgrest::start_tls(&cert).await;
    let rs256 = TestKey::rsa("rsa-1", jsonwebtoken::Algorithm::RS256);
    let ps256 = TestKey::rsa("rsa-ps", jsonwebtoken::Algorithm::PS256);
    let es256 = TestKey::ec("ec-256", jsonwebtoken::Algorithm::ES256);
    let es384 = TestKey::ec("ec-384", jsonwebtoken::Algorithm::ES384);
    let ed = TestKey::ed25519("ed-1");
    let jwks = JwksServer::start(&[&rs256, &ps256, &es256, &es384, &ed], Some(&cert)).await;
    let (running, base) = jwks_daemon(
        &format!("https://127.0.0.1:{}", fake.api.port()),
        &jwks.url,
        // No periodic refresh during the test: the new key is found because its kid is unknown.
        "1h",
        &format!("upstream_ca_file = \"{}\"", pki.ca_cert.display()),
    )
    .await;
    for key in [&rs256, &ps256, &es256, &es384, &ed] {
        let t = key.sign(&good_claims(&format!("role_{}", key.kid)));
        assert_eq!(get_with(&base, Some(&t)).await, 200);
    }
    let s = wait_count(&running, "role_ed-1", 1.0).await;
    for key in ["rsa-1", "rsa-ps", "ec-256", "ec-384", "ed-1"] {
        assert_eq!(
            count(&s, "/articles", "GET", "200", &format!("role_{key}")),
            1.0,
            "{key}"
        );
    }
    assert_eq!(count(&s, "/articles", "GET", "200", "invalid_token"), 0.0);
    assert_eq!(s.metric("pgvigil_api_jwks_keys").value(), Some(5.0));

    // Rotation: publish a new key beside the old one and sign with it at once; the unknown
    // kid makes the proxy fetch the set again (no restart, no waiting for the period).
    let hits = jwks.hits();
    let rs2 = TestKey::rsa("rsa-2", jsonwebtoken::Algorithm::RS256);
    jwks.publish(&[&rs256, &rs2]);
    let new = rs2.sign(&good_claims("rotated"));
    assert_eq!(get_with(&base, Some(&new)).await, 200);
    assert_eq!(get_with(&base, Some(&new)).await, 200);
    let s = wait_count(&running, "rotated", 2.0).await;
    assert_eq!(jwks.hits(), hits + 1, "one fetch for the unknown kid");
    assert_eq!(s.metric("pgvigil_api_jwks_keys").value(), Some(2.0));
    assert!(
        s.metric("pgvigil_api_jwks_last_refresh_timestamp_seconds")
            .value()
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        s.metric("pgvigil_api_jwks_refresh_failures_total").value(),
        Some(0.0)
    );
    // Unknown kids are rate-limited: inventing them does not make the proxy fetch again.
    let stranger = TestKey::ec("nobody", jsonwebtoken::Algorithm::ES256);
    for _ in 0..3 {
        assert_eq!(
            get_with(&base, Some(&stranger.sign(&good_claims("x")))).await,
            200
        );
    }
    wait_count(&running, "invalid_token", 3.0).await;
    assert_eq!(
        jwks.hits(),
        hits + 1,
        "at most one unknown-kid fetch per 10s"
    );
    let seen = fake.state.seen.lock().map(|v| v.len()).unwrap_or(0);
    assert!(seen >= 10, "the https upstream saw {seen} requests");
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_confused_tokens_are_never_verified() {
    let fake = FakePostgrest::start().await;
    let rsa = TestKey::rsa("rsa-1", jsonwebtoken::Algorithm::RS256);
    let jwks = JwksServer::start(&[&rsa], None).await;
    let (running, base) = jwks_daemon(&format!("http://{}", fake.api), &jwks.url, "1h", "").await;
    let now = jsonwebtoken::get_current_timestamp();
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let admin = || {
        let mut c = good_claims("admin");
        c["sub"] = "mallory".into();
        c
    };
    // alg: none, with a kid the set has and claims that would otherwise pass.
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(admin())
    );
    let mut expired = admin();
    expired["exp"] = (now - 3600).into();
    let expired = rsa.sign(&expired);
    let mut wrong_aud = admin();
    wrong_aud["aud"] = "someone-else".into();
    let wrong_aud = rsa.sign(&wrong_aud);
    let mut no_exp = admin();
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    let no_exp = rsa.sign(&no_exp);
    // Algorithm confusion: HS256 with the RSA public key (PEM) as the HMAC secret, with and
    // without the RSA key's kid.
    let confused = |kid: Option<&str>| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(
            &h,
            &admin(),
            &jsonwebtoken::EncodingKey::from_secret(&rsa.public_pem),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let attacks = [
        none,
        expired,
        wrong_aud,
        no_exp,
        confused(Some("rsa-1")),
        confused(None),
        "not.a.jwt".to_string(),
    ];
    for t in &attacks {
        assert_eq!(
            get_with(&base, Some(t)).await,
            200,
            "forwarded; PostgREST answers 401"
        );
    }
    let good = rsa.sign(&good_claims("author"));
    assert_eq!(get_with(&base, Some(&good)).await, 200);
    let s = wait_count(&running, "author", 1.0).await;
    let s = if count(&s, "/articles", "GET", "200", "invalid_token") < attacks.len() as f64 {
        wait_count(&running, "invalid_token", attacks.len() as f64).await
    } else {
        s
    };
    assert_eq!(
        count(&s, "/articles", "GET", "200", "invalid_token"),
        attacks.len() as f64
    );
    assert_eq!(
        count(&s, "/articles", "GET", "200", "admin"),
        0.0,
        "never verified"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_stops_verifying_and_an_outage_keeps_the_cached_keys() {
    let fake = FakePostgrest::start().await;
    let old = TestKey::ed25519("ed-old");
    let key = TestKey::ec("ec-1", jsonwebtoken::Algorithm::ES256);
    let jwks = JwksServer::start(&[&old, &key], None).await;
    let (running, base) = jwks_daemon(&format!("http://{}", fake.api), &jwks.url, "1s", "").await;
    let t = key.sign(&good_claims("author"));
    assert_eq!(get_with(&base, Some(&t)).await, 200);
    wait_count(&running, "author", 1.0).await;
    let retired = old.sign(&good_claims("retired"));
    assert_eq!(get_with(&base, Some(&retired)).await, 200);
    wait_count(&running, "retired", 1.0).await;

    // Retire the old key: after the next periodic refresh its tokens no longer verify.
    jwks.publish(&[&key]);
    eventually(Duration::from_secs(10), || async {
        let s = scrape(&running).await;
        if s.metric("pgvigil_api_jwks_keys").value() == Some(1.0) {
            Ok(())
        } else {
            Err("the old key is still cached".to_string())
        }
    })
    .await;
    assert_eq!(get_with(&base, Some(&retired)).await, 200);
    let s = wait_count(&running, "invalid_token", 1.0).await;
    assert_eq!(count(&s, "/articles", "GET", "200", "retired"), 1.0);

    jwks.set_up(false);
    let hits = jwks.hits();
    let s = eventually(Duration::from_secs(10), || async {
        let s = scrape(&running).await;
        let failures = s
            .metric("pgvigil_api_jwks_refresh_failures_total")
            .value()
            .unwrap_or(0.0);
        if failures >= 1.0 && jwks.hits() > hits {
            Ok(s)
        } else {
            Err(format!("{failures} refresh failures so far"))
        }
    })
    .await;
    assert_eq!(s.metric("pgvigil_api_jwks_keys").value(), Some(1.0));
    assert_eq!(get_with(&base, Some(&t)).await, 200);
    let s = wait_count(&running, "author", 2.0).await;
    assert_eq!(count(&s, "/articles", "GET", "200", "invalid_token"), 1.0);

    // Back up: the next refresh succeeds and the same key keeps working.
    jwks.set_up(true);
    let failures = s
        .metric("pgvigil_api_jwks_refresh_failures_total")
        .value()
        .unwrap_or(0.0);
    let at = s
        .metric("pgvigil_api_jwks_last_refresh_timestamp_seconds")
        .value()
        .unwrap_or(0.0);
    eventually(Duration::from_secs(10), || async {
        let s = scrape(&running).await;
        let now_at = s
            .metric("pgvigil_api_jwks_last_refresh_timestamp_seconds")
            .value()
            .unwrap_or(0.0);
        if now_at > at {
            Ok(())
        } else {
            Err("no successful refresh yet".to_string())
        }
    })
    .await;
    assert!(failures >= 1.0);
    assert_eq!(get_with(&base, Some(&t)).await, 200);
    wait_count(&running, "author", 3.0).await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_probes_the_https_upstream_and_the_jwks_with_the_proxy_client() {
    let mut pki = TestPki::new("probe");
    let cert = pki.server("postgrest", &[]);
    let fake = FakePostgrest::start_tls(&cert).await;
    let key = TestKey::ed25519("ed-1");
    let jwks = JwksServer::start(&[&key], Some(&cert)).await;
    let (_other, other_ca) = crate::harness::tls::other_ca("elsewhere");
    let probe = |ca: &std::path::Path| {
        let text = format!(
            "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"https://127.0.0.1:{}\"\nupstream_ca_file = \"{}\"\njwks_url = \"{}\"\n",
            fake.api.port(),
            ca.display(),
            jwks.url
        );
        let s = settings(DEAD_PG, &text);
        async move {
            let p = s.api_proxy.unwrap_or_else(|| panic!("no api_proxy"));
            pgvigil::proxy::probe::probe(&p).await
        }
    };
    let good = probe(&pki.ca_cert).await;
    assert_eq!(good.len(), 2, "{good:?}");
    let up = good[0].outcome.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        up.contains("over TLS") && up.contains("verified against"),
        "{up}"
    );
    assert_eq!(good[1].outcome.as_deref(), Ok("1 usable signing keys"));
    let bad = probe(&other_ca).await;
    for p in &bad {
        let e = p
            .outcome
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{p:?} passed"));
        assert!(e.to_lowercase().contains("certificate"), "{}: {e}", p.name);
    }
}

/// The proxy's listener over TLS, as a browser or an HTTP/2 gateway reaches it (ALPN h2):
/// the request reaches the HTTP/1.1 upstream with `x-forwarded-proto: https` and the
/// client's authority as `x-forwarded-host`. Before, every HTTP/2 request was a 502 (the
/// h2 version was passed on to the HTTP/1.1 upstream connection) and the proto said http.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_over_tls_reaches_the_upstream_with_forwarded_proto_https() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    let mut pki = TestPki::new("proxy-h2");
    let cert = pki.server("proxy", &[]);
    let extra = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    );
    let (fake, _dir, running, _) = proxy_daemon(&extra).await;
    let addr = running.proxy_addr.unwrap_or_else(|| panic!("no proxy"));

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca_cert)
        .unwrap_or_else(|e| panic!("{e}"))
    {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name =
        rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with the proxy: {e}"));
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 was negotiated"
    );
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("https://localhost:{}/articles", addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = send
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("h2 request: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    assert_eq!(status, 200, "{body}");

    let seen = fake
        .state
        .seen
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let last = seen
        .last()
        .unwrap_or_else(|| panic!("the upstream saw no request"));
    assert_eq!(
        last.get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
        Some("https")
    );
    assert_eq!(
        last.get("x-forwarded-host").and_then(|v| v.to_str().ok()),
        Some(format!("localhost:{}", addr.port()).as_str())
    );
    running.shutdown(Duration::from_secs(5)).await;
}

/// An upstream that keeps connections alive as far as HTTP says. With `close`, it closes
/// each one shortly after its first response, as PostgREST (or a load balancer) closes
/// idle keep-alive connections: a request that comes later must not be sent on the dead
/// connection (a 502) but on a new one. Returns the address and the count of accepted
/// connections.
async fn keep_alive_upstream(
    close: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let addr_seen = addr;
    let task = tokio::spawn(async move {
        let addr = addr_seen;
        // Bounded by the test: aborted when it ends.
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                // Bounded: a connection serves at most 100 requests here.
                for _ in 0..100 {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    // As nginx (or PostgREST behind one): an HTTP/1.1 request in origin
                    // form with this server's Host, or 400.
                    let text = String::from_utf8_lossy(&got).to_lowercase();
                    let good = text.starts_with("get /things http/1.1\r\n")
                        && text.contains(&format!("\r\nhost: {addr}\r\n"));
                    let (status, body) = if good {
                        ("200 OK", &b"[]"[..])
                    } else {
                        ("400 Bad Request", &b"{}"[..])
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                    if close {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        // Idle timeout: gone, without saying so in the response.
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_those_the_upstream_closed_are_not() {
    for close in [false, true] {
        upstream_connections(close).await;
    }
}

async fn upstream_connections(close: bool) {
    let (upstream, accepted, task) = keep_alive_upstream(close).await;
    let running = daemon(settings(
        DEAD_PG,
        &format!(
            "[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\nworkers = 1\n[audit]\nstdout = false\n"
        ),
    ))
    .await;
    let base = format!(
        "http://{}",
        running.proxy_addr.unwrap_or_else(|| panic!("no proxy"))
    );
    let client = http_client();
    for i in 0..5 {
        let resp = client
            .get(format!("{base}/things"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status(), 200, "request {i}");
        // Long enough for the upstream to have closed the connection the proxy pooled.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Closed by the upstream: a new connection per request, none of them a 502; kept
    // open: the one connection carries every request.
    let want = if close { 5 } else { 1 };
    assert_eq!(accepted.load(Ordering::SeqCst), want, "close = {close}");
    let s = scrape(&running).await;
    assert_eq!(
        s.metric("pgvigil_api_requests_total")
            .label("code", "200")
            .value(),
        Some(5.0)
    );
    task.abort();
}
