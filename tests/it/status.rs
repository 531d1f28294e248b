//! The operator's view (issue 17): `pgvigil status` on a real repository, with its exit
//! code, and the daemon's status page rendered by a real browser (headless chromium): the
//! backups present, a WAL segment deleted from the repository shown as a named gap, a
//! failed drill shown as failed, and the warm page served in under 100 ms. The page has the
//! same authentication as /metrics, and the CLI reaches a daemon that requires TLS and a
//! bearer token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::backup::{switch_and_archive, wal_segments, write_config_listening, LocalRepo};
use crate::harness::{self, chromium, client, eventually, exec, query_value, run_pgvigil};

/// `pgvigil status` with `args`: its exit code and stdout.
fn status(cfg: &str, args: &[&str]) -> (i32, String) {
    let out = harness::pgvigil_command(&[&["status", "-c", cfg], args].concat())
        .output()
        .unwrap_or_else(|e| panic!("running pgvigil status: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `pgvigil status --json`, parsed.
fn status_json(cfg: &str) -> (i32, serde_json::Value) {
    let (code, out) = status(cfg, &["--json"]);
    let json_end = out.rfind('}').map(|i| i + 1).unwrap_or(0);
    let v = serde_json::from_str(&out[..json_end])
        .unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
    (code, v)
}

/// An archiving primary, its repository and a daemon on it (heartbeat and PITR check every
/// second), with the config file naming where the daemon listens so the CLI finds it.
struct Setup {
    repo: LocalRepo,
    pg: pgvigil::pg::TempCluster,
    db: tokio_postgres::Client,
    running: pgvigil::Running,
}

/// [`Setup`] with `extra` configuration after the drill section.
async fn setup(extra: &str) -> Setup {
    let repo = LocalRepo::new();
    let section = format!(
        "{}[pitr]\nheartbeat_interval = \"1s\"\ncheck_interval = \"1s\"\n[drill]\nwork_dir = \"{}\"\namcheck = false\n{extra}",
        repo.storage,
        repo.dir.path().join("drill").display()
    );
    let pg = repo.archiving_primary().await;
    let dsn = pg.dsn("postgres");
    let db = client(&pg, "postgres").await;
    let running = harness::daemon(harness::settings(&dsn, &section)).await;
    write_config_listening(&repo.config, &running.addr.to_string(), &dsn, &section);
    Setup {
        repo,
        pg,
        db,
        running,
    }
}

/// Waits until the daemon keeps the heartbeat table (drills check it).
async fn wait_heartbeat(db: &tokio_postgres::Client) {
    eventually(Duration::from_secs(30), || async {
        db.query_one("SELECT count(*) FROM pgvigil.heartbeat", &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

/// Archives WAL until a heartbeat committed after the backup is in it: a recovery window.
async fn wait_window(db: &tokio_postgres::Client, cfg: &str) {
    eventually(Duration::from_secs(30), || async {
        switch_and_archive(db).await;
        let (_, out, err) = run_pgvigil(&["verify", "-c", cfg, "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("{e}: {out} {err}"))?;
        if v["window_end"].is_string() {
            Ok(())
        } else {
            Err(format!("no window yet: {v}"))
        }
    })
    .await;
}

/// The backups as `pgvigil backups --json` lists them: (id, start_wal).
fn backups(cfg: &str) -> Vec<(String, String)> {
    let (ok, out, err) = run_pgvigil(&["backups", "-c", cfg, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["id"].as_str().unwrap_or_default().to_string(),
                b["start_wal"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Deletes a WAL segment from the local repository: the newest one before `before`.
fn delete_segment_before(repo_dir: &Path, after: &str, before: &str) -> String {
    let wal = repo_dir.join("default/wal");
    let victim = wal_segments(&wal)
        .into_iter()
        .map(|f| f.trim_end_matches(".zst").to_string())
        // The oldest such segment: archived long ago, so no push of it (wal-push and the
        // daemon archiving ahead may both be at the newest ones) can put it back.
        .find(|s| s.as_str() > after && s.as_str() < before)
        .unwrap_or_else(|| panic!("no segment between {after} and {before}"));
    std::fs::remove_file(wal.join(format!("{victim}.zst"))).unwrap_or_else(|e| panic!("{e}"));
    victim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_can_i_restore_and_exits_0_healthy_1_degraded_2_broken() {
    let Setup {
        repo,
        pg: _pg,
        db,
        running,
    } = setup("[retention]\nrecovery_window = \"15s\"\n").await;

    // Nothing can be restored yet: broken, and it says so first.
    let (code, out) = status(&repo.cfg, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("BROKEN"), "{out}");
    assert!(
        out.contains("!! no backup yet: nothing can be restored; the first one"),
        "{out}"
    );

    // A backup and a passed drill: healthy once the window covers the 15 s goal.
    wait_heartbeat(&db).await;
    exec(&db, "CREATE TABLE markers AS SELECT 1 AS id").await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    wait_window(&db, &repo.cfg).await;
    let (ok, out, err) = run_pgvigil(&["drill", "-c", &repo.cfg, "--timeout", "2m", "--json"]);
    assert!(ok, "the drill must pass: {out} {err}");
    let healthy = eventually(Duration::from_secs(90), || async {
        switch_and_archive(&db).await;
        let (code, s) = status_json(&repo.cfg);
        if code == 0 && s["health"] == "healthy" {
            Ok(s)
        } else {
            Err(format!("exit {code}: {}", s["findings"]))
        }
    })
    .await;
    let (id, start_wal) = backups(&repo.cfg).pop().unwrap_or_default();
    assert_eq!(healthy["backups"]["recent"][0]["id"], id.as_str());
    assert!(healthy["window"]["covered_seconds"].as_f64().unwrap_or(0.0) >= 15.0);
    assert_eq!(healthy["drills"]["last"]["success"], true);
    assert_eq!(healthy["daemon"]["reachable"], true);
    let (code, out) = status(&repo.cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HEALTHY"), "{out}");
    for line in [
        format!("  {id}"),
        "last drill       ".to_string(),
        " PASSED ".to_string(),
        format!(
            "daemon           http://{} ready; collectors ok",
            running.addr
        ),
    ] {
        assert!(out.contains(&line), "{line:?} in\n{out}");
    }

    // A WAL segment deleted from the repository: broken, the gap named.
    let newest = wal_segments(&repo.repo_dir.join("default/wal"))
        .pop()
        .unwrap_or_default();
    let gone = delete_segment_before(&repo.repo_dir, &start_wal, newest.trim_end_matches(".zst"));
    let broken = eventually(Duration::from_secs(30), || async {
        let (code, s) = status_json(&repo.cfg);
        if code == 2 && s["wal"]["gaps"][0]["first"] == gone.as_str() {
            Ok(s)
        } else {
            Err(format!("exit {code}: {}", s["wal"]))
        }
    })
    .await;
    assert_eq!(broken["health"], "broken");
    assert_eq!(broken["wal"]["gaps"][0]["files"], 1);
    let (code, out) = status(&repo.cfg, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("!! WAL file {gone} is missing: points between")),
        "{out}"
    );
    assert!(
        out.contains(&format!("GAP {gone} .. {gone} (1 file(s))")),
        "{out}"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

/// Keeps the screenshot of a failed run (and says where); removes it after a passing one.
struct Shots(PathBuf);

impl Drop for Shots {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("status page screenshot kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_backups_a_named_gap_and_a_failed_drill_in_a_browser() {
    let Setup {
        repo,
        pg: _pg,
        db,
        running,
    } = setup(
        "[[drill.checks]]\nname = \"markers present\"\nsql = \"select count(*) from markers\"\nexpect = \"999\"\n",
    )
    .await;
    wait_heartbeat(&db).await;

    // Two backups with WAL between them, a drill whose check fails, then a segment between
    // the backups deleted from the repository.
    exec(&db, "CREATE TABLE markers AS SELECT 1 AS id").await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    switch_and_archive(&db).await;
    let target: String = query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    for _ in 0..3 {
        exec(&db, "INSERT INTO markers VALUES (2)").await;
        switch_and_archive(&db).await;
    }
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    switch_and_archive(&db).await;
    let (ok, out, _) = run_pgvigil(&[
        "drill",
        "-c",
        &repo.cfg,
        "--target-time",
        &target,
        "--timeout",
        "2m",
        "--json",
    ]);
    let drill: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(!ok && drill["success"] == false, "{drill:#}");
    let drill_id = drill["id"].as_str().unwrap_or_default().to_string();
    let listed = backups(&repo.cfg);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let gone = delete_segment_before(&repo.repo_dir, &listed[0].1, &listed[1].1);
    running.status_changed();

    let base = format!("http://{}", running.addr);
    eventually(Duration::from_secs(60), || async {
        let s: serde_json::Value = harness::get_text(&format!("{base}/status.json"))
            .await
            .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{e}: {t}")))?;
        let seen = s["wal"]["gaps"][0]["first"] == gone.as_str()
            && s["backups"]["count"] == 2
            && s["drills"]["last"]["id"] == drill_id.as_str();
        if seen {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;

    // Warm: the page is built from memory. Timed over loopback with an HTTP client.
    let http = harness::http_client();
    let mut took = Vec::new();
    for i in 0..25 {
        let start = std::time::Instant::now();
        let resp = http
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ok = resp.status().is_success();
        let body = resp.text().await.unwrap_or_default();
        if i >= 5 {
            took.push(start.elapsed());
        }
        assert!(ok && body.contains(&gone), "{body}");
    }
    took.sort();
    let (median, max) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!(
        "warm status page: median {median:?}, max {max:?} over {} requests",
        took.len()
    );
    assert!(
        max < Duration::from_millis(100),
        "the warm page took {max:?}"
    );

    // What a person sees.
    let shots =
        Shots(std::env::temp_dir().join(format!("pgvigil-status-page-{}", std::process::id())));
    std::fs::create_dir_all(&shots.0).unwrap_or_else(|e| panic!("{e}"));
    let png = shots.0.join("status-page.png");
    chromium::screenshot(&format!("{base}/status"), &png, 1100, 1500);
    let dom = chromium::dump_dom(&format!("{base}/"));
    assert!(
        dom.contains(r#"<header class="verdict broken" id="verdict"><h1>BROKEN</h1>"#),
        "{dom}"
    );
    for (id, _) in &listed {
        assert!(
            dom.contains(&format!(r#"<tr class="backup"><td class="mono">{id}</td>"#)),
            "backup {id} in the table: {dom}"
        );
        assert!(
            dom.contains(&format!("<title>backup {id}: ended")),
            "backup {id} on the timeline"
        );
    }
    assert!(
        dom.contains(&format!(
            r#"<li class="gap bad">missing <code>{gone}</code> (1 file(s)): points between"#
        )),
        "the gap named: {dom}"
    );
    assert!(
        dom.contains(r#"<text class="gap-label""#) && dom.contains(&format!(">gap {gone}</text>")),
        "the gap on the timeline: {dom}"
    );
    assert!(
        dom.contains(&format!(
            r#"<tr class="drill failed"><td class="mono">{drill_id}</td><td class="failed">FAILED</td>"#
        )),
        "the failed drill: {dom}"
    );
    assert!(
        dom.contains(r#"<g class="drill-fail"><circle"#),
        "a red drill point: {dom}"
    );
    assert!(dom.contains("checks failed: markers present"), "{dom}");
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{}",
        png.display()
    );
    if std::env::var("PGVIGIL_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::copy(&png, &docs).unwrap_or_else(|e| panic!("{}: {e}", docs.display()));
        eprintln!("wrote {}", docs.display());
    }
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_credentials_of_metrics_and_the_cli_reaches_a_tls_daemon() {
    use crate::harness::https::{client_config, https_get};
    use crate::harness::tls::TestPki;
    let repo = LocalRepo::new();
    let mut pki = TestPki::new("status-ca");
    let server = pki.server("status", &[]);
    let token = repo.dir.path().join("token");
    std::fs::write(&token, "status-page-token-0123456789abcdef").unwrap_or_else(|e| panic!("{e}"));
    harness::make_private(&token);
    pgvigil::pg::binaries::chown_to_server_user(&token).unwrap_or_else(|e| panic!("{e}"));
    let web = |name: &str, cert: &Path| {
        let path = repo.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                server.key.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        pgvigil::pg::binaries::chown_to_server_user(&path).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let web_yml = web("web.yml", &server.cert);
    const DEAD_PG: &str = "postgresql://postgres@127.0.0.1:1/postgres";
    let server_section = |listen: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\nbearer_token_file = \"{}\"\nweb_config_file = \"{}\"\n\
             [postgres]\ndsn = \"{DEAD_PG}\"\n{}",
            token.display(),
            web_yml.display(),
            repo.storage
        )
    };
    std::fs::write(&repo.config, server_section("127.0.0.1:0")).unwrap_or_else(|e| panic!("{e}"));
    let env = |_: &str| None;
    let settings = pgvigil::config::load(&repo.config, &env).unwrap_or_else(|e| panic!("{e}"));
    let running = harness::daemon(settings).await;
    std::fs::write(&repo.config, server_section(&running.addr.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&repo.config).unwrap_or_else(|e| panic!("{e}"));

    // The page is protected like /metrics: nothing without the token.
    let tls = client_config(&pki.ca_cert, None);
    for path in ["/", "/status", "/status.json", "/metrics"] {
        let (code, text, _) = https_get(running.addr, tls.clone(), path, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(code, 401, "{path} without credentials: {text}");
    }
    let bearer = "Bearer status-page-token-0123456789abcdef";
    let page = eventually(Duration::from_secs(30), || async {
        let (code, text, _) = https_get(running.addr, tls.clone(), "/status", Some(bearer)).await?;
        if code == 200 && text.contains("no backup yet") {
            Ok(text)
        } else {
            Err(format!("{code}: {text}"))
        }
    })
    .await;
    assert!(page.contains("<h1>BROKEN</h1>"), "{page}");

    // The CLI asks the daemon over HTTPS, trusting only the certificate it serves, with
    // the bearer token: the daemon's own health is in the status.
    let (code, out) = status(&repo.cfg, &[]);
    assert_eq!(code, 2, "no backup: {out}");
    let daemon_line = format!("daemon           https://{}", running.addr);
    assert!(out.contains(&daemon_line), "{out}");
    assert!(!out.contains("not answering"), "{out}");
    // A certificate other than the one the daemon serves is refused.
    let other = pki.server("other", &[]);
    let other_yml = web("other.yml", &other.cert);
    let (_, out) = status(
        &repo.cfg,
        &["--web.config.file", &other_yml.display().to_string()],
    );
    assert!(
        out.contains("not answering")
            && out.contains("a certificate other than its configured cert_file"),
        "{out}"
    );
    running.shutdown(Duration::from_secs(5)).await;
}
