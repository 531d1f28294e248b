//! Replication metrics on a real primary and streaming replica.

use std::time::Duration;

use crate::harness::{client, cluster, daemon, eventually, exec, scrape, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_report_replication() {
    let primary = cluster().await;
    let admin = client(&primary, "postgres").await;
    exec(
        &admin,
        "SELECT pg_create_physical_replication_slot('spare', true)",
    )
    .await;
    let replica = match primary.replica().await {
        Ok(r) => r,
        Err(e) => panic!("making replica: {e}"),
    };
    exec(
        &admin,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
    )
    .await;

    let on_primary = daemon(settings(&primary.dsn("postgres"), "")).await;
    let on_replica = daemon(settings(&replica.dsn("postgres"), "")).await;

    eventually(Duration::from_secs(30), || async {
        let s = scrape(&on_primary).await;
        let rows = s.metric("pg_stat_replication_pg_wal_lsn_diff").all();
        if rows.len() != 1 {
            return Err(format!("{} pg_stat_replication rows", rows.len()));
        }
        let r = rows[0];
        if r.labels.get("state").map(String::as_str) != Some("streaming") {
            return Err(format!("state {:?}", r.labels.get("state")));
        }
        let app = r
            .labels
            .get("application_name")
            .cloned()
            .unwrap_or_default();
        for name in [
            "pg_stat_replication_replay_lag_bytes",
            "pg_stat_replication_flush_lag_bytes",
            "pg_stat_replication_write_lag_bytes",
            "pg_stat_replication_pg_current_wal_lsn_bytes",
        ] {
            s.metric(name).label("application_name", &app).get()?;
        }
        // Once the replica caught up, the byte lag is 0.
        let lag = s
            .metric("pg_stat_replication_replay_lag_bytes")
            .label("application_name", &app)
            .get()?;
        if lag != 0.0 {
            return Err(format!("replay lag {lag} bytes"));
        }
        Ok(())
    })
    .await;

    let s = scrape(&on_primary).await;
    assert_eq!(s.metric("pg_replication_is_replica").value(), Some(0.0));
    assert_eq!(
        s.metric("pg_replication_slots_active")
            .label("slot_name", "spare")
            .value(),
        Some(0.0)
    );
    assert!(
        s.metric("pg_replication_slots_pg_wal_lsn_diff")
            .label("slot_name", "spare")
            .get()
            .unwrap_or(-1.0)
            > 0.0
    );

    let r = scrape(&on_replica).await;
    assert_eq!(r.metric("pg_up").value(), Some(1.0));
    assert_eq!(r.metric("pg_replication_is_replica").value(), Some(1.0));
    let lag = r.metric("pg_replication_lag_seconds").get().unwrap_or(-1.0);
    assert!(lag >= 0.0, "lag {lag}");
    // The replica's replay position equals the primary's insert position once caught up.
    eventually(Duration::from_secs(30), || async {
        let p = scrape(&on_primary).await.metric("pg_wal_lsn_bytes").get()?;
        let q = scrape(&on_replica).await.metric("pg_wal_lsn_bytes").get()?;
        if p == q {
            Ok(())
        } else {
            Err(format!("primary at {p}, replica at {q}"))
        }
    })
    .await;
    on_primary.shutdown(Duration::from_secs(5)).await;
    on_replica.shutdown(Duration::from_secs(5)).await;
}
