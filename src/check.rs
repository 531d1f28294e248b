//! `pgvigil check-config` probes: after the file validated, try every configured endpoint
//! and report one result per check. Pure data out; the CLI prints it.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Settings;
use crate::pg::{connect, db_error_message, ConnectOptions};
use crate::store::{Repo, Which};

/// Outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something is worth knowing (e.g. an optional extension is missing).
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    /// What was checked, e.g. `postgres`.
    pub name: String,
    /// The endpoint, without credentials.
    pub target: String,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(
            f,
            "{s}  {:<18} {:<45} {}",
            self.name, self.target, self.detail
        )
    }
}

/// Probes every configured endpoint.
pub async fn probe(settings: &Settings) -> Vec<Check> {
    let mut out = probe_postgres(settings).await;
    for t in &settings.pgbouncer.targets {
        let mut tls_lines = Vec::new();
        let timeout = settings.pgbouncer.timeout.max(Duration::from_secs(2));
        let result = async {
            let (client, handshake) = crate::pg::connect_admin_console(&t.dsn, &t.tls, timeout)
                .await
                .map_err(|e| e.to_string())?;
            tls_lines.push(tls_check("pgbouncer.tls", &t.instance, &t.tls, &handshake));
            let rows = client
                .simple_query("SHOW VERSION")
                .await
                .map_err(|e| db_error_message(&e))?;
            let table = crate::collectors::pgbouncer::table::Table::from_messages(&rows);
            Ok::<_, String>(
                table
                    .text(0, "version")
                    .unwrap_or("unknown version")
                    .to_string(),
            )
        };
        out.push(match result.await {
            Ok(v) => Check {
                status: Status::Ok,
                name: "pgbouncer".into(),
                target: t.instance.clone(),
                detail: format!("{v}, admin console answers"),
            },
            Err(e) => Check {
                status: Status::Fail,
                name: "pgbouncer".into(),
                target: t.instance.clone(),
                detail: e,
            },
        });
        out.extend(tls_lines);
    }
    if let Some(p) = &settings.postgrest {
        let collector = crate::collectors::postgrest::PostgrestCollector::new(p.clone());
        let target = p.admin_url.to_string();
        out.push(match collector.probe().await {
            Ok(d) => Check {
                status: Status::Ok,
                name: "postgrest".into(),
                target,
                detail: d,
            },
            Err(e) => Check {
                status: Status::Fail,
                name: "postgrest".into(),
                target,
                detail: e,
            },
        });
    }
    out.push(probe_storage(settings).await);
    out.extend(probe_encryption(settings));
    out.extend(probe_residency(settings).await);
    if let Some(p) = &settings.api_proxy {
        // The proxy's own client: an https upstream is a real handshake; JWKS is fetched.
        out.extend(crate::proxy::probe::probe(p).await.into_iter().map(|r| {
            let (status, detail) = match r.outcome {
                Ok(d) => (Status::Ok, d),
                Err(e) => (Status::Fail, e),
            };
            Check {
                status,
                name: r.name.into(),
                target: r.target,
                detail,
            }
        }));
    }
    out.extend(probe_audit(settings).await);
    out
}

/// Where each repository really is, judged by the residency policy (and Object Lock).
async fn probe_residency(settings: &Settings) -> Vec<Check> {
    let mut stores = vec![("residency", Which::Primary, &settings.storage.store)];
    if let Some(o) = &settings.offsite {
        stores.push(("offsite.residency", Which::Offsite, &o.store));
    }
    let mut out = Vec::new();
    for (name, which, spec) in stores {
        let url = spec.to_string();
        let check = match Repo::open_guarded(settings, which).await {
            Ok((_, guard)) => {
                let v = guard.check().await;
                Check {
                    status: if v.ok { Status::Ok } else { Status::Fail },
                    name: name.into(),
                    target: url,
                    detail: v.message,
                }
            }
            Err(e) => Check {
                status: Status::Fail,
                name: name.into(),
                target: url,
                detail: e.to_string(),
            },
        };
        out.push(check);
    }
    out
}

/// Whether the keys of `[storage.encryption]` load, and what they do.
fn probe_encryption(settings: &Settings) -> Option<Check> {
    let e = settings.storage.encryption.as_ref()?;
    let target = e.current.config_key.clone();
    Some(match crate::store::sealed::Keyring::load(e) {
        Ok(ring) => {
            let old: Vec<&str> = e.old_keys.iter().map(|k| k.id.as_str()).collect();
            Check {
                status: Status::Ok,
                name: "encryption".into(),
                target,
                detail: format!(
                    "new backup and WAL objects sealed with key {:?} (XChaCha20-Poly1305); {}; unencrypted objects {}",
                    ring.current_id(),
                    if old.is_empty() {
                        "no old keys".to_string()
                    } else {
                        format!("old keys open too: {}", old.join(", "))
                    },
                    if e.accept_unencrypted { "accepted" } else { "refused" }
                ),
            }
        }
        Err(err) => Check {
            status: Status::Fail,
            name: "encryption".into(),
            target,
            detail: err.to_string(),
        },
    })
}

async fn probe_storage(settings: &Settings) -> Check {
    let target = settings.storage.store.to_string();
    let result = async {
        let repo = Repo::open(settings, Which::Primary)
            .await
            .map_err(|e| e.to_string())?;
        let (count, newest) = crate::backup::catalog::newest(&repo)
            .await
            .map_err(|e| e.to_string())?;
        let binding = match repo
            .store
            .get_bytes(&repo.key(&crate::store::layout::binding()))
            .await
        {
            Ok(b) => serde_json::from_slice::<crate::backup::wal::Binding>(&b)
                .map(|b| format!("bound to system {}", b.system_identifier))
                .unwrap_or_else(|_| "binding unreadable".into()),
            Err(e) if e.is_not_found() => "not bound to a cluster yet".into(),
            Err(e) => return Err(e.to_string()),
        };
        let newest = newest
            .map(|b| format!(", newest {} ({})", b.id, b.stop_time.to_rfc3339()))
            .unwrap_or_default();
        Ok::<_, String>(format!(
            "cluster {:?}: {count} backup(s){newest}; {binding}",
            settings.storage.cluster
        ))
    };
    match result.await {
        Ok(d) => Check {
            status: Status::Ok,
            name: "storage".into(),
            target,
            detail: d,
        },
        Err(e) => Check {
            status: Status::Fail,
            name: "storage".into(),
            target,
            detail: e,
        },
    }
}

async fn probe_postgres(settings: &Settings) -> Vec<Check> {
    let mut out = Vec::new();
    let pg = &settings.postgres;
    let target = pg.dsn_display.clone();
    let mut opts = ConnectOptions::from_settings(pg);
    opts.connect_timeout = opts.connect_timeout.max(Duration::from_secs(5));
    let started = Instant::now();
    let conn = match connect(&opts, None).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Check {
                status: Status::Fail,
                name: "postgres".into(),
                target,
                detail: e.to_string(),
            });
            return out;
        }
    };
    let q = conn
        .client
        .query_one(
            "SELECT current_setting('server_version'), pg_is_in_recovery(), current_user::text, \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                      OR pg_has_role(current_user, 'pg_monitor', 'member'), \
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
            &[],
        )
        .await;
    let row = match q {
        Ok(r) => r,
        Err(e) => {
            out.push(Check {
                status: Status::Fail,
                name: "postgres".into(),
                target,
                detail: db_error_message(&e),
            });
            return out;
        }
    };
    let version: String = row.get(0);
    let replica: bool = row.get(1);
    let user: String = row.get(2);
    let monitor: bool = row.get(3);
    let statements: bool = row.get(4);
    out.push(Check {
        status: Status::Ok,
        name: "postgres".into(),
        target: target.clone(),
        detail: format!(
            "PostgreSQL {version}, {}, connected in {} ms",
            if replica { "replica" } else { "primary" },
            started.elapsed().as_millis()
        ),
    });
    out.push(tls_check("postgres.tls", &target, &pg.tls, &conn.tls));
    out.push(Check {
        status: if monitor { Status::Ok } else { Status::Fail },
        name: "postgres.role".into(),
        target: target.clone(),
        detail: if monitor {
            format!("role {user} can read all statistics (superuser or pg_monitor)")
        } else {
            format!("role {user} is not in pg_monitor: GRANT pg_monitor TO {user}; otherwise other sessions' activity and sizes are hidden")
        },
    });
    out.push(Check {
        status: if statements { Status::Ok } else { Status::Warn },
        name: "pg_stat_statements".into(),
        target,
        detail: if statements {
            "installed: pg_stat_statements_* exported".into()
        } else {
            "not installed in this database: CREATE EXTENSION pg_stat_statements (needs shared_preload_libraries)".into()
        },
    });
    out
}

/// What a session's TLS handshake did: the negotiated version and how the server
/// certificate was checked. Unverified or unencrypted sessions warn, saying which
/// `sslmode` would fix it.
fn tls_check(
    name: &str,
    target: &str,
    tls: &crate::config::PgTls,
    handshake: &crate::pg::Handshake,
) -> Check {
    use crate::pg::Verified;
    let mode = tls.mode.as_str();
    let (status, detail) = match (handshake.version, &handshake.verified) {
        (None, _) => (
            Status::Warn,
            format!("not encrypted (sslmode={mode}); set sslmode=verify-full and sslrootcert to require TLS"),
        ),
        (Some(v), Verified::No) => (
            Status::Warn,
            format!("{v}, {} (sslmode={mode}); use sslmode=verify-full with sslrootcert", handshake.verified),
        ),
        (Some(v), verified @ Verified::Chain(_)) => (
            Status::Warn,
            format!("{v}, {verified} (sslmode={mode}); use verify-full to check the host name"),
        ),
        (Some(v), verified @ Verified::Full(_)) => {
            (Status::Ok, format!("{v}, {verified} (sslmode={mode})"))
        }
    };
    Check {
        status,
        name: name.into(),
        target: target.into(),
        detail,
    }
}

/// `[audit]`: the file can be appended to and its last line verifies; the audit table,
/// its sequence and the cursor table can be read, and how far the cursor is behind.
async fn probe_audit(settings: &Settings) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(path) = &settings.audit.file {
        let target = path.display().to_string();
        let result = (|| -> Result<String, String> {
            if !path.exists() {
                // A check creates nothing: the daemon creates the file (and its directory).
                return Ok("does not exist yet; pgvigil run creates it".into());
            }
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .read(true)
                .open(path)
                .map_err(|e| format!("cannot open for appending: {e}"))?;
            let (last, _) =
                crate::audit::chain::last_line(&mut f).map_err(|e| format!("cannot read: {e}"))?;
            match last {
                None => Ok("writable, empty (a new chain starts)".into()),
                Some(last) => crate::audit::chain::check_line(&last)
                    .map(|s| format!("writable, chain at seq {}", s.seq))
                    .map_err(|e| format!("last line does not verify: {e}")),
            }
        })();
        out.push(match result {
            Ok(d) => Check {
                status: Status::Ok,
                name: "audit file".into(),
                target,
                detail: d,
            },
            Err(e) => Check {
                status: Status::Fail,
                name: "audit file".into(),
                target,
                detail: e,
            },
        });
    }
    if let Some(table) = &settings.audit.table {
        let target = table.quoted();
        let result = async {
            let conn = connect(&ConnectOptions::from_settings(&settings.postgres), None)
                .await
                .map_err(|e| e.to_string())?;
            let row = conn
                .client
                .query_one(
                    &format!(
                        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass), 0),
                                (SELECT last_id FROM \"{}\".pgvigil_cursor WHERE consumer = $2),
                                (SELECT count(*) FROM {target} WHERE false)",
                        table.schema
                    ),
                    &[&target, &crate::audit::tail::CONSUMER],
                )
                .await
                .map_err(|e| {
                    format!(
                        "{}; install it with `pgvigil audit install -c FILE`",
                        db_error_message(&e)
                    )
                })?;
            let last: i64 = row.get(0);
            let cursor: Option<i64> = row.get(1);
            Ok::<_, String>(match cursor {
                Some(c) => format!(
                    "readable; cursor {c}, about {} row(s) to forward",
                    (last - c).max(0)
                ),
                None => format!("readable; not forwarded yet ({last} row(s) to forward)"),
            })
        };
        out.push(match result.await {
            Ok(d) => Check {
                status: Status::Ok,
                name: "audit table".into(),
                target,
                detail: d,
            },
            Err(e) => Check {
                status: Status::Fail,
                name: "audit table".into(),
                target,
                detail: e,
            },
        });
    }
    out
}
