//! The fault matrix of issue 14, the rows not covered elsewhere: `kill -9` of pgvigil during
//! wal-push, retention and the off-site copy; S3 answering 500/503/SlowDown for a while,
//! answering slowly, or dropping the connection, during wal-push, backup upload, retention
//! delete and the off-site copy. Each test runs against a real PostgreSQL and moto behind
//! the fault-injecting relay (`harness/relay.rs`) and asserts that nothing is lost, nothing
//! invalid is listed as valid, and the next run succeeds. (PostgreSQL restarts: see
//! `restarts.rs`; disk full: `disk_full.rs`; leases, two daemons and clocks: `leases.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::backup::{
    archiving_cluster_env, switch_and_archive, wait_newest_backup_older_than, write_config,
};
use crate::harness::moto::MotoServer;
use crate::harness::process;
use crate::harness::relay::{Fault, Relay};
use crate::harness::s3_relay::{s3_offsite, s3_storage_at, S3Relay};
use crate::harness::{self, client, eventually, exec, postgres_dir, query_value, run_pgvigil_env};

const REGION: &str = "eu-central-1";

/// The ids `pgvigil backups --json` lists.
fn listed(cfg: &str, env: &[(String, String)]) -> Vec<String> {
    let (ok, out, err) = run_pgvigil_env(&["backups", "-c", cfg, "--json"], env);
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

/// Every listed backup of `prefix` in `bucket` still has its base object: nothing invalid
/// is listed as valid.
async fn listed_backups_are_whole(moto: &MotoServer, bucket: &str, prefix: &str, ids: &[String]) {
    let keys = moto.keys_under(bucket, prefix).await;
    for id in ids {
        // backup.json and the four streams of a backup ([backup] streams = 4, the default).
        for object in [
            "backup.json",
            "base.0.tar.zst",
            "base.1.tar.zst",
            "base.2.tar.zst",
            "base.3.tar.zst",
        ] {
            assert!(
                keys.iter().any(|k| k.ends_with(&format!("{id}/{object}"))),
                "backup {id} is listed but its {object} is gone: {keys:?}"
            );
        }
    }
}

/// Takes a backup (waiting for the next second first: ids are UTC seconds).
fn take_backup(cfg: &str, env: &[(String, String)]) {
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, _, err) = run_pgvigil_env(&["backup", "-c", cfg], env);
    assert!(ok, "backup failed: {err}");
}

/// The S3 fixture with `extra` in both configurations.
async fn s3_fixture(bucket: &str, extra: &str) -> S3Relay {
    S3Relay::start(bucket, "", extra, "").await
}

/// The `pgvigil wal-push` that `archive_command` runs under the postmaster of `data_dir`
/// (the pgvigil process itself, not the shell that runs it).
fn wal_push_under(data_dir: &Path) -> Option<u32> {
    let postmaster = process::postmaster_pid(data_dir)?;
    let bin = harness::pgvigil_bin().display().to_string();
    process::descendants_of(postmaster).into_iter().find(|p| {
        let cmd = process::cmdline(*p);
        cmd.starts_with(&bin) && cmd.contains(" wal-push ")
    })
}

/// PostgreSQL's archiver runs `pgvigil wal-push`; its upload of a segment is held at the
/// relay and the wal-push is killed (SIGKILL). The segment never reaches S3 (the relay drops
/// a request whose client went away, as S3 drops a truncated one), PostgreSQL restarts its
/// archiver and pushes the segment again, and the archive is continuous (`pgvigil verify`)
/// with the segment fetched back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_wal_push_is_retried_by_postgres_and_nothing_is_lost() {
    let f = s3_fixture("killpush", "").await;
    switch_and_archive(&f.db).await;
    take_backup(&f.direct, &f.env);

    let gate = f.relay.hold("PUT", "/wal/0000000100000000000000");
    exec(&f.db, "CREATE TABLE t AS SELECT 1 AS x").await;
    let seg: String = query_value(&f.db, "SELECT pg_walfile_name(pg_switch_wal())").await;
    gate.reached(Duration::from_secs(60), "a segment's upload")
        .await;
    let pid = wal_push_under(f.pg.data_dir())
        .unwrap_or_else(|| panic!("no wal-push under the postmaster"));
    process::kill9(pid).unwrap_or_else(|e| panic!("{e}"));
    // Nothing of the killed push reached S3 (the held request was dropped).
    eventually(Duration::from_secs(10), || async {
        let dropped = f
            .relay
            .seen()
            .iter()
            .any(|s| s.fault.as_deref() == Some("hold") && !s.forwarded);
        if dropped {
            Ok(())
        } else {
            Err("the held upload was not dropped".to_string())
        }
    })
    .await;
    gate.open();

    // The archiver treats a command killed by a signal as fatal: it exits and the
    // postmaster starts a new one (woken here by a reload), which pushes the segment again.
    eventually(Duration::from_secs(120), || async {
        f.db.batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| e.to_string())?;
        let row =
            f.db.query_one(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (last, failed): (Option<String>, i64) = (row.get(0), row.get(1));
        match last {
            Some(l) if l >= seg => Ok(()),
            other => Err(format!(
                "waiting for {seg}: last archived {other:?}, {failed} failed; server log:\n{}",
                f.pg.log_tail()
            )),
        }
    })
    .await;
    let (ok, out, err) = run_pgvigil_env(&["verify", "-c", &f.direct], &f.env);
    assert!(ok, "verify after the killed push: {out}{err}");
    let fetched = f.owner.path().join("fetched");
    let (ok, _, err) = run_pgvigil_env(
        &[
            "wal-fetch",
            "-c",
            &f.direct,
            &seg,
            &fetched.display().to_string(),
        ],
        &f.env,
    );
    assert!(ok, "wal-fetch {seg}: {err}");
    assert_eq!(
        std::fs::metadata(&fetched).map(|m| m.len()).unwrap_or(0),
        16 << 20
    );
}

/// Retention (through the relay, a 1 s window: two of three backups are due) is killed
/// while its second delete request is held. Every backup still listed is whole, the next
/// retention finishes the job, and the newest backup restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_retention_lists_only_whole_backups_and_the_next_run_finishes() {
    let f = s3_fixture("killret", "[retention]\nrecovery_window = \"1s\"\n").await;
    for _ in 0..3 {
        switch_and_archive(&f.db).await;
        take_backup(&f.direct, &f.env);
    }
    switch_and_archive(&f.db).await;
    let all = listed(&f.direct, &f.env);
    assert_eq!(all.len(), 3);
    wait_newest_backup_older_than(&f.direct, &f.env, Duration::from_secs(2)).await;

    // The first delete (the oldest backup's marker) passes, the second is held.
    f.relay
        .inject("POST", "?delete", 1, Fault::Delay(Duration::ZERO));
    let gate = f.relay.hold("POST", "?delete");
    let retention = process::spawn_pgvigil(&["retention", "-c", &f.via_relay], &f.env);
    gate.reached(
        Duration::from_secs(60),
        "retention has not reached its second delete",
    )
    .await;
    let mut retention = retention;
    retention.kill9();
    gate.open();

    let now_listed = listed(&f.direct, &f.env);
    assert!(
        now_listed.len() < 3 && now_listed.contains(&all[2]),
        "{now_listed:?}"
    );
    listed_backups_are_whole(&f.moto, "killret", "pgvigil/default/backups/", &now_listed).await;
    let (ok, out, err) = run_pgvigil_env(&["verify", "-c", &f.direct], &f.env);
    assert!(ok, "verify after the killed retention: {out}{err}");

    // The next run (its lease's holder is dead: no wait) finishes: only the newest is left.
    let (ok, _, err) = run_pgvigil_env(&["retention", "-c", &f.via_relay], &f.env);
    assert!(ok, "the next retention: {err}");
    assert_eq!(listed(&f.direct, &f.env), vec![all[2].clone()]);
    listed_backups_are_whole(&f.moto, "killret", "pgvigil/default/backups/", &all[2..]).await;
    let (ok, out, err) = run_pgvigil_env(&["verify", "-c", &f.direct], &f.env);
    assert!(ok, "{out}{err}");
}

/// The off-site copy (local repository to S3 through the relay) is killed while the base
/// object's upload is held: the off-site repository has no `backup.json`, so nothing lists
/// there; the next copy (no wait for the dead holder's lease) completes and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_offsite_copy_lists_nothing_partial_and_the_next_one_completes() {
    let moto = MotoServer::start().await;
    moto.create_bucket("killcopy", REGION).await;
    let relay = Relay::in_front_of(&moto).await;
    let owner = postgres_dir();
    let env = MotoServer::aws_env();
    let config = owner.path().join("pgvigil.toml");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n{}",
        owner.path().join("repo").display(),
        s3_offsite("killcopy", &relay.endpoint())
    );
    let pg = archiving_cluster_env(&config, env.clone()).await;
    write_config(&config, &pg.dsn("postgres"), &storage);
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    switch_and_archive(&db).await;
    take_backup(&cfg, &env);
    switch_and_archive(&db).await;

    let gate = relay.hold("PUT", "base.0.tar.zst");
    let mut copy = process::spawn_pgvigil(&["offsite", "-c", &cfg], &env);
    gate.reached(
        Duration::from_secs(60),
        "the copy has not reached the base object",
    )
    .await;
    copy.kill9();
    gate.open();
    let keys = moto.keys_under("killcopy", "offsite/").await;
    assert!(
        keys.iter()
            .all(|k| !(k.contains("/backups/") && k.ends_with("backup.json"))),
        "a partial copy has a commit marker: {keys:?}"
    );

    let (ok, out, err) = run_pgvigil_env(&["offsite", "-c", &cfg, "--json"], &env);
    assert!(ok, "the next copy: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(r["verified"], true, "{out}");
    let keys = moto.keys_under("killcopy", "offsite/").await;
    assert_eq!(
        keys.iter()
            .filter(|k| k.contains("/backups/") && k.ends_with("backup.json"))
            .count(),
        1,
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("base.0.tar.zst")),
        "{keys:?}"
    );
}

/// S3 answering 503 SlowDown / 500 for a while, and slowly, during wal-push, backup upload,
/// retention delete and the off-site copy: the SDK's retries carry each through, exit 0,
/// and what exit 0 claims is there (fetched, listed, deleted, verified). Errors that last
/// longer than the retries fail the command within a bounded time, with nothing stored,
/// and the next run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_and_slowness_for_a_while_are_retried_and_exit_0_means_done() {
    let f = s3_fixture("flaky5xx", "[retention]\nrecovery_window = \"1s\"\n").await;
    // Off-site copies go to a second bucket, through the relay too.
    let offsite_cfg = f.offsite_config().await;

    // wal-push: two SlowDowns, then the archive_command's push goes through.
    f.relay.inject(
        "PUT",
        "/wal/0000000100000000000000",
        2,
        Fault::Status(503, "SlowDown"),
    );
    switch_and_archive(&f.db).await;
    let failed: i64 = query_value(&f.db, "SELECT failed_count FROM pg_stat_archiver").await;
    assert_eq!(failed, 0, "the SDK retried inside one wal-push");
    // Backup upload: a 500 and a slow answer.
    f.relay.inject(
        "PUT",
        "base.0.tar.zst",
        1,
        Fault::Status(500, "InternalError"),
    );
    f.relay.inject(
        "PUT",
        "backup.json",
        1,
        Fault::Delay(Duration::from_secs(2)),
    );
    take_backup(&f.via_relay, &f.env);
    switch_and_archive(&f.db).await;
    take_backup(&f.via_relay, &f.env);
    switch_and_archive(&f.db).await;
    let before = listed(&f.direct, &f.env);
    assert_eq!(before.len(), 2);
    wait_newest_backup_older_than(&f.direct, &f.env, Duration::from_secs(2)).await;
    // Retention: its deletes answered with SlowDown twice.
    f.relay
        .inject("POST", "?delete", 2, Fault::Status(503, "SlowDown"));
    let (ok, out, err) = run_pgvigil_env(&["retention", "-c", &f.via_relay], &f.env);
    assert!(ok, "retention through SlowDowns: {err}");
    assert_eq!(
        listed(&f.direct, &f.env),
        vec![before[1].clone()],
        "{out}{err}"
    );
    listed_backups_are_whole(
        &f.moto,
        "flaky5xx",
        "pgvigil/default/backups/",
        &before[1..],
    )
    .await;
    // Off-site copy: its copies answered with 503 twice and slowly once.
    f.relay.inject(
        "PUT",
        "/flaky5xx-copy/",
        2,
        Fault::Status(503, "ServiceUnavailable"),
    );
    f.relay.inject(
        "PUT",
        "/flaky5xx-copy/",
        1,
        Fault::Delay(Duration::from_secs(2)),
    );
    let (ok, out, err) = run_pgvigil_env(&["offsite", "-c", &offsite_cfg, "--json"], &f.env);
    assert!(ok, "off-site copy through 503s: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(r["verified"], true, "{out}");
    assert_eq!(r["backup_id"].as_str(), Some(before[1].as_str()));

    // Errors for longer than the retries: a bounded failure, nothing stored, then success.
    let seg: String = query_value(&f.db, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    exec(
        &f.db,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    )
    .await;
    let wal_file = f.pg.data_dir().join("pg_wal").join(&seg);
    let copy = f.owner.path().join(&seg);
    std::fs::copy(&wal_file, &copy).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&copy).unwrap_or_else(|e| panic!("{e}"));
    // Pushed into a repository of its own, so the archiver's pushes are not in the way.
    let other = f.owner.path().join("other.toml");
    write_config(
        &other,
        &f.pg.dsn("postgres"),
        &s3_storage_at("s3://flaky5xx/manual", &f.relay.endpoint(), "", ""),
    );
    let other = other.display().to_string();
    f.relay.inject(
        "PUT",
        &format!("/manual/default/wal/{seg}"),
        20,
        Fault::Status(503, "SlowDown"),
    );
    let started = Instant::now();
    let (ok, _, err) = run_pgvigil_env(
        &["wal-push", "-c", &other, &copy.display().to_string()],
        &f.env,
    );
    assert!(!ok, "a push that never reached S3 exited 0");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the failure took {:?}",
        started.elapsed()
    );
    assert!(err.contains("SlowDown") || err.contains("503"), "{err}");
    assert!(f
        .moto
        .keys_under("flaky5xx", &format!("manual/default/wal/{seg}"))
        .await
        .is_empty());
    f.relay.clear();
    let (ok, _, err) = run_pgvigil_env(
        &["wal-push", "-c", &other, &copy.display().to_string()],
        &f.env,
    );
    assert!(ok, "the next push: {err}");
    assert_eq!(
        f.moto
            .keys_under("flaky5xx", &format!("manual/default/wal/{seg}"))
            .await
            .len(),
        1
    );
}

/// Connections dropped by S3: before the request arrived (retried by the SDK), and after
/// it took effect with the answer lost (the retry finds its own write: a WAL segment with
/// the same checksum, a lease holding its own bytes), during wal-push, backup upload (the
/// lease and the commit marker included), retention delete and the off-site copy. Each
/// command exits 0 and its result is there; nothing is doubled or left half-done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_retried_and_a_lost_answer_is_not_a_failure() {
    let f = s3_fixture("drops", "[retention]\nrecovery_window = \"1s\"\n").await;
    let offsite_cfg = f.offsite_config().await;

    // wal-push: the segment lands but the answer is lost; the retry is a success.
    f.relay
        .inject("PUT", "/wal/0000000100000000000000", 1, Fault::DropAfter);
    switch_and_archive(&f.db).await;
    let failed: i64 = query_value(&f.db, "SELECT failed_count FROM pg_stat_archiver").await;
    assert_eq!(failed, 0, "a push that landed was reported as failed");
    // Backup: the lease's create and the commit marker land unanswered, a part upload is
    // dropped before it arrives.
    f.relay
        .inject("PUT", "state/locks/backup.json", 1, Fault::DropAfter);
    f.relay
        .inject("PUT", "base.0.tar.zst", 1, Fault::DropBefore);
    f.relay.inject("PUT", "Z/backup.json", 1, Fault::DropAfter);
    take_backup(&f.via_relay, &f.env);
    switch_and_archive(&f.db).await;
    take_backup(&f.via_relay, &f.env);
    switch_and_archive(&f.db).await;
    let before = listed(&f.direct, &f.env);
    assert_eq!(before.len(), 2, "{before:?}");
    wait_newest_backup_older_than(&f.direct, &f.env, Duration::from_secs(2)).await;
    listed_backups_are_whole(&f.moto, "drops", "pgvigil/default/backups/", &before).await;
    // Retention: its delete lands unanswered, then one is dropped before it arrives.
    f.relay.inject("POST", "?delete", 1, Fault::DropAfter);
    f.relay.inject("POST", "?delete", 1, Fault::DropBefore);
    let (ok, _, err) = run_pgvigil_env(&["retention", "-c", &f.via_relay], &f.env);
    assert!(ok, "retention through dropped connections: {err}");
    assert_eq!(listed(&f.direct, &f.env), vec![before[1].clone()]);
    listed_backups_are_whole(&f.moto, "drops", "pgvigil/default/backups/", &before[1..]).await;
    // Off-site copy: a copy lands unanswered, another is dropped before.
    f.relay.inject("PUT", "/drops-copy/", 1, Fault::DropAfter);
    f.relay.inject("PUT", "/drops-copy/", 1, Fault::DropBefore);
    let (ok, out, err) = run_pgvigil_env(&["offsite", "-c", &offsite_cfg, "--json"], &f.env);
    assert!(ok, "off-site copy through dropped connections: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(r["verified"], true, "{out}");
    let dropped = f
        .relay
        .seen()
        .iter()
        .filter(|s| s.fault.as_deref().is_some_and(|d| d.starts_with("drop")))
        .count();
    assert_eq!(
        dropped,
        8,
        "every injected drop happened: {:?}",
        f.relay.seen()
    );
    let (ok, out, err) = run_pgvigil_env(&["verify", "-c", &f.direct], &f.env);
    assert!(ok, "{out}{err}");
}
