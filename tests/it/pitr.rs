//! PITR verification on real clusters: a gap is named, a failover is not a gap.

use std::time::Duration;

use crate::harness::backup::{switch_and_archive, wal_segments, write_config, LocalRepo};
use crate::harness::{self, client, eventually, exec, run_pgvigil};

fn verify_json(cfg: &str) -> (bool, serde_json::Value) {
    let (ok, out, err) = run_pgvigil(&["verify", "-c", cfg, "--json"]);
    let v =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("verify output {out:?} {err}: {e}"));
    (ok, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_wal_segment_is_named_and_breaks_continuity() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    for i in 0..4 {
        exec(
            &db,
            &format!("CREATE TABLE t{i} AS SELECT generate_series(1, 1000)"),
        )
        .await;
        switch_and_archive(&db).await;
    }
    let (ok, report) = verify_json(&repo.cfg);
    assert!(ok, "a healthy archive verifies: {report}");
    assert_eq!(report["missing"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["last_archived_in_repository"], true);
    assert!(report["window_start"].is_string() && report["window_end"].is_string());
    assert!(report["archive_age_seconds"]
        .as_f64()
        .is_some_and(|a| (0.0..60.0).contains(&a)));

    // Remove one segment from the middle of the range.
    let segs = wal_segments(&repo.repo_dir.join("default/wal"));
    let victim = segs[segs.len() - 2].trim_end_matches(".zst").to_string();
    std::fs::remove_file(
        repo.repo_dir
            .join("default/wal")
            .join(format!("{victim}.zst")),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let (ok, report) = verify_json(&repo.cfg);
    assert!(!ok, "verify must fail on a gap");
    assert_eq!(report["missing"], serde_json::json!([victim]), "{report}");
    let (_, text, _) = run_pgvigil(&["verify", "-c", &repo.cfg]);
    assert!(text.contains(&format!("missing: {victim}")), "{text}");

    // The daemon's check says the same.
    let extra = format!("{}[pitr]\ncheck_interval = \"1s\"\n", repo.storage);
    let running = harness::daemon(harness::settings(&pg.dsn("postgres"), &extra)).await;
    eventually(Duration::from_secs(20), || async {
        let s = harness::scrape(&running).await;
        match (
            s.metric("pgvigil_pitr_continuity_ok").value(),
            s.metric("pgvigil_pitr_missing_segments").value(),
        ) {
            (Some(0.0), Some(1.0)) => Ok(()),
            other => Err(format!("continuity/missing {other:?}")),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_archiving_into_the_same_store_stays_green() {
    let repo = LocalRepo::new();
    let mut primary = repo.archiving_primary().await;
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE t AS SELECT 1 AS x").await;
    switch_and_archive(&db).await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    let replica = primary.replica().await.unwrap_or_else(|e| panic!("{e}"));
    exec(&db, "INSERT INTO t VALUES (2)").await;
    switch_and_archive(&db).await;
    drop(db);

    // Failover: stop the primary, promote the replica; it archives timeline 2 into the
    // same repository (same system identifier).
    primary.stop().await;
    let rdb = client(&replica, "postgres").await;
    exec(&rdb, "SELECT pg_promote()").await;
    harness::wait_promoted(&rdb).await;
    exec(&rdb, "INSERT INTO t VALUES (3)").await;
    switch_and_archive(&rdb).await;
    exec(&rdb, "INSERT INTO t VALUES (4)").await;
    switch_and_archive(&rdb).await;

    // verify asks pg_stat_archiver of the DSN's server: point it at the new primary.
    write_config(&repo.config, &replica.dsn("postgres"), &repo.storage);
    let (ok, report) = verify_json(&repo.cfg);
    assert!(ok, "a timeline switch is not a gap: {report}");
    assert_eq!(report["timelines"], serde_json::json!([1, 2]), "{report}");
    assert!(
        report["newest_segment"]
            .as_str()
            .is_some_and(|s| s.starts_with("00000002")),
        "{report}"
    );
}

/// The window ends just before the newest commit inside the archived WAL, not when its
/// segment arrived (issue 14, item 5): the segment is archived seconds after the last
/// commit, and a drill to exactly the advertised end reaches it. Before, the end was the arrival time,
/// and recovery to it failed with "recovery ended before configured recovery target was
/// reached".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_ends_at_the_newest_archived_commit_and_a_drill_reaches_it() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    let drill = format!(
        "{}\n[pitr]\nheartbeat_interval = \"1s\"\n[drill]\nwork_dir = \"{}\"\n",
        repo.storage,
        repo.dir.path().join("drill").display()
    );
    write_config(&repo.config, &pg.dsn("postgres"), &drill);
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    // Two heartbeats, as the daemon writes them (the drill checks the one it restored).
    exec(
        &db,
        "CREATE SCHEMA pgvigil; CREATE TABLE pgvigil.heartbeat (ts timestamptz NOT NULL, lsn pg_lsn NOT NULL)",
    )
    .await;
    let beat = "INSERT INTO pgvigil.heartbeat VALUES (clock_timestamp(), pg_current_wal_lsn()) \
        RETURNING to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
    let _ = db
        .query_one(beat, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let committed: chrono::DateTime<chrono::Utc> = {
        let row = db
            .query_one(beat, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let text: String = row.get(0);
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    // The segment arrives well after its last commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    switch_and_archive(&db).await;

    let (ok, report) = verify_json(&repo.cfg);
    assert!(ok, "{report}");
    let end: chrono::DateTime<chrono::Utc> = report["window_end"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no window_end: {report}"));
    let after = (end - committed).num_milliseconds();
    assert!(
        (-1..1000).contains(&after),
        "window_end {end} is {after} ms after the last commit at {committed} (the segment arrived 3 s later)"
    );

    let (ok, out, err) = run_pgvigil(&[
        "drill",
        "-c",
        &repo.cfg,
        "--target-time",
        &end.to_rfc3339(),
        "--timeout",
        "2m",
        "--json",
    ]);
    let ev: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("drill output {out:?} / {err}: {e}"));
    assert!(
        ok && ev["success"] == true,
        "a drill to the window's end: {ev:#}"
    );
}

/// A point-in-time restore that forks before the newest backup (timeline 2 leaves
/// timeline 1 before backup B ended) and archives into the repository, as a restore meant
/// to become the new primary does: a later restore to the latest point starts from the
/// backup before the fork, not from B, which lies on the abandoned branch (issue 14,
/// item 4). Before, B was chosen by its stop time and PostgreSQL refused it ("requested
/// timeline 2 is not a child of this server's history").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_after_a_fork_starts_from_a_backup_on_the_new_timeline() {
    use pgvigil::pg::{TempCluster, TempClusterOptions};
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    exec(
        &db,
        "CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)",
    )
    .await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "backup A: {err}");
    exec(&db, "INSERT INTO marks VALUES (2)").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fork: String = crate::harness::query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    exec(&db, "INSERT INTO marks VALUES (3)").await;
    switch_and_archive(&db).await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "backup B: {err}");
    exec(&db, "INSERT INTO marks VALUES (4)").await;
    switch_and_archive(&db).await;

    // The fork: restored to before B, promoted, archiving into the same repository.
    let forked_dir = repo.dir.path().join("forked");
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &forked_dir.display().to_string(),
        "--target-time",
        &fork,
        "--keep-archiving",
    ]);
    assert!(ok, "restore to {fork}: {err}");
    let mut forked = TempCluster::adopt(&forked_dir, TempClusterOptions::default())
        .await
        .unwrap_or_else(|e| panic!("starting the forked cluster: {e}"));
    let fc = client(&forked, "postgres").await;
    harness::wait_promoted(&fc).await;
    exec(&fc, "INSERT INTO marks VALUES (20)").await;
    switch_and_archive(&fc).await;
    forked.stop().await;
    assert!(
        repo.repo_dir
            .join("default/wal/00000002.history.zst")
            .exists(),
        "the fork's history was archived"
    );

    // Latest: timeline 2, from backup A (B is on timeline 1 after the fork).
    let latest = repo.dir.path().join("latest");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &latest.display().to_string(),
        "--json",
    ]);
    assert!(ok, "restore latest after the fork: {err}");
    let (_, list, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    let backups: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    let first = backups[0]["id"].as_str().unwrap_or("?").to_string();
    assert!(
        out.contains(&first),
        "restore chose another backup than A ({first}): {out}"
    );
    let restored = TempCluster::adopt(&latest, TempClusterOptions::default())
        .await
        .unwrap_or_else(|e| panic!("starting the latest restore: {e}"));
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    let ids: String = crate::harness::query_value(
        &rc,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM marks",
    )
    .await;
    assert_eq!(
        ids, "1,2,20",
        "timeline 2's rows, not timeline 1's after the fork"
    );
}

/// A role that may not create pgvigil.heartbeat gets no server-side ERROR every beat (pgvigil
/// asks first), and the heartbeat starts once an administrator creates the table for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_is_told_once_and_beats_once_the_table_exists() {
    let pg = crate::harness::cluster().await;
    let admin = crate::harness::client(&pg, "postgres").await;
    crate::harness::exec(&admin, "CREATE ROLE watcher LOGIN").await;
    let dsn = format!("postgresql://watcher@127.0.0.1:{}/postgres", pg.port());
    let running = crate::harness::daemon(crate::harness::settings(
        &dsn,
        "[pitr]\nheartbeat_interval = \"200ms\"\n",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = pg.log_tail();
    assert!(
        !log.contains("permission denied for database"),
        "the server logged a refused CREATE:\n{log}"
    );
    let created: bool = crate::harness::query_value(
        &admin,
        "SELECT to_regclass('pgvigil.heartbeat') IS NOT NULL",
    )
    .await;
    assert!(!created);

    crate::harness::exec(
        &admin,
        "CREATE SCHEMA pgvigil; \
         CREATE TABLE pgvigil.heartbeat (ts timestamptz NOT NULL, lsn pg_lsn NOT NULL); \
         GRANT USAGE ON SCHEMA pgvigil TO watcher; \
         GRANT SELECT, INSERT, UPDATE ON pgvigil.heartbeat TO watcher",
    )
    .await;
    crate::harness::eventually(Duration::from_secs(20), || async {
        let n: i64 =
            crate::harness::query_value(&admin, "SELECT count(*) FROM pgvigil.heartbeat").await;
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} heartbeat rows"))
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

/// PostgreSQL stopped and started under a running daemon (fault matrix: PostgreSQL
/// restarted during the heartbeat): the heartbeat reconnects by itself and beats again,
/// with a row written after the restart and its lag gauge fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_beats_again_after_postgres_restarts() {
    let mut pg = crate::harness::cluster().await;
    let running = crate::harness::daemon(crate::harness::settings(
        &pg.dsn("postgres"),
        "[pitr]\nheartbeat_interval = \"200ms\"\n",
    ))
    .await;
    let dsn = pg.dsn("postgres");
    let beat_after = |since: chrono::DateTime<chrono::Utc>| {
        let dsn = dsn.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let ts: Option<std::time::SystemTime> = c
                .query_one("SELECT max(ts) FROM pgvigil.heartbeat", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            match ts.map(chrono::DateTime::<chrono::Utc>::from) {
                Some(t) if t > since => Ok(t),
                other => Err(format!(
                    "newest beat {other:?}, waiting for one after {since}"
                )),
            }
        }
    };
    eventually(Duration::from_secs(30), || {
        beat_after(chrono::Utc::now() - chrono::Duration::hours(1))
    })
    .await;

    pg.stop().await;
    let down = chrono::Utc::now();
    if let Err(e) = pg.start_server().await {
        panic!("restarting PostgreSQL: {e}");
    }
    let up = chrono::Utc::now();
    let beat = eventually(Duration::from_secs(30), || beat_after(up)).await;
    assert!(beat > down);
    let lag = crate::harness::scrape(&running)
        .await
        .metric("pgvigil_heartbeat_lag_seconds")
        .value()
        .unwrap_or(f64::NAN);
    assert!(lag < 5.0, "lag after the restart: {lag}");
    running.shutdown(Duration::from_secs(5)).await;
}
