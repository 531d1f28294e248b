//! The version-sensitive paths against real servers of every major (15 from the host, 17 and
//! 18 from their chroots; see `harness::majors`): every collector's values equal the views,
//! the families that moved between majors are where the catalogue says, and a replica built
//! with the major's own pg_basebackup streams.

use std::time::Duration;

use crate::harness::majors::{cluster_major, cluster_major_with, wanted};
use crate::harness::{client, daemon, eventually, exec, query_value, scrape, settings};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_match_the_views_on_pg15() {
    collectors_match_the_views(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_match_the_views_on_pg17() {
    collectors_match_the_views(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_match_the_views_on_pg18() {
    collectors_match_the_views(18).await;
}

/// One scraped value compared with one view value, read after the scrape.
async fn same_as_view(
    running: &pgvigil::Running,
    db: &tokio_postgres::Client,
    metric: &str,
    labels: &[(&str, &str)],
    sql: &str,
) {
    eventually(PATIENCE, || async {
        let s = scrape(running).await;
        let mut m = s.metric(metric);
        for (k, v) in labels {
            m = m.label(k, v);
        }
        let got = m.get()?;
        let want: f64 = db
            .query_one(sql, &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if (got - want).abs() <= f64::EPSILON * want.abs().max(1.0) {
            Ok(())
        } else {
            Err(format!(
                "{metric}{labels:?}: scraped {got}, view {want} ({sql})"
            ))
        }
    })
    .await;
}

async fn collectors_match_the_views(major: u32) {
    if !wanted(major) {
        eprintln!("PostgreSQL {major} is not in PGVIGIL_MAJORS: not tested in this run");
        return;
    }
    let started = std::time::Instant::now();
    let pg = cluster_major(major).await;
    let boot = started.elapsed();
    let admin = client(&pg, "postgres").await;
    let version: i32 = query_value::<String>(&admin, "SHOW server_version_num")
        .await
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        version / 10000,
        major as i32,
        "the cluster runs the wrong major"
    );
    // The statements collector reads pg_stat_statements in the DSN's database. On 17 and
    // 18 it is left at 1.10, as after a pg_upgrade without ALTER EXTENSION ... UPDATE: its
    // functions then return 1.10's columns (blk_read_time, not 17's shared_blk_read_time),
    // and the collector must read those.
    exec(
        &admin,
        if major >= 17 {
            "CREATE EXTENSION pg_stat_statements VERSION '1.10'"
        } else {
            "CREATE EXTENSION pg_stat_statements"
        },
    )
    .await;
    exec(&admin, "CREATE DATABASE app").await;
    let app = client(&pg, "app").await;
    exec(
        &app,
        "CREATE EXTENSION pg_stat_statements; \
         CREATE TABLE t (id int primary key, v text); \
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1234) g; \
         ANALYZE t",
    )
    .await;
    for _ in 0..7 {
        exec(&app, "SELECT count(*) FROM t WHERE v = 'pgvigil-majors'").await;
    }
    let replica = pg.replica().await.unwrap_or_else(|e| panic!("{e}"));
    let holder = client(&pg, "app").await;
    exec(&holder, "BEGIN; SELECT 1").await;

    // Statistics reach the views up to a second after a commit: let the cached
    // collectors (tables, statements) refresh within the patience of each comparison.
    let running = daemon(settings(
        &pg.dsn("postgres"),
        "slow_collectors_interval = \"1s\"",
    ))
    .await;
    let t = std::time::Instant::now();
    let s = scrape(&running).await;
    let scrape_time = t.elapsed();

    // Every collector ran, and everything exported is in the catalogue.
    assert_eq!(s.metric("pg_up").value(), Some(1.0));
    for sample in &s.metric("pgvigil_scrape_collector_success").all() {
        assert_eq!(sample.value, 1.0, "PostgreSQL {major}: {sample:?} failed");
    }
    for name in s.names() {
        assert!(
            pgvigil::metrics::catalogue::lookup(&name).is_some(),
            "PostgreSQL {major}: {name} is exported but not in the catalogue"
        );
    }
    let families: std::collections::BTreeSet<&str> = s
        .names()
        .iter()
        .filter_map(|n| pgvigil::metrics::catalogue::lookup(n).map(|d| d.name))
        .collect();
    eprintln!(
        "PostgreSQL {major}: {} families, {} series, first scrape {scrape_time:?}, cluster up in {boot:?}",
        families.len(),
        s.samples.len()
    );

    // The families that exist only on some majors are exported exactly where the
    // catalogue says.
    let names = s.names();
    let has = |n: &str| names.contains(n);
    for (def, _, _) in pgvigil::metrics::catalogue::PG_MAJORS {
        assert_eq!(
            has(def.name),
            pgvigil::metrics::catalogue::exists_on(def, major),
            "PostgreSQL {major}: {}",
            def.name
        );
    }
    for name in &names {
        let def = pgvigil::metrics::catalogue::lookup(name).unwrap_or_else(|| panic!("{name}"));
        assert!(
            pgvigil::metrics::catalogue::exists_on(def, major),
            "PostgreSQL {major}: {name} is exported where the catalogue says it does not exist"
        );
    }
    new_families_match_the_views(major, &running, &admin, &app).await;

    // database
    same_as_view(
        &running,
        &admin,
        "pg_database_size_bytes",
        &[("datname", "app")],
        "SELECT pg_database_size('app')::float8",
    )
    .await;
    same_as_view(
        &running,
        &admin,
        "pg_stat_database_tup_inserted",
        &[("datname", "app")],
        "SELECT tup_inserted::float8 FROM pg_stat_database WHERE datname = 'app'",
    )
    .await;
    // activity
    same_as_view(
        &running,
        &admin,
        "pg_stat_activity_count",
        &[("datname", "app"), ("state", "idle in transaction")],
        "SELECT count(*)::float8 FROM pg_stat_activity WHERE datname = 'app' AND state = 'idle in transaction'",
    )
    .await;
    // tables
    same_as_view(
        &running,
        &app,
        "pg_stat_user_tables_n_live_tup",
        &[("datname", "app"), ("relname", "t")],
        "SELECT n_live_tup::float8 FROM pg_stat_user_tables WHERE relname = 't'",
    )
    .await;
    same_as_view(
        &running,
        &app,
        "pg_stat_user_tables_seq_scan",
        &[("datname", "app"), ("relname", "t")],
        "SELECT seq_scan::float8 FROM pg_stat_user_tables WHERE relname = 't'",
    )
    .await;
    // statements: the query run seven times, by its queryid
    let queryid: i64 = query_value(
        &app,
        "SELECT queryid FROM pg_stat_statements WHERE query LIKE 'SELECT count(*) FROM t WHERE v = $1%' LIMIT 1",
    )
    .await;
    same_as_view(
        &running,
        &app,
        "pg_stat_statements_calls_total",
        &[("datname", "app"), ("queryid", &queryid.to_string())],
        &format!("SELECT sum(calls)::float8 FROM pg_stat_statements WHERE queryid = {queryid}"),
    )
    .await;
    // cluster: checkpoints (moved to pg_stat_checkpointer in 17), archiver
    let (metric, sql) = if major >= 17 {
        (
            "pg_stat_checkpointer_num_requested_total",
            "SELECT num_requested::float8 FROM pg_stat_checkpointer",
        )
    } else {
        (
            "pg_stat_bgwriter_checkpoints_req_total",
            "SELECT checkpoints_req::float8 FROM pg_stat_bgwriter",
        )
    };
    same_as_view(&running, &admin, metric, &[], sql).await;
    same_as_view(
        &running,
        &admin,
        "pg_stat_bgwriter_buffers_alloc_total",
        &[],
        "SELECT buffers_alloc::float8 FROM pg_stat_bgwriter",
    )
    .await;
    same_as_view(
        &running,
        &admin,
        "pg_stat_archiver_archived_count",
        &[],
        "SELECT archived_count::float8 FROM pg_stat_archiver",
    )
    .await;
    // settings
    same_as_view(
        &running,
        &admin,
        "pg_settings_max_connections",
        &[],
        "SELECT setting::float8 FROM pg_settings WHERE name = 'max_connections'",
    )
    .await;
    // replication: one streaming replica with zero byte lag once idle
    eventually(PATIENCE, || async {
        let s = scrape(&running).await;
        let rows = s.metric("pg_stat_replication_replay_lag_bytes").all();
        match rows.as_slice() {
            [one] if one.value == 0.0 => Ok(()),
            other => Err(format!("replication rows {other:?}")),
        }
    })
    .await;
    assert!(replica.is_running());
    running.shutdown(Duration::from_secs(5)).await;
}

/// The families added for postgres_exporter 0.19 and the 16-18 views, each equal to its
/// view on this major.
async fn new_families_match_the_views(
    major: u32,
    running: &pgvigil::Running,
    admin: &tokio_postgres::Client,
    app: &tokio_postgres::Client,
) {
    // postgres_exporter's pg_static: the server's version() and major.minor.0
    let version: String = query_value(admin, "SELECT version()").await;
    let short: String = query_value(
        admin,
        "SELECT (current_setting('server_version_num')::int / 10000)::text || '.' || \
                (current_setting('server_version_num')::int % 100)::text || '.0'",
    )
    .await;
    let s = scrape(running).await;
    assert_eq!(
        s.metric("pg_static")
            .label("version", &version)
            .label("short_version", &short)
            .value(),
        Some(1.0),
        "PostgreSQL {major}: {:?}",
        s.metric("pg_static").all()
    );
    // activity, split by user (the open transaction held in `app`)
    same_as_view(
        running,
        admin,
        "pg_stat_activity_count",
        &[
            ("datname", "app"),
            ("state", "idle in transaction"),
            ("usename", "postgres"),
            ("backend_type", "client backend"),
        ],
        "SELECT count(*)::float8 FROM pg_stat_activity WHERE datname = 'app' \
         AND state = 'idle in transaction' AND usename = 'postgres'",
    )
    .await;
    same_as_view(
        running,
        admin,
        "pgvigil_stat_activity_folded_values",
        &[("label", "application_name")],
        "SELECT 0::float8",
    )
    .await;
    // postgres_exporter's long_running_transactions query, as it is
    same_as_view(
        running,
        admin,
        "pg_long_running_transactions",
        &[],
        "SELECT count(*)::float8 FROM pg_stat_activity WHERE state IS DISTINCT FROM 'idle' \
         AND query NOT LIKE 'autovacuum:%' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
    )
    .await;
    same_as_view(
        running,
        admin,
        "pg_process_idle_seconds_count",
        &[("state", "idle in transaction")],
        "SELECT count(*)::float8 FROM pg_stat_activity WHERE state = 'idle in transaction'",
    )
    .await;
    same_as_view(
        running,
        admin,
        "pg_process_idle_seconds_bucket",
        &[("state", "idle in transaction"), ("le", "+Inf")],
        "SELECT count(*)::float8 FROM pg_stat_activity WHERE state = 'idle in transaction'",
    )
    .await;
    // wraparound ages (postgres_exporter's names; template0 does not allow connections)
    same_as_view(
        running,
        admin,
        "pg_database_wraparound_age_datfrozenxid_seconds",
        &[("datname", "app")],
        "SELECT age(datfrozenxid)::float8 FROM pg_database WHERE datname = 'app'",
    )
    .await;
    same_as_view(
        running,
        admin,
        "pg_database_wraparound_age_datminmxid_seconds",
        &[("datname", "app")],
        "SELECT mxid_age(datminmxid)::float8 FROM pg_database WHERE datname = 'app'",
    )
    .await;
    let s = scrape(running).await;
    assert!(
        s.metric("pg_database_wraparound_age_datfrozenxid_seconds")
            .label("datname", "template0")
            .get()
            .is_err(),
        "template0 does not allow connections: postgres_exporter leaves it out"
    );
    // statio of the TOAST table and of the primary key index
    same_as_view(
        running,
        app,
        "pg_statio_user_tables_toast_blocks_hit",
        &[("datname", "app"), ("relname", "t")],
        "SELECT coalesce(toast_blks_hit, 0)::float8 FROM pg_statio_user_tables WHERE relname = 't'",
    )
    .await;
    same_as_view(
        running,
        app,
        "pg_statio_user_indexes_idx_blks_hit_total",
        &[
            ("datname", "app"),
            ("relname", "t"),
            ("indexrelname", "t_pkey"),
        ],
        "SELECT idx_blks_hit::float8 FROM pg_statio_user_indexes WHERE indexrelname = 't_pkey'",
    )
    .await;
    // the replica's last reply, a Unix time close to now
    eventually(PATIENCE, || async {
        let s = scrape(running).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        match s.metric("pg_stat_replication_reply_time").all().as_slice() {
            [one] if (now - one.value).abs() < 60.0 => Ok(()),
            other => Err(format!("reply_time {other:?} (now {now})")),
        }
    })
    .await;
    // pg_stat_io: the checkpointer's writes move only at checkpoints
    if major >= 16 {
        let row = [
            ("backend_type", "checkpointer"),
            ("object", "relation"),
            ("context", "normal"),
        ];
        let from = "FROM pg_stat_io WHERE backend_type = 'checkpointer' \
                    AND object = 'relation' AND context = 'normal'";
        exec(admin, "CHECKPOINT").await;
        same_as_view(
            running,
            admin,
            "pg_stat_io_writes_total",
            &row,
            &format!("SELECT writes::float8 {from}"),
        )
        .await;
        let bytes = if major >= 18 {
            "write_bytes"
        } else {
            "writes * op_bytes"
        };
        same_as_view(
            running,
            admin,
            "pg_stat_io_write_bytes_total",
            &row,
            &format!("SELECT ({bytes})::float8 {from}"),
        )
        .await;
    }
    if major >= 18 {
        same_as_view(
            running,
            admin,
            "pg_stat_checkpointer_num_done_total",
            &[],
            "SELECT num_done::float8 FROM pg_stat_checkpointer",
        )
        .await;
        same_as_view(
            running,
            app,
            "pg_stat_user_tables_total_analyze_time_seconds_total",
            &[("datname", "app"), ("relname", "t")],
            "SELECT total_analyze_time / 1000.0 FROM pg_stat_user_tables WHERE relname = 't'",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_with_the_binaries_of_pg15() {
    backup_and_restore(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_with_the_binaries_of_pg17() {
    backup_and_restore(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_with_the_binaries_of_pg18() {
    backup_and_restore(18).await;
}

/// A cluster of `major` with `extra` settings and a table `t (id, v)` of `rows` rows, a
/// local repository for it and the settings of backups into it.
async fn with_table_and_repo(
    major: u32,
    extra: Vec<(&str, &str)>,
    rows: u32,
) -> (
    pgvigil::pg::TempCluster,
    tokio_postgres::Client,
    tempfile::TempDir,
    pgvigil::config::Settings,
    pgvigil::store::Repo,
) {
    let pg = cluster_major_with(major, extra).await;
    let db = client(&pg, "postgres").await;
    exec(
        &db,
        &format!("CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"),
    )
    .await;
    let repo_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = backup_settings(&pg, repo_dir.path());
    let repo = pgvigil::store::Repo::open(&settings, pgvigil::store::Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (pg, db, repo_dir, settings, repo)
}

/// A full backup, as `pgvigil backup` takes it.
async fn full_backup(
    settings: &pgvigil::config::Settings,
    repo: &pgvigil::store::Repo,
) -> Result<pgvigil::backup::catalog::BackupInfo, pgvigil::backup::Error> {
    pgvigil::backup::basebackup::run(
        settings,
        repo,
        Default::default(),
        pgvigil::backup::catalog::BackupKind::Full,
    )
    .await
    .map(|taken| taken.info)
}

/// Settings for a backup of `pg` into a local repository at `repo`, with the binaries of
/// the cluster's own search (its chroot, for 17 and 18).
fn backup_settings(
    pg: &pgvigil::pg::TempCluster,
    repo: &std::path::Path,
) -> pgvigil::config::Settings {
    let mut s = settings(
        &pg.dsn("postgres"),
        &format!(
            "[storage]\nurl = \"file://{}\"\nresidency = \"any\"\n",
            repo.display()
        ),
    );
    if let pgvigil::pg::binaries::Runner::Chroot(root) = &pg.binaries().runner {
        s.postgres.bin_chroot = Some(root.clone());
    }
    s
}

/// Restores `backup_id` from `repo` to its end (the WAL in the backup, -X fetch; no archive)
/// into a directory `bins` can reach (inside their chroot), starts it with `bins` and waits
/// until it is promoted. Returns the running cluster and its parent directory (kept alive).
async fn restore_immediate(
    repo: &pgvigil::store::Repo,
    backup_id: &str,
    bins: pgvigil::pg::binaries::PgBinaries,
) -> (
    pgvigil::pg::TempCluster,
    tempfile::TempDir,
    pgvigil::backup::restore::Restored,
) {
    use pgvigil::backup::{catalog::Target, restore};
    let parent = match bins.default_parent_dir() {
        Some(p) => tempfile::tempdir_in(p),
        None => tempfile::tempdir(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    bins.chown_to_server_user(parent.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let to = parent.path().join("restored");
    let restored_backup = restore::restore(
        repo,
        &restore::RestoreRequest {
            to: to.clone(),
            backup: Some(backup_id.to_string()),
            target: Target::Immediate,
            action: restore::TargetAction::Promote,
            restore_command: "false".into(),
            keep_archiving: false,
            binaries: pgvigil::pg::binaries::Search {
                dirs: vec![bins.bindir.clone()],
                runner: bins.runner.clone(),
            },
        },
    )
    .await
    .unwrap_or_else(|e| panic!("restore of {backup_id}: {e}"));
    bins.chown_tree_to_server_user(&to)
        .unwrap_or_else(|e| panic!("{e}"));
    let restored = pgvigil::pg::TempCluster::adopt(
        &to,
        pgvigil::pg::TempClusterOptions {
            settings: vec![("archive_mode".into(), "off".into())],
            binaries: Some(bins),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("starting the restored {backup_id}: {e}"));
    let rc = client(&restored, "postgres").await;
    crate::harness::wait_promoted(&rc).await;
    (restored, parent, restored_backup)
}

/// A backup taken by pgvigil with the server's own pg_basebackup (the host's 15 refuses a
/// 17 server), recorded with its major, restored and started with the binaries of that
/// major: the data is there.
async fn backup_and_restore(major: u32) {
    if !wanted(major) {
        eprintln!("PostgreSQL {major} is not in PGVIGIL_MAJORS: not tested in this run");
        return;
    }
    let (pg, _db, _repo_dir, settings, repo) = with_table_and_repo(major, Vec::new(), 10_000).await;
    let t = std::time::Instant::now();
    let info = full_backup(&settings, &repo)
        .await
        .unwrap_or_else(|e| panic!("backup of PostgreSQL {major}: {e}"));
    let backup_time = t.elapsed();
    assert_eq!(info.pg_major(), major);

    // Restore into a directory the major's binaries can reach (inside its chroot).
    let t = std::time::Instant::now();
    let (restored, _parent, _) = restore_immediate(&repo, &info.id, pg.binaries().clone()).await;
    let rc = client(&restored, "postgres").await;
    let restore_time = t.elapsed();
    let n: i64 = query_value(&rc, "SELECT count(*) FROM t").await;
    assert_eq!(n, 10000);
    let v: String = query_value(&rc, "SHOW server_version_num").await;
    assert!(v.starts_with(&major.to_string()), "{v}");
    eprintln!(
        "PostgreSQL {major}: backup {backup_time:?} ({} raw bytes, {} stored), restore to promoted {restore_time:?}",
        info.raw_bytes, info.stored_bytes
    );
}

/// The host has only 15: a backup of a 17 server with the host's binaries fails naming
/// the major it needs and where it looked, before pg_basebackup runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_without_binaries_of_the_servers_major_names_it() {
    if !wanted(17) {
        eprintln!("PostgreSQL 17 is not in PGVIGIL_MAJORS: not tested in this run");
        return;
    }
    let pg = cluster_major(17).await;
    let repo_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut settings = backup_settings(&pg, repo_dir.path());
    settings.postgres.bin_chroot = None;
    settings.postgres.bindir = vec!["/usr/lib/postgresql/15/bin".into()];
    let repo = pgvigil::store::Repo::open(&settings, pgvigil::store::Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = full_backup(&settings, &repo)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("PostgreSQL 17 or newer"), "{err}");
    assert!(err.contains("/usr/lib/postgresql/15/bin"), "{err}");
    assert!(err.contains("postgresql-17"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_archive_pitr_and_drill_on_pg15() {
    wal_archive_pitr_and_drill(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_archive_pitr_and_drill_on_pg17() {
    wal_archive_pitr_and_drill(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_archive_pitr_and_drill_on_pg18() {
    wal_archive_pitr_and_drill(18).await;
}

/// archive_command = `pgvigil wal-push` run by the server of the major (inside its chroot),
/// a backup, then a drill to a point in time between two markers with that major's
/// pg_verifybackup, postmaster (restore_command = `pgvigil wal-fetch`) and pg_amcheck.
async fn wal_archive_pitr_and_drill(major: u32) {
    use crate::harness::backup::switch_and_archive;
    use crate::harness::majors::MajorRepo;
    if !wanted(major) {
        eprintln!("PostgreSQL {major} is not in PGVIGIL_MAJORS: not tested in this run");
        return;
    }
    let fixture = MajorRepo::new(major);
    let pg = fixture.archiving_primary(major).await;
    let db = client(&pg, "postgres").await;
    if major >= 17 {
        // The drill below restores an incremental backup (rebuilt by pg_combinebackup).
        exec(&db, "ALTER SYSTEM SET summarize_wal = on").await;
        exec(&db, "SELECT pg_reload_conf()").await;
    }
    exec(&db, "CREATE TABLE markers (id int)").await;
    exec(&db, "INSERT INTO markers VALUES (1)").await;
    switch_and_archive(&db).await;
    let work = fixture.dir.path().join("drill");
    let settings = fixture.settings(
        &pg.dsn("postgres"),
        &format!(
            "[pitr]\nheartbeat_interval = \"0s\"\n[drill]\nwork_dir = \"{}\"\namcheck = true\n\
             [[drill.checks]]\nname = \"markers\"\nsql = \"select count(*) from markers\"\nexpect = \"2\"\n",
            work.display()
        ),
    );
    let repo = pgvigil::store::Repo::open(&settings, pgvigil::store::Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info = full_backup(&settings, &repo)
        .await
        .unwrap_or_else(|e| panic!("backup of PostgreSQL {major}: {e}"));
    assert_eq!(info.pg_major(), major);
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;
    let drilled = if major >= 17 {
        let inc = pgvigil::backup::basebackup::run(
            &settings,
            &repo,
            Default::default(),
            pgvigil::backup::catalog::BackupKind::Incremental,
        )
        .await
        .unwrap_or_else(|e| panic!("incremental backup of PostgreSQL {major}: {e}"));
        assert_eq!(inc.fallback, None);
        assert_eq!(inc.info.parent.as_deref(), Some(info.id.as_str()));
        inc.info.id
    } else {
        info.id.clone()
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target: chrono::DateTime<chrono::Utc> = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    exec(&db, "INSERT INTO markers VALUES (3)").await;
    switch_and_archive(&db).await;

    let ev = pgvigil::backup::drill::run(
        &settings,
        &repo,
        &fixture.pgvigil(),
        Some(target),
        Duration::from_secs(120),
        Default::default(),
    )
    .await;
    assert!(ev.success, "PostgreSQL {major} drill: {ev:#?}");
    assert_eq!(ev.backup_id.as_deref(), Some(drilled.as_str()));
    for name in ["pg_verifybackup", "pg_amcheck", "markers"] {
        let c = ev.checks.iter().find(|c| c.name == name);
        assert!(
            c.is_some_and(|c| c.ok),
            "PostgreSQL {major} {name}: {ev:#?}"
        );
    }
    eprintln!(
        "PostgreSQL {major}: drill {:.1}s (download {:.1}s, replay {:.1}s), target skew {:?}",
        ev.timings.total_seconds,
        ev.timings.download_seconds,
        ev.timings.replay_seconds,
        ev.target_skew_seconds
    );
    let left: Vec<_> = std::fs::read_dir(&work)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the drill left {left:?}");
}

/// Pushes every completed WAL segment in `pg`'s pg_wal (those before the current one) into
/// `repo`, as archive_command would have.
async fn push_completed_wal(pg: &pgvigil::pg::TempCluster, repo: &pgvigil::store::Repo) -> usize {
    let db = client(pg, "postgres").await;
    // A record first, so the switch is not a no-op on an empty segment.
    exec(
        &db,
        "SELECT pg_logical_emit_message(false, 'pgvigil', 'x'); SELECT pg_switch_wal()",
    )
    .await;
    let current: String = query_value(&db, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    let mut names: Vec<String> = std::fs::read_dir(pg.data_dir().join("pg_wal"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.as_str() < current.as_str())
        .collect();
    names.sort();
    for n in &names {
        pgvigil::backup::wal::push(
            repo,
            &pg.data_dir().join("pg_wal").join(n),
            1,
            &Default::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("pushing {n}: {e}"));
    }
    names.len()
}

/// A pg_upgrade from 15 to 17, as the repository sees it: a new database system of a newer
/// major whose WAL continues after the old one's (pg_upgrade sets the next WAL file with
/// pg_resetwal -l, as done here). Its backups are refused until `pgvigil upgrade`; after
/// it the old cluster is fenced out, both chains are in the repository, verify sees two
/// chains and no gap between them, and the old backup still restores with 15's binaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_keeps_both_majors_across_an_upgrade() {
    use pgvigil::backup::{ops::Ops, pitr, wal::Rebound};
    if !wanted(15) || !wanted(17) {
        eprintln!("needs PostgreSQL 15 and 17 (PGVIGIL_MAJORS): not tested in this run");
        return;
    }
    let repo_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // wal_keep_size: the segments stay in pg_wal for push_completed_wal (no archive_command).
    let keep = || vec![("wal_keep_size", "'1GB'")];
    let old = crate::harness::majors::cluster_major_with(15, keep()).await;
    let db15 = client(&old, "postgres").await;
    exec(
        &db15,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('before the upgrade')",
    )
    .await;
    let s15 = backup_settings(&old, repo_dir.path());
    let repo = pgvigil::store::Repo::open(&s15, pgvigil::store::Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b15 = full_backup(&s15, &repo)
        .await
        .unwrap_or_else(|e| panic!("backup of 15: {e}"));
    assert!(push_completed_wal(&old, &repo).await > 0);
    let last15: String = query_value(&db15, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    assert!(last15.as_str() < "000000010000000000000040", "{last15}");

    // The upgraded cluster: a new system whose WAL starts after the old cluster's.
    let mut new = crate::harness::majors::cluster_major_with(17, keep()).await;
    new.stop().await;
    let out = new
        .binaries()
        .command("pg_resetwal")
        .unwrap_or_else(|e| panic!("{e}"))
        .arg("-l")
        .arg("000000010000000000000040")
        .arg(
            new.binaries()
                .guest_path(new.data_dir())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "pg_resetwal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    new.start_server().await.unwrap_or_else(|e| panic!("{e}"));
    let s17 = backup_settings(&new, repo_dir.path());
    let refused = full_backup(&s17, &repo)
        .await
        .expect_err("a backup of another system before `pgvigil upgrade`");
    assert!(refused.to_string().contains("pgvigil upgrade"), "{refused}");

    let ops = Ops::for_cli(s17.clone(), repo.clone(), None, "test upgrade")
        .unwrap_or_else(|e| panic!("{e}"));
    match ops.upgrade().await {
        Ok(Rebound::Upgraded {
            from_major, major, ..
        }) => {
            assert_eq!((from_major, major), (Some(15), 17));
        }
        other => panic!("upgrade: {other:?}"),
    }
    assert!(matches!(ops.upgrade().await, Ok(Rebound::Already { .. })));
    let b17 = full_backup(&s17, &repo)
        .await
        .unwrap_or_else(|e| panic!("backup of 17 after the upgrade: {e}"));
    assert!(push_completed_wal(&new, &repo).await > 0);

    // The old cluster is fenced out.
    exec(
        &db15,
        "INSERT INTO t VALUES ('after the upgrade'); SELECT pg_switch_wal()",
    )
    .await;
    let seg = old.data_dir().join("pg_wal").join(&last15);
    let fenced = pgvigil::backup::wal::push(&repo, &seg, 1, &Default::default())
        .await
        .expect_err("WAL of the cluster from before the upgrade");
    assert!(
        fenced.to_string().contains("from before the upgrade"),
        "{fenced}"
    );

    // Two chains, no gap between them.
    let report = pitr::verify(&repo, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok, "{report:#?}");
    let majors: Vec<i32> = report.chains.iter().map(|c| c.major).collect();
    assert_eq!(majors, vec![15, 17], "{report:#?}");
    assert_eq!(report.chains[0].last_backup, b15.id);
    assert_eq!(report.chains[1].first_backup, b17.id);
    assert_eq!(report.chain_start, Some(b17.stop_time));

    // Another cluster of the same major is not an upgrade.
    let other = cluster_major(17).await;
    let s_other = backup_settings(&other, repo_dir.path());
    let ops_other =
        Ops::for_cli(s_other, repo.clone(), None, "test upgrade").unwrap_or_else(|e| panic!("{e}"));
    let e = ops_other.upgrade().await.expect_err("same major");
    assert!(e.to_string().contains("not an upgrade"), "{e}");

    // The old chain still restores, with 15's binaries.
    let (restored, _parent, _) = restore_immediate(&repo, &b15.id, old.binaries().clone()).await;
    let rc = client(&restored, "postgres").await;
    let v: String = query_value(&rc, "SELECT string_agg(v, ',') FROM t").await;
    assert_eq!(v, "before the upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_backups_restore_through_pg_combinebackup_on_pg17() {
    incremental_chain(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_backups_restore_through_pg_combinebackup_on_pg18() {
    incremental_chain(18).await;
}

/// An incremental backup asked of a server that cannot take one is a full backup, with
/// the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_of_pg15_is_a_full_one_with_the_reason() {
    use pgvigil::backup::catalog::BackupKind;
    let pg = cluster_major(15).await;
    let repo_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = backup_settings(&pg, repo_dir.path());
    let repo = pgvigil::store::Repo::open(&settings, pgvigil::store::Which::Primary)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let taken = pgvigil::backup::basebackup::run(
        &settings,
        &repo,
        Default::default(),
        BackupKind::Incremental,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.info.kind, BackupKind::Full);
    assert!(
        taken.info.manifest.is_none(),
        "15 cannot build on a manifest"
    );
    let why = taken.fallback.unwrap_or_default();
    assert!(why.contains("PostgreSQL 15") && why.contains("17"), "{why}");
}

/// A full backup and two incrementals (each on the one before, about 1% of the table
/// changed in between) on `major`: each incremental records its parent and is smaller; a
/// restore of the newest rebuilds it with pg_combinebackup over the chain and holds
/// exactly what was committed before it; the off-site copy carries the whole chain, which
/// restores there; a chain with a missing link is named by verify and never restored; and
/// with summarize_wal off an incremental falls back to a full backup with the reason.
async fn incremental_chain(major: u32) {
    use pgvigil::backup::catalog::BackupKind;
    use pgvigil::backup::{basebackup, offsite, pitr};
    if !wanted(major) {
        eprintln!("PostgreSQL {major} is not in PGVIGIL_MAJORS: not tested in this run");
        return;
    }
    let (pg, db, repo_dir, settings, repo) =
        with_table_and_repo(major, vec![("summarize_wal", "on")], 200_000).await;
    let take = |want: BackupKind| {
        let (settings, repo) = (&settings, &repo);
        async move {
            basebackup::run(settings, repo, Default::default(), want)
                .await
                .unwrap_or_else(|e| panic!("{} backup of {major}: {e}", want.as_str()))
        }
    };
    let full = take(BackupKind::Full).await.info;
    assert_eq!(full.kind, BackupKind::Full);
    assert!(
        full.manifest.is_some(),
        "the manifest is kept for the next incremental"
    );

    exec(&db, "UPDATE t SET v = 'changed' WHERE id <= 2000").await;
    let inc1 = take(BackupKind::Incremental).await;
    assert_eq!(inc1.fallback, None);
    let inc1 = inc1.info;
    assert_eq!(
        (inc1.kind, inc1.parent.as_deref()),
        (BackupKind::Incremental, Some(full.id.as_str()))
    );
    assert!(
        inc1.raw_bytes < full.raw_bytes,
        "an incremental after 1% of changes holds less: {} vs {}",
        inc1.raw_bytes,
        full.raw_bytes
    );
    exec(
        &db,
        "INSERT INTO t VALUES (-1, 'after the first incremental')",
    )
    .await;
    let inc2 = take(BackupKind::Incremental).await.info;
    assert_eq!(inc2.parent.as_deref(), Some(inc1.id.as_str()));
    exec(
        &db,
        "INSERT INTO t VALUES (-2, 'after the second incremental')",
    )
    .await;

    let bins = pg.binaries().clone();
    let check = |restored: pgvigil::pg::TempCluster| async move {
        let rc = client(&restored, "postgres").await;
        let changed: i64 = query_value(&rc, "SELECT count(*) FROM t WHERE v = 'changed'").await;
        let total: i64 = query_value(&rc, "SELECT count(*) FROM t").await;
        let after: Vec<i32> = rc
            .query("SELECT id FROM t WHERE id < 0 ORDER BY id DESC", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!((changed, total, after), (2000, 200_001, vec![-1]));
    };
    let (restored, _parent, done) = restore_immediate(&repo, &inc2.id, bins.clone()).await;
    assert_eq!(
        done.combined,
        [full.id.clone(), inc1.id.clone(), inc2.id.clone()]
    );
    check(restored).await;

    // The off-site copy carries the whole chain, and it restores there.
    let offsite_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let offsite_repo = pgvigil::store::Repo::open(
        &backup_settings(&pg, offsite_dir.path()),
        pgvigil::store::Which::Primary,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let copied = offsite::run(&repo, &offsite_repo, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("off-site copy: {e}"));
    assert_eq!(copied.backup_id, inc2.id);
    let there: Vec<String> = pgvigil::backup::catalog::list(&offsite_repo)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(there, [full.id.clone(), inc1.id.clone(), inc2.id.clone()]);
    let (restored, _parent, _) = restore_immediate(&offsite_repo, &inc2.id, bins.clone()).await;
    check(restored).await;

    // A missing link: the middle backup loses an object.
    let lost = repo_dir
        .path()
        .join("default/backups")
        .join(&inc1.id)
        .join(&inc1.objects[0].name);
    std::fs::remove_file(&lost).unwrap_or_else(|e| panic!("{}: {e}", lost.display()));
    let report = pitr::verify(&repo, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let why = report.broken.get(&inc2.id).cloned().unwrap_or_default();
    assert!(
        why.contains(&inc1.id) && why.contains(&inc1.objects[0].name),
        "{:?}",
        report.broken
    );
    assert!(report.broken.contains_key(&inc1.id) && !report.broken.contains_key(&full.id));
    assert!(!report.ok);
    let refused = pgvigil::backup::restore::restore(
        &repo,
        &pgvigil::backup::restore::RestoreRequest {
            to: repo_dir.path().join("never"),
            backup: Some(inc2.id.clone()),
            target: pgvigil::backup::catalog::Target::Immediate,
            action: pgvigil::backup::restore::TargetAction::Promote,
            restore_command: "false".into(),
            keep_archiving: false,
            binaries: Default::default(),
        },
    )
    .await
    .expect_err("a backup with a broken chain is never restored");
    assert!(
        refused.to_string().contains("cannot be restored"),
        "{refused}"
    );
    assert!(!repo_dir.path().join("never").exists());
    // The next incremental cannot build on the broken chain: it falls back to a full one.
    let next = take(BackupKind::Incremental).await;
    assert_eq!(next.info.kind, BackupKind::Full);
    assert!(
        next.fallback
            .as_deref()
            .is_some_and(|w| w.contains("cannot be built on")),
        "{:?}",
        next.fallback
    );

    // summarize_wal off: a full backup, and the reason.
    exec(&db, "ALTER SYSTEM SET summarize_wal = off").await;
    exec(&db, "SELECT pg_reload_conf()").await;
    eventually(Duration::from_secs(10), || async {
        let v: String = query_value(&db, "SHOW summarize_wal").await;
        if v == "off" {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await;
    let off = take(BackupKind::Incremental).await;
    assert_eq!(off.info.kind, BackupKind::Full);
    assert!(
        off.fallback
            .as_deref()
            .is_some_and(|w| w.contains("summarize_wal")),
        "{:?}",
        off.fallback
    );
}
