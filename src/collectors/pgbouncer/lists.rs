//! SHOW LISTS: internal list sizes, one gauge per known list. Lists added later
//! (`peers`, `peer_pools`, `dns_pending`) are not exported, as pgbouncer_exporter does.

use super::table::Table;
use crate::metrics::{catalogue as c, Family, MetricDef};

const LISTS: &[(&str, &MetricDef)] = &[
    ("databases", &c::PGBOUNCER_DATABASES),
    ("users", &c::PGBOUNCER_USERS),
    ("pools", &c::PGBOUNCER_POOLS),
    ("free_clients", &c::PGBOUNCER_FREE_CLIENTS),
    ("used_clients", &c::PGBOUNCER_USED_CLIENTS),
    ("login_clients", &c::PGBOUNCER_LOGIN_CLIENTS),
    ("free_servers", &c::PGBOUNCER_FREE_SERVERS),
    ("used_servers", &c::PGBOUNCER_USED_SERVERS),
    ("dns_names", &c::PGBOUNCER_CACHED_DNS_NAMES),
    ("dns_zones", &c::PGBOUNCER_CACHED_DNS_ZONES),
    ("dns_queries", &c::PGBOUNCER_IN_FLIGHT_DNS_QUERIES),
];

/// Families from SHOW LISTS.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    for r in 0..t.len() {
        let Some(name) = t.text(r, "list") else {
            continue;
        };
        let Some((_, def)) = LISTS.iter().find(|(l, _)| *l == name) else {
            continue;
        };
        if let Some(v) = t.num(r, "items") {
            let mut f = Family::new(def);
            f.push(Vec::<String>::new(), v);
            out.push(f);
        }
    }
}
