//! Sessions and locks: postgres_exporter's `pg_stat_activity_*` and `pg_locks_count` (one
//! row per database x state / mode, zeros included, so alerts never see gaps), plus the
//! per-database ages and lock waits that postgres_exporter users ask for.

use crate::collectors::spec::{col, QuerySpec};
use crate::metrics::catalogue as c;

/// Distinct `usename` and `application_name` values kept as labels; the rest of each
/// becomes "other" (and is counted in `pgvigil_stat_activity_folded_values`), so a
/// client that sets a unique application name per connection cannot blow up the series.
pub const ACTIVITY_LABEL_VALUES: u32 = 20;

/// The sessions (pgvigil's own excluded) with `usename` and `application_name` folded to
/// "other" beyond the commonest [`ACTIVITY_LABEL_VALUES`]. pg_stat_activity is read three
/// times, but from the one snapshot a transaction takes of it, so the ranks agree.
fn sessions() -> String {
    let n = ACTIVITY_LABEL_VALUES;
    format!(
        "(SELECT a.datname, a.state, a.backend_type, a.wait_event_type, a.wait_event, \
                 a.xact_start, a.state_change, \
                 CASE WHEN u.rank <= {n} THEN a.usename::text ELSE 'other' END AS usename, \
                 CASE WHEN p.rank <= {n} THEN a.application_name ELSE 'other' END AS application_name \
          FROM pg_stat_activity a \
          JOIN (SELECT usename, row_number() OVER (ORDER BY count(*) DESC, usename) AS rank \
                FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY usename) u \
            ON u.usename IS NOT DISTINCT FROM a.usename \
          JOIN (SELECT application_name, \
                       row_number() OVER (ORDER BY count(*) DESC, application_name) AS rank \
                FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY application_name) p \
            ON p.application_name IS NOT DISTINCT FROM a.application_name \
          WHERE a.pid <> pg_backend_pid())"
    )
}

/// postgres_exporter 0.19's activity query: one row per database x state with zeros
/// (so alerts never see gaps), split by user, application, backend type and wait event
/// where there are sessions.
pub static ACTIVITY: QuerySpec = QuerySpec {
    name: "stat_activity",
    labels: &[
        "d.datname",
        "s.state",
        "a.usename",
        "a.application_name",
        "a.backend_type",
        "a.wait_event_type",
        "a.wait_event",
    ],
    values: &[
        col(&c::PG_STAT_ACTIVITY_COUNT, "coalesce(a.count, 0)"),
        col(
            &c::PG_STAT_ACTIVITY_MAX_TX_DURATION,
            "coalesce(a.max_tx_duration, 0)",
        ),
    ],
    from: |_| {
        format!(
            "(VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'), \
                     ('fastpath function call'), ('disabled')) AS s(state) \
             CROSS JOIN pg_database d \
             LEFT JOIN (SELECT datname, state, usename, application_name, backend_type, \
                               wait_event_type, wait_event, count(*) AS count, \
                               max(extract(epoch FROM now() - xact_start)) AS max_tx_duration \
                        FROM {} x GROUP BY 1, 2, 3, 4, 5, 6, 7) a \
               ON a.state = s.state AND a.datname = d.datname",
            sessions()
        )
    },
    since: 0,
};

/// How many label values [`ACTIVITY`] folded into "other", per label.
pub static ACTIVITY_FOLDED: QuerySpec = QuerySpec {
    name: "stat_activity_folded",
    labels: &["k.label"],
    values: &[col(
        &c::PGVIGIL_STAT_ACTIVITY_FOLDED_VALUES,
        "count(r.rank) FILTER (WHERE r.rank > r.kept)",
    )],
    from: |_| {
        format!(
        "(VALUES ('usename'), ('application_name')) AS k(label) \
         LEFT JOIN (SELECT 'usename' AS label, {ACTIVITY_LABEL_VALUES} AS kept, \
                           row_number() OVER (ORDER BY count(*) DESC) AS rank \
                    FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY usename \
                    UNION ALL \
                    SELECT 'application_name', {ACTIVITY_LABEL_VALUES}, \
                           row_number() OVER (ORDER BY count(*) DESC) \
                    FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY application_name) r \
           ON r.label = k.label \
         GROUP BY k.label"
        )
    },
    since: 0,
};

/// postgres_exporter's `long_running_transactions`: open transactions that are not idle.
pub static LONG_RUNNING: QuerySpec = QuerySpec {
    name: "long_running_transactions",
    labels: &[],
    values: &[
        col(&c::PG_LONG_RUNNING_TRANSACTIONS, "count(*)"),
        col(
            &c::PG_LONG_RUNNING_TRANSACTIONS_OLDEST_TIMESTAMP_SECONDS,
            "coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)",
        ),
    ],
    from: |_| {
        "pg_stat_activity WHERE state IS DISTINCT FROM 'idle' AND query NOT LIKE 'autovacuum:%' \
         AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            .into()
    },
    since: 0,
};

/// postgres_exporter's `process_idle` histogram (its buckets), one per idle state and
/// application. postgres_exporter 0.19 emits only one of these rows and counts every
/// session in the buckets; this counts the idle ones, each in its own histogram.
pub static PROCESS_IDLE: QuerySpec = QuerySpec {
    name: "process_idle",
    labels: &["x.state", "x.application_name"],
    values: &[col(
        &c::PG_PROCESS_IDLE_SECONDS,
        "ARRAY[sum(x.idle), count(*), \
               1, count(*) FILTER (WHERE x.idle <= 1), 2, count(*) FILTER (WHERE x.idle <= 2), \
               5, count(*) FILTER (WHERE x.idle <= 5), 15, count(*) FILTER (WHERE x.idle <= 15), \
               30, count(*) FILTER (WHERE x.idle <= 30), 60, count(*) FILTER (WHERE x.idle <= 60), \
               90, count(*) FILTER (WHERE x.idle <= 90), 120, count(*) FILTER (WHERE x.idle <= 120), \
               300, count(*) FILTER (WHERE x.idle <= 300)]",
    )],
    from: |_| {
        format!(
            "(SELECT s.state, s.application_name, \
                     extract(epoch FROM now() - s.state_change)::float8 AS idle \
              FROM {} s WHERE s.state ~ '^idle') x GROUP BY 1, 2",
            sessions()
        )
    },
    since: 0,
};

/// postgres_exporter's lock count: every database x 9 modes, zeros included.
pub static LOCKS: QuerySpec = QuerySpec {
    name: "locks",
    labels: &["d.datname", "m.mode"],
    values: &[col(&c::PG_LOCKS_COUNT, "coalesce(l.count, 0)")],
    from: |_| {
        "(VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), ('shareupdateexclusivelock'), \
                 ('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), ('accessexclusivelock'), \
                 ('sireadlock')) AS m(mode) \
         CROSS JOIN pg_database d \
         LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks \
                    WHERE database IS NOT NULL GROUP BY database, lower(mode)) l \
           ON l.mode = m.mode AND l.database = d.oid"
            .into()
    },
    since: 0,
};
