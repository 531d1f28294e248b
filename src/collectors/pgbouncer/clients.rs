//! SHOW CLIENTS: pgbouncer_exporter 0.12's `pgbouncer_client_connections`, client
//! connections counted by database, user, application name and state. SHOW CLIENTS has one
//! row per client, so application names are bounded as in `pg_stat_activity_count`: the 20
//! commonest stay, the rest are counted under "other".

use std::collections::{BTreeMap, HashMap};

use super::table::Table;
use crate::metrics::{catalogue as c, Family};

/// Distinct `application_name` values kept as labels.
pub const APPLICATION_NAMES: usize = 20;

/// Families from SHOW CLIENTS.
pub fn families(t: &Table, out: &mut Vec<Family>) {
    let mut per_app: HashMap<String, usize> = HashMap::new();
    for r in 0..t.len() {
        *per_app.entry(t.label(r, "application_name")).or_default() += 1;
    }
    let mut ranked: Vec<(&String, &usize)> = per_app.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let kept: std::collections::HashSet<&str> = ranked
        .iter()
        .take(APPLICATION_NAMES)
        .map(|(a, _)| a.as_str())
        .collect();
    let mut counts: BTreeMap<[String; 4], f64> = BTreeMap::new();
    for r in 0..t.len() {
        let app = t.label(r, "application_name");
        let app = if kept.contains(app.as_str()) {
            app
        } else {
            "other".to_string()
        };
        let key = [
            t.label(r, "database"),
            t.label(r, "user"),
            app,
            t.label(r, "state"),
        ];
        *counts.entry(key).or_default() += 1.0;
    }
    let mut f = Family::new(&c::PGBOUNCER_CLIENT_CONNECTIONS);
    for (labels, n) in counts {
        f.push(labels, n);
    }
    f.emit_into(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_labels_and_folds_rare_application_names() {
        let mut text = String::from("type|user|database|state|application_name\n");
        for i in 0..25 {
            text.push_str(&format!("C|app|db|active|tool{i:02}\n"));
        }
        for _ in 0..3 {
            text.push_str("C|app|db|idle|web\n");
        }
        let mut out = Vec::new();
        families(&Table::from_fixture(&text), &mut out);
        let f = &out[0];
        let get = |app: &str, state: &str| {
            f.samples
                .iter()
                .find(|s| {
                    s.labels
                        .iter()
                        .any(|(k, v)| k == "application_name" && v == app)
                        && s.labels.iter().any(|(k, v)| k == "state" && v == state)
                })
                .map(|s| s.value)
        };
        assert_eq!(get("web", "idle"), Some(3.0));
        // web (3) and the first 19 tools by name stay; 6 tools are folded.
        assert_eq!(get("other", "active"), Some(6.0));
        assert_eq!(get("tool00", "active"), Some(1.0));
        let total: f64 = f.samples.iter().map(|s| s.value).sum();
        assert_eq!(total, 28.0);
    }
}
