//! The shipped dashboards and rules against a real Prometheus (Debian package) scraping a real
//! pgvigil: an archiving primary with a streaming replica and an unused slot, one backup taken by pgvigil, WAL
//! pushed through `pgvigil wal-push`, a PgBouncer with a pool in use, and API traffic through
//! pgvigil's proxy to the PostgREST stand-in. Every panel query of `dashboards/*.json` and
//! every variable query must return data, except the few listed below with their reason; every
//! rule of `alerts/*.yml` must evaluate without error on the real series, and stopping
//! PgBouncer and PostgreSQL must make `PgbouncerDown` and `PostgresDown` pending.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pgvigil::pg::TempPgbouncer;

use crate::harness::backup::{switch_and_archive, LocalRepo};
use crate::harness::postgrest::FakePostgrest;
use crate::harness::prometheus::TempPrometheus;
use crate::harness::promql::substitute;
use crate::harness::shipped::{dashboard_panels, dashboard_variable_exprs, files};
use crate::harness::{self, client, eventually, exec, http_client, require_binary, run_pgvigil};

/// Panels that cannot have data in this setup: (dashboard uid, panel title, why).
const PANELS_WITHOUT_DATA: &[(&str, &str, &str)] = &[
    (
        "pgvigil-backups",
        "Audit lines written",
        "pgvigil_audit_* arrive with the audit issue",
    ),
    (
        "pgvigil-backups",
        "Audit table forwarding lag",
        "pgvigil_audit_* arrive with the audit issue (and need [audit] table)",
    ),
];

/// Single queries that cannot have data here: (part of the expression, why).
const QUERIES_WITHOUT_DATA: &[(&str, &str)] = &[(
    "pg_replication_lag_seconds",
    "the replica's own view; this pgvigil watches the primary",
)];

/// The config `wal-push` and the CLI read: the daemon's real port, so pushes are reported.
fn write_cli_config(path: &Path, dsn: &str, storage: &str, daemon: SocketAddr) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n[postgres]\ndsn = \"{dsn}\"\n{storage}\n",
        daemon.port()
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(path).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_return_data_from_a_real_prometheus() {
    require_binary(crate::harness::prometheus::PROMETHEUS_BIN, "prometheus");
    require_binary(pgvigil::pg::temp_pgbouncer::PGBOUNCER_BIN, "pgbouncer");

    // An archiving primary with a table, one backup, a streaming replica.
    let repo = LocalRepo::new();
    let mut pg = repo.archiving_primary().await;
    let db = client(&pg, "postgres").await;
    exec(
        &db,
        "CREATE TABLE articles AS SELECT g AS id, md5(g::text) AS title FROM generate_series(1, 5000) g;
         DELETE FROM articles WHERE id % 10 = 0; ANALYZE articles;
         SELECT pg_create_physical_replication_slot('parked_standby', true);",
    )
    .await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "pgvigil backup: {err}");
    let _replica = pg
        .replica()
        .await
        .unwrap_or_else(|e| panic!("replica: {e}"));

    // PgBouncer in front of the primary, PostgREST stand-in, then the daemon.
    let mut pgb = TempPgbouncer::start(
        &[format!(
            "app = host=127.0.0.1 port={} dbname=postgres pool_size=2",
            pg.port()
        )],
        "transaction",
        &["postgres"],
    )
    .await
    .unwrap_or_else(|e| panic!("starting pgbouncer: {e}"));
    let fake = FakePostgrest::start().await;
    let extra = format!(
        "{}[pitr]\ncheck_interval = \"1s\"\nheartbeat_interval = \"1s\"\n\
         [pgbouncer]\ndsns = [\"{}\"]\n[postgrest]\nadmin_url = \"http://{}\"\n\
         [api_proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n[audit]\nstdout = false\n",
        repo.storage,
        pgb.admin_dsn("postgres"),
        fake.admin,
        fake.api
    );
    let running = harness::daemon(harness::settings(&pg.dsn("postgres"), &extra)).await;
    harness::wait_ready(&running).await;
    write_cli_config(
        &repo.config,
        &pg.dsn("postgres"),
        &repo.storage,
        running.addr,
    );

    // WAL through wal-push (reported to the daemon), a pool in use, API traffic.
    exec(
        &db,
        "UPDATE articles SET title = upper(title) WHERE id < 100",
    )
    .await;
    switch_and_archive(&db).await;
    let (bouncer_client, conn) =
        tokio_postgres::connect(&pgb.dsn("postgres", "app"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting through pgbouncer: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    exec(&bouncer_client, "SELECT count(*) FROM articles").await;
    let proxy = running.proxy_addr.unwrap_or_else(|| panic!("no proxy"));
    let http = http_client();
    for path in ["/articles", "/articles?limit=3", "/missing", "/unavailable"] {
        let _ = http
            .get(format!("http://{proxy}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the proxy: {e}"));
    }

    // Prometheus scrapes the daemon every second and evaluates alerts/*.yml.
    let prom = TempPrometheus::start("pgvigil", running.addr, &files("alerts", ".yml")).await;

    // Every panel query (and variable query) returns data, bounded.
    let mut queries = Vec::new();
    for p in dashboard_panels() {
        if PANELS_WITHOUT_DATA
            .iter()
            .any(|(d, t, _)| *d == p.dashboard && *t == p.title)
        {
            continue;
        }
        for e in p.exprs {
            if QUERIES_WITHOUT_DATA
                .iter()
                .any(|(part, _)| e.contains(part))
            {
                continue;
            }
            queries.push((format!("{} / {}", p.dashboard, p.title), e));
        }
    }
    for v in dashboard_variable_exprs() {
        queries.push((v.origin, v.expr));
    }
    assert!(queries.len() > 60, "only {} queries", queries.len());
    // Queries that returned data once are not asked again.
    let done = std::sync::Mutex::new(BTreeSet::new());
    eventually(Duration::from_secs(60), || {
        let (prom, queries, done) = (&prom, &queries, &done);
        async move {
            let mut empty = Vec::new();
            for (i, (origin, expr)) in queries.iter().enumerate() {
                if done.lock().is_ok_and(|d| d.contains(&i)) {
                    continue;
                }
                let q = substitute(expr, "15s", "1m");
                match prom.query(&q).await {
                    Ok(v) if !v.is_empty() => {
                        if let Ok(mut d) = done.lock() {
                            d.insert(i);
                        }
                    }
                    Ok(_) => empty.push(format!("{origin}: no data for {q}")),
                    Err(e) => panic!("{origin}: Prometheus rejects {q}: {e}"),
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} queries without data:\n{}\nPrometheus log:\n{}",
                    empty.len(),
                    queries.len(),
                    empty.join("\n"),
                    prom.log_tail()
                ))
            }
        }
    })
    .await;

    // Every rule evaluates cleanly on the real series (no many-to-many matching and the like).
    let url = format!("http://{}/api/v1/rules", prom.addr);
    eventually(Duration::from_secs(20), || async {
        let body: serde_json::Value =
            serde_json::from_str(&harness::get_text(&url).await?).map_err(|e| e.to_string())?;
        let mut bad = Vec::new();
        let mut count = 0;
        for g in body["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                count += 1;
                if r["health"] != "ok" {
                    bad.push(format!(
                        "{} {}: {} {}",
                        g["name"], r["name"], r["health"], r["lastError"]
                    ));
                }
            }
        }
        if count == 0 {
            return Err("no rules loaded".to_string());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    })
    .await;

    // Alerts that must be quiet on a healthy setup are not even pending.
    let firing = prom.query("ALERTS").await.unwrap_or_else(|e| panic!("{e}"));
    let names: BTreeSet<String> = firing
        .iter()
        .filter_map(|a| a["metric"]["alertname"].as_str().map(str::to_string))
        .collect();
    for quiet in [
        "PostgresDown",
        "PgvigilScrapeFailing",
        "PgbouncerDown",
        "PostgrestNotReady",
    ] {
        assert!(
            !names.contains(quiet),
            "{quiet} is pending or firing on a healthy setup: {firing:?}"
        );
    }

    // And the outage alerts do select what pgvigil exports when things break: PgBouncer
    // killed, PostgreSQL stopped -> PgbouncerDown and PostgresDown pending (their `for`
    // is minutes; pending proves the expression matches).
    pgb.kill();
    drop(bouncer_client);
    drop(db);
    pg.stop().await;
    eventually(Duration::from_secs(30), || async {
        let pending = prom
            .query("ALERTS{alertname=~\"PgbouncerDown|PostgresDown\"}")
            .await?;
        let names: BTreeSet<&str> = pending
            .iter()
            .filter_map(|a| a["metric"]["alertname"].as_str())
            .collect();
        if names.len() == 2 {
            Ok(())
        } else {
            Err(format!("pending or firing: {names:?}"))
        }
    })
    .await;

    drop(prom);
    running.shutdown(Duration::from_secs(5)).await;
}
