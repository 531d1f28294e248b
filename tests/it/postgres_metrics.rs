//! PostgreSQL metrics compared with what the statistics views show.

use std::time::Duration;

use crate::harness::{self, client, cluster, daemon, eventually, exec, scrape, settings};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stats_and_sizes_match_the_views() {
    let pg = cluster().await;
    let admin = client(&pg, "postgres").await;
    // A server-wide statement_timeout that pgvigil's own sessions override (5 s).
    exec(&admin, "ALTER SYSTEM SET statement_timeout = '42s'").await;
    exec(&admin, "SELECT pg_reload_conf()").await;
    exec(&admin, "CREATE DATABASE app").await;
    exec(&admin, "CREATE ROLE limited LOGIN CONNECTION LIMIT 7").await;
    let app = client(&pg, "app").await;
    exec(&app, "CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1234) g").await;
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;

    let size: i64 = harness::query_value(&admin, "SELECT pg_database_size('app')").await;
    let oid: u32 =
        harness::query_value(&admin, "SELECT oid FROM pg_database WHERE datname = 'app'").await;
    let s = scrape(&running).await;
    assert_eq!(s.metric("pg_up").value(), Some(1.0));
    assert_eq!(
        s.metric("pg_database_size_bytes")
            .label("datname", "app")
            .value(),
        Some(size as f64)
    );

    // Counters equal the view (read after the scrape; nothing writes to app meanwhile).
    eventually(PATIENCE, || async {
        let s = scrape(&running).await;
        let row = app
            .query_one(
                "SELECT tup_inserted::float8, xact_rollback::float8, deadlocks::float8 FROM pg_stat_database WHERE datname = 'app'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let inserted: f64 = row.get(0);
        let m = s.metric("pg_stat_database_tup_inserted").label("datname", "app").label("datid", &oid.to_string());
        let got = m.get()?;
        if got == inserted && inserted >= 1234.0 {
            Ok(())
        } else {
            Err(format!("tup_inserted: scraped {got}, view {inserted}"))
        }
    })
    .await;
    // The shared-objects row (datid 0) is not exported.
    assert!(s
        .metric("pg_stat_database_numbackends")
        .label("datid", "0")
        .all()
        .is_empty());
    // Per-database ages exist and are sane.
    let age = s
        .metric("pg_database_xid_age")
        .label("datname", "app")
        .get()
        .unwrap_or(-1.0);
    assert!((1.0..1e9).contains(&age), "xid age {age}");
    let ratio = s
        .metric("pg_database_wraparound_ratio")
        .label("datname", "app")
        .get()
        .unwrap_or(-1.0);
    assert!(ratio > 0.0 && ratio < 0.5, "{ratio}");
    // Settings, normalised as postgres_exporter does.
    let sb: f64 = harness::query_value(
        &admin,
        "SELECT setting::float8 * 8192 FROM pg_settings WHERE name = 'shared_buffers'",
    )
    .await;
    assert_eq!(
        s.metric("pg_settings_shared_buffers_bytes").value(),
        Some(sb)
    );
    assert_eq!(s.metric("pg_settings_max_connections").value(), Some(100.0));
    // The server's values, not those of pgvigil's own sessions (5 s and 1 s).
    for (setting, metric) in [
        ("statement_timeout", "pg_settings_statement_timeout_seconds"),
        ("lock_timeout", "pg_settings_lock_timeout_seconds"),
    ] {
        let server: f64 = harness::query_value(
            &admin,
            &format!("SELECT setting::float8 / 1000 FROM pg_settings WHERE name = '{setting}'"),
        )
        .await;
        assert_eq!(s.metric(metric).value(), Some(server), "{metric}");
    }
    // postgres_exporter's wal and roles collectors.
    let segments: f64 = harness::query_value(
        &admin,
        "SELECT count(*)::float8 FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
    )
    .await;
    assert_eq!(s.metric("pg_wal_segments").value(), Some(segments));
    assert!(s
        .metric("pg_wal_size_bytes")
        .value()
        .is_some_and(|b| b >= segments * 1e6));
    assert_eq!(
        s.metric("pg_roles_connection_limit")
            .label("rolname", "limited")
            .get(),
        Ok(7.0)
    );
    assert_eq!(
        s.metric("pg_roles_connection_limit")
            .label("rolname", "postgres")
            .get(),
        Ok(-1.0)
    );
    // The standard process metrics of pgvigil itself.
    assert!(s
        .metric("process_resident_memory_bytes")
        .value()
        .is_some_and(|b| b > 1e6));
    assert!(s
        .metric("process_open_fds")
        .value()
        .is_some_and(|n| n > 0.0));
    // postgres_exporter's meta metrics, which community alerts use.
    assert_eq!(s.metric("pg_exporter_last_scrape_error").value(), Some(0.0));
    assert!(s
        .metric("pg_exporter_last_scrape_duration_seconds")
        .value()
        .is_some_and(|d| d > 0.0));
    assert_eq!(
        s.metric("pg_scrape_collector_success")
            .label("collector", "settings")
            .get(),
        s.metric("pgvigil_scrape_collector_success")
            .label("collector", "settings")
            .get()
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_and_blocked_sessions_are_seen() {
    let pg = cluster().await;
    let admin = client(&pg, "postgres").await;
    exec(&admin, "CREATE DATABASE app").await;
    let holder = client(&pg, "app").await;
    exec(&holder, "CREATE TABLE t (id int)").await;
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;

    // A session idle in transaction for at least 2 s.
    exec(&holder, "BEGIN; SELECT 1").await;
    let began = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = scrape(&running).await;
    let idle = s
        .metric("pg_stat_activity_oldest_idle_in_transaction_seconds")
        .label("datname", "app")
        .get()
        .unwrap_or(0.0);
    assert!(
        idle >= 2.0 && idle <= began.elapsed().as_secs_f64() + 1.0,
        "idle in transaction for {idle}s"
    );
    assert_eq!(
        s.metric("pg_stat_activity_count")
            .label("datname", "app")
            .label("state", "idle in transaction")
            .value(),
        Some(1.0)
    );
    let oldest = s
        .metric("pg_stat_activity_oldest_xact_seconds")
        .label("datname", "app")
        .get()
        .unwrap_or(0.0);
    assert!(oldest >= 2.0, "oldest xact {oldest}");
    assert_eq!(
        s.metric("pg_locks_blocked_sessions")
            .label("datname", "app")
            .value(),
        Some(0.0)
    );

    // The holder takes an exclusive lock; another session waits for it.
    exec(&holder, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await;
    let waiter = client(&pg, "app").await;
    let blocked = tokio::spawn(async move {
        waiter
            .simple_query("SELECT count(*) FROM t")
            .await
            .map(|_| ())
    });
    eventually(PATIENCE, || async {
        let s = scrape(&running).await;
        let n = s
            .metric("pg_locks_blocked_sessions")
            .label("datname", "app")
            .get()?;
        let wait = s
            .metric("pg_locks_max_wait_seconds")
            .label("datname", "app")
            .get()?;
        let excl = s
            .metric("pg_locks_count")
            .label("datname", "app")
            .label("mode", "accessexclusivelock")
            .get()?;
        if n == 1.0 && wait > 0.0 && excl >= 1.0 {
            Ok(())
        } else {
            Err(format!(
                "blocked {n}, max wait {wait}, exclusive locks {excl}"
            ))
        }
    })
    .await;
    exec(&holder, "COMMIT").await;
    assert!(
        matches!(blocked.await, Ok(Ok(()))),
        "the blocked query finishes once the lock is gone"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_table_stats_cover_every_database_top_n_by_size() {
    let pg = cluster().await;
    let admin = client(&pg, "postgres").await;
    exec(&admin, "CREATE DATABASE app").await;
    exec(&admin, "CREATE DATABASE other").await;
    let app = client(&pg, "app").await;
    // Five tables of growing size; with top_tables = 3 only the three largest appear.
    for i in 1..=5 {
        exec(&app, &format!("CREATE TABLE t{i} (id int, pad text); INSERT INTO t{i} SELECT g, repeat('x', 100) FROM generate_series(1, {}) g", i * 2000)).await;
    }
    let other = client(&pg, "other").await;
    exec(
        &other,
        "CREATE TABLE elsewhere (id int); INSERT INTO elsewhere VALUES (1)",
    )
    .await;
    exec(&app, "SELECT count(*) FROM t5").await;
    let running = daemon(settings(&pg.dsn("postgres"), "top_tables = 3")).await;
    let s = scrape(&running).await;
    let mut tables: Vec<String> = s
        .metric("pg_stat_user_tables_seq_scan")
        .label("datname", "app")
        .all()
        .iter()
        .map(|x| x.labels.get("relname").cloned().unwrap_or_default())
        .collect();
    tables.sort();
    assert_eq!(tables, ["t3", "t4", "t5"]);
    assert!(s
        .metric("pg_stat_user_tables_seq_scan")
        .label("datname", "other")
        .label("relname", "elsewhere")
        .value()
        .is_some());
    let size: i64 = harness::query_value(&app, "SELECT pg_table_size('t5')").await;
    assert_eq!(
        s.metric("pg_stat_user_tables_table_size_bytes")
            .label("datname", "app")
            .label("relname", "t5")
            .value(),
        Some(size as f64)
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_queries_and_statements_are_exported() {
    let pg = cluster().await;
    let admin = client(&pg, "postgres").await;
    exec(&admin, "CREATE EXTENSION pg_stat_statements; CREATE TABLE orders (state text); INSERT INTO orders VALUES ('pending'), ('pending'), ('shipped')").await;
    let extra = r#"
[[postgres.queries]]
name = "app_orders"
sql = "select state, count(*) as value from orders group by state"
help = "Orders by state."
labels = ["state"]

[[postgres.queries]]
name = "app_broken"
sql = "select nope from nowhere"
"#;
    let running = daemon(settings(&pg.dsn("postgres"), extra)).await;
    let s = scrape(&running).await;
    assert_eq!(
        s.metric("app_orders").label("state", "pending").value(),
        Some(2.0)
    );
    assert_eq!(
        s.metric("app_orders").label("state", "shipped").value(),
        Some(1.0)
    );
    assert!(s.text.contains("# HELP app_orders Orders by state."));
    // A broken query reports itself and leaves the rest of the page alone.
    assert_eq!(
        s.metric("pgvigil_scrape_collector_success")
            .label("collector", "query:app_broken")
            .value(),
        Some(0.0)
    );
    assert_eq!(
        s.metric("pgvigil_scrape_collector_success")
            .label("collector", "query:app_orders")
            .value(),
        Some(1.0)
    );
    assert_eq!(s.metric("pg_up").value(), Some(1.0));
    // pg_stat_statements: the orders query shows up with its real call count.
    let calls: f64 = harness::query_value(&admin, "SELECT sum(calls)::float8 FROM pg_stat_statements WHERE query LIKE 'select state, count(*)%orders%'").await;
    assert!(calls >= 1.0);
    let all = s
        .metric("pg_stat_statements_calls_total")
        .label("datname", "postgres")
        .all();
    assert!(!all.is_empty(), "pg_stat_statements_calls_total present");
    assert!(all
        .iter()
        .all(|x| x.labels.contains_key("queryid") && x.labels.contains_key("user")));
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_up_follows_the_server_down_and_back() {
    let mut pg = cluster().await;
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;
    harness::wait_ready(&running).await;
    assert_eq!(scrape(&running).await.metric("pg_up").value(), Some(1.0));

    pg.stop().await;
    eventually(PATIENCE, || async {
        let t = std::time::Instant::now();
        let s = scrape(&running).await;
        let took = t.elapsed();
        match s.metric("pg_up").value() {
            Some(0.0) => {
                // Answered fast, and nothing stale from before the outage.
                if took > Duration::from_secs(1) {
                    return Err(format!("scrape took {took:?}"));
                }
                if s.names()
                    .iter()
                    .any(|n| n.starts_with("pg_stat_") || n.starts_with("pg_database_"))
                {
                    return Err("stale pg_* series while down".into());
                }
                Ok(())
            }
            other => Err(format!("pg_up {other:?}")),
        }
    })
    .await;

    if let Err(e) = pg.start_server().await {
        panic!("restart: {e}");
    }
    eventually(PATIENCE, || async {
        let s = scrape(&running).await;
        match (
            s.metric("pg_up").value(),
            s.metric("pg_stat_database_numbackends")
                .label("datname", "postgres")
                .value(),
        ) {
            (Some(1.0), Some(_)) => Ok(()),
            other => Err(format!("after restart: {other:?}")),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

/// `server_label = true` puts postgres_exporter's `server="host:port"` on the families
/// it labels (settings, activity, archiver, conflicts) and on no others; off, nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_label_is_where_postgres_exporter_puts_it() {
    let pg = cluster().await;
    let server = format!("127.0.0.1:{}", pg.port());
    let labelled = daemon(settings(&pg.dsn("postgres"), "server_label = true")).await;
    let plain = daemon(settings(&pg.dsn("postgres"), "")).await;
    let s = scrape(&labelled).await;
    for name in [
        "pg_settings_max_connections",
        "pg_stat_activity_count",
        "pg_stat_activity_max_tx_duration",
        "pg_stat_archiver_archived_count",
        "pg_stat_database_conflicts_confl_lock",
    ] {
        let all = s.metric(name).all();
        assert!(!all.is_empty(), "{name} missing");
        for sample in &all {
            assert_eq!(
                sample.labels.get("server").map(String::as_str),
                Some(server.as_str()),
                "{name}: {sample:?}"
            );
        }
    }
    for name in [
        "pg_up",
        "pg_stat_database_xact_commit",
        "pg_database_size_bytes",
    ] {
        for sample in &s.metric(name).all() {
            assert!(!sample.labels.contains_key("server"), "{name}: {sample:?}");
        }
    }
    let s = scrape(&plain).await;
    for sample in &s.metric("pg_settings_max_connections").all() {
        assert!(!sample.labels.contains_key("server"), "{sample:?}");
    }
    labelled.shutdown(Duration::from_secs(5)).await;
    plain.shutdown(Duration::from_secs(5)).await;
}

/// More distinct application names than the cap: the commonest 20 stay labels, the rest
/// become "other" (their sessions still counted), and the folding is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_labels_are_bounded() {
    let pg = cluster().await;
    let mut sessions = Vec::new();
    for i in 0..24 {
        let dsn = format!("{}?application_name=tool{i:02}", pg.dsn("postgres"));
        let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{dsn}: {e}"));
        tokio::spawn(conn);
        sessions.push(c);
    }
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;
    let s = scrape(&running).await;
    let count = s.metric("pg_stat_activity_count").all();
    let apps: std::collections::BTreeSet<&str> = count
        .iter()
        .filter(|x| x.value > 0.0)
        .filter_map(|x| x.labels.get("application_name").map(String::as_str))
        .collect();
    assert!(apps.contains("other"), "{apps:?}");
    assert!(
        apps.len() <= 21,
        "{} application names: {apps:?}",
        apps.len()
    );
    // Every session of ours is counted, folded or not.
    let tools: f64 = count
        .iter()
        .filter(|x| {
            x.labels
                .get("application_name")
                .is_some_and(|a| a.starts_with("tool") || a == "other")
        })
        .map(|x| x.value)
        .sum();
    assert!(tools >= 24.0, "{tools} sessions under tool* or other");
    let folded = s
        .metric("pgvigil_stat_activity_folded_values")
        .label("label", "application_name")
        .value()
        .unwrap_or(0.0);
    assert!(
        folded >= 4.0,
        "folded {folded}: 24 tools and the unnamed sessions"
    );
    assert_eq!(
        s.metric("pgvigil_stat_activity_folded_values")
            .label("label", "usename")
            .value(),
        Some(0.0)
    );
    running.shutdown(Duration::from_secs(5)).await;
    drop(sessions);
}
