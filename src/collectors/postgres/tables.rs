//! `pg_stat_user_tables_*`, `pg_statio_user_tables_*` and `pg_statio_user_indexes_*`
//! (the top tables' indexes) across ALL databases, not just the
//! DSN's: one short-lived session per database (at most `max_database_connections` at
//! once), the `top_tables` largest tables each. Runs only on the slow path, so the number
//! of statements per scrape does not grow with databases or tables.

use tokio::sync::Semaphore;
use tokio_postgres::Client;

use super::CollectError;
use crate::collectors::spec::{col, col_since, QuerySpec};
use crate::config::PostgresSettings;
use crate::metrics::{catalogue as c, Family};
use crate::pg::{connect, ConnectOptions};

const V18: i32 = 180000;

pub(super) static TABLES: QuerySpec = QuerySpec {
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
        col(
            &c::PG_STATIO_USER_TABLES_TOAST_BLOCKS_READ,
            "coalesce(io.toast_blks_read, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_TOAST_BLOCKS_HIT,
            "coalesce(io.toast_blks_hit, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_TIDX_BLOCKS_READ,
            "coalesce(io.tidx_blks_read, 0)",
        ),
        col(
            &c::PG_STATIO_USER_TABLES_TIDX_BLOCKS_HIT,
            "coalesce(io.tidx_blks_hit, 0)",
        ),
        col_since(
            &c::PG_STAT_USER_TABLES_TOTAL_VACUUM_TIME_SECONDS_TOTAL,
            "s.total_vacuum_time / 1000.0",
            V18,
        ),
        col_since(
            &c::PG_STAT_USER_TABLES_TOTAL_AUTOVACUUM_TIME_SECONDS_TOTAL,
            "s.total_autovacuum_time / 1000.0",
            V18,
        ),
        col_since(
            &c::PG_STAT_USER_TABLES_TOTAL_ANALYZE_TIME_SECONDS_TOTAL,
            "s.total_analyze_time / 1000.0",
            V18,
        ),
        col_since(
            &c::PG_STAT_USER_TABLES_TOTAL_AUTOANALYZE_TIME_SECONDS_TOTAL,
            "s.total_autoanalyze_time / 1000.0",
            V18,
        ),
    ],
    from: |_| {
        "pg_stat_user_tables s JOIN pg_statio_user_tables io ON io.relid = s.relid \
         ORDER BY pg_total_relation_size(s.relid) DESC"
            .into()
    },
    since: 0,
};

/// postgres_exporter's `statio_user_indexes`, for the indexes of the same top tables
/// (`{top}` is replaced by `postgres.top_tables`), with the database as a label.
pub(super) static INDEXES: QuerySpec = QuerySpec {
    name: "tables",
    labels: &[
        "current_database()",
        "i.schemaname",
        "i.relname",
        "i.indexrelname",
    ],
    values: &[
        col(
            &c::PG_STATIO_USER_INDEXES_IDX_BLKS_READ_TOTAL,
            "coalesce(i.idx_blks_read, 0)",
        ),
        col(
            &c::PG_STATIO_USER_INDEXES_IDX_BLKS_HIT_TOTAL,
            "coalesce(i.idx_blks_hit, 0)",
        ),
    ],
    from: |_| {
        "pg_statio_user_indexes i WHERE i.relid IN (SELECT relid FROM pg_stat_user_tables \
         ORDER BY pg_total_relation_size(relid) DESC LIMIT {top})"
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
    let (Some(built), Some(indexes)) = (TABLES.build(version), INDEXES.build(version)) else {
        return Ok(Vec::new());
    };
    let sql = format!("{} LIMIT {}", built.sql, settings.top_tables);
    let index_sql = indexes
        .sql
        .replace("{top}", &settings.top_tables.to_string());
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
        let (sql, index_sql) = (sql.as_str(), index_sql.as_str());
        let (built, indexes) = (&built, &indexes);
        async move {
            let _permit = permits.acquire().await.ok()?;
            let run = async {
                let conn = connect(opts, Some(db)).await?;
                let (rows, index_rows) = tokio::try_join!(
                    conn.client.query(sql, &[]),
                    conn.client.query(index_sql, &[])
                )?;
                let mut out = Vec::new();
                built.read(&rows, &mut out);
                indexes.read(&index_rows, &mut out);
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
