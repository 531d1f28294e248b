//! The heartbeat: a one-row table `pgvigil.heartbeat(ts timestamptz, lsn pg_lsn)` that the
//! daemon updates on the primary every `pitr.heartbeat_interval`. It guarantees WAL traffic
//! on an idle database (so archiving and PITR never stall), measures replication lag
//! exactly on replicas, and lets a restore drill prove where recovery stopped. The role
//! needs CREATE on the database (or the schema created beforehand).

use std::time::Duration;

use prometheus::Gauge;
use tokio_util::sync::CancellationToken;

use crate::config::PostgresSettings;
use crate::pg::{connect, db_error_message, ConnectOptions};

/// Whether the table exists, and whether this role could create it (CREATE on the schema if
/// it exists, else on the database): asked first, so a role without the privilege gets one
/// clear message from pgvigil instead of an ERROR in the server log every beat.
const PRESENT: &str = "SELECT to_regclass('pgvigil.heartbeat') IS NOT NULL, \
    coalesce(has_schema_privilege((SELECT oid FROM pg_namespace WHERE nspname = 'pgvigil'), 'CREATE'), \
             has_database_privilege(current_database(), 'CREATE')), current_user::text, \
    current_database()::text";
const SETUP: &str = "CREATE SCHEMA IF NOT EXISTS pgvigil; \
    CREATE TABLE IF NOT EXISTS pgvigil.heartbeat (ts timestamptz NOT NULL, lsn pg_lsn NOT NULL)";
const BEAT: &str = "WITH u AS (UPDATE pgvigil.heartbeat SET ts = clock_timestamp(), lsn = pg_current_wal_lsn() RETURNING 1) \
    INSERT INTO pgvigil.heartbeat (ts, lsn) SELECT clock_timestamp(), pg_current_wal_lsn() WHERE NOT EXISTS (SELECT 1 FROM u)";
const AGE: &str =
    "SELECT extract(epoch FROM clock_timestamp() - max(ts))::float8 FROM pgvigil.heartbeat";

/// One beat: on a primary, write the row (creating the table if needed); on a replica, read
/// its age. Returns the age in seconds as this server sees it.
async fn beat(client: &tokio_postgres::Client, ready: &mut bool) -> Result<Option<f64>, String> {
    let primary = !client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| db_error_message(&e))?
        .get::<_, bool>(0);
    if primary {
        if !*ready {
            let row = client
                .query_one(PRESENT, &[])
                .await
                .map_err(|e| db_error_message(&e))?;
            let (exists, may_create, role, db): (bool, bool, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if !exists {
                if !may_create {
                    return Err(format!(
                        "pgvigil.heartbeat does not exist and role {role} may not create it: \
                         GRANT CREATE ON DATABASE {db} TO {role}, or create it beforehand (CREATE SCHEMA pgvigil; \
                         CREATE TABLE pgvigil.heartbeat (ts timestamptz NOT NULL, lsn pg_lsn NOT NULL); \
                         GRANT USAGE ON SCHEMA pgvigil TO {role}; \
                         GRANT SELECT, INSERT, UPDATE ON pgvigil.heartbeat TO {role})"
                    ));
                }
                client
                    .batch_execute(SETUP)
                    .await
                    .map_err(|e| format!("creating pgvigil.heartbeat: {}", db_error_message(&e)))?;
            }
            *ready = true;
        }
        client
            .batch_execute(BEAT)
            .await
            .map_err(|e| format!("updating pgvigil.heartbeat: {}", db_error_message(&e)))?;
    }
    match client.query_one(AGE, &[]).await {
        Ok(r) => Ok(r.get::<_, Option<f64>>(0)),
        // A replica whose primary never created the table yet.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(db_error_message(&e)),
    }
}

/// Beats every `interval` until cancelled; reconnects after errors.
pub async fn run(pg: PostgresSettings, interval: Duration, lag: Gauge, token: CancellationToken) {
    let opts = ConnectOptions::from_settings(&pg);
    let mut session = None;
    let mut ready = false;
    let mut last_error: Option<String> = None;
    loop {
        if session
            .as_ref()
            .is_none_or(|c: &crate::pg::Connected| c.client.is_closed())
        {
            session = connect(&opts, None).await.ok();
            ready = false;
        }
        if let Some(c) = &session {
            match beat(&c.client, &mut ready).await {
                Ok(age) => {
                    if let Some(a) = age {
                        lag.set(a.max(0.0));
                    }
                    last_error = None;
                }
                Err(e) => {
                    if last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(event = "heartbeat.failed", error = %e, "heartbeat failed");
                    }
                    last_error = Some(e);
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
