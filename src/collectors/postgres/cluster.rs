//! Every single-row, cluster-wide statistic in one statement: recovery state and lag,
//! postmaster start, current WAL position, pg_stat_archiver, pg_stat_bgwriter,
//! pg_stat_wal (14+) and pg_stat_checkpointer (17+). One row, one round trip. Beside it,
//! postgres_exporter's `wal` and `roles` collectors: the segments in `pg_wal` (a listing,
//! which needs `pg_monitor`, so it is its own query and cannot fail this one) and each
//! role's connection limit.

use crate::collectors::spec::{col, col_since, col_until, QuerySpec, ValueCol};
use crate::metrics::catalogue as c;

const V14: i32 = 140000;
const V17: i32 = 170000;
const V18: i32 = 180000;

static VALUES: &[ValueCol] = &[
    col(&c::PG_REPLICATION_IS_REPLICA, "pg_is_in_recovery()::int"),
    col(
        &c::PG_REPLICATION_LAG_SECONDS,
        "CASE WHEN NOT pg_is_in_recovery() THEN 0 \
              WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
              ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END",
    ),
    col(
        &c::PG_REPLICATION_LAST_REPLAY_SECONDS,
        "CASE WHEN pg_is_in_recovery() \
              THEN greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) ELSE 0 END",
    ),
    col(
        &c::PG_POSTMASTER_START_TIME_SECONDS,
        "extract(epoch FROM pg_postmaster_start_time())",
    ),
    col(
        &c::PG_WAL_LSN_BYTES,
        "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                              ELSE pg_current_wal_lsn() END, '0/0')",
    ),
    col(&c::PG_STAT_ARCHIVER_ARCHIVED_COUNT, "a.archived_count"),
    col(&c::PG_STAT_ARCHIVER_FAILED_COUNT, "a.failed_count"),
    col(
        &c::PG_STAT_ARCHIVER_LAST_ARCHIVE_AGE,
        "extract(epoch FROM now() - a.last_archived_time)",
    ),
    col_until(
        &c::PG_STAT_BGWRITER_CHECKPOINTS_TIMED_TOTAL,
        "b.checkpoints_timed",
        V17,
    ),
    col_until(
        &c::PG_STAT_BGWRITER_CHECKPOINTS_REQ_TOTAL,
        "b.checkpoints_req",
        V17,
    ),
    col_until(
        &c::PG_STAT_BGWRITER_CHECKPOINT_WRITE_TIME_TOTAL,
        "b.checkpoint_write_time",
        V17,
    ),
    col_until(
        &c::PG_STAT_BGWRITER_CHECKPOINT_SYNC_TIME_TOTAL,
        "b.checkpoint_sync_time",
        V17,
    ),
    col_until(
        &c::PG_STAT_BGWRITER_BUFFERS_CHECKPOINT_TOTAL,
        "b.buffers_checkpoint",
        V17,
    ),
    col(&c::PG_STAT_BGWRITER_BUFFERS_CLEAN_TOTAL, "b.buffers_clean"),
    col(
        &c::PG_STAT_BGWRITER_MAXWRITTEN_CLEAN_TOTAL,
        "b.maxwritten_clean",
    ),
    col_until(
        &c::PG_STAT_BGWRITER_BUFFERS_BACKEND_TOTAL,
        "b.buffers_backend",
        V17,
    ),
    col_until(
        &c::PG_STAT_BGWRITER_BUFFERS_BACKEND_FSYNC_TOTAL,
        "b.buffers_backend_fsync",
        V17,
    ),
    col(&c::PG_STAT_BGWRITER_BUFFERS_ALLOC_TOTAL, "b.buffers_alloc"),
    col(
        &c::PG_STAT_BGWRITER_STATS_RESET_TOTAL,
        "coalesce(extract(epoch FROM b.stats_reset), 0)",
    ),
    col_since(&c::PG_STAT_CHECKPOINTER_NUM_TIMED_TOTAL, "k.num_timed", V17),
    col_since(
        &c::PG_STAT_CHECKPOINTER_NUM_REQUESTED_TOTAL,
        "k.num_requested",
        V17,
    ),
    col_since(
        &c::PG_STAT_CHECKPOINTER_RESTARTPOINTS_TIMED_TOTAL,
        "k.restartpoints_timed",
        V17,
    ),
    col_since(
        &c::PG_STAT_CHECKPOINTER_RESTARTPOINTS_REQ_TOTAL,
        "k.restartpoints_req",
        V17,
    ),
    col_since(
        &c::PG_STAT_CHECKPOINTER_RESTARTPOINTS_DONE_TOTAL,
        "k.restartpoints_done",
        V17,
    ),
    col_since(
        &c::PG_STAT_CHECKPOINTER_WRITE_TIME_TOTAL,
        "k.write_time",
        V17,
    ),
    col_since(&c::PG_STAT_CHECKPOINTER_SYNC_TIME_TOTAL, "k.sync_time", V17),
    col_since(
        &c::PG_STAT_CHECKPOINTER_BUFFERS_WRITTEN_TOTAL,
        "k.buffers_written",
        V17,
    ),
    col_since(
        &c::PG_STAT_CHECKPOINTER_STATS_RESET_TOTAL,
        "coalesce(extract(epoch FROM k.stats_reset), 0)",
        V17,
    ),
    col_since(&c::PG_STAT_CHECKPOINTER_NUM_DONE_TOTAL, "k.num_done", V18),
    col_since(
        &c::PG_STAT_CHECKPOINTER_SLRU_WRITTEN_TOTAL,
        "k.slru_written",
        V18,
    ),
    col_since(&c::PG_STAT_WAL_RECORDS_TOTAL, "w.wal_records", V14),
    col_since(&c::PG_STAT_WAL_FPI_TOTAL, "w.wal_fpi", V14),
    col_since(&c::PG_STAT_WAL_BYTES_TOTAL, "w.wal_bytes", V14),
    col_since(
        &c::PG_STAT_WAL_BUFFERS_FULL_TOTAL,
        "w.wal_buffers_full",
        V14,
    ),
    ValueCol {
        def: &c::PG_STAT_WAL_WRITE_TOTAL,
        expr: "w.wal_write",
        since: V14,
        until: V18,
    },
    ValueCol {
        def: &c::PG_STAT_WAL_SYNC_TOTAL,
        expr: "w.wal_sync",
        since: V14,
        until: V18,
    },
    ValueCol {
        def: &c::PG_STAT_WAL_WRITE_TIME_SECONDS_TOTAL,
        expr: "w.wal_write_time / 1000.0",
        since: V14,
        until: V18,
    },
    ValueCol {
        def: &c::PG_STAT_WAL_SYNC_TIME_SECONDS_TOTAL,
        expr: "w.wal_sync_time / 1000.0",
        since: V14,
        until: V18,
    },
];

/// The single-row cluster query.
pub static CLUSTER: QuerySpec = QuerySpec {
    name: "cluster",
    labels: &[],
    values: VALUES,
    from: |v| {
        let mut from = String::from("pg_stat_archiver a CROSS JOIN pg_stat_bgwriter b");
        if v >= V14 {
            from.push_str(" CROSS JOIN pg_stat_wal w");
        }
        if v >= V17 {
            from.push_str(" CROSS JOIN pg_stat_checkpointer k");
        }
        from
    },
    since: 100000,
};

static WAL_DIR_VALUES: &[ValueCol] = &[
    col(&c::PG_WAL_SEGMENTS, "count(*)"),
    col(&c::PG_WAL_SIZE_BYTES, "coalesce(sum(size), 0)"),
];

/// `pg_wal_segments`, `pg_wal_size_bytes`: the segment files in `pg_wal`.
pub static WAL_DIR: QuerySpec = QuerySpec {
    name: "wal",
    labels: &[],
    values: WAL_DIR_VALUES,
    from: |_| "pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'".into(),
    since: 100000,
};

static ROLES_VALUES: &[ValueCol] = &[col(&c::PG_ROLES_CONNECTION_LIMIT, "rolconnlimit")];

/// `pg_roles_connection_limit{rolname}` (-1: no limit).
pub static ROLES: QuerySpec = QuerySpec {
    name: "roles",
    labels: &["rolname"],
    values: ROLES_VALUES,
    from: |_| "pg_roles".into(),
    since: 100000,
};
