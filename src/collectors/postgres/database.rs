//! pg_stat_database (with its conflicts view and the xid/mxid ages from pg_database) on
//! every scrape, and database sizes on the slow path (`pg_database_size()` is what makes
//! postgres_exporter scrapes slow: it stats every file of every database).

use tokio_postgres::Client;

use super::CollectError;
use crate::collectors::spec::{col, col_since, QuerySpec};
use crate::metrics::{catalogue as c, Family};

/// pg_stat_database + pg_stat_database_conflicts + wraparound ages, one row per database.
/// The shared-objects row (datid 0, no datname) is skipped, as postgres_exporter 0.14+ does.
pub static STAT_DATABASE: QuerySpec = QuerySpec {
    name: "stat_database",
    labels: &["s.datid", "s.datname"],
    values: &[
        col(&c::PG_STAT_DATABASE_NUMBACKENDS, "s.numbackends"),
        col(&c::PG_STAT_DATABASE_XACT_COMMIT, "s.xact_commit"),
        col(&c::PG_STAT_DATABASE_XACT_ROLLBACK, "s.xact_rollback"),
        col(&c::PG_STAT_DATABASE_BLKS_READ, "s.blks_read"),
        col(&c::PG_STAT_DATABASE_BLKS_HIT, "s.blks_hit"),
        col(&c::PG_STAT_DATABASE_TUP_RETURNED, "s.tup_returned"),
        col(&c::PG_STAT_DATABASE_TUP_FETCHED, "s.tup_fetched"),
        col(&c::PG_STAT_DATABASE_TUP_INSERTED, "s.tup_inserted"),
        col(&c::PG_STAT_DATABASE_TUP_UPDATED, "s.tup_updated"),
        col(&c::PG_STAT_DATABASE_TUP_DELETED, "s.tup_deleted"),
        col(&c::PG_STAT_DATABASE_CONFLICTS, "s.conflicts"),
        col(&c::PG_STAT_DATABASE_TEMP_FILES, "s.temp_files"),
        col(&c::PG_STAT_DATABASE_TEMP_BYTES, "s.temp_bytes"),
        col(&c::PG_STAT_DATABASE_DEADLOCKS, "s.deadlocks"),
        col(&c::PG_STAT_DATABASE_BLK_READ_TIME, "s.blk_read_time"),
        col(&c::PG_STAT_DATABASE_BLK_WRITE_TIME, "s.blk_write_time"),
        col(
            &c::PG_STAT_DATABASE_STATS_RESET,
            "coalesce(extract(epoch from s.stats_reset), 0)",
        ),
        col_since(
            &c::PG_STAT_DATABASE_ACTIVE_TIME_SECONDS_TOTAL,
            "s.active_time / 1000.0",
            140000,
        ),
        col(
            &c::PG_STAT_DATABASE_CONFLICTS_CONFL_TABLESPACE,
            "x.confl_tablespace",
        ),
        col(&c::PG_STAT_DATABASE_CONFLICTS_CONFL_LOCK, "x.confl_lock"),
        col(
            &c::PG_STAT_DATABASE_CONFLICTS_CONFL_SNAPSHOT,
            "x.confl_snapshot",
        ),
        col(
            &c::PG_STAT_DATABASE_CONFLICTS_CONFL_BUFFERPIN,
            "x.confl_bufferpin",
        ),
        col(
            &c::PG_STAT_DATABASE_CONFLICTS_CONFL_DEADLOCK,
            "x.confl_deadlock",
        ),
    ],
    from: |_| {
        "pg_stat_database s LEFT JOIN pg_stat_database_conflicts x ON x.datid = s.datid \
         WHERE s.datname IS NOT NULL"
            .into()
    },
    since: 0,
};

/// Per database: oldest transaction, longest idle-in-transaction, blocked sessions, the
/// longest lock wait (pgvigil's own backend excluded), wraparound ages and the connection
/// limit. One statement for all of it.
pub static PER_DATABASE: QuerySpec = QuerySpec {
    name: "per_database",
    labels: &["d.datname"],
    values: &[
        col(
            &c::PG_STAT_ACTIVITY_OLDEST_XACT_SECONDS,
            "coalesce(max(extract(epoch FROM now() - a.xact_start)), 0)",
        ),
        col(
            &c::PG_STAT_ACTIVITY_OLDEST_IDLE_IN_TRANSACTION_SECONDS,
            "coalesce(max(extract(epoch FROM now() - a.state_change)) \
               FILTER (WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)')), 0)",
        ),
        col(&c::PG_LOCKS_BLOCKED_SESSIONS, "count(a.pid) FILTER (WHERE a.wait_event_type = 'Lock')"),
        col(
            &c::PG_LOCKS_MAX_WAIT_SECONDS,
            "coalesce(max(extract(epoch FROM now() - l.waitstart)), 0)",
        ),
        col(&c::PG_DATABASE_XID_AGE, "max(age(d.datfrozenxid))"),
        col(&c::PG_DATABASE_MXID_AGE, "max(mxid_age(d.datminmxid))"),
        col(
            &c::PG_DATABASE_WRAPAROUND_RATIO,
            "max(greatest(age(d.datfrozenxid), mxid_age(d.datminmxid)))::float8 / 2147483648",
        ),
        col(&c::PG_DATABASE_CONNECTION_LIMIT, "max(d.datconnlimit)"),
        // postgres_exporter's database_wraparound collector: connectable databases only.
        col(
            &c::PG_DATABASE_WRAPAROUND_AGE_DATFROZENXID_SECONDS,
            "max(age(d.datfrozenxid)) FILTER (WHERE d.datallowconn)",
        ),
        col(
            &c::PG_DATABASE_WRAPAROUND_AGE_DATMINMXID_SECONDS,
            "max(mxid_age(d.datminmxid)) FILTER (WHERE d.datallowconn)",
        ),
    ],
    from: |v| {
        // pg_locks.waitstart exists from 14; before that, the wait started no later than
        // the statement that is waiting.
        let wait = if v >= 140000 {
            "(SELECT pid, min(waitstart) AS waitstart FROM pg_locks WHERE NOT granted GROUP BY pid)"
        } else {
            "(SELECT pid, query_start AS waitstart FROM pg_stat_activity WHERE wait_event_type = 'Lock')"
        };
        format!(
            "pg_database d \
             LEFT JOIN pg_stat_activity a ON a.datid = d.oid AND a.pid <> pg_backend_pid() \
             LEFT JOIN {wait} l ON l.pid = a.pid \
             GROUP BY d.datname"
        )
    },
    since: 0,
};

/// Database sizes, all databases as postgres_exporter does (templates included); one the
/// role may not connect to reports no size rather than failing the whole query.
pub static SIZES: QuerySpec = QuerySpec {
    name: "database_size",
    labels: &["datname"],
    values: &[col(
        &c::PG_DATABASE_SIZE_BYTES,
        "CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END",
    )],
    from: |_| "pg_database".into(),
    since: 0,
};

/// Specs that run on the slow path (for tests that check every spec builds).
#[cfg(test)]
pub static SLOW_SPECS: &[&QuerySpec] = &[&SIZES];

/// Runs the sizes query.
pub(super) async fn collect_sizes(
    client: &Client,
    version: i32,
) -> Result<Vec<Family>, CollectError> {
    let mut out = Vec::new();
    if let Some(b) = SIZES.build(version) {
        let rows = client.query(b.sql.as_str(), &[]).await?;
        b.read(&rows, &mut out);
    }
    Ok(out)
}
