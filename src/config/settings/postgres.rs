//! `[postgres]` and `[[postgres.queries]]`: the monitored server. Owns `PostgresSettings`,
//! the custom query definitions and their validators. The DSN is parsed here once, with
//! libpq's PG* fallbacks applied, so nothing downstream re-reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use super::pg_tls::{resolve, split_dsn, PgTls, SslMode};
use super::{Ctx, EnvLookup, Error};
use crate::config::raw::{PostgresConfig, QueryConfig};

/// `[postgres]`, validated.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Connection parameters for the DSN's database (password may still come from a file).
    pub dsn: tokio_postgres::Config,
    /// The DSN without credentials, safe for logs and labels.
    pub dsn_display: String,
    /// libpq's TLS parameters from the DSN and `PGSSL*` (tokio-postgres parses only a few).
    pub tls: PgTls,
    pub password_file: Option<PathBuf>,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub connect_timeout: Duration,
    /// Explicit database list for per-database collectors; empty = discover.
    pub databases: Vec<String>,
    pub slow_collectors_interval: Duration,
    pub max_database_connections: usize,
    pub top_tables: usize,
    pub top_statements: usize,
    /// `server_label = true`: the `server` label value (the DSN's `host:port`, as
    /// postgres_exporter's fingerprint).
    pub server_label: Option<String>,
    pub queries: Vec<CustomQuery>,
    /// `[postgres] bindir`: directories to pick PostgreSQL binaries from; empty = discover.
    pub bindir: Vec<PathBuf>,
    /// Run the binaries inside this chroot. Never read from the file: set by code that
    /// owns such a chroot (the tests' PostgreSQL 17 and 18).
    pub bin_chroot: Option<PathBuf>,
}

/// Sample type of a custom query metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    Gauge,
    Counter,
}

/// One validated `[[postgres.queries]]` entry.
#[derive(Debug, Clone)]
pub struct CustomQuery {
    pub name: String,
    pub sql: String,
    pub help: String,
    pub labels: Vec<String>,
    pub values: Vec<String>,
    pub kind: CustomKind,
    pub database: Option<String>,
    pub interval: Duration,
}

impl PostgresSettings {
    /// Settings for a server at `dsn`, everything else defaulted (used by `pgvigil dev`
    /// and tests).
    pub fn for_dsn(dsn: &str) -> Result<Self, String> {
        let (config, tls) = parse_dsn(dsn, &|_| None)?;
        Ok(Self {
            dsn_display: display_dsn(&config),
            tls,
            dsn: config,
            password_file: None,
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            databases: Vec::new(),
            slow_collectors_interval: Duration::from_secs(300),
            max_database_connections: 2,
            top_tables: 50,
            top_statements: 50,
            server_label: None,
            queries: Vec::new(),
            bindir: Vec::new(),
            bin_chroot: None,
        })
    }
}

/// postgres_exporter's `server` label: the first host and port of the DSN (`host:port`;
/// a socket directory stands for the host).
pub fn server_fingerprint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A DSN without credentials: `postgresql://user@host:port/db`.
pub fn display_dsn(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgresql://{user}@{}/{db}", server_fingerprint(config))
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

pub(super) fn validate(ctx: &Ctx<'_>, pg: PostgresConfig) -> Result<PostgresSettings, Error> {
    let dsn_raw = pg.dsn.as_deref().ok_or_else(|| {
        ctx.invalid(
            &["postgres", "dsn"],
            "is required, e.g. dsn = \"postgresql://pgvigil@127.0.0.1:5432/postgres\"",
        )
    })?;
    let dsn_text = ctx.expand(&["postgres", "dsn"], dsn_raw)?;
    let (mut dsn, tls) =
        parse_dsn(&dsn_text, ctx.env).map_err(|m| ctx.invalid(&["postgres", "dsn"], m))?;
    apply_pg_env(&mut dsn, ctx.env);
    if dsn.get_user().is_none() {
        return Err(ctx.invalid(
            &["postgres", "dsn"],
            "names no user; add one (postgresql://USER@host/db) or set PGUSER",
        ));
    }
    let statement_timeout =
        ctx.duration(&["postgres", "statement_timeout"], &pg.statement_timeout)?;
    let lock_timeout = ctx.duration(&["postgres", "lock_timeout"], &pg.lock_timeout)?;
    let connect_timeout = ctx.duration(&["postgres", "connect_timeout"], &pg.connect_timeout)?;
    let slow = ctx.duration(
        &["postgres", "slow_collectors_interval"],
        &pg.slow_collectors_interval,
    )?;
    if pg.max_database_connections == 0 {
        return Err(ctx.invalid(
            &["postgres", "max_database_connections"],
            "must be at least 1",
        ));
    }
    let mut queries = Vec::with_capacity(pg.queries.len());
    for (i, q) in pg.queries.into_iter().enumerate() {
        queries.push(validate_query(ctx, i, q)?);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, q) in queries.iter().enumerate() {
        if !seen.insert(q.name.clone()) {
            return Err(ctx.invalid(
                &["postgres", "queries", &i.to_string(), "name"],
                format!("{:?} is used by two queries", q.name),
            ));
        }
    }
    Ok(PostgresSettings {
        dsn_display: display_dsn(&dsn),
        server_label: pg.server_label.then(|| server_fingerprint(&dsn)),
        dsn,
        tls,
        password_file: pg.password_file.map(PathBuf::from),
        statement_timeout,
        lock_timeout,
        connect_timeout,
        databases: pg.databases,
        slow_collectors_interval: slow,
        max_database_connections: pg.max_database_connections,
        top_tables: pg.top_tables,
        top_statements: pg.top_statements,
        queries,
        bindir: pg.bindir.iter().map(PathBuf::from).collect(),
        bin_chroot: None,
    })
}

/// Parses a libpq DSN (either form) with its TLS parameters, which tokio-postgres does not
/// know, taken out first; `env` supplies the `PGSSL*` fallbacks.
pub(super) fn parse_dsn(
    text: &str,
    env: EnvLookup<'_>,
) -> Result<(tokio_postgres::Config, PgTls), String> {
    let (rest, pairs) = split_dsn(text)?;
    let tls = resolve(&pairs, env)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a valid libpq DSN: {e}"))?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    if tls.direct {
        config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    }
    Ok((config, tls))
}

/// libpq falls back to PG* variables for what the DSN leaves out; so do we.
fn apply_pg_env(dsn: &mut tokio_postgres::Config, env: EnvLookup<'_>) {
    if dsn.get_user().is_none() {
        if let Some(user) = env("PGUSER") {
            dsn.user(&user);
        }
    }
    if dsn.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            dsn.password(pw);
        }
    }
    if dsn.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => dsn.host(&h),
            None => dsn.host("localhost"),
        };
    }
    if dsn.get_ports().is_empty() {
        if let Some(p) = env("PGPORT").and_then(|p| p.parse().ok()) {
            dsn.port(p);
        }
    }
    if dsn.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            dsn.dbname(&db);
        }
    }
}

fn validate_query(ctx: &Ctx<'_>, i: usize, q: QueryConfig) -> Result<CustomQuery, Error> {
    let idx = i.to_string();
    let at = |key: &'static str| ["postgres", "queries", idx.as_str(), key];
    if !valid_metric_name(&q.name) {
        return Err(ctx.invalid(
            &at("name"),
            format!("{:?} is not a valid metric name", q.name),
        ));
    }
    for l in &q.labels {
        if !valid_label_name(l) {
            return Err(ctx.invalid(&at("labels"), format!("{l:?} is not a valid label name")));
        }
    }
    let values = if q.values.is_empty() {
        vec!["value".to_string()]
    } else {
        q.values
    };
    for v in &values {
        if !valid_label_name(v) {
            return Err(ctx.invalid(
                &at("values"),
                format!("{v:?} is not a valid column name for a metric"),
            ));
        }
        if q.labels.contains(v) {
            return Err(ctx.invalid(
                &at("values"),
                format!("{v:?} is both a label and a value column"),
            ));
        }
    }
    let kind = match q.kind.as_deref() {
        None | Some("gauge") => CustomKind::Gauge,
        Some("counter") => CustomKind::Counter,
        Some(other) => {
            return Err(ctx.invalid(
                &at("kind"),
                format!("{other:?} is not \"gauge\" or \"counter\""),
            ))
        }
    };
    let interval = match &q.interval {
        Some(s) => ctx.duration(&at("interval"), s)?,
        None => Duration::from_secs(60),
    };
    if q.sql.trim().is_empty() {
        return Err(ctx.invalid(&at("sql"), "is empty"));
    }
    Ok(CustomQuery {
        help: q.help.unwrap_or_else(|| format!("Custom query {}", q.name)),
        name: q.name,
        sql: q.sql,
        labels: q.labels,
        values,
        kind,
        database: q.database,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        assert!(valid_metric_name("app_orders_pending"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name("a-b"));
        assert!(valid_label_name("state"));
        assert!(!valid_label_name("__name__"));
    }

    #[test]
    fn display_dsn_hides_password() {
        let c: tokio_postgres::Config = "postgresql://u:pw@db.example:6543/app"
            .parse()
            .unwrap_or_default();
        assert_eq!(display_dsn(&c), "postgresql://u@db.example:6543/app");
    }
}
