//! Backups, the WAL archive and point-in-time restore on real clusters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::backup::{
    archiving_cluster_env, make_big_table, start_restored_env, switch_and_archive, walk,
    write_config, LocalRepo,
};
use crate::harness::moto::MotoServer;
use crate::harness::process::{self, KillOnDrop};
use crate::harness::{self, client, eventually, exec, postgres_dir, query_value, run_pgvigil};

async fn point_in_time(storage: &str, repo_owner: &tempfile::TempDir, env: Vec<(String, String)>) {
    let run_pgvigil = |args: &[&str]| harness::run_pgvigil_env(args, &env);
    let config = repo_owner.path().join("pgvigil.toml");
    let primary = archiving_cluster_env(&config, env.clone()).await;
    write_config(&config, &primary.dsn("postgres"), storage);
    let cfg = config.display().to_string();
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE markers (id int primary key, at timestamptz not null default clock_timestamp())").await;
    exec(&db, "INSERT INTO markers (id) VALUES (1)").await;
    switch_and_archive(&db).await;

    let (ok, out, err) = run_pgvigil(&["backup", "-c", &cfg, "--json"]);
    assert!(ok, "backup failed: {err}");
    let info: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(info["timeline"], 1);
    assert!(info["stored_bytes"].as_u64().unwrap_or(0) > 0);
    // Split into [backup] streams (4 by default) objects, restored in parallel below.
    let names: Vec<&str> = info["objects"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "base.0.tar.zst",
            "base.1.tar.zst",
            "base.2.tar.zst",
            "base.3.tar.zst"
        ]
    );

    exec(&db, "INSERT INTO markers (id) VALUES (2)").await;
    switch_and_archive(&db).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target: String = query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    exec(&db, "INSERT INTO markers (id) VALUES (3)").await;
    switch_and_archive(&db).await;

    let (ok, out, _) = run_pgvigil(&["backups", "-c", &cfg, "--json"]);
    assert!(ok);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(list.len(), 1);

    // Restore to the time between markers 2 and 3.
    let restore_dir: PathBuf = repo_owner.path().join("restored");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &cfg,
        "--to",
        &restore_dir.display().to_string(),
        "--target-time",
        &target,
        "--json",
    ]);
    assert!(ok, "restore failed: {err}");
    assert!(out.contains(info["id"].as_str().unwrap_or("?")));
    let restored = start_restored_env(&restore_dir, env.clone()).await;
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    let ids: Vec<i32> = rc
        .query("SELECT id FROM markers ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        [1, 2],
        "restored to {target}: exactly the markers written before it"
    );

    // A second restore into the (now non-empty) directory is refused.
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &cfg,
        "--to",
        &restore_dir.display().to_string(),
    ]);
    assert!(!ok && err.contains("is not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_from_a_local_repository() {
    let owner = postgres_dir();
    let storage = format!(
        "[storage]\nurl = \"file://{}/repo\"\n",
        owner.path().display()
    );
    point_in_time(&storage, &owner, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_stream_backup_as_before_streams_existed_still_restores() {
    let fx = LocalRepo::with("[backup]\nstreams = 1\n");
    let (_pg, db) = fx.primary_with_backup().await;
    exec(
        &db,
        "CREATE TABLE t AS SELECT generate_series(1, 500) AS id",
    )
    .await;
    switch_and_archive(&db).await;
    let (ok, out, err) = run_pgvigil(&["backups", "-c", &fx.cfg, "--json"]);
    assert!(ok, "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    let names: Vec<&str> = list[0]["objects"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["base.tar.zst"], "one object under the old name");
    let to = fx.dir.path().join("restored");
    let (ok, _, err) = run_pgvigil(&["restore", "-c", &fx.cfg, "--to", &to.display().to_string()]);
    assert!(ok, "restore failed: {err}");
    let restored = start_restored_env(&to, Vec::new()).await;
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    let n: i64 = query_value(&rc, "SELECT count(*) FROM t").await;
    assert_eq!(n, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_from_s3() {
    let moto = harness::moto::MotoServer::start().await;
    moto.create_bucket("pitr", "eu-central-1").await;
    let owner = postgres_dir();
    point_in_time(
        &moto.storage_toml("pitr", ""),
        &owner,
        MotoServer::aws_env(),
    )
    .await;
    // The objects really are in the bucket.
    let keys = moto.keys_under("pitr", "pgvigil/default/").await;
    assert!(keys.iter().any(|k| k.ends_with("/backup.json")), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.contains("/wal/") && k.ends_with(".zst")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_push_is_idempotent_and_refuses_other_clusters_and_overwrites() {
    let repo = LocalRepo::new();
    let a = repo.archiving_primary().await;
    let db = client(&a, "postgres").await;
    exec(&db, "CREATE TABLE t AS SELECT 1").await;
    switch_and_archive(&db).await;

    // A segment of this cluster, pushed again by hand: identical content is success.
    let seg: String = query_value(&db, "SELECT last_archived_wal FROM pg_stat_archiver").await;
    let seg_path = a.data_dir().join("pg_wal").join(&seg);
    let copy = repo.dir.path().join(&seg);
    if seg_path.exists() {
        std::fs::copy(&seg_path, &copy).unwrap_or_else(|e| panic!("{e}"));
    } else {
        // Already recycled: fetch it back from the repository instead.
        let (ok, _, err) = run_pgvigil(&[
            "wal-fetch",
            "-c",
            &repo.cfg,
            &seg,
            &copy.display().to_string(),
        ]);
        assert!(ok, "{err}");
    }
    give_to_postgres(&copy);
    let (ok, _, err) = run_pgvigil(&["wal-push", "-c", &repo.cfg, &copy.display().to_string()]);
    assert!(ok, "re-pushing identical content must succeed: {err}");

    // Same name, different content: refused, and the archived copy is unchanged.
    let mut altered = std::fs::read(&copy).unwrap_or_default();
    let n = altered.len();
    altered[n - 1] ^= 0xff;
    std::fs::write(&copy, &altered).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, err) = run_pgvigil(&["wal-push", "-c", &repo.cfg, &copy.display().to_string()]);
    assert!(!ok, "a conflicting push must fail");
    assert!(
        err.contains("different content") && err.contains(&seg),
        "{err}"
    );
    let fetched = repo.dir.path().join("fetched");
    let (ok, _, err) = run_pgvigil(&[
        "wal-fetch",
        "-c",
        &repo.cfg,
        &seg,
        &fetched.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert_ne!(
        std::fs::read(&fetched).unwrap_or_default(),
        altered,
        "never overwritten"
    );

    // A segment from another cluster is refused by the binding.
    let b = harness::cluster().await;
    let bdb = client(&b, "postgres").await;
    let other: String = query_value(&bdb, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    let other_copy = repo.dir.path().join(format!("other-{other}"));
    std::fs::copy(b.data_dir().join("pg_wal").join(&other), &other_copy)
        .unwrap_or_else(|e| panic!("{e}"));
    let renamed = repo.dir.path().join("x").join(&other);
    std::fs::create_dir_all(renamed.parent().unwrap_or(repo.dir.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&other_copy, &renamed).unwrap_or_else(|e| panic!("{e}"));
    give_to_postgres(renamed.parent().unwrap_or(repo.dir.path()));
    give_to_postgres(&renamed);
    let (ok, _, err) = run_pgvigil(&["wal-push", "-c", &repo.cfg, &renamed.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("belongs to database system"), "{err}");

    // wal-fetch of a missing file exits non-zero (PostgreSQL's "not available").
    let (ok, _, _) = run_pgvigil(&[
        "wal-fetch",
        "-c",
        &repo.cfg,
        "00000009.history",
        &repo.dir.path().join("h").display().to_string(),
    ]);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_leaves_nothing_listed_and_the_next_one_succeeds() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    // ~100 MB that compresses poorly, so the stream lasts long enough to be killed.
    make_big_table(&db).await;

    let backup = process::spawn_pgvigil(&["backup", "-c", &repo.cfg], &[]);
    // Wait until the stream is flowing into the repository, then kill pg_basebackup.
    let backups_dir = repo.repo_dir.join("default/backups");
    upload_flowing(&backups_dir).await;
    // Our pgvigil's own child, found by parent pid (never by name: that would also kill
    // the pg_basebackup of every test running beside this one).
    let children = process::children_of(backup.id());
    let basebackup: Vec<u32> = children
        .iter()
        .copied()
        .filter(|c| process::cmdline(*c).contains("application_name=pgvigil-backup"))
        .collect();
    assert_eq!(
        basebackup.len(),
        1,
        "pg_basebackup was running under pgvigil {}: children {children:?}",
        backup.id()
    );
    process::kill9(basebackup[0]).unwrap_or_else(|e| panic!("{e}"));
    let out = backup.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a killed backup must fail");
    assert!(
        err.contains("pg_basebackup failed") && err.contains("signal"),
        "the cause is named: {err}"
    );

    let (ok, out, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(99),
        0,
        "nothing lists as a backup"
    );
    let leftovers: Vec<_> = walk(&backups_dir)
        .into_iter()
        .filter(|p| !p.is_dir())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the partial object was removed: {leftovers:?}"
    );

    // The lease was released: the next run succeeds at once.
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    let (_, out, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(0),
        1
    );
}

/// PostgreSQL stopped (fast shutdown) and started again while `pgvigil backup` streams
/// (fault matrix: PostgreSQL restarted during a backup): the backup fails naming
/// pg_basebackup, nothing is listed or left in the repository, and the next backup, once
/// the server is back, succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_a_backup_fails_it_cleanly_and_the_next_succeeds() {
    let repo = LocalRepo::new();
    let mut pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    make_big_table(&db).await;
    // Archived first, so the shutdown does not wait for a backlog of pushes.
    switch_and_archive(&db).await;
    drop(db);

    let backup = process::spawn_pgvigil(&["backup", "-c", &repo.cfg], &[]);
    let backups_dir = repo.repo_dir.join("default/backups");
    upload_flowing(&backups_dir).await;
    pg.stop().await;
    if let Err(e) = pg.start_server().await {
        panic!("restarting PostgreSQL: {e}");
    }
    let out = backup.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a backup cut by a restart succeeded");
    assert!(err.contains("pg_basebackup"), "the cause is named: {err}");
    let (ok, out, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert!(ok && out.trim() == "[]", "nothing lists as a backup: {out}");
    let leftovers: Vec<_> = walk(&backups_dir)
        .into_iter()
        .filter(|p| !p.is_dir())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "the backup after the restart: {err}");
    let (_, out, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(0),
        1
    );
}

/// A restore killed (SIGKILL) while it unpacks leaves only its staging directory: nothing
/// in the target looks like a data directory, and the next restore into the same target
/// removes it and succeeds (issue 14, fault matrix: kill -9 during restore).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_restore_leaves_no_data_directory_and_the_next_one_succeeds() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    make_big_table(&db).await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");

    let to = repo.dir.path().join("restored");
    let target = to.display().to_string();
    let mut restore = KillOnDrop::spawn(
        harness::pgvigil_command(&["restore", "-c", &repo.cfg, "--to", &target])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    // Wait until the unpack is under way (several MiB staged), then kill it.
    let staging = to.join(".pgvigil-unpacking");
    eventually(Duration::from_secs(60), || async {
        let staged: u64 = walk(&staging)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if staged > 8 << 20 {
            Ok(())
        } else {
            Err(format!("{staged} bytes staged"))
        }
    })
    .await;
    restore.kill9();
    let top: Vec<String> = std::fs::read_dir(&to)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        top,
        vec![".pgvigil-unpacking".to_string()],
        "a killed restore left more than its staging directory"
    );

    let (ok, _, err) = run_pgvigil(&["restore", "-c", &repo.cfg, "--to", &target]);
    assert!(ok, "the restore after a killed one: {err}");
    assert!(to.join("PG_VERSION").exists());
    assert!(!staging.exists(), "the staging directory was left behind");
}

/// Waits (at most 60 s) until a backup's upload is flowing into a local repository: a
/// non-empty temp file below `backups_dir`.
async fn upload_flowing(backups_dir: &Path) {
    eventually(Duration::from_secs(60), || async {
        let flowing = walk(backups_dir).iter().any(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                && std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false)
        });
        if flowing {
            Ok(())
        } else {
            Err("no upload in progress yet".to_string())
        }
    })
    .await;
}

fn give_to_postgres(p: &Path) {
    pgvigil::pg::binaries::chown_to_server_user(p).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_backups_wal_pushes_and_the_next_run() {
    let repo = LocalRepo::with("[backup]\nschedule = \"0 2 * * *\"\n");
    let pg = repo.archiving_primary().await;
    let (ok, out, err) = run_pgvigil(&["backup", "-c", &repo.cfg, "--json"]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();

    let running = harness::daemon(harness::settings(&pg.dsn("postgres"), &repo.storage)).await;
    // wal-push processes report to the daemon at server.listen: point the config at it.
    let text = std::fs::read_to_string(&repo.config)
        .unwrap_or_default()
        .replace(
            "listen = \"127.0.0.1:1\"",
            &format!("listen = \"{}\"", running.addr),
        );
    std::fs::write(&repo.config, text).unwrap_or_else(|e| panic!("{e}"));
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE t AS SELECT 1").await;
    switch_and_archive(&db).await;

    let s = eventually(Duration::from_secs(20), || async {
        let s = harness::scrape(&running).await;
        let pushed = s
            .metric("pgvigil_wal_push_total")
            .label("outcome", "success")
            .get()?;
        if pushed >= 1.0 {
            Ok(s)
        } else {
            Err(format!("{pushed} pushes reported"))
        }
    })
    .await;
    let stop: chrono::DateTime<chrono::Utc> = info["stop_time"]
        .as_str()
        .unwrap_or("")
        .parse()
        .unwrap_or_default();
    let last = s
        .metric("pgvigil_backup_last_success_timestamp_seconds")
        .get()
        .unwrap_or(0.0);
    assert!(
        (last - stop.timestamp_millis() as f64 / 1000.0).abs() < 0.01,
        "{last} vs {stop}"
    );
    assert_eq!(
        s.metric("pgvigil_backup_last_size_bytes")
            .label("kind", "stored")
            .value(),
        info["stored_bytes"].as_f64()
    );
    assert_eq!(s.metric("pgvigil_backups").value(), Some(1.0));
    assert_eq!(s.metric("pgvigil_backup_running").value(), Some(0.0));
    assert!(
        s.metric("pgvigil_wal_push_duration_seconds_count")
            .get()
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        s.metric("pgvigil_wal_last_pushed_timestamp_seconds")
            .get()
            .unwrap_or(0.0)
            > 1.7e9
    );
    let next = s
        .metric("pgvigil_job_next_run_timestamp_seconds")
        .label("task", "backup")
        .get()
        .unwrap_or(0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(next > now && next <= now + 86400.0, "next backup at {next}");
    // The RPO gauge counts from the push just reported, and keeps counting between PITR
    // checks (every 5 minutes here) instead of standing still.
    let age = |s: &harness::Scrape| {
        s.metric("pgvigil_wal_archive_age_seconds")
            .get()
            .unwrap_or(-1.0)
    };
    let first = age(&harness::scrape(&running).await);
    assert!((0.0..30.0).contains(&first), "archive age {first}");
    eventually(Duration::from_secs(15), || async {
        let now = age(&harness::scrape(&running).await);
        if now >= first + 2.0 {
            Ok(())
        } else {
            Err(format!("archive age {now}, was {first}"))
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_vanishing_mid_upload_leaves_no_backup_and_the_next_run_succeeds() {
    let moto = harness::moto::MotoServer::start().await;
    moto.create_bucket("flaky", "eu-central-1").await;
    let moto_addr: std::net::SocketAddr = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let relay = harness::relay::Relay::start(moto_addr).await;
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let storage = format!(
        "[storage]\nurl = \"s3://flaky/pgvigil\"\n[storage.s3]\nregion = \"eu-central-1\"\nendpoint = \"http://{}\"\nforce_path_style = true\n",
        relay.addr
    );
    let env = MotoServer::aws_env();
    let pg = archiving_cluster_env(&config, env.clone()).await;
    write_config(&config, &pg.dsn("postgres"), &storage);
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    make_big_table(&db).await;

    let backup = KillOnDrop::spawn(
        harness::pgvigil_command(&["backup", "-c", &cfg])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    // Wait until a multipart upload is under way, then make S3 vanish.
    let s3 = moto.client();
    eventually(Duration::from_secs(60), || async {
        let uploads = s3
            .list_multipart_uploads()
            .bucket("flaky")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if uploads.uploads().is_empty() {
            Err("no upload in progress yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    relay.cut();
    let out = backup.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the backup must fail when S3 goes away"
    );
    assert!(
        err.contains("s3://flaky/pgvigil"),
        "the failure names the store: {err}"
    );

    // S3 comes back: nothing lists as a backup, and the next run succeeds.
    relay.restore().await;
    let (ok, out, err) = harness::run_pgvigil_env(&["backups", "-c", &cfg, "--json"], &env);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(99),
        0,
        "{out}"
    );
    let keys = moto.keys_under("flaky", "pgvigil/default/backups/").await;
    assert!(keys.iter().all(|k| !k.ends_with("backup.json")), "{keys:?}");
    let (ok, _, err) = harness::run_pgvigil_env(&["backup", "-c", &cfg], &env);
    assert!(ok, "the next backup succeeds: {err}");
    let (_, out, _) = harness::run_pgvigil_env(&["backups", "-c", &cfg, "--json"], &env);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(0),
        1
    );
}
