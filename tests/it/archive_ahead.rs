//! Archiving ahead (`[backup] archive_ahead`): the daemon pushes ready WAL files before
//! `archive_command` gets to them, `wal-push` then finds them stored, and a daemon killed
//! in the middle of its pushes loses nothing: every file PostgreSQL counts as archived is
//! in the repository with the content it had in `pg_wal`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pgvigil::pg::{TempCluster, TempClusterOptions};
use sha2::{Digest, Sha256};

use crate::harness::process::KillOnDrop;
use crate::harness::{self, client, eventually, exec, postgres_dir, query_value, run_pgvigil};

/// The WAL segments marked ready in `data/pg_wal/archive_status`.
fn ready_segments(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("pg_wal/archive_status"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    let wal = n.strip_suffix(".ready")?;
                    (wal.len() == 24).then(|| wal.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The segments stored in the local repository at `repo`.
fn stored(repo: &Path) -> BTreeSet<String> {
    std::fs::read_dir(repo.join("default/wal"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    let wal = n.strip_suffix(".zst")?;
                    (wal.len() == 24).then(|| wal.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn archiver(db: &tokio_postgres::Client) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT archived_count, failed_count FROM pg_stat_archiver",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_archives_ahead_and_a_kill_in_the_middle_loses_nothing() {
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let cfg = config.display().to_string();
    let repo = owner.path().join("repo");
    let gate = owner.path().join("archiving-open");
    // archive_command fails until the gate file exists: until then only the daemon archives.
    let command = format!(
        "'test -f {} && {} wal-push -c {cfg} %p'",
        gate.display(),
        harness::pgvigil_bin().display()
    );
    let pg = TempCluster::start(TempClusterOptions {
        settings: vec![
            ("archive_mode".into(), "on".into()),
            ("archive_command".into(), command),
            ("max_wal_size".into(), "1GB".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL (make deps): {e}"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{}\"\n[storage]\nurl = \"file://{}\"\n\
             [backup]\nschedule = \"off\"\ncompression_level = 9\narchive_workers = 2\n\
             [drill]\nschedule = \"off\"\n[retention]\nschedule = \"off\"\n\
             [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n",
            pg.dsn("postgres"),
            repo.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(&config).unwrap_or_else(|e| panic!("{e}"));
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE filler (id int, payload text)").await;
    for _ in 0..2 {
        exec(
            &db,
            "INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
        )
        .await;
        let _: String = query_value(&db, "SELECT pg_walfile_name(pg_switch_wal())").await;
    }
    let first = ready_segments(pg.data_dir());
    assert!(first.len() >= 2, "{first:?}");

    let mut daemon = KillOnDrop::spawn(
        harness::pgvigil_command(&["run", "-c", &cfg])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // The daemon archives them while archive_command still fails.
    eventually(Duration::from_secs(30), || async {
        let have = stored(&repo);
        match first.iter().find(|s| !have.contains(*s)) {
            None => Ok(()),
            Some(s) => Err(format!("{s} not archived ahead yet; stored {have:?}")),
        }
    })
    .await;
    let (archived, failed) = archiver(&db).await;
    assert_eq!(
        archived, 0,
        "archive_command archived nothing: the daemon did"
    );
    assert!(failed > 0, "archive_command is still failing (gate closed)");

    // A burst of ~5 segments of hard-to-compress rows; the daemon is killed as soon as it
    // has stored the first of them, in the middle of its uploads.
    let burst = {
        let dsn = pg.dsn("postgres");
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(conn);
            for _ in 0..5 {
                c.batch_execute(
                    "INSERT INTO filler SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 120000) g",
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            }
            c.batch_execute("SELECT pg_switch_wal()")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        })
    };
    let mut killed = false;
    // Bounded: 60 s of 10 ms polls.
    for _ in 0..6000 {
        let ready = ready_segments(pg.data_dir());
        let have = stored(&repo);
        if ready.iter().any(|s| !first.contains(s) && have.contains(s)) {
            daemon.kill9();
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(killed, "the daemon stored nothing of the burst within 60 s");
    burst.await.unwrap_or_else(|e| panic!("{e}"));
    let all = ready_segments(pg.data_dir());
    let after_kill = stored(&repo);
    assert!(
        all.iter().any(|s| !after_kill.contains(s)),
        "some segments were left for archive_command: {all:?} vs {after_kill:?}"
    );
    // Their content as PostgreSQL wrote it (unarchived segments are never recycled).
    let originals: Vec<(String, String)> = all
        .iter()
        .map(|s| {
            let bytes = std::fs::read(pg.data_dir().join("pg_wal").join(s))
                .unwrap_or_else(|e| panic!("{s}: {e}"));
            (s.clone(), sha(&bytes))
        })
        .collect();

    // Archiving opens: archive_command finds what the daemon stored and pushes the rest.
    std::fs::write(&gate, b"").unwrap_or_else(|e| panic!("{e}"));
    // After three failures the archiver sleeps for a minute; a new ready segment wakes it.
    exec(&db, "INSERT INTO filler VALUES (0, 'wake')").await;
    let _: String = query_value(&db, "SELECT pg_walfile_name(pg_switch_wal())").await;
    eventually(Duration::from_secs(120), || async {
        let left = ready_segments(pg.data_dir());
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still ready: {left:?}"))
        }
    })
    .await;
    let (archived, _) = archiver(&db).await;
    assert!(
        archived as usize >= all.len(),
        "{archived} archived, {} ready before",
        all.len()
    );
    let fetched = owner.path().join("fetched");
    for (segment, want) in &originals {
        let (ok, _, err) = run_pgvigil(&[
            "wal-fetch",
            "-c",
            &cfg,
            segment,
            &fetched.display().to_string(),
        ]);
        assert!(ok, "{segment}: {err}");
        let got = sha(&std::fs::read(&fetched).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            &got, want,
            "{segment} in the repository differs from pg_wal's"
        );
        std::fs::remove_file(&fetched).unwrap_or_else(|e| panic!("{e}"));
    }
}
