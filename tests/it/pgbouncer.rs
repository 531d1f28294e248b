//! PgBouncer metrics against a real PgBouncer (Debian package) in front of a real cluster.

use std::time::{Duration, Instant};

use pgvigil::pg::TempPgbouncer;

use crate::harness::{cluster, daemon, eventually, exec, require_binary, scrape, settings};

async fn bouncer(pg_port: u16) -> TempPgbouncer {
    require_binary(pgvigil::pg::temp_pgbouncer::PGBOUNCER_BIN, "pgbouncer");
    let dbs = [format!(
        "app = host=127.0.0.1 port={pg_port} dbname=postgres pool_size=2"
    )];
    TempPgbouncer::start(&dbs, "transaction", &["postgres"])
        .await
        .unwrap_or_else(|e| panic!("starting pgbouncer: {e}"))
}

async fn client(dsn: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting through pgbouncer {dsn}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_utilization_and_stats_match_pgbouncer() {
    let pg = cluster().await;
    let pgb = bouncer(pg.port()).await;
    let extra = format!("[pgbouncer]\ndsns = [\"{}\"]\n", pgb.admin_dsn("postgres"));
    let running = daemon(settings(&pg.dsn("postgres"), &extra)).await;

    let s = scrape(&running).await;
    assert_eq!(s.metric("pgbouncer_up").value(), Some(1.0));
    assert!(
        s.metric("pgbouncer_up").all()[0].labels.is_empty(),
        "no instance label with one PgBouncer"
    );
    let version = s.metric("pgbouncer_version_info").all();
    assert!(
        version.len() == 1
            && version[0]
                .labels
                .get("version")
                .is_some_and(|v| v.starts_with("PgBouncer 1."))
    );
    assert_eq!(
        s.metric("pgbouncer_config_max_client_connections").value(),
        Some(200.0)
    );
    assert_eq!(
        s.metric("pgbouncer_config_max_user_connections").value(),
        Some(50.0)
    );
    assert_eq!(
        s.metric("pgbouncer_databases_pool_size")
            .label("name", "app")
            .value(),
        Some(2.0)
    );

    // Four clients in open transactions on a pool of two: two hold servers, two wait.
    let dsn = pgb.dsn("postgres", "app");
    let (a, b) = (client(&dsn).await, client(&dsn).await);
    exec(&a, "BEGIN; SELECT 1").await;
    exec(&b, "BEGIN; SELECT 1").await;
    let (c, d) = (client(&dsn).await, client(&dsn).await);
    let waiters = [c, d].map(|w| {
        tokio::spawn(async move { w.batch_execute("BEGIN; SELECT 1; COMMIT").await.is_ok() })
    });
    let app = [("database", "app"), ("user", "postgres")];
    eventually(Duration::from_secs(20), || async {
        let s = scrape(&running).await;
        let get = |name: &str| {
            let mut m = s.metric(name);
            for (k, v) in app {
                m = m.label(k, v);
            }
            m.get()
        };
        let (waiting, active, servers, util, maxwait) = (
            get("pgbouncer_pools_client_waiting_connections")?,
            get("pgbouncer_pools_client_active_connections")?,
            get("pgbouncer_pools_server_active_connections")?,
            get("pgbouncer_pools_utilization_ratio")?,
            get("pgbouncer_pools_client_maxwait_seconds")?,
        );
        if (waiting, active, servers, util) == (2.0, 2.0, 2.0, 1.0) && maxwait > 0.0 {
            Ok(())
        } else {
            Err(format!("waiting {waiting}, active {active}, servers {servers}, utilization {util}, maxwait {maxwait}"))
        }
    })
    .await;
    // pgbouncer_exporter 0.12's client count: the four clients of `app`, by state.
    let s = scrape(&running).await;
    let clients = |state: &str| {
        s.metric("pgbouncer_client_connections")
            .label("database", "app")
            .label("user", "postgres")
            .label("state", state)
            .value()
    };
    assert_eq!(
        clients("active"),
        Some(2.0),
        "{:?}",
        s.metric("pgbouncer_client_connections").all()
    );
    assert_eq!(
        clients("waiting"),
        Some(2.0),
        "{:?}",
        s.metric("pgbouncer_client_connections").all()
    );
    exec(&a, "COMMIT").await;
    exec(&b, "COMMIT").await;
    for w in waiters {
        assert!(
            matches!(w.await, Ok(true)),
            "waiting clients get a server once the others commit"
        );
    }

    // Counters move with real traffic.
    let before = scrape(&running)
        .await
        .metric("pgbouncer_stats_totals_queries_pooled_total")
        .label("database", "app")
        .get()
        .unwrap_or(0.0);
    for _ in 0..20 {
        exec(&a, "SELECT 1").await;
    }
    eventually(Duration::from_secs(20), || async {
        let s = scrape(&running).await;
        let q = s
            .metric("pgbouncer_stats_totals_queries_pooled_total")
            .label("database", "app")
            .get()?;
        let bytes = s
            .metric("pgbouncer_stats_totals_received_bytes_total")
            .label("database", "app")
            .get()?;
        if q >= before + 20.0 && bytes > 0.0 {
            Ok(())
        } else {
            Err(format!("queries {q} (before {before}), bytes {bytes}"))
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pgbouncer_down_flips_only_its_up() {
    let pg = cluster().await;
    let mut first = bouncer(pg.port()).await;
    let second = bouncer(pg.port()).await;
    let extra = format!(
        "[pgbouncer]\ndsns = [\"{}\", \"{}\"]\n",
        first.admin_dsn("postgres"),
        second.admin_dsn("postgres")
    );
    let running = daemon(settings(&pg.dsn("postgres"), &extra)).await;
    let i1 = format!("127.0.0.1:{}", first.port());
    let i2 = format!("127.0.0.1:{}", second.port());
    let s = scrape(&running).await;
    assert_eq!(
        s.metric("pgbouncer_up").label("instance", &i1).value(),
        Some(1.0)
    );
    assert_eq!(
        s.metric("pgbouncer_up").label("instance", &i2).value(),
        Some(1.0)
    );
    assert_eq!(
        s.metric("pgbouncer_databases_pool_size")
            .label("instance", &i2)
            .label("name", "app")
            .value(),
        Some(2.0)
    );
    // One HELP/TYPE block per family even with two sources.
    assert_eq!(
        s.text
            .matches("# TYPE pgbouncer_databases_pool_size ")
            .count(),
        1
    );

    first.kill();
    let t = Instant::now();
    let s = scrape(&running).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "scrape took {:?}",
        t.elapsed()
    );
    assert_eq!(
        s.metric("pgbouncer_up").label("instance", &i1).value(),
        Some(0.0)
    );
    assert_eq!(
        s.metric("pgbouncer_up").label("instance", &i2).value(),
        Some(1.0)
    );
    assert!(s
        .metric("pgbouncer_pools_client_active_connections")
        .label("instance", &i1)
        .all()
        .is_empty());
    assert!(!s
        .metric("pgbouncer_pools_client_active_connections")
        .label("instance", &i2)
        .all()
        .is_empty());
    assert_eq!(s.metric("pg_up").value(), Some(1.0));
    running.shutdown(Duration::from_secs(5)).await;
}
