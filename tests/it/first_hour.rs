//! A new deployment's first hour (issue 17): a daemon started on an empty repository takes a
//! first backup soon after start instead of waiting for the night's schedule.

use std::time::Duration;

use crate::harness::backup::LocalRepo;
use crate::harness::{self, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_an_empty_repository_takes_a_first_backup_soon_after_start() {
    let repo = LocalRepo::new();
    let primary = repo.archiving_primary().await;
    // The nightly schedule is far away; drills and retention are off.
    let extra = format!(
        "{}[drill]\nschedule = \"off\"\n[retention]\nschedule = \"off\"\n[pitr]\ncheck_interval = \"2s\"\n",
        repo.storage
    );
    let running =
        harness::daemon_as_configured(harness::settings(&primary.dsn("postgres"), &extra)).await;
    let s = eventually(Duration::from_secs(150), || async {
        let s = harness::scrape(&running).await;
        match s.metric("pgvigil_backups").value() {
            Some(n) if n >= 1.0 => Ok(s),
            other => Err(format!("no backup yet ({other:?})")),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(s.metric("pgvigil_backups").value(), Some(1.0));
    assert!(
        s.metric("pgvigil_backup_last_success_timestamp_seconds")
            .value()
            .unwrap_or(0.0)
            > 0.0
    );
    let backups: Vec<_> = std::fs::read_dir(repo.repo_dir.join("default/backups"))
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert_eq!(backups.len(), 1, "exactly one backup, taken once");
}

/// `pgvigil drill` run as root with the binary in a private path (as `make dev` builds it,
/// under root's home): the drill's restore_command used to point at a binary the server
/// user cannot execute ("command not executable"); now the drill runs a copy it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_run_as_root_from_a_private_path_restores_through_a_reachable_copy() {
    use crate::harness::backup::{archiving_cluster, switch_and_archive, write_config};
    use crate::harness::{client, exec, postgres_dir, query_value, run_pgvigil};
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let work = owner.path().join("drill");
    let section = format!(
        "[storage]\nurl = \"file://{}/repo\"\n[pitr]\nheartbeat_interval = \"0s\"\n[drill]\nwork_dir = \"{}\"\namcheck = false\n",
        owner.path().display(),
        work.display()
    );
    let pg = archiving_cluster(&config).await;
    write_config(&config, &pg.dsn("postgres"), &section);
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE markers AS SELECT 1 AS id").await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &config.display().to_string()]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target: String = query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;

    // The cargo-built binary itself, run by this (root) process from the target directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvigil"))
        .args([
            "drill",
            "-c",
            &config.display().to_string(),
            "--target-time",
            &target,
        ])
        .args(["--timeout", "2m", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let ev: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success() && ev["success"] == true, "{ev:#}");
    if matches!(pgvigil::pg::binaries::server_user(), Ok(Some(_))) {
        assert!(
            pgvigil::pg::binaries::server_user_can_reach(&work.join("bin/pgvigil"), true),
            "the drill ran a copy in drill.work_dir/bin"
        );
    }
}
