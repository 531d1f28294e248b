//! SHOW CONFIG (`max_client_conn`, `max_user_connections`) and SHOW VERSION.

use super::table::Table;
use crate::metrics::{catalogue as c, Family};

/// Families from SHOW CONFIG.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    for (key, def) in [
        (
            "max_client_conn",
            &c::PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS,
        ),
        (
            "max_user_connections",
            &c::PGBOUNCER_CONFIG_MAX_USER_CONNECTIONS,
        ),
    ] {
        if let Some(r) = (0..t.len()).find(|r| t.text(*r, "key") == Some(key)) {
            if let Some(v) = t.num(r, "value") {
                let mut f = Family::new(def);
                f.push(Vec::<String>::new(), v);
                out.push(f);
            }
        }
    }
}

/// `pgbouncer_version_info{version="PgBouncer 1.18.0"} 1` from SHOW VERSION.
pub fn version(t: &Table, out: &mut Vec<Family>) {
    if let Some(v) = t.text(0, "version") {
        let mut f = Family::new(&c::PGBOUNCER_VERSION_INFO);
        f.push([v.to_string()], 1.0);
        out.push(f);
    }
}
