//! The API proxy and the PostgREST admin scraper, against the PostgREST stand-in.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::harness::postgrest::FakePostgrest;
use crate::harness::{daemon, eventually, http_client, scrape, settings, Scrape};

const SECRET: &str = "reallyreallyreallyreallyreallysafe";
const DEAD_PG: &str = "postgresql://postgres@127.0.0.1:1/postgres";

fn token(claims: serde_json::Value, secret: &str) -> String {
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
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_no_secrets() {
    let fake = FakePostgrest::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = secret_file(&dir);
    let cfg = dir.path().join("pgvigil.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{DEAD_PG}\"\n[api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\njwt_secret_file = \"{}\"\n",
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
