//! Restore drills on a real cluster: pass on a healthy repository, fail with a clear reason
//! on a failing user check or missing WAL, and leave nothing behind either way.

use std::path::Path;
use std::time::Duration;

use crate::harness::backup::{archiving_cluster, switch_and_archive, write_config};
use crate::harness::{self, client, exec, postgres_dir, query_value, run_pgvigil, run_pgvigil_env};

/// In pgvigil's environment when it runs a drill; the drill's postmaster must not see it.
const SECRET: &str = "drill-must-not-see-this";

fn drill(cfg: &Path, target: &str) -> (bool, serde_json::Value) {
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET.to_string()),
        ("PGPASSWORD".to_string(), SECRET.to_string()),
    ];
    let (ok, out, err) = run_pgvigil_env(
        &[
            "drill",
            "-c",
            &cfg.display().to_string(),
            "--target-time",
            target,
            "--timeout",
            "2m",
            "--json",
        ],
        &secrets,
    );
    let v =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("drill output {out:?} / {err}: {e}"));
    (ok, v)
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the drill left files behind: {left:?}");
}

fn check(ev: &serde_json::Value, name: &str) -> serde_json::Value {
    ev["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_pass_on_a_healthy_repository_and_fail_clearly_otherwise() {
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let work = owner.path().join("drill");
    let repo = owner.path().join("repo");
    let section = |expect: &str| {
        format!(
            "[storage]\nurl = \"file://{}\"\n[pitr]\nheartbeat_interval = \"1s\"\n[drill]\nwork_dir = \"{}\"\namcheck = true\n\
             [[drill.checks]]\nname = \"markers present\"\nsql = \"select count(*) from markers\"\nexpect = \"{expect}\"\n\
             [[drill.checks]]\nname = \"environment readable\"\nsql = \"create temp table env_a (l text); copy env_a from program 'env'; select count(*) from env_a where l like 'PATH=%'\"\nexpect = \"1\"\n\
             [[drill.checks]]\nname = \"no secrets in the environment\"\nsql = \"create temp table env_b (l text); copy env_b from program 'env'; select count(*) from env_b where l like '%{SECRET}%'\"\nexpect = \"0\"\n",
            repo.display(),
            work.display()
        )
    };
    let pg = archiving_cluster(&config).await;
    write_config(&config, &pg.dsn("postgres"), &section("2"));
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;
    // The daemon keeps the heartbeat (every second) that the drill checks.
    let daemon = harness::daemon(harness::settings(&pg.dsn("postgres"), &section("2"))).await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &config.display().to_string()]);
    assert!(ok, "{err}");
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let target: String = query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    exec(&db, "INSERT INTO markers VALUES (3)").await;
    switch_and_archive(&db).await;

    // A drill killed before its cleanup ran left its directory (and a lock nobody holds):
    // the next drill sweeps it.
    let crashed = work.join("20200101T000000Z");
    std::fs::create_dir_all(crashed.join("data")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(crashed.join(".drill.lock"), b"").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(crashed.join("data/PG_VERSION"), b"15\n").unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_tree_to_server_user(&work).unwrap_or_else(|e| panic!("{e}"));

    // A healthy drill, whose postmaster sees none of pgvigil's environment.
    let (ok, ev) = drill(&config, &target);
    assert!(ok && ev["success"] == true, "{ev:#}");
    for name in [
        "pg_verifybackup",
        "heartbeat",
        "pg_amcheck",
        "markers present",
        "environment readable",
        "no secrets in the environment",
    ] {
        assert_eq!(check(&ev, name)["ok"], true, "{name}: {ev:#}");
    }
    let skew = ev["target_skew_seconds"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.0..=2.0).contains(&skew),
        "recovery stopped {skew}s before the target"
    );
    let t = &ev["timings"];
    for k in ["download_seconds", "replay_seconds", "checks_seconds"] {
        assert!(t[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {t}");
    }
    assert!(ev["bytes_restored"].as_u64().unwrap_or(0) > 1 << 20);
    assert_empty(&work);
    // The evidence is in the repository.
    let stored = repo
        .join("default/state/drills")
        .join(format!("{}.json", ev["id"].as_str().unwrap_or("?")));
    assert!(stored.exists(), "{}", stored.display());

    // A user check that fails fails the drill, naming the check.
    write_config(&config, &pg.dsn("postgres"), &section("999"));
    let (ok, ev) = drill(&config, &target);
    assert!(!ok && ev["success"] == false);
    assert!(
        ev["error"]
            .as_str()
            .is_some_and(|e| e.contains("markers present")),
        "{ev:#}"
    );
    assert_eq!(
        check(&ev, "markers present")["detail"],
        "got \"2\", expected \"999\""
    );
    assert_empty(&work);

    // Missing WAL: recovery cannot reach the target.
    write_config(&config, &pg.dsn("postgres"), &section("2"));
    let (_, list, _) = run_pgvigil(&["backups", "-c", &config.display().to_string(), "--json"]);
    let backups: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    let start_wal = backups[0]["start_wal"].as_str().unwrap_or("").to_string();
    for e in std::fs::read_dir(repo.join("default/wal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() == 28 && name.trim_end_matches(".zst") > start_wal.as_str() {
            std::fs::remove_file(e.path()).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let (ok, ev) = drill(&config, &target);
    assert!(!ok && ev["success"] == false, "{ev:#}");
    let error = ev["error"].as_str().unwrap_or("");
    assert!(
        error.contains("recovery") || error.contains("outside the recovery window"),
        "a clear reason: {error}"
    );
    assert_empty(&work);
    daemon.shutdown(Duration::from_secs(5)).await;

    // A restarted daemon remembers the last successful drill (from its stored evidence),
    // not "never": the failed drills after it do not count.
    let restarted = harness::daemon(harness::settings(&pg.dsn("postgres"), &section("2"))).await;
    let last = harness::scrape(&restarted)
        .await
        .metric("pgvigil_drill_last_success_timestamp_seconds")
        .value()
        .unwrap_or(0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        last > 0.0 && now - last < 600.0,
        "last successful drill at {last}, now {now}"
    );
    restarted.shutdown(Duration::from_secs(5)).await;
}
