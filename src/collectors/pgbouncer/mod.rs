//! PgBouncer's admin console, for one or several PgBouncer processes. The console speaks
//! only the simple query protocol and refuses unknown startup parameters, so each target
//! keeps one plain session (see `pg::connect_admin_console`) and runs seven SHOW commands
//! per scrape, pipelined, each under `pgbouncer.timeout`. A target that is down reports
//! `pgbouncer_up 0` and nothing else; the other targets and the rest of the page are
//! unaffected. Series carry an `instance` label only when several targets are configured.

mod clients;
mod config;
mod databases;
mod lists;
mod pools;
mod stats;
pub mod table;

use std::borrow::Cow;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::config::{PgbouncerSettings, PgbouncerTarget};
use crate::metrics::{catalogue as c, Family};
use crate::pg::{connect_admin_console, db_error_message};
use table::Table;

const COMMANDS: [&str; 7] = [
    "SHOW VERSION",
    "SHOW LISTS",
    "SHOW CONFIG",
    "SHOW DATABASES",
    "SHOW POOLS",
    "SHOW STATS_TOTALS",
    "SHOW CLIENTS",
];

/// The results of [`COMMANDS`], in order.
pub type Tables = [Table; 7];

struct Target {
    settings: PgbouncerTarget,
    client: Mutex<Option<Client>>,
}

/// Scrapes the configured PgBouncers.
pub struct PgbouncerCollector {
    targets: Vec<Target>,
    timeout: Duration,
}

/// Parses the SHOW results into families.
pub fn families_from_tables(tables: &Tables, out: &mut Vec<Family>) {
    let [version, lists, cfg, dbs, pools_t, stats_t, clients_t] = tables;
    config::version(version, out);
    lists::families(lists, out);
    config::families(cfg, out);
    databases::families(dbs, out);
    pools::families(pools_t, out);
    pools::utilization(pools_t, dbs, out);
    stats::families(stats_t, out);
    clients::families(clients_t, out);
}

impl PgbouncerCollector {
    /// A collector for the configured targets (no connection is made yet).
    pub fn new(settings: &PgbouncerSettings) -> Option<Self> {
        if settings.targets.is_empty() {
            return None;
        }
        Some(Self {
            targets: settings
                .targets
                .iter()
                .map(|t| Target {
                    settings: t.clone(),
                    client: Mutex::new(None),
                })
                .collect(),
            timeout: settings.timeout,
        })
    }

    async fn scrape_target(&self, t: &Target) -> Result<Vec<Family>, String> {
        let mut guard = t.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(
                connect_admin_console(&t.settings.dsn, &t.settings.tls, self.timeout)
                    .await
                    .map_err(|e| e.to_string())?
                    .0,
            );
        }
        let Some(client) = guard.as_ref() else {
            return Err("no connection".into());
        };
        let run = join_all(COMMANDS.iter().map(|cmd| client.simple_query(cmd)));
        let results = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                *guard = None;
                return Err(format!("SHOW commands timed out after {:?}", self.timeout));
            }
        };
        let mut tables: Tables = Default::default();
        for (i, res) in results.into_iter().enumerate() {
            match res {
                Ok(msgs) => tables[i] = Table::from_messages(&msgs),
                Err(e) => {
                    if client.is_closed() {
                        *guard = None;
                    }
                    return Err(format!("{}: {}", COMMANDS[i], db_error_message(&e)));
                }
            }
        }
        let mut out = Vec::new();
        families_from_tables(&tables, &mut out);
        Ok(out)
    }
}

#[async_trait::async_trait]
impl super::Collector for PgbouncerCollector {
    /// Scrapes every target concurrently; appends merged families and `pgbouncer_up`, and
    /// records each target as collector `pgbouncer:<instance>`. Up when any target is.
    async fn collect(&self, metrics: &super::ScrapeMetrics, out: &mut Vec<Family>) -> bool {
        let multi = self.targets.len() > 1;
        let runs = self.targets.iter().map(|t| async move {
            let start = Instant::now();
            let res = self.scrape_target(t).await;
            (t, res, start.elapsed())
        });
        let mut up = Family::new(&c::PGBOUNCER_UP);
        let mut merged: Vec<Family> = Vec::new();
        let mut any_up = false;
        for (t, res, took) in join_all(runs).await {
            let instance = t.settings.instance.clone();
            let ok = match res {
                Ok(fams) => {
                    for mut f in fams {
                        if multi {
                            for s in &mut f.samples {
                                s.labels.push((Cow::Borrowed("instance"), instance.clone()));
                            }
                        }
                        match merged.iter_mut().find(|m| m.name == f.name) {
                            Some(m) => m.samples.append(&mut f.samples),
                            None => merged.push(f),
                        }
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(event = "collector.failed", collector = "pgbouncer", instance = %instance, error = %e, "PgBouncer scrape failed");
                    false
                }
            };
            let labels = if multi {
                vec![(Cow::Borrowed("instance"), instance.clone())]
            } else {
                Vec::new()
            };
            up.push_labeled(labels, if ok { 1.0 } else { 0.0 });
            metrics.record(&format!("pgbouncer:{instance}"), took, ok);
            any_up |= ok;
        }
        out.push(up);
        out.append(&mut merged);
        any_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(version: &str) -> Tables {
        let f = |name: &str| {
            let path = format!(
                "{}/src/collectors/pgbouncer/fixtures/{name}-{version}.txt",
                env!("CARGO_MANIFEST_DIR")
            );
            let fallback = format!(
                "{}/src/collectors/pgbouncer/fixtures/{name}-1.18.txt",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path)
                .or_else(|_| std::fs::read_to_string(&fallback))
                .unwrap_or_default();
            Table::from_fixture(&text)
        };
        [
            f("version"),
            f("lists"),
            f("config"),
            f("databases"),
            f("pools"),
            f("stats_totals"),
            f("clients"),
        ]
    }

    fn value(out: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let f = out.iter().find(|f| f.name == name)?;
        f.samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn parses_pgbouncer_1_18() {
        let mut out = Vec::new();
        families_from_tables(&tables("1.18"), &mut out);
        assert_eq!(
            value(
                &out,
                "pgbouncer_client_connections",
                &[
                    ("database", "appdb"),
                    ("user", "postgres"),
                    ("application_name", "psql"),
                    ("state", "active")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_version_info",
                &[("version", "PgBouncer 1.18.0")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&out, "pgbouncer_config_max_client_connections", &[]),
            Some(200.0)
        );
        assert_eq!(
            value(&out, "pgbouncer_config_max_user_connections", &[]),
            Some(50.0)
        );
        assert_eq!(value(&out, "pgbouncer_free_clients", &[]), Some(47.0));
        let tiny = [("database", "tiny"), ("user", "postgres")];
        assert_eq!(
            value(&out, "pgbouncer_pools_client_waiting_connections", &tiny),
            Some(2.0)
        );
        assert_eq!(
            value(&out, "pgbouncer_pools_client_maxwait_seconds", &tiny),
            Some(2.305884)
        );
        // tiny: pool_size 1, one server active.
        assert_eq!(
            value(&out, "pgbouncer_pools_utilization_ratio", &tiny),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_stats_totals_queries_duration_seconds_total",
                &[("database", "appdb")]
            ),
            Some(0.152689)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_stats_totals_queries_pooled_total",
                &[("database", "appdb")]
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_databases_reserve_pool",
                &[
                    ("name", "forced"),
                    ("force_user", "postgres"),
                    ("pool_mode", "session")
                ]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_databases_pool_size",
                &[("name", "pgbouncer"), ("host", "")]
            ),
            Some(2.0)
        );
        // No 1.23+/1.24+ columns on 1.18: those families are absent, not zero.
        assert!(out
            .iter()
            .all(|f| f.name != "pgbouncer_stats_totals_binds_total"));
    }

    #[test]
    fn parses_pgbouncer_1_24_columns() {
        let mut out = Vec::new();
        families_from_tables(&tables("1.24"), &mut out);
        let app = [("database", "app")];
        assert_eq!(
            value(
                &out,
                "pgbouncer_stats_totals_server_assignments_total",
                &app
            ),
            Some(12.0)
        );
        assert_eq!(
            value(&out, "pgbouncer_stats_totals_binds_total", &app),
            Some(7.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_stats_totals_client_wait_seconds_total",
                &app
            ),
            Some(0.25)
        );
        // reserve_pool was renamed reserve_pool_size in 1.24.
        assert_eq!(
            value(&out, "pgbouncer_databases_reserve_pool", &[("name", "app")]),
            Some(2.0)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_pools_client_maxwait_seconds",
                &[("user", "web")]
            ),
            Some(0.5)
        );
        assert_eq!(
            value(
                &out,
                "pgbouncer_pools_utilization_ratio",
                &[("database", "app"), ("user", "web")]
            ),
            Some(1.0)
        );
        // peers / peer_pools are ignored, the rest read by name.
        assert_eq!(value(&out, "pgbouncer_pools", &[]), Some(2.0));
        assert_eq!(value(&out, "pgbouncer_used_servers", &[]), Some(4.0));
    }
}
