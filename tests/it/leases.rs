//! Leases and fencing (issue 14, item 7), and the clock: two daemons on one repository run
//! each scheduled occurrence once; a holder stopped (SIGSTOP) past its lease wakes up to
//! find its deletes refused; a sidecar whose clock jumped ahead takes an expired-looking
//! lease and the old holder's commit is refused; a clock that jumps back does not run an
//! occurrence again. Real daemons (`pgvigil run`), real PostgreSQL, moto behind the
//! fault-injecting relay, libfaketime for the clocks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::backup::{
    archiving_cluster_env, make_big_table, switch_and_archive, wait_newest_backup_older_than,
    write_config, write_daemon_config, LocalRepo,
};
use crate::harness::moto::MotoServer;
use crate::harness::process::{self, DaemonProcess};
use crate::harness::s3_relay::S3Relay;
use crate::harness::{
    self, client, eventually, postgres_dir, run_pgvigil, run_pgvigil_at, run_pgvigil_env,
};

/// The (job, scheduled occurrence) pairs a daemon's log says it `event`ed.
fn occurrences(d: &DaemonProcess, event: &str) -> Vec<(String, String)> {
    d.events_named(event)
        .iter()
        .map(|e| {
            (
                e["job"].as_str().unwrap_or("").to_string(),
                e["scheduled"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Writes `daemon.toml` in `repo` for a daemon on `pg` that backs up every minute (no
/// initial backup, no drill), with `extra` appended; returns its path.
fn every_minute(repo: &LocalRepo, pg: &pgvigil::pg::TempCluster, extra: &str) -> String {
    let path = repo.dir.path().join("daemon.toml");
    write_daemon_config(
        &path,
        &pg.dsn("postgres"),
        &repo.storage,
        &format!(
            "[backup]\nschedule = \"* * * * *\"\ninitial_backup = false\n[drill]\nschedule = \"off\"\n{extra}"
        ),
    );
    path.display().to_string()
}

fn backup_count(cfg: &str, env: &[(String, String)]) -> usize {
    let (ok, out, err) = run_pgvigil_env(&["backups", "-c", cfg, "--json"], env);
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .map(|v| v.len())
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Two `pgvigil run` daemons on one repository and one primary, scheduling backup and
/// retention every minute; the second one's clock is 40 s behind, so it reaches each
/// occurrence after the first one finished it. Every occurrence runs on exactly one of them
/// (the other logs `job.skipped`), and the repository holds one backup per occurrence run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_repository_run_each_occurrence_once() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    switch_and_archive(&db).await;
    let cfg = every_minute(&repo, &pg, "[retention]\nschedule = \"* * * * *\"\n");
    let a = DaemonProcess::spawn(
        &mut harness::pgvigil_command(&["run", "-c", &cfg]),
        repo.dir.path().join("a.log"),
    );
    let b = DaemonProcess::spawn(
        &mut harness::pgvigil_command_at("-40s", &["run", "-c", &cfg]),
        repo.dir.path().join("b.log"),
    );

    // Wait until, for both jobs, one occurrence was handled by both daemons (one started
    // it, the other did too or left it): then they raced for it.
    let both = eventually(Duration::from_secs(200), || async {
        let handled = |d: &DaemonProcess| {
            let mut all = occurrences(d, "job.started");
            all.extend(occurrences(d, "job.skipped"));
            all
        };
        let (ha, hb) = (handled(&a), handled(&b));
        let shared: Vec<(String, String)> = ha.iter().filter(|o| hb.contains(o)).cloned().collect();
        let jobs: std::collections::BTreeSet<&str> =
            shared.iter().map(|(j, _)| j.as_str()).collect();
        if jobs.contains("backup") && jobs.contains("retention") {
            Ok(shared)
        } else {
            Err(format!("handled by a: {ha:?}; by b: {hb:?}"))
        }
    })
    .await;
    // Let the runs in progress finish before counting.
    eventually(Duration::from_secs(120), || async {
        let started = occurrences(&a, "job.started").len() + occurrences(&b, "job.started").len();
        let finished = a.events_named("job.finished").len() + b.events_named("job.finished").len();
        if finished >= started {
            Ok(())
        } else {
            Err(format!("{started} started, {finished} finished"))
        }
    })
    .await;

    let mut starts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in occurrences(&a, "job.started")
        .into_iter()
        .chain(occurrences(&b, "job.started"))
    {
        *starts.entry(o).or_default() += 1;
    }
    for o in &both {
        assert_eq!(
            starts.get(o),
            Some(&1),
            "{o:?} must have run on exactly one daemon: {starts:?}"
        );
    }
    assert!(
        starts.values().all(|n| *n == 1),
        "an occurrence ran twice: {starts:?}"
    );
    let skipped = b.events_named("job.skipped");
    assert!(
        skipped.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already ran") || r.contains("is running"))),
        "the second daemon says why it left the occurrence: {skipped:?}"
    );
    // One backup per backup occurrence that ran.
    let backups_run = starts.keys().filter(|(j, _)| j == "backup").count();
    let (ok, out, err) = run_pgvigil(&["backups", "-c", &repo.cfg, "--json"]);
    assert!(ok, "{err}");
    let listed = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .map(|v| v.len())
        .unwrap_or(0);
    assert_eq!(listed, backups_run, "{out}");
}

/// S3 behind the relay: `pgvigil retention` (a 1 s recovery window: it would delete the
/// older of two backups) takes the lease (TTL 2 s) and is stopped with SIGSTOP while its
/// listing is held; another retention (35-day window: keeps both) takes the expired lease
/// and finishes; the first one is continued. Its delete is refused by the fence, naming the
/// lease it lost, and both backups are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stopped_past_its_lease_wakes_to_refused_deletes() {
    let S3Relay {
        relay,
        db,
        direct,
        via_relay,
        env,
        pg: _pg,
        moto: _moto,
        owner: _owner,
        ..
    } = S3Relay::start(
        "stop",
        "lease_ttl = \"2s\"\n",
        "",
        "[retention]\nrecovery_window = \"1s\"\n",
    )
    .await;
    for _ in 0..2 {
        switch_and_archive(&db).await;
        std::thread::sleep(Duration::from_millis(1100)); // backup ids are UTC seconds
        let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &direct], &env);
        assert!(ok, "{err}");
    }
    switch_and_archive(&db).await;
    assert_eq!(backup_count(&direct, &env), 2);
    // The older backup is outside the stopped holder's window: it would delete it.
    wait_newest_backup_older_than(&direct, &env, Duration::from_secs(2)).await;

    let gate = relay.hold("GET", "list-type=2");
    let stopped = process::spawn_pgvigil(&["retention", "-c", &via_relay], &env);
    gate.reached(Duration::from_secs(30), "the retention's listing")
        .await;
    process::signal(stopped.id(), nix::sys::signal::Signal::SIGSTOP)
        .unwrap_or_else(|e| panic!("{e}"));
    gate.open();

    // Past its TTL, another retention takes the lease and runs (keeping both backups).
    let (ok, out, err) = eventually(Duration::from_secs(30), || async {
        let r = run_pgvigil_env(&["retention", "-c", &direct, "--json"], &env);
        if r.0 {
            Ok(r)
        } else {
            Err(r.2)
        }
    })
    .await;
    assert!(ok && out.contains("\"kept\""), "{err}");
    assert_eq!(backup_count(&direct, &env), 2);

    process::signal(stopped.id(), nix::sys::signal::Signal::SIGCONT)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = stopped.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the woken holder succeeded: {err}");
    assert!(
        err.contains("refused") && err.contains("lease") && err.contains("generation"),
        "the refusal names the lost lease: {err}"
    );
    assert_eq!(backup_count(&direct, &env), 2, "nothing was deleted");
    let deletes: Vec<_> = relay
        .seen()
        .into_iter()
        .filter(|s| s.forwarded && (s.method == "DELETE" || s.target.contains("?delete")))
        .collect();
    assert!(deletes.is_empty(), "the woken holder deleted: {deletes:?}");
    // The next run (as the first one's configuration) succeeds.
    let (ok, _, err) = run_pgvigil_env(&["retention", "-c", &via_relay], &env);
    assert!(ok, "{err}");
}

/// A backup to S3 is under way when a second `pgvigil backup` runs with a clock one hour
/// ahead: to it the first one's lease looks expired, so it takes it over and backs up. The
/// first one's commit (backup.json) is then refused by the fence: exactly one backup is
/// listed, the second one's, and the next backup succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_ahead_takes_the_lease_and_the_old_holders_commit_is_refused() {
    let S3Relay {
        moto,
        relay,
        db,
        direct,
        via_relay,
        env,
        pg: _pg,
        owner: _owner,
        ..
    } = S3Relay::start("clock", "", "", "").await;
    switch_and_archive(&db).await;

    // The first backup's base object waits at the relay (its check passed: it was
    // admitted), so the first backup holds its lease and is mid-write.
    let gate = relay.hold("PUT", "base.0.tar.zst");
    let first = process::spawn_pgvigil(&["backup", "-c", &via_relay], &env);
    gate.reached(
        Duration::from_secs(120),
        "the first backup is not uploading yet",
    )
    .await;
    // Now the sidecar whose clock is an hour ahead: the lease looks expired to it.
    let (ok, _, err) = run_pgvigil_at("+1h", &["backup", "-c", &direct], &env);
    assert!(ok, "the backup with the clock ahead: {err}");
    assert_eq!(backup_count(&direct, &env), 1);
    gate.open();
    let out = first.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the old holder committed: {err}");
    assert!(
        err.contains("refused") && err.contains("lease") && err.contains("generation 2"),
        "the refusal names the lease it lost: {err}"
    );
    assert_eq!(
        backup_count(&direct, &env),
        1,
        "only the new holder's backup is listed"
    );
    let markers = moto.keys_under("clock", "pgvigil/default/backups/").await;
    assert_eq!(
        markers
            .iter()
            .filter(|k| k.ends_with("backup.json"))
            .count(),
        1,
        "{markers:?}"
    );
    let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &direct], &env);
    assert!(ok, "the next backup: {err}");
}

/// A daemon under libfaketime runs its backup every minute; after one run its clock jumps
/// back 50 s. It must not run that occurrence again: the next one it waits for is the
/// following minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jumping_back_does_not_run_an_occurrence_again() {
    let repo = LocalRepo::new();
    let pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    // A backup that lasts a few seconds, so the clock can jump while it runs.
    make_big_table(&db).await;
    switch_and_archive(&db).await;
    let cfg = every_minute(&repo, &pg, "");
    let clock = repo.dir.path().join("clock");
    set_clock(&clock, "+0");
    let mut cmd = harness::pgvigil_command(&["run", "-c", &cfg]);
    faked(&mut cmd, &clock);
    let d = DaemonProcess::spawn(&mut cmd, repo.dir.path().join("d.log"));

    // While the first scheduled backup runs, the clock jumps back 50 s.
    let first = eventually(Duration::from_secs(150), || async {
        match occurrences(&d, "job.started").first() {
            Some((_, at)) => Ok(at.clone()),
            None => Err("no backup run yet".to_string()),
        }
    })
    .await;
    set_clock(&clock, "-50s");
    assert!(
        d.events_named("job.finished").is_empty(),
        "the backup ended before the clock jumped; make it longer"
    );
    let finished_before = 1;
    // The daemon plans its next occurrence after the jump: the minute after `first`.
    let first_at: chrono::DateTime<chrono::Utc> =
        first.parse().unwrap_or_else(|e| panic!("{first}: {e}"));
    // Until the daemon planned its next occurrence after `first`, or ran `first` again.
    let next = eventually(Duration::from_secs(150), || async {
        let again = occurrences(&d, "job.started")
            .iter()
            .filter(|(_, at)| *at == first)
            .count();
        let waits = d.events_named("job.waiting");
        let after: Vec<String> = waits
            .iter()
            .filter(|w| w["after"].as_str() == Some(first.as_str()))
            .filter_map(|w| w["next"].as_str().map(str::to_string))
            .collect();
        match after.last() {
            _ if again > 1 => Ok(first.clone()),
            Some(n) if d.events_named("job.finished").len() >= finished_before => Ok(n.clone()),
            _ => Err(format!("no plan after {first} yet: {waits:?}")),
        }
    })
    .await;
    let started = occurrences(&d, "job.started");
    assert_eq!(
        started.iter().filter(|(_, at)| *at == first).count(),
        1,
        "the occurrence ran again after the clock jumped back: {started:?}"
    );
    let next_at: chrono::DateTime<chrono::Utc> =
        next.parse().unwrap_or_else(|e| panic!("{next}: {e}"));
    assert_eq!(next_at, first_at + chrono::Duration::minutes(1));
    let backups = backup_count(&repo.cfg, &[]);
    assert_eq!(backups, started.len());
}

/// Points the process's libfaketime at `file` (re-read every second).
fn faked(cmd: &mut std::process::Command, file: &Path) {
    harness::require_binary("/usr/bin/faketime", "faketime");
    cmd.env(
        "LD_PRELOAD",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    )
    .env("FAKETIME_TIMESTAMP_FILE", file)
    .env("FAKETIME_CACHE_DURATION", "1")
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// Writes the clock offset a faked process reads.
fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(file).unwrap_or_else(|e| panic!("{e}"));
}

/// Retention against S3 run on a host whose clock jumped 40 days ahead: it would delete
/// both of today's backups but the newest. S3 stamps the lease it writes with its own
/// time, so retention sees the clocks disagree and refuses, naming both times; nothing is
/// deleted, and the same retention with the right clock runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_refuses_a_clock_that_jumped_ahead_of_the_repository() {
    let moto = MotoServer::start().await;
    moto.create_bucket("ahead", "eu-central-1").await;
    let owner = postgres_dir();
    let env = MotoServer::aws_env();
    let config = owner.path().join("pgvigil.toml");
    let pg = archiving_cluster_env(&config, env.clone()).await;
    write_config(
        &config,
        &pg.dsn("postgres"),
        &moto.storage_toml_at("s3://ahead/pgvigil", ""),
    );
    let cfg = config.display().to_string();
    let db = client(&pg, "postgres").await;
    for _ in 0..2 {
        switch_and_archive(&db).await;
        std::thread::sleep(Duration::from_millis(1100));
        let (ok, _, err) = run_pgvigil_env(&["backup", "-c", &cfg], &env);
        assert!(ok, "{err}");
    }
    switch_and_archive(&db).await;
    let wal_before = moto.keys_under("ahead", "pgvigil/default/wal/").await;

    let (ok, out, err) = run_pgvigil_at("+40d", &["retention", "-c", &cfg], &env);
    assert!(!ok, "retention 40 days ahead ran: {out}");
    assert!(
        err.contains("clock") && err.contains("s3://ahead/pgvigil") && err.contains("days"),
        "the refusal names both clocks: {err}"
    );
    assert_eq!(backup_count(&cfg, &env), 2, "nothing was deleted");
    let wal_after = moto.keys_under("ahead", "pgvigil/default/wal/").await;
    let gone: Vec<_> = wal_before
        .iter()
        .filter(|k| !wal_after.contains(k))
        .collect();
    assert!(gone.is_empty(), "WAL deleted: {gone:?}");
    // A dry run only reads: it may show what the jumped clock would do.
    let (ok, _, err) = run_pgvigil_at("+40d", &["retention", "-c", &cfg, "--dry-run"], &env);
    assert!(ok, "{err}");
    // With the right clock the same retention runs and keeps both (inside 35 days).
    let (ok, _, err) = run_pgvigil_env(&["retention", "-c", &cfg], &env);
    assert!(ok, "{err}");
    assert_eq!(backup_count(&cfg, &env), 2);
}

/// The incremental backup job runs under its own schedule lease (`backup-incremental`), yet
/// every backup, of either kind, takes the backup lease: while another sidecar backs up, an
/// incremental run is skipped, naming the holder, instead of running beside it. (No server
/// is reached: the DSN points at a closed port, so a run that did not wait fails otherwise.)
#[tokio::test]
async fn an_incremental_run_is_skipped_while_another_holds_the_backup_lease() {
    use std::sync::Arc;

    use pgvigil::backup::catalog::BackupKind;
    use pgvigil::backup::ops::Ops;
    use pgvigil::backup::Error;
    use pgvigil::store::lease::Lease;
    use pgvigil::store::{Repo, Which};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pgvigil.toml");
    let toml = format!(
        "[postgres]\ndsn = \"postgresql://postgres@127.0.0.1:1/postgres?sslmode=disable\"\n\
         [storage]\nurl = \"file://{}\"\n",
        dir.path().join("repo").display()
    );
    std::fs::write(&path, &toml).unwrap_or_else(|e| panic!("{e}"));
    let settings =
        pgvigil::config::load(&path, &|_: &str| None).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let repo = Repo::open(&settings, Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ttl = Duration::from_secs(60);
    let other = Lease::acquire(&repo, "backup", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let own = Lease::acquire(&repo, "backup-incremental", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ops = Ops::for_cli(settings, repo, None, "test")
        .unwrap_or_else(|e| panic!("{e}"))
        .under(&own);
    let run = ops.backup(Arc::default(), BackupKind::Incremental).await;
    assert!(
        matches!(&run, Err(Error::Skipped(m)) if m.contains("backup is already running")),
        "{run:?}"
    );
    own.release().await;
    other.release().await;
}
