//! SHOW STATS_TOTALS: per-database counters since start; times are microseconds and are
//! exported in seconds. Columns of newer versions (server_assignment_count 1.23, parse and
//! bind counts 1.24) appear when the server has them.

use super::table::Table;
use crate::metrics::{catalogue as c, Family, MetricDef};

const COUNTERS: &[(&MetricDef, &str, f64)] = &[
    (
        &c::PGBOUNCER_STATS_TOTALS_QUERIES_POOLED_TOTAL,
        "query_count",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_QUERIES_DURATION_SECONDS_TOTAL,
        "query_time",
        1e-6,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_RECEIVED_BYTES_TOTAL,
        "bytes_received",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_SENT_BYTES_TOTAL,
        "bytes_sent",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_CLIENT_WAIT_SECONDS_TOTAL,
        "wait_time",
        1e-6,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_SQL_TRANSACTIONS_POOLED_TOTAL,
        "xact_count",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_SERVER_IN_TRANSACTION_SECONDS_TOTAL,
        "xact_time",
        1e-6,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_SERVER_ASSIGNMENTS_TOTAL,
        "server_assignment_count",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_CLIENT_PARSES_TOTAL,
        "client_parse_count",
        1.0,
    ),
    (
        &c::PGBOUNCER_STATS_TOTALS_SERVER_PARSES_TOTAL,
        "server_parse_count",
        1.0,
    ),
    (&c::PGBOUNCER_STATS_TOTALS_BINDS_TOTAL, "bind_count", 1.0),
];

/// Families from SHOW STATS_TOTALS.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    for (def, column, factor) in COUNTERS {
        if !t.has(column) {
            continue;
        }
        let mut f = Family::new(def);
        for r in 0..t.len() {
            if let Some(v) = t.num(r, column) {
                f.push([t.label(r, "database")], v * factor);
            }
        }
        f.emit_into(out);
    }
}
