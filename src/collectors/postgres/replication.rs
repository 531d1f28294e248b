//! Streaming replication seen from the primary (`pg_stat_replication`, one row per
//! standby, with lag in seconds and bytes) and replication slots. On a replica the
//! reference position is the received WAL, so these queries also work on a cascading
//! standby, where postgres_exporter 0.11's slot query errors out.

use crate::collectors::spec::{col, col_since, QuerySpec};
use crate::metrics::catalogue as c;

const POSITION: &str =
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)";

/// Per-standby replication state.
pub static STAT_REPLICATION: QuerySpec = QuerySpec {
    name: "stat_replication",
    labels: &[
        "r.application_name",
        "r.client_addr",
        "r.state",
        "sl.slot_name",
    ],
    values: &[
        col(
            &c::PG_STAT_REPLICATION_PG_CURRENT_WAL_LSN_BYTES,
            "pg_wal_lsn_diff(p.pos, '0/0')",
        ),
        col(
            &c::PG_STAT_REPLICATION_PG_WAL_LSN_DIFF,
            "pg_wal_lsn_diff(p.pos, r.replay_lsn)",
        ),
        col(
            &c::PG_STAT_REPLICATION_WRITE_LAG_SECONDS,
            "extract(epoch FROM r.write_lag)",
        ),
        col(
            &c::PG_STAT_REPLICATION_FLUSH_LAG_SECONDS,
            "extract(epoch FROM r.flush_lag)",
        ),
        col(
            &c::PG_STAT_REPLICATION_REPLAY_LAG_SECONDS,
            "extract(epoch FROM r.replay_lag)",
        ),
        col(
            &c::PG_STAT_REPLICATION_WRITE_LAG_BYTES,
            "pg_wal_lsn_diff(r.sent_lsn, r.write_lsn)",
        ),
        col(
            &c::PG_STAT_REPLICATION_FLUSH_LAG_BYTES,
            "pg_wal_lsn_diff(r.sent_lsn, r.flush_lsn)",
        ),
        col(
            &c::PG_STAT_REPLICATION_REPLAY_LAG_BYTES,
            "pg_wal_lsn_diff(r.sent_lsn, r.replay_lsn)",
        ),
        col(
            &c::PG_STAT_REPLICATION_REPLY_TIME,
            "extract(epoch FROM r.reply_time)",
        ),
    ],
    from: |_| {
        format!(
            "pg_stat_replication r \
             LEFT JOIN pg_replication_slots sl ON sl.active_pid = r.pid \
             CROSS JOIN (SELECT {POSITION} AS pos) p"
        )
    },
    since: 100000,
};

/// Replication slots: active flag and retained WAL.
pub static SLOTS: QuerySpec = QuerySpec {
    name: "replication_slots",
    labels: &["s.slot_name", "s.database"],
    values: &[
        col(&c::PG_REPLICATION_SLOTS_ACTIVE, "s.active::int"),
        col(
            &c::PG_REPLICATION_SLOTS_PG_WAL_LSN_DIFF,
            "pg_wal_lsn_diff(p.pos, s.restart_lsn)",
        ),
        col_since(
            &c::PG_REPLICATION_SLOTS_SAFE_WAL_SIZE_BYTES,
            "s.safe_wal_size",
            130000,
        ),
    ],
    from: |_| format!("pg_replication_slots s CROSS JOIN (SELECT {POSITION} AS pos) p"),
    since: 100000,
};
