//! Disk full (issue 14, item 9), on small tmpfs mounts: a `file://` repository that fills
//! up under `wal-push` and `backup`, and a drill directory too small for the backup. Each
//! fails with an error naming the path and its free space, leaves nothing half-written that
//! lists or counts, and the next run succeeds once there is space again. (The restore
//! target: `restore_safety.rs`; the audit file: `audit.rs`.)

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::harness::backup::{switch_and_archive, walk, LocalRepo};
use crate::harness::tmpfs::Tmpfs;
use crate::harness::{client, eventually, exec, query_value, run_pgvigil};

/// Fills the file system of `dir` with `dir/filler`, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let block = vec![0x5au8; 1 << 16];
    // Bounded by the tmpfs size: write until it is full.
    for _ in 0..1_000_000 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    f.set_len(len.saturating_sub(leave))
        .unwrap_or_else(|e| panic!("{e}"));
    f.sync_all().unwrap_or_else(|e| panic!("{e}"));
}

/// Temp files of the local store (`.tmp-*`) below `dir`.
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

/// The repository on a 64 MiB tmpfs, archived into by `wal-push`. Filled up to 64 KiB:
/// the next segment's push fails (PostgreSQL keeps it and counts the failure), its error
/// in the server log names the WAL directory and its free space, and no part of it is in
/// the repository; a backup fails the same way and lists nothing. Once the filler is
/// removed, the archiver's retry archives the segment, the next backup succeeds, and the
/// archive verifies from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_repository_fails_cleanly_and_the_next_runs_succeed() {
    let repo = LocalRepo::new();
    let disk = Tmpfs::mount(&repo.repo_dir, "64m");
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    switch_and_archive(&db).await;

    fill(disk.path(), 64 << 10);
    // About 4 MiB of WAL that does not compress.
    exec(&db, "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS pad FROM generate_series(1, 40000) g").await;
    let seg: String = query_value(&db, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let wal_dir = repo.repo_dir.join("default/wal");
    eventually(Duration::from_secs(60), || async {
        let failed: i64 = query_value(&db, "SELECT failed_count FROM pg_stat_archiver").await;
        let log = pg.log_tail();
        if failed >= 1 && log.contains("is full") {
            Ok(log)
        } else {
            Err(format!("{failed} failed pushes; log:\n{log}"))
        }
    })
    .await;
    let log = pg.log_tail();
    assert!(
        log.contains(&wal_dir.display().to_string()) && log.contains("bytes free")
            || log.contains("MiB free"),
        "the push names the directory and its free space: {log}"
    );
    assert!(
        !wal_dir.join(format!("{seg}.zst")).exists(),
        "a segment that did not fit is in the repository"
    );
    assert!(
        temp_files(&repo.repo_dir).is_empty(),
        "{:?}",
        temp_files(&repo.repo_dir)
    );

    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(!ok, "a backup into a full repository succeeded");
    assert!(
        err.contains("is full")
            && err.contains("free")
            && err.contains(&repo.repo_dir.display().to_string()),
        "{err}"
    );
    let (ok, out, _) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert!(ok && out.trim() == "[]", "nothing lists as a backup: {out}");
    assert!(
        temp_files(&repo.repo_dir).is_empty(),
        "{:?}",
        temp_files(&repo.repo_dir)
    );
    assert!(
        walk(&repo.repo_dir.join("default/backups"))
            .iter()
            .all(|p| p.is_dir()),
        "a failed backup left objects: {:?}",
        walk(&repo.repo_dir.join("default/backups"))
    );

    // Space is back: the archiver's retry and the next backup succeed.
    std::fs::remove_file(disk.path().join("filler")).unwrap_or_else(|e| panic!("{e}"));
    switch_and_archive(&db).await;
    assert!(wal_dir.join(format!("{seg}.zst")).exists());
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "the backup after space came back: {err}");
    switch_and_archive(&db).await;
    let (ok, out, err) = run_pgvigil(&["verify", "-c", &repo.cfg]);
    assert!(ok, "{out}{err}");
}

/// A drill directory (a 32 MiB tmpfs) too small for the backup: the drill is refused before
/// it writes, naming the directory, its free space and what it needs; nothing is left in
/// it; with space the same drill passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_drill_directory_is_refused_with_the_numbers_and_the_next_drill_passes() {
    let work = tempfile::Builder::new()
        .prefix("pgvigil-drill-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let work_dir = work.path().join("drill");
    let repo = LocalRepo::with(&format!(
        "[drill]\nwork_dir = \"{}\"\namcheck = false\n[pitr]\nheartbeat_interval = \"0s\"\n",
        work_dir.display()
    ));
    let (_pg, db) = repo.primary_with_backup().await;
    // A commit after the backup: the recovery window a drill draws its target from.
    exec(&db, "CREATE TABLE after_backup AS SELECT 1 AS x").await;
    switch_and_archive(&db).await;
    let disk = Tmpfs::mount(&work_dir, "32m");

    let (ok, out, err) = run_pgvigil(&["drill", "-c", &repo.cfg, "--timeout", "2m"]);
    assert!(!ok, "a drill into 32 MiB passed: {out}");
    let said = format!("{out}{err}");
    assert!(
        said.contains(&work_dir.display().to_string())
            && said.contains("MiB free")
            && said.contains("needs"),
        "{said}"
    );
    let left: Vec<_> = std::fs::read_dir(disk.path())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the refused drill left {left:?}");

    disk.resize("2g");
    let (ok, out, err) = run_pgvigil(&["drill", "-c", &repo.cfg, "--timeout", "2m"]);
    assert!(ok, "the drill with space: {out}{err}");
}
