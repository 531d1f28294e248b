//! The scrape contract: constant statements per scrape, single flight, content
//! negotiation, catalogue coverage and promtool's verdict on a real scrape.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{self, client, cluster, daemon, exec, scrape, scrape_with, settings};

async fn calls_by(admin: &tokio_postgres::Client, role: &str) -> f64 {
    admin
        .query_one(
            "SELECT coalesce(sum(calls), 0)::float8 FROM pg_stat_statements WHERE userid = $1::text::regrole",
            &[&role],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn statements_per_scrape(
    running: &pgvigil::Running,
    admin: &tokio_postgres::Client,
    n: u32,
) -> f64 {
    let before = calls_by(admin, "pgvigil").await;
    for _ in 0..n {
        scrape(running).await;
    }
    (calls_by(admin, "pgvigil").await - before) / f64::from(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_scrape_stay_constant_with_more_tables() {
    let pg = cluster().await;
    let admin = client(&pg, "postgres").await;
    exec(
        &admin,
        "CREATE EXTENSION pg_stat_statements; CREATE ROLE pgvigil LOGIN IN ROLE pg_monitor",
    )
    .await;
    exec(&admin, "CREATE DATABASE app").await;
    let dsn = format!("postgresql://pgvigil@127.0.0.1:{}/postgres", pg.port());
    // Only scrapes may run statements as this role while we count: no heartbeat, and the
    // PITR check runs once at start, then hourly.
    let running = daemon(settings(
        &dsn,
        "[pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"",
    ))
    .await;
    harness::wait_ready(&running).await;
    scrape(&running).await;

    let before = statements_per_scrape(&running, &admin, 5).await;
    let app = client(&pg, "app").await;
    exec(
        &app,
        "DO $$ BEGIN FOR i IN 1..300 LOOP EXECUTE format('CREATE TABLE t%s (id int primary key)', i); END LOOP; END $$",
    )
    .await;
    exec(&admin, "CREATE DATABASE app2").await;
    let after = statements_per_scrape(&running, &admin, 5).await;
    assert_eq!(
        before, after,
        "statements per scrape changed with 300 more tables and a database"
    );
    // Twelve fast collectors on PostgreSQL 15 (docs/metrics.md lists them; pg_stat_io is
    // 16+), one statement each, whatever the number of tables.
    assert!(
        (10.0..=12.0).contains(&before),
        "{before} statements per scrape"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_share_one_collection() {
    let pg = cluster().await;
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;
    harness::wait_ready(&running).await;
    let before = scrape(&running)
        .await
        .metric("pgvigil_scrapes_total")
        .get()
        .unwrap_or(0.0);
    let scrapes: Vec<_> = (0..8)
        .map(|_| {
            let url = running.metrics_url();
            tokio::spawn(async move {
                harness::http_client()
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
            })
        })
        .collect();
    for s in scrapes {
        assert!(matches!(s.await, Ok(Ok(true))));
    }
    let after = scrape(&running)
        .await
        .metric("pgvigil_scrapes_total")
        .get()
        .unwrap_or(0.0);
    // 8 concurrent scrapes + the final one: far fewer than 9 collections.
    let collections = after - before;
    assert!(
        (2.0..=5.0).contains(&collections),
        "{collections} collections for 9 scrapes"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_served_when_asked_and_names_do_not_change() {
    let pg = cluster().await;
    let running = daemon(settings(&pg.dsn("postgres"), "")).await;
    harness::wait_ready(&running).await;
    // What Prometheus sends: text is acceptable, so text is served (its metadata then types
    // the compat counters as counters, as postgres_exporter's page does).
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, prom) = scrape_with(&running, Some(prometheus_accept)).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(prom
        .text
        .contains("# TYPE pg_stat_database_xact_commit counter\n"));
    // OpenMetrics when asked for alone.
    let (ct, om) = scrape_with(&running, Some("application/openmetrics-text;version=1.0.0")).await;
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.text.ends_with("# EOF\n"));
    assert!(om
        .text
        .contains("# TYPE pgvigil_scrapes counter\npgvigil_scrapes_total "));
    assert!(om
        .text
        .contains("# TYPE pg_stat_database_xact_commit unknown\n"));
    let (ct, text) = scrape_with(&running, None).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(text
        .text
        .contains("# TYPE pg_stat_database_xact_commit counter\n"));
    // The same series names in both formats, so dashboards don't care which was negotiated.
    let a: BTreeSet<String> = om.names();
    let b: BTreeSet<String> = text.names();
    assert_eq!(a, b);

    let health = harness::http_client()
        .get(format!("http://{}/healthz", running.addr))
        .send()
        .await;
    assert!(matches!(health.map(|r| r.status().as_u16()), Ok(200)));
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_family_is_in_the_catalogue_and_promtool_only_flags_compat_names() {
    harness::require_binary("/usr/bin/promtool", "prometheus");
    let primary = cluster().await;
    let admin = client(&primary, "postgres").await;
    exec(
        &admin,
        "CREATE EXTENSION pg_stat_statements; CREATE TABLE t (id int)",
    )
    .await;
    let _replica = primary.replica().await.unwrap_or_else(|e| panic!("{e}"));
    let running = daemon(settings(&primary.dsn("postgres"), "")).await;
    harness::wait_ready(&running).await;
    let s = scrape(&running).await;

    for name in s.names() {
        let def = pgvigil::metrics::catalogue::lookup(&name);
        assert!(def.is_some(), "{name} is exported but not in the catalogue");
    }
    for must in [
        "pg_stat_replication_replay_lag_bytes",
        "pg_stat_statements_calls_total",
        "pg_stat_user_tables_seq_scan",
        "pg_stat_wal_records_total",
    ] {
        assert!(
            s.names().contains(must),
            "{must} missing from a real scrape"
        );
    }

    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(s.text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut flagged = 0;
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split_whitespace().next().unwrap_or("");
        let def = pgvigil::metrics::catalogue::lookup(name);
        assert!(
            def.is_some_and(|d| d.compat.is_some()),
            "promtool flags a metric that is not a compatibility name: {line}"
        );
        flagged += 1;
    }
    assert!(
        flagged > 0,
        "expected promtool to flag postgres_exporter's counters without _total"
    );
    running.shutdown(Duration::from_secs(5)).await;
}
