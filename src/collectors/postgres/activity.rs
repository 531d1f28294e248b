//! Sessions and locks: postgres_exporter's `pg_stat_activity_*` and `pg_locks_count` (one
//! row per database x state / mode, zeros included, so alerts never see gaps), plus the
//! per-database ages and lock waits that postgres_exporter users ask for.

use crate::collectors::spec::{col, QuerySpec};
use crate::metrics::catalogue as c;

/// postgres_exporter's activity query, unchanged in meaning.
pub static ACTIVITY: QuerySpec = QuerySpec {
    name: "stat_activity",
    labels: &["d.datname", "s.state"],
    values: &[
        col(&c::PG_STAT_ACTIVITY_COUNT, "coalesce(a.count, 0)"),
        col(
            &c::PG_STAT_ACTIVITY_MAX_TX_DURATION,
            "coalesce(a.max_tx_duration, 0)",
        ),
    ],
    from: |_| {
        "(VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'), \
                 ('fastpath function call'), ('disabled')) AS s(state) \
         CROSS JOIN pg_database d \
         LEFT JOIN (SELECT datname, state, count(*) AS count, \
                           max(extract(epoch FROM now() - xact_start)) AS max_tx_duration \
                    FROM pg_stat_activity GROUP BY datname, state) a \
           ON a.state = s.state AND a.datname = d.datname"
            .into()
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
