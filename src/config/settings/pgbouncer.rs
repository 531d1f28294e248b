//! `[pgbouncer]`: the admin consoles to scrape. Owns `PgbouncerSettings` and its
//! validator, which fills in what PgBouncer's console needs (database `pgbouncer`, port
//! 6432) and derives each target's `instance` label.

use std::time::Duration;

use super::pg_tls::PgTls;
use super::{Ctx, Error};
use crate::config::raw::PgbouncerConfig;

/// `[pgbouncer]`, validated.
#[derive(Debug, Clone, Default)]
pub struct PgbouncerSettings {
    pub targets: Vec<PgbouncerTarget>,
    pub timeout: Duration,
}

/// One PgBouncer admin console.
#[derive(Debug, Clone)]
pub struct PgbouncerTarget {
    pub dsn: tokio_postgres::Config,
    /// libpq's TLS parameters of this DSN (and `PGSSL*`).
    pub tls: PgTls,
    /// `host:port`, the `instance` label when several are configured.
    pub instance: String,
}

pub(super) fn validate(ctx: &Ctx<'_>, raw: &PgbouncerConfig) -> Result<PgbouncerSettings, Error> {
    let timeout = ctx.duration(&["pgbouncer", "timeout"], &raw.timeout)?;
    let mut targets = Vec::with_capacity(raw.dsns.len());
    for (i, dsn) in raw.dsns.iter().enumerate() {
        let idx = i.to_string();
        let path = ["pgbouncer", "dsns", idx.as_str()];
        let text = ctx.expand(&["pgbouncer", "dsns"], dsn)?;
        let (mut cfg, tls) = super::postgres::parse_dsn(&text, ctx.env)
            .map_err(|m| ctx.invalid(&path[..2], format!("entry {i}: {m}")))?;
        if cfg.get_dbname().is_none() {
            cfg.dbname("pgbouncer");
        }
        if cfg.get_user().is_none() {
            return Err(ctx.invalid(&path[..2], format!("entry {i} names no user (the admin console needs one in admin_users or stats_users)")));
        }
        if cfg.get_hosts().is_empty() {
            cfg.host("localhost");
        }
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(6432);
        if cfg.get_ports().is_empty() {
            cfg.port(6432);
        }
        targets.push(PgbouncerTarget {
            dsn: cfg,
            tls,
            instance: format!("{host}:{port}"),
        });
    }
    Ok(PgbouncerSettings { targets, timeout })
}
