//! `pg_stat_user_tables_*` and `pg_statio_user_tables_*` across ALL databases, not just the
//! DSN's: one short-lived session per database (at most `max_database_connections` at
//! once), the `top_tables` largest tables each. Runs only on the slow path, so the number
//! of statements per scrape does not grow with databases or tables.

use tokio::sync::Semaphore;
use tokio_postgres::Client;

use super::CollectError;
use crate::collectors::spec::{col, QuerySpec};
use crate::config::PostgresSettings;
use crate::metrics::{catalogue as c, Family};
use crate::pg::{connect, ConnectOptions};

static TABLES: QuerySpec = QuerySpec {
    name: "tables",
    labels: &["current_database()", "s.schemaname", "s.relname"],
    values: &[
        col(&c::PG_STAT_USER_TABLES_SEQ_SCAN, "s.seq_scan"),
        col(&c::PG_STAT_USER_TABLES_SEQ_TUP_READ, "s.seq_tup_read"),
        col(&c::PG_STAT_USER_TABLES_IDX_SCAN, "coalesce(s.idx_scan, 0)"),
        col(
            &c::PG_STAT_USER_TABLES_IDX_TUP_FETCH,
            "coalesce(s.idx_tup_fetch, 0)",
        ),
        col(&c::PG_STAT_USER_TABLES_N_TUP_INS, "s.n_tup_ins"),
        col(&c::PG_STAT_USER_TABLES_N_TUP_UPD, "s.n_tup_upd"),
        col(&c::PG_STAT_USER_TABLES_N_TUP_DEL, "s.n_tup_del"),
        col(&c::PG_STAT_USER_TABLES_N_TUP_HOT_UPD, "s.n_tup_hot_upd"),
        col(&c::PG_STAT_USER_TABLES_N_LIVE_TUP, "s.n_live_tup"),
        col(&c::PG_STAT_USER_TABLES_N_DEAD_TUP, "s.n_dead_tup"),
        col(
            &c::PG_STAT_USER_TABLES_N_MOD_SINCE_ANALYZE,
            "s.n_mod_since_analyze",
        ),
        col(
            &c::PG_STAT_USER_TABLES_LAST_VACUUM,
            "coalesce(extract(epoch FROM s.last_vacuum), 0)",
        ),
        col(
            &c::PG_STAT_USER_TABLES_LAST_AUTOVACUUM,
            "coalesce(extract(epoch FROM s.last_autovacuum), 0)",
        ),
        col(
            &c::PG_STAT_USER_TABLES_LAST_ANALYZE,
            "coalesce(extract(epoch FROM s.last_analyze), 0)",
        ),
        col(
            &c::PG_STAT_USER_TABLES_LAST_AUTOANALYZE,
            "coalesce(extract(epoch FROM s.last_autoanalyze), 0)",
        ),
        col(&c::PG_STAT_USER_TABLES_VACUUM_COUNT, "s.vacuum_count"),
        col(
            &c::PG_STAT_USER_TABLES_AUTOVACUUM_COUNT,
            "s.autovacuum_count",
        ),
        col(&c::PG_STAT_USER_TABLES_ANALYZE_COUNT, "s.analyze_count"),
        col(
            &c::PG_STAT_USER_TABLES_AUTOANALYZE_COUNT,
            "s.autoanalyze_count",
        ),
        col(
            &c::PG_STAT_USER_TABLES_TABLE_SIZE_BYTES,
            "pg_table_size(s.relid)",
        ),
        col(
            &c::PG_STAT_USER_TABLES_INDEX_SIZE_BYTES,
            "pg_indexes_size(s.relid)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_HEAP_BLOCKS_READ,
            "coalesce(io.heap_blks_read, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_HEAP_BLOCKS_HIT,
            "coalesce(io.heap_blks_hit, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_IDX_BLOCKS_READ,
            "coalesce(io.idx_blks_read, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_IDX_BLOCKS_HIT,
            "coalesce(io.idx_blks_hit, 0)",
        ),
    ],
    from: |_| {
        "pg_stat_user_tables s JOIN pg_statio_user_tables io ON io.relid = s.relid \
         ORDER BY pg_total_relation_size(s.relid) DESC"
            .into()
    },
    since: 0,
};

const DATABASES: &str = "SELECT datname::text FROM pg_database \
    WHERE datallowconn AND NOT datistemplate AND has_database_privilege(oid, 'CONNECT') ORDER BY 1";

/// Collects per-table stats from every database (or the configured list).
pub(super) async fn collect(
    client: &Client,
    opts: &ConnectOptions,
    settings: &PostgresSettings,
    permits: &Semaphore,
    version: i32,
) -> Result<Vec<Family>, CollectError> {
    let Some(built) = TABLES.build(version) else {
        return Ok(Vec::new());
    };
    let sql = format!("{} LIMIT {}", built.sql, settings.top_tables);
    let databases: Vec<String> = if settings.databases.is_empty() {
        client
            .query(DATABASES, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        settings.databases.clone()
    };
    let runs = databases.iter().map(|db| {
        let sql = sql.as_str();
        let built = &built;
        async move {
            let _permit = permits.acquire().await.ok()?;
            let run = async {
                let conn = connect(opts, Some(db)).await?;
                let rows = conn.client.query(sql, &[]).await?;
                let mut out = Vec::new();
                built.read(&rows, &mut out);
                Ok::<_, CollectError>(out)
            };
            match run.await {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(event = "collector.failed", collector = "tables", database = %db, error = %e, "per-table stats failed for one database");
                    None
                }
            }
        }
    });
    let results = futures_util::future::join_all(runs).await;
    // Merge per-database families into one family per metric.
    let mut merged: Vec<Family> = Vec::new();
    for fams in results.into_iter().flatten() {
        for f in fams {
            match merged.iter_mut().find(|m| m.name == f.name) {
                Some(m) => m.samples.extend(f.samples),
                None => merged.push(f),
            }
        }
    }
    Ok(merged)
}
