//! A restored cluster cannot be turned against the repository it came from: by default it
//! does not archive, so after its promotion nothing of its new timeline reaches the
//! production repository (issue 14, item 1).

use std::time::Duration;

use pgvigil::pg::{TempCluster, TempClusterOptions};

use crate::harness::backup::{switch_and_archive, LocalRepo};
use crate::harness::{self, client, exec, query_value, run_pgvigil};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_does_not_archive_into_the_repository_it_came_from() {
    let repo = LocalRepo::new();
    let primary = repo.archiving_primary().await;
    let db = client(&primary, "postgres").await;
    exec(&db, "CREATE TABLE t AS SELECT 1 AS x").await;
    switch_and_archive(&db).await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "backup failed: {err}");
    switch_and_archive(&db).await;

    let to = repo.dir.path().join("restored");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &to.display().to_string(),
    ]);
    assert!(ok, "restore failed: {err}");
    assert!(out.contains("WAL archiving is off"), "{out}");

    // Started as the backup left it (its postgresql.auto.conf says archive_command =
    // 'pgvigil wal-push ...' into this repository), with no override from the test.
    let restored = match TempCluster::adopt(&to, TempClusterOptions::default()).await {
        Ok(c) => c,
        Err(e) => panic!("starting the restored cluster: {e}"),
    };
    let rc = client(&restored, "postgres").await;
    harness::wait_promoted(&rc).await;
    let mode: String = query_value(&rc, "SHOW archive_mode").await;
    assert_eq!(mode, "off");
    let timeline: i32 = query_value(&rc, "SELECT timeline_id FROM pg_control_checkpoint()").await;
    let _: String = query_value(&rc, "SELECT pg_walfile_name(pg_switch_wal())").await;
    exec(&rc, "CHECKPOINT").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let history = repo
        .repo_dir
        .join(format!("default/wal/{timeline:08X}.history.zst"));
    assert!(timeline >= 2, "the restore promoted onto a new timeline");
    assert!(
        !history.exists(),
        "{} was archived into the production repository",
        history.display()
    );

    // --keep-archiving (a restore meant to be the new primary) keeps the settings.
    let kept = repo.dir.path().join("kept");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &kept.display().to_string(),
        "--keep-archiving",
    ]);
    assert!(ok, "restore failed: {err}");
    assert!(out.contains("WAL archiving kept"), "{out}");
    let conf = std::fs::read_to_string(kept.join("postgresql.auto.conf")).unwrap_or_default();
    let added = conf
        .split("# added by pgvigil restore")
        .nth(1)
        .unwrap_or("");
    assert!(added.contains("restore_command"), "{conf}");
    assert!(!added.contains("archive_mode"), "{conf}");
}
