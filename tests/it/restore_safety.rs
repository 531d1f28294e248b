//! A restored cluster cannot be turned against the repository it came from: by default it
//! does not archive, so after its promotion nothing of its new timeline reaches the
//! production repository (issue 14, item 1); a backup someone rewrote cannot write outside
//! the target (item 2); a target without room is refused before anything is written
//! (item 9).

use std::time::Duration;

use pgvigil::pg::{TempCluster, TempClusterOptions};

use crate::harness::backup::{switch_and_archive, walk, LocalRepo};
use crate::harness::tmpfs::Tmpfs;
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
    // The restore synced its directory: the server's startup sync is one syncfs.
    let sync: String = query_value(&rc, "SHOW recovery_init_sync_method").await;
    assert_eq!(sync, "syncfs");
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

/// A backup rewritten by someone who can write to the bucket (its `backup.json` checksum
/// updated to match): a planted symlink `postgresql.auto.conf -> <a file outside>` is
/// refused by name, the file outside is untouched, and the target is left empty
/// (issue 14, item 2). Before, the link was created and restore appended through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_in_a_backup_is_refused_and_nothing_is_written_through_it() {
    use sha2::Digest;
    let repo = LocalRepo::new();
    let (_primary, _db) = repo.primary_with_backup().await;

    // Find the backup's object and its backup.json.
    let marker = walk(&repo.repo_dir)
        .into_iter()
        .find(|p| p.ends_with("backup.json") && p.to_string_lossy().contains("/backups/"))
        .unwrap_or_else(|| panic!("no backup.json under {}", repo.repo_dir.display()));
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let name = info["objects"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let object = marker.with_file_name(&name);

    // Rebuild the tar with the link in place of postgresql.auto.conf.
    let outside = repo.dir.path().join("outside.conf");
    std::fs::write(&outside, "precious\n").unwrap_or_else(|e| panic!("{e}"));
    let raw = zstd::decode_all(&std::fs::read(&object).unwrap_or_else(|e| panic!("{e}"))[..])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o600);
    link.set_size(0);
    builder
        .append_link(&mut link, "postgresql.auto.conf", &outside)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut archive = tar::Archive::new(&raw[..]);
    for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
        let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let path = entry.path().unwrap_or_else(|e| panic!("{e}")).into_owned();
        if path.ends_with("postgresql.auto.conf") {
            continue;
        }
        let mut header = entry.header().clone();
        builder
            .append_data(&mut header, &path, &mut entry)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let tampered = zstd::encode_all(
        &builder.into_inner().unwrap_or_else(|e| panic!("{e}"))[..],
        3,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&object, &tampered).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(object.with_file_name(format!(".{name}.meta.json")));
    info["objects"][0]["sha256"] = hex::encode(sha2::Sha256::digest(&tampered)).into();
    info["objects"][0]["stored_bytes"] = tampered.len().into();
    std::fs::write(&marker, serde_json::to_vec(&info).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));

    let to = repo.dir.path().join("restored");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &to.display().to_string(),
    ]);
    assert!(!ok, "a restore with a planted symlink succeeded: {out}");
    assert!(
        err.contains("\"postgresql.auto.conf\", a symlink to")
            && err.contains(&outside.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap_or_default(),
        "precious\n",
        "restore wrote through the planted link"
    );
    let left: Vec<_> = std::fs::read_dir(&to)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the failed restore left {left:?}");
}

/// A restore target too small for the backup (a 6 MiB tmpfs): refused before anything is
/// written, naming the directory, its free space and what the backup needs; the directory
/// stays empty, and once there is space the same restore succeeds (issue 14, item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restore_target_is_refused_with_the_numbers_and_the_next_run_succeeds() {
    let repo = LocalRepo::new();
    let (_primary, _db) = repo.primary_with_backup().await;

    let to = repo.dir.path().join("small");
    // Owned by the user pgvigil restores as (the server user when root), as a real target.
    let small = Tmpfs::mount(&to, "6m");
    let (ok, out, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &to.display().to_string(),
    ]);
    let left: Vec<_> = std::fs::read_dir(&to)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(!ok, "a restore into 6 MiB succeeded: {out}");
    assert!(
        err.contains(&to.display().to_string())
            && err.contains("MiB free")
            && err.contains("needs"),
        "{err}"
    );
    assert!(left.is_empty(), "the refused restore left {left:?}");

    // Space is back: the same command succeeds.
    small.resize("512m");
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &to.display().to_string(),
    ]);
    let version = std::fs::read_to_string(to.join("PG_VERSION")).unwrap_or_default();
    drop(small);
    assert!(ok, "the restore after space came back: {err}");
    assert!(
        !version.trim().is_empty(),
        "no PG_VERSION in the restored directory"
    );
}
