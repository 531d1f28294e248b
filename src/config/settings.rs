//! Validated configuration. `Settings` is what the rest of pgvigil sees: durations are
//! `Duration`s, addresses are parsed, DSNs are `tokio_postgres::Config`s with the
//! standard PG* fallbacks applied, and `${ENV}` references are expanded. Every failure
//! names the key path and its line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Location};
use super::locate::Locator;
use super::raw::{ConfigFile, QueryConfig};

/// Looks up an environment variable; injected so that nothing below `main` reads the
/// process environment (tests pass a map).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from (for messages).
    pub file: PathBuf,
    pub server: ServerSettings,
    pub postgres: PostgresSettings,
    pub pgbouncer: PgbouncerSettings,
    /// Present when `[postgrest] admin_url` is set.
    pub postgrest: Option<PostgrestSettings>,
    /// Present when `[api_proxy] listen` and `upstream` are set.
    pub api_proxy: Option<ApiProxySettings>,
    pub audit: AuditSettings,
    pub storage: StorageSettings,
    pub backup: BackupSettings,
    pub pitr: PitrSettings,
    pub drill: DrillSettings,
    pub retention: RetentionSettings,
    /// Present when `[offsite] url` is set.
    pub offsite: Option<OffsiteSettings>,
}

/// `[retention]`, validated.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Every point in time this far back stays recoverable.
    pub recovery_window: Duration,
    /// Never fewer backups than this (and never zero).
    pub min_backups: usize,
    /// 5-field crontab, UTC, or "off".
    pub schedule: String,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            recovery_window: Duration::from_secs(35 * 86_400),
            min_backups: 1,
            schedule: "30 3 * * *".into(),
        }
    }
}

/// `[offsite]`, validated.
#[derive(Debug, Clone)]
pub struct OffsiteSettings {
    /// The second repository's URL.
    pub url: String,
    /// 5-field crontab, UTC, or "off".
    pub schedule: String,
    /// Its S3 client settings (`[offsite.s3]`, default `[storage.s3]`).
    pub s3: S3Settings,
}

/// `[pitr]`, validated.
#[derive(Debug, Clone)]
pub struct PitrSettings {
    pub check_interval: Duration,
    /// Zero disables the heartbeat table.
    pub heartbeat_interval: Duration,
    pub rpo: Duration,
}

impl Default for PitrSettings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(10),
            rpo: Duration::from_secs(300),
        }
    }
}

/// `[drill]`, validated.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// 5-field crontab, UTC, or "off".
    pub schedule: String,
    pub work_dir: PathBuf,
    pub amcheck: bool,
    pub checks: Vec<DrillCheck>,
}

impl Default for DrillSettings {
    fn default() -> Self {
        Self {
            schedule: "0 4 1 * *".into(),
            work_dir: "/var/lib/pgvigil/drill".into(),
            amcheck: true,
            checks: Vec::new(),
        }
    }
}

/// A user check run on a restored cluster: the first column of the first row, as text,
/// must equal `expect`.
#[derive(Debug, Clone)]
pub struct DrillCheck {
    pub name: String,
    pub sql: String,
    pub expect: String,
}

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `file:///path` or `s3://bucket/prefix` (`${ENV}` expanded).
    pub url: String,
    /// Directory of this cluster's objects inside the repository.
    pub cluster: String,
    pub s3: S3Settings,
    /// Where repositories may keep data (`residency`, `allowed_regions`).
    pub residency: crate::store::Residency,
}

/// `[storage.s3]`, validated.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Region; default: the standard AWS chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible stores, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Object Lock on backup and WAL objects; None when `object_lock = "off"`.
    pub object_lock: Option<ObjectLockSettings>,
}

/// `storage.s3.object_lock`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLockSettings {
    pub mode: crate::store::LockMode,
    /// How long each object stays locked after it is written: the recovery window, one
    /// backup interval and a day of margin, so that retention finds it unlocked exactly
    /// when it is due.
    pub retain_for: Duration,
}

/// `[backup]`, validated.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// 5-field crontab, UTC, or "off".
    pub schedule: String,
    /// zstd level (1..=19).
    pub compression_level: i32,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/pgvigil/repo".into(),
            cluster: "default".into(),
            s3: S3Settings::default(),
            residency: crate::store::Residency::eu(),
        }
    }
}

/// The longest gap between consecutive runs of `cron` (over the next 16 runs): "one backup
/// interval" for Object Lock dates. A day when the schedule is off or has no runs.
pub fn longest_interval(cron: Option<&croner::Cron>) -> Duration {
    let day = Duration::from_secs(86_400);
    let Some(cron) = cron else { return day };
    let mut longest = Duration::ZERO;
    let mut at = chrono::Utc::now();
    let Ok(mut prev) = cron.find_next_occurrence(&at, false) else {
        return day;
    };
    for _ in 0..16 {
        at = prev;
        let Ok(next) = cron.find_next_occurrence(&at, false) else {
            break;
        };
        longest = longest.max((next - prev).to_std().unwrap_or_default());
        prev = next;
    }
    if longest.is_zero() {
        day
    } else {
        longest
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            schedule: "0 2 * * *".into(),
            compression_level: 3,
        }
    }
}

/// Checks a 5-field crontab expression (UTC) the way the scheduler will read it.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    if expr.split_whitespace().count() != 5 {
        return Err(format!(
            "{expr:?} is not a 5-field crontab (minute hour day-of-month month day-of-week)"
        ));
    }
    expr.parse::<croner::Cron>()
        .map_err(|e| format!("{expr:?} is not a valid crontab: {e}"))
}

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
    /// `host:port`, the `instance` label when several are configured.
    pub instance: String,
}

/// `[postgrest]`, validated.
#[derive(Debug, Clone)]
pub struct PostgrestSettings {
    pub admin_url: hyper::Uri,
    pub timeout: Duration,
}

/// `[api_proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ApiProxySettings {
    pub listen: SocketAddr,
    pub upstream: hyper::Uri,
    pub role_claim_key: crate::proxy::jwt::JsPath,
    pub anon_role: String,
    pub jwt_secret_file: Option<PathBuf>,
    pub max_routes: usize,
    pub upstream_timeout: Duration,
}

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Write audit lines to stdout (the daemon only; CLI commands never do).
    pub stdout: bool,
    /// Also append them to this file (the daemon and CLI commands; hash chain continued).
    pub file: Option<PathBuf>,
    /// Forward rows of this table as `data` lines.
    pub table: Option<AuditTable>,
    /// Keys of row data replaced by `"[redacted]"` before rows leave PostgreSQL.
    pub redact_columns: Vec<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            table: None,
            redact_columns: ["password", "password_hash", "token", "secret"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// A schema-qualified table name, both parts plain lowercase identifiers
/// (`[a-z_][a-z0-9_]*`), so they can be quoted into SQL safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTable {
    pub schema: String,
    pub table: String,
}

impl AuditTable {
    /// `"schema"."table"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

fn validate_audit(ctx: &Ctx<'_>, raw: &super::raw::AuditConfig) -> Result<AuditSettings, Error> {
    let file = match &raw.file {
        None => None,
        Some(f) => {
            let f = ctx.expand(&["audit", "file"], f)?;
            if !f.starts_with('/') {
                return Err(ctx.invalid(
                    &["audit", "file"],
                    format!(
                        "{f:?} must be an absolute path, e.g. \"/var/log/pgvigil/audit.jsonl\""
                    ),
                ));
            }
            Some(PathBuf::from(f))
        }
    };
    let table = match &raw.table {
        None => None,
        Some(t) => match t.split_once('.') {
            Some((schema, table)) if is_plain_identifier(schema) && is_plain_identifier(table) => {
                Some(AuditTable {
                    schema: schema.into(),
                    table: table.into(),
                })
            }
            _ => {
                return Err(ctx.invalid(
                    &["audit", "table"],
                    format!("{t:?} must be schema.table in lowercase identifiers, e.g. \"audit.logged_actions\""),
                ))
            }
        },
    };
    for (i, c) in raw.redact_columns.iter().enumerate() {
        if c.is_empty() {
            return Err(ctx.invalid(
                &["audit", "redact_columns", &i.to_string()],
                "is empty; name a column, e.g. \"password\"",
            ));
        }
    }
    Ok(AuditSettings {
        stdout: raw.stdout,
        file,
        table,
        redact_columns: raw.redact_columns.clone(),
    })
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// When set, /metrics requires `Authorization: Bearer <contents>`.
    pub bearer_token_file: Option<PathBuf>,
}

/// `[postgres]`, validated.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Connection parameters for the DSN's database (password may still come from a file).
    pub dsn: tokio_postgres::Config,
    /// The DSN without credentials, safe for logs and labels.
    pub dsn_display: String,
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
    pub queries: Vec<CustomQuery>,
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
    pub fn for_dsn(dsn: &str) -> Result<Self, tokio_postgres::Error> {
        let config: tokio_postgres::Config = dsn.parse()?;
        Ok(Self {
            dsn_display: display_dsn(&config),
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
            queries: Vec::new(),
        })
    }
}

/// Validation context: the file, its locator and the environment.
struct Ctx<'a> {
    file: PathBuf,
    locator: &'a Locator,
    env: EnvLookup<'a>,
}

impl Ctx<'_> {
    fn invalid(&self, path: &[&str], message: impl Into<String>) -> Error {
        Error::Invalid {
            location: Location {
                file: self.file.clone(),
                line: self.locator.line_of_key(path),
            },
            key: path.join("."),
            message: message.into(),
        }
    }

    fn duration(&self, path: &[&str], value: &str) -> Result<Duration, Error> {
        humantime::parse_duration(value.trim()).map_err(|e| {
            self.invalid(
                path,
                format!("{value:?} is not a duration ({e}); use e.g. \"30s\", \"5m\", \"35days\""),
            )
        })
    }

    fn expand(&self, path: &[&str], value: &str) -> Result<String, Error> {
        expand_env(value, self.env).map_err(|var| {
            self.invalid(
                path,
                format!("environment variable {var} is referenced but not set"),
            )
        })
    }
}

/// Expands `${NAME}` references; `$$` is a literal `$`. Returns the missing name on error.
pub(crate) fn expand_env(value: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("${{{body} (unterminated)"));
            };
            let name = &body[..end];
            out.push_str(&env(name).ok_or_else(|| name.to_string())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A DSN without credentials: `postgresql://user@host:port/db`.
pub fn display_dsn(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("postgresql://{user}@{host}:{port}/{db}")
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

pub(super) fn validate(
    raw: ConfigFile,
    file: PathBuf,
    locator: &Locator,
    env: EnvLookup<'_>,
) -> Result<Settings, Error> {
    let ctx = Ctx { file, locator, env };

    // [server]
    let listen = ctx.expand(&["server", "listen"], &raw.server.listen)?;
    let listen: SocketAddr = listen.parse().map_err(|_| {
        ctx.invalid(
            &["server", "listen"],
            format!("{listen:?} is not a socket address; use e.g. \"0.0.0.0:9432\""),
        )
    })?;
    if raw.server.tls_cert_file.is_some() || raw.server.tls_key_file.is_some() {
        let key = if raw.server.tls_cert_file.is_some() {
            "tls_cert_file"
        } else {
            "tls_key_file"
        };
        return Err(ctx.invalid(
            &["server", key],
            "HTTPS is not supported yet; terminate TLS in front of pgvigil (ingress or mesh)",
        ));
    }

    // [postgres]
    let pg = raw.postgres;
    let dsn_raw = pg.dsn.as_deref().ok_or_else(|| {
        ctx.invalid(
            &["postgres", "dsn"],
            "is required, e.g. dsn = \"postgresql://pgvigil@127.0.0.1:5432/postgres\"",
        )
    })?;
    let dsn_text = ctx.expand(&["postgres", "dsn"], dsn_raw)?;
    let mut dsn: tokio_postgres::Config =
        dsn_text.parse().map_err(|e: tokio_postgres::Error| {
            ctx.invalid(&["postgres", "dsn"], format!("not a valid libpq DSN: {e}"))
        })?;
    apply_pg_env(&mut dsn, env);
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
        queries.push(validate_query(&ctx, i, q)?);
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

    let pgbouncer = validate_pgbouncer(&ctx, &raw.pgbouncer)?;
    let postgrest = match &raw.postgrest.admin_url {
        None => None,
        Some(url) => Some(PostgrestSettings {
            admin_url: http_url(&ctx, &["postgrest", "admin_url"], url)?,
            timeout: ctx.duration(&["postgrest", "timeout"], &raw.postgrest.timeout)?,
        }),
    };
    let api_proxy = validate_api_proxy(&ctx, &raw.api_proxy)?;

    let backup_schedule = validate_schedule(&ctx, &["backup", "schedule"], &raw.backup.schedule)?;
    let retention = RetentionSettings {
        recovery_window: ctx.duration(
            &["retention", "recovery_window"],
            &raw.retention.recovery_window,
        )?,
        min_backups: raw.retention.min_backups.max(1),
        schedule: {
            validate_schedule(&ctx, &["retention", "schedule"], &raw.retention.schedule)?;
            raw.retention.schedule.clone()
        },
    };
    if retention.recovery_window.is_zero() {
        return Err(ctx.invalid(&["retention", "recovery_window"], "must be longer than 0s"));
    }
    let retain_for = retention.recovery_window
        + longest_interval(backup_schedule.as_ref())
        + Duration::from_secs(86_400);
    let residency = validate_residency(&ctx, &raw.storage)?;
    let storage_s3 = validate_s3(&ctx, &["storage", "s3"], &raw.storage.s3, retain_for)?;
    let offsite = match &raw.offsite.url {
        None => None,
        Some(url) => Some(OffsiteSettings {
            url: validate_store_url(&ctx, &["offsite", "url"], url)?,
            schedule: {
                validate_schedule(&ctx, &["offsite", "schedule"], &raw.offsite.schedule)?;
                raw.offsite.schedule.clone()
            },
            s3: match &raw.offsite.s3 {
                Some(s3) => validate_s3(&ctx, &["offsite", "s3"], s3, retain_for)?,
                None => storage_s3.clone(),
            },
        }),
    };

    Ok(Settings {
        file: ctx.file.clone(),
        server: ServerSettings {
            listen,
            bearer_token_file: raw.server.bearer_token_file.map(PathBuf::from),
        },
        postgres: PostgresSettings {
            dsn_display: display_dsn(&dsn),
            dsn,
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
        },
        pgbouncer,
        postgrest,
        api_proxy,
        audit: validate_audit(&ctx, &raw.audit)?,
        storage: StorageSettings {
            url: validate_store_url(&ctx, &["storage", "url"], &raw.storage.url)?,
            cluster: validate_cluster(&ctx, &raw.storage.cluster)?,
            s3: storage_s3,
            residency,
        },
        retention,
        offsite,
        pitr: PitrSettings {
            check_interval: ctx.duration(&["pitr", "check_interval"], &raw.pitr.check_interval)?,
            heartbeat_interval: ctx.duration(
                &["pitr", "heartbeat_interval"],
                &raw.pitr.heartbeat_interval,
            )?,
            rpo: ctx.duration(&["pitr", "rpo"], &raw.pitr.rpo)?,
        },
        drill: DrillSettings {
            schedule: {
                if raw.drill.schedule != "off" {
                    parse_schedule(&raw.drill.schedule)
                        .map_err(|e| ctx.invalid(&["drill", "schedule"], e))?;
                }
                raw.drill.schedule.clone()
            },
            work_dir: {
                if !raw.drill.work_dir.starts_with('/') {
                    return Err(ctx.invalid(&["drill", "work_dir"], "must be an absolute path"));
                }
                PathBuf::from(&raw.drill.work_dir)
            },
            amcheck: raw.drill.amcheck,
            checks: raw
                .drill
                .checks
                .iter()
                .map(|c| DrillCheck {
                    name: c.name.clone(),
                    sql: c.sql.clone(),
                    expect: c.expect.clone(),
                })
                .collect(),
        },
        backup: BackupSettings {
            schedule: raw.backup.schedule.clone(),
            compression_level: match raw.backup.compression_level {
                l @ 1..=19 => l,
                l => {
                    return Err(ctx.invalid(
                        &["backup", "compression_level"],
                        format!("{l} is outside 1..=19"),
                    ))
                }
            },
        },
    })
}

/// Checks a schedule ("off" or a 5-field crontab); the parsed crontab unless off.
fn validate_schedule(
    ctx: &Ctx<'_>,
    path: &[&str],
    expr: &str,
) -> Result<Option<croner::Cron>, Error> {
    if expr == "off" {
        return Ok(None);
    }
    parse_schedule(expr)
        .map(Some)
        .map_err(|e| ctx.invalid(path, e))
}

fn validate_residency(
    ctx: &Ctx<'_>,
    raw: &super::raw::StorageConfig,
) -> Result<crate::store::Residency, Error> {
    use crate::store::Residency;
    if let Some(regions) = &raw.allowed_regions {
        let path = ["storage", "allowed_regions"];
        if regions.is_empty() {
            return Err(ctx.invalid(
                &path,
                "is empty: list the regions data may live in, or remove the key",
            ));
        }
        if let Some(bad) = regions
            .iter()
            .find(|r| r.trim().is_empty() || r.trim() != r.as_str())
        {
            return Err(ctx.invalid(&path, format!("{bad:?} is not a region name")));
        }
        if raw.residency == "any" {
            return Err(ctx.invalid(
                &path,
                "conflicts with residency = \"any\" (which turns the check off)",
            ));
        }
        return Ok(Residency::Regions {
            policy: "allowed_regions".into(),
            regions: regions.clone(),
        });
    }
    match raw.residency.as_str() {
        "eu" => Ok(Residency::eu()),
        "any" => Ok(Residency::Any),
        other => Err(ctx.invalid(
            &["storage", "residency"],
            format!(
                "{other:?} is not \"eu\" or \"any\"; for another region list use allowed_regions = [\"...\"]"
            ),
        )),
    }
}

fn validate_s3(
    ctx: &Ctx<'_>,
    path: &[&str],
    raw: &super::raw::S3Config,
    retain_for: Duration,
) -> Result<S3Settings, Error> {
    let at = |key: &'static str| {
        let mut p = path.to_vec();
        p.push(key);
        p
    };
    let object_lock = match raw.object_lock.as_str() {
        "off" => None,
        "governance" => Some(crate::store::LockMode::Governance),
        "compliance" => Some(crate::store::LockMode::Compliance),
        other => {
            return Err(ctx.invalid(
                &at("object_lock"),
                format!("{other:?} is not \"off\", \"governance\" or \"compliance\""),
            ))
        }
    };
    Ok(S3Settings {
        region: raw.region.clone(),
        endpoint: match &raw.endpoint {
            Some(e) => Some(ctx.expand(&at("endpoint"), e)?),
            None => None,
        },
        force_path_style: raw.force_path_style,
        object_lock: object_lock.map(|mode| ObjectLockSettings { mode, retain_for }),
    })
}

fn validate_store_url(ctx: &Ctx<'_>, path: &[&str], url: &str) -> Result<String, Error> {
    let url = ctx.expand(path, url)?;
    if let Some(p) = url.strip_prefix("file://") {
        if !p.starts_with('/') {
            return Err(ctx.invalid(
                path,
                format!(
                    "{url:?}: file:// needs an absolute path, e.g. file:///var/lib/pgvigil/repo"
                ),
            ));
        }
    } else if let Some(rest) = url.strip_prefix("s3://") {
        if rest.split('/').next().unwrap_or("").is_empty() {
            return Err(ctx.invalid(
                path,
                format!("{url:?} names no bucket: use s3://bucket/prefix"),
            ));
        }
    } else {
        return Err(ctx.invalid(path, format!("{url:?} must start with file:// or s3://")));
    }
    Ok(url)
}

fn validate_cluster(ctx: &Ctx<'_>, name: &str) -> Result<String, Error> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ctx.invalid(
            &["storage", "cluster"],
            format!("{name:?} must be letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(name.to_string())
}

/// Parses an `http://` URL (https is not supported yet: no TLS client).
fn http_url(ctx: &Ctx<'_>, path: &[&str], value: &str) -> Result<hyper::Uri, Error> {
    let value = ctx.expand(path, value)?;
    let uri: hyper::Uri = value.parse().map_err(|_| {
        ctx.invalid(
            path,
            format!("{value:?} is not a URL; use e.g. \"http://127.0.0.1:3001\""),
        )
    })?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err(ctx.invalid(
            path,
            "https is not supported yet; use http on the pod's loopback",
        )),
        _ => Err(ctx.invalid(
            path,
            format!("{value:?} must be an http:// URL with a host"),
        )),
    }
}

fn validate_pgbouncer(
    ctx: &Ctx<'_>,
    raw: &super::raw::PgbouncerConfig,
) -> Result<PgbouncerSettings, Error> {
    let timeout = ctx.duration(&["pgbouncer", "timeout"], &raw.timeout)?;
    let mut targets = Vec::with_capacity(raw.dsns.len());
    for (i, dsn) in raw.dsns.iter().enumerate() {
        let idx = i.to_string();
        let path = ["pgbouncer", "dsns", idx.as_str()];
        let text = ctx.expand(&["pgbouncer", "dsns"], dsn)?;
        let mut cfg: tokio_postgres::Config =
            text.parse().map_err(|e: tokio_postgres::Error| {
                ctx.invalid(
                    &path[..2],
                    format!("entry {i} is not a valid libpq DSN: {e}"),
                )
            })?;
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
            instance: format!("{host}:{port}"),
        });
    }
    Ok(PgbouncerSettings { targets, timeout })
}

fn validate_api_proxy(
    ctx: &Ctx<'_>,
    raw: &super::raw::ApiProxyConfig,
) -> Result<Option<ApiProxySettings>, Error> {
    let (listen, upstream) = match (&raw.listen, &raw.upstream) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ctx.invalid(
                &["api_proxy", "upstream"],
                "is required when api_proxy.listen is set",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.invalid(
                &["api_proxy", "listen"],
                "is required when api_proxy.upstream is set",
            ))
        }
        (Some(l), Some(u)) => (l, u),
    };
    let listen_text = ctx.expand(&["api_proxy", "listen"], listen)?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ctx.invalid(
            &["api_proxy", "listen"],
            format!("{listen_text:?} is not a socket address; use e.g. \"0.0.0.0:3000\""),
        )
    })?;
    if raw.jwks_url.is_some() {
        return Err(ctx.invalid(
            &["api_proxy", "jwks_url"],
            "is not supported yet; use jwt_secret_file (HS256)",
        ));
    }
    let role_claim_key = crate::proxy::jwt::JsPath::parse(&raw.role_claim_key)
        .map_err(|e| ctx.invalid(&["api_proxy", "role_claim_key"], e))?;
    if raw.max_routes == 0 {
        return Err(ctx.invalid(&["api_proxy", "max_routes"], "must be at least 1"));
    }
    Ok(Some(ApiProxySettings {
        listen,
        upstream: http_url(ctx, &["api_proxy", "upstream"], upstream)?,
        role_claim_key,
        anon_role: raw.anon_role.clone(),
        jwt_secret_file: raw.jwt_secret_file.as_ref().map(PathBuf::from),
        max_routes: raw.max_routes,
        upstream_timeout: ctx
            .duration(&["api_proxy", "upstream_timeout"], &raw.upstream_timeout)?,
    }))
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
    fn expands_env_references() {
        let env = |k: &str| (k == "PW").then(|| "s3cret".to_string());
        assert_eq!(expand_env("a${PW}b", &env).as_deref(), Ok("as3cretb"));
        assert_eq!(expand_env("cost $$5", &env).as_deref(), Ok("cost $5"));
        assert_eq!(expand_env("x${NOPE}", &env), Err("NOPE".to_string()));
        assert_eq!(expand_env("plain", &env).as_deref(), Ok("plain"));
    }

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
