//! Read-ahead of archived WAL (`[backup] wal_prefetch`): after `wal-fetch` served one
//! segment, a background prefetcher holds the next ones in the spool, checked and whole;
//! the next `wal-fetch` takes its file from there; the window follows recovery; and the
//! spool is gone once recovery stops asking.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::harness::backup::{switch_and_archive, wal_segments, LocalRepo};
use crate::harness::{eventually, exec, postgres_dir, run_pgvigil};

/// The segment names in the spool (whole files only).
fn spooled(spool: &Path) -> BTreeSet<String> {
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect()
}

/// The raw content of a segment as the repository holds it.
fn archived(repo: &Path, name: &str) -> Vec<u8> {
    let body = std::fs::read(repo.join("default/wal").join(format!("{name}.zst")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    pgvigil::backup::compress::decompress(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_fetch_reads_ahead_and_the_next_fetch_is_served_from_the_spool() {
    let fx = LocalRepo::with("[backup]\nwal_prefetch = 4\n");
    let (_pg, db) = fx.primary_with_backup().await;
    exec(&db, "CREATE TABLE t (id int)").await;
    for i in 0..10 {
        exec(&db, &format!("INSERT INTO t VALUES ({i})")).await;
        switch_and_archive(&db).await;
    }
    let segments: Vec<String> = wal_segments(&fx.repo_dir.join("default/wal"))
        .into_iter()
        .map(|n| n.trim_end_matches(".zst").to_string())
        .collect();
    assert!(segments.len() >= 10, "{segments:?}");

    // As PostgreSQL runs restore_command: cwd-relative %p is pg_wal/RECOVERYXLOG.
    let data = postgres_dir();
    let pg_wal = data.path().join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&pg_wal).unwrap_or_else(|e| panic!("{e}"));
    let dest = pg_wal.join("RECOVERYXLOG");
    let dest_arg = dest.display().to_string();
    let spool = pg_wal.join("pgvigil-prefetch");

    let first = &segments[2];
    let (ok, _, err) = run_pgvigil(&["wal-fetch", "-c", &fx.cfg, first, &dest_arg]);
    assert!(ok, "wal-fetch {first}: {err}");
    assert_eq!(
        std::fs::read(&dest).ok(),
        Some(archived(&fx.repo_dir, first))
    );

    // The four segments after it arrive in the spool, each as archived.
    let ahead: BTreeSet<String> = segments[3..7].iter().cloned().collect();
    eventually(Duration::from_secs(30), || async {
        let have = spooled(&spool);
        if ahead.is_subset(&have) {
            Ok(())
        } else {
            Err(format!("spool has {have:?}, waiting for {ahead:?}"))
        }
    })
    .await;
    assert!(
        spooled(&spool).len() <= 4,
        "the spool holds at most wal_prefetch segments: {:?}",
        spooled(&spool)
    );
    for name in &ahead {
        let bytes = std::fs::read(spool.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            bytes == archived(&fx.repo_dir, name),
            "{name} in the spool differs from the archive"
        );
    }

    // The next fetch takes its file from the spool, and the window moves on.
    let next = &segments[3];
    std::fs::remove_file(&dest).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, err) = run_pgvigil(&["wal-fetch", "-c", &fx.cfg, next, &dest_arg]);
    assert!(ok, "wal-fetch {next}: {err}");
    assert_eq!(
        std::fs::read(&dest).ok(),
        Some(archived(&fx.repo_dir, next))
    );
    assert!(
        !spool.join(next).exists(),
        "{next} was moved out of the spool"
    );
    let moved = &segments[7];
    eventually(Duration::from_secs(30), || async {
        let have = spooled(&spool);
        if have.contains(moved) && !have.contains(first) {
            Ok(())
        } else {
            Err(format!("spool has {have:?}, waiting for {moved}"))
        }
    })
    .await;

    // Recovery stopped asking: the prefetcher leaves nothing behind in pg_wal.
    eventually(Duration::from_secs(60), || async {
        if spool.exists() {
            Err(format!("{} still exists", spool.display()))
        } else {
            Ok(())
        }
    })
    .await;
}
