//! SHOW DATABASES: configured limits and current connections per database entry.
//! PgBouncer 1.24 renamed `reserve_pool` to `reserve_pool_size`; both feed one metric.

use super::table::Table;
use crate::metrics::{catalogue as c, Family, MetricDef};

const GAUGES: &[(&MetricDef, &[&str])] = &[
    (&c::PGBOUNCER_DATABASES_POOL_SIZE, &["pool_size"]),
    (
        &c::PGBOUNCER_DATABASES_RESERVE_POOL,
        &["reserve_pool", "reserve_pool_size"],
    ),
    (
        &c::PGBOUNCER_DATABASES_MAX_CONNECTIONS,
        &["max_connections"],
    ),
    (
        &c::PGBOUNCER_DATABASES_CURRENT_CONNECTIONS,
        &["current_connections"],
    ),
    (&c::PGBOUNCER_DATABASES_PAUSED, &["paused"]),
    (&c::PGBOUNCER_DATABASES_DISABLED, &["disabled"]),
];

/// Families from SHOW DATABASES.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    for (def, columns) in GAUGES {
        let Some(column) = columns.iter().find(|c| t.has(c)) else {
            continue;
        };
        let mut f = Family::new(def);
        for r in 0..t.len() {
            if let Some(v) = t.num(r, column) {
                f.push(
                    [
                        "name",
                        "host",
                        "port",
                        "database",
                        "force_user",
                        "pool_mode",
                    ]
                    .map(|l| t.label(r, l)),
                    v,
                );
            }
        }
        f.emit_into(out);
    }
}
