//! Validated configuration. `Settings` is what the rest of pgvigil sees: durations are
//! `Duration`s, addresses are parsed, DSNs are `tokio_postgres::Config`s with the
//! standard PG* fallbacks applied, repository URLs are [`StoreSpec`]s, schedules are
//! parsed crontabs ([`Schedule`]), and `${ENV}` references are expanded. Every failure
//! names the key path and its line.
//!
//! One file per section: each owns its Settings struct and its validator, and [`validate`]
//! only calls them in order. [`Ctx`] carries what every validator needs (the file, the
//! locator for line numbers, the environment) and builds the key-path errors.

mod api_proxy;
mod audit;
mod backup;
mod encryption;
mod pg_tls;
mod pgbouncer;
mod postgres;
mod postgrest;
mod schedule;
mod server;
mod storage;
mod web;

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Location};
use super::locate::Locator;
use super::raw::ConfigFile;

pub use api_proxy::ClaimRules;
pub use api_proxy::{ApiProxySettings, ClaimPath, ClaimStep};
pub use audit::{AuditSettings, AuditTable};
pub use backup::{BackupSettings, DrillCheck, DrillSettings, PitrSettings, RetentionSettings};
pub use encryption::{parse_key, EncryptionSettings, KeySource, KeySpec, KEY_BYTES};
pub use pg_tls::{OptionalFile, PgTls, PgTlsVersion, RootCert, SslMode, SYSTEM_BUNDLE};
pub use pgbouncer::{PgbouncerSettings, PgbouncerTarget};
pub use postgres::{display_dsn, CustomKind, CustomQuery, PostgresSettings};
pub use postgrest::PostgrestSettings;
pub use schedule::{longest_interval, Schedule};
pub use server::{ClientAuth, ListenerSettings, ServerSettings, TlsSettings, TlsVersion};
pub use storage::{
    LockMode, ObjectLockSettings, OffsiteSettings, Residency, S3Settings, StorageSettings,
    StoreSpec, EU_REGIONS,
};
pub use web::{parse as parse_web_config, WebConfig};

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

    /// Parses an `http://` URL: PostgREST's admin server speaks plain HTTP only, so it is
    /// reached on the pod's loopback.
    fn http_url(&self, path: &[&str], value: &str) -> Result<hyper::Uri, Error> {
        let value = self.expand(path, value)?;
        let uri: hyper::Uri = value.parse().map_err(|_| {
            self.invalid(
                path,
                format!("{value:?} is not a URL; use e.g. \"http://127.0.0.1:3001\""),
            )
        })?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(_)) => Ok(uri),
            (Some("https"), _) => Err(self.invalid(
                path,
                "PostgREST's admin server speaks plain HTTP only; use http:// on the pod's loopback",
            )),
            _ => Err(self.invalid(
                path,
                format!("{value:?} must be an http:// URL with a host"),
            )),
        }
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

/// Validates every section, in file order, except that `[storage]` comes after
/// `[backup]` and `[retention]`: the Object Lock duration depends on both.
pub(super) fn validate(
    raw: ConfigFile,
    file: PathBuf,
    locator: &Locator,
    env: EnvLookup<'_>,
) -> Result<Settings, Error> {
    let ctx = Ctx { file, locator, env };
    let server = server::validate(&ctx, raw.server)?;
    let postgres = postgres::validate(&ctx, raw.postgres)?;
    let pgbouncer = pgbouncer::validate(&ctx, &raw.pgbouncer)?;
    let postgrest = postgrest::validate(&ctx, &raw.postgrest)?;
    let api_proxy = api_proxy::validate(&ctx, &raw.api_proxy)?;
    let backup = backup::validate_backup(&ctx, &raw.backup)?;
    let retention = backup::validate_retention(&ctx, &raw.retention)?;
    let retain_for = retention.recovery_window
        + longest_interval(backup.schedule.cron())
        + Duration::from_secs(86_400);
    let (storage, offsite) = storage::validate(&ctx, &raw.storage, &raw.offsite, retain_for)?;
    Ok(Settings {
        file: ctx.file.clone(),
        server,
        postgres,
        pgbouncer,
        postgrest,
        api_proxy,
        audit: audit::validate(&ctx, &raw.audit)?,
        storage,
        backup,
        pitr: backup::validate_pitr(&ctx, &raw.pitr)?,
        drill: backup::validate_drill(&ctx, &raw.drill)?,
        retention,
        offsite,
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
}
