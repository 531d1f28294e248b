//! SHOW POOLS: per (database, user) client and server connection counts and the oldest
//! waiting client. `maxwait` is whole seconds and `maxwait_us` the rest; both are used.

use super::table::Table;
use crate::metrics::{catalogue as c, Family, MetricDef};

const GAUGES: &[(&MetricDef, &str)] = &[
    (&c::PGBOUNCER_POOLS_CLIENT_ACTIVE_CONNECTIONS, "cl_active"),
    (&c::PGBOUNCER_POOLS_CLIENT_WAITING_CONNECTIONS, "cl_waiting"),
    (
        &c::PGBOUNCER_POOLS_CLIENT_ACTIVE_CANCEL_CONNECTIONS,
        "cl_active_cancel_req",
    ),
    (
        &c::PGBOUNCER_POOLS_CLIENT_WAITING_CANCEL_CONNECTIONS,
        "cl_waiting_cancel_req",
    ),
    (&c::PGBOUNCER_POOLS_SERVER_ACTIVE_CONNECTIONS, "sv_active"),
    (
        &c::PGBOUNCER_POOLS_SERVER_ACTIVE_CANCEL_CONNECTIONS,
        "sv_active_cancel",
    ),
    (
        &c::PGBOUNCER_POOLS_SERVER_BEING_CANCELED_CONNECTIONS,
        "sv_being_canceled",
    ),
    (&c::PGBOUNCER_POOLS_SERVER_IDLE_CONNECTIONS, "sv_idle"),
    (&c::PGBOUNCER_POOLS_SERVER_USED_CONNECTIONS, "sv_used"),
    (&c::PGBOUNCER_POOLS_SERVER_TESTING_CONNECTIONS, "sv_tested"),
    (&c::PGBOUNCER_POOLS_SERVER_LOGIN_CONNECTIONS, "sv_login"),
];

/// Families from SHOW POOLS.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    for (def, column) in GAUGES {
        if !t.has(column) {
            continue;
        }
        let mut f = Family::new(def);
        for r in 0..t.len() {
            if let Some(v) = t.num(r, column) {
                f.push([t.label(r, "database"), t.label(r, "user")], v);
            }
        }
        f.emit_into(out);
    }
    let mut f = Family::new(&c::PGBOUNCER_POOLS_CLIENT_MAXWAIT_SECONDS);
    for r in 0..t.len() {
        if let Some(s) = t.num(r, "maxwait") {
            let us = t.num(r, "maxwait_us").unwrap_or(0.0);
            f.push([t.label(r, "database"), t.label(r, "user")], s + us / 1e6);
        }
    }
    f.emit_into(out);
}

/// `pgbouncer_pools_utilization_ratio`: sv_active over the database's pool_size (SHOW
/// DATABASES), labelled like the pools metrics so it joins without label_replace.
pub fn utilization(pools: &Table, databases: &Table, out: &mut Vec<Family>) {
    let mut f = Family::new(&c::PGBOUNCER_POOLS_UTILIZATION_RATIO);
    for r in 0..pools.len() {
        let db = pools.label(r, "database");
        let Some(active) = pools.num(r, "sv_active") else {
            continue;
        };
        let size = (0..databases.len())
            .find(|d| databases.text(*d, "name") == Some(db.as_str()))
            .and_then(|d| databases.num(d, "pool_size"));
        if let Some(size) = size.filter(|s| *s > 0.0) {
            f.push([db, pools.label(r, "user")], active / size);
        }
    }
    f.emit_into(out);
}
