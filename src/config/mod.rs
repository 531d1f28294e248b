//! Configuration: `raw` mirrors the TOML file, `settings` holds validated values (one
//! file per section, each with its validator), and `load` turns one into the other. Only
//! `Settings`, the values it is made of, and `Error` leave this module.
//!
//! Config hands out parsed values, never strings to parse again: a repository is a
//! [`StoreSpec`], a schedule a [`Schedule`], the role claim a [`ClaimPath`], the
//! residency policy a [`Residency`]. They are plain data owned here; `store`, `proxy` and
//! the daemon use them, and config imports none of those modules.

mod error;
mod locate;
mod raw;
mod secret;
mod settings;

use std::path::Path;

pub use error::{Error, Location};
pub use secret::{check_private, read_secret_file, SecretError, MIN_SECRET_BYTES};
pub use settings::ClaimRules;
pub use settings::{
    display_dsn, longest_interval, ApiProxySettings, AuditSettings, AuditTable, BackupSettings,
    ClaimPath, ClaimStep, CustomKind, CustomQuery, DrillCheck, DrillSettings, EnvLookup, LockMode,
    ObjectLockSettings, OffsiteSettings, PgbouncerSettings, PgbouncerTarget, PitrSettings,
    PostgresSettings, PostgrestSettings, Residency, RetentionSettings, S3Settings, Schedule,
    ServerSettings, Settings, StorageSettings, StoreSpec, EU_REGIONS,
};
pub use settings::{parse_key, EncryptionSettings, KeySource, KeySpec, KEY_BYTES};
pub use settings::{
    parse_web_config, ClientAuth, ListenerSettings, TlsSettings, TlsVersion, WebConfig,
};
pub use settings::{OptionalFile, PgTls, PgTlsVersion, RootCert, SslMode, SYSTEM_BUNDLE};

/// Reads, parses and validates a configuration file, and the web configuration file that
/// `server.web_config_file` names.
pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Settings, Error> {
    load_with_web_config(path, env, None)
}

/// Like [`load`], with `web_config_file` (the `--web.config.file` flag) taking the place of
/// `server.web_config_file` when given.
pub fn load_with_web_config(
    path: &Path,
    env: EnvLookup<'_>,
    web_config_file: Option<&Path>,
) -> Result<Settings, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut settings = parse(&text, path, env)?;
    let web = web_config_file
        .map(Path::to_path_buf)
        .or_else(|| settings.server.web_config_file.clone());
    if let Some(web) = web {
        let text = std::fs::read_to_string(&web).map_err(|source| Error::Read {
            path: web.clone(),
            source,
        })?;
        let parsed = parse_web_config(&text, &web)?;
        settings.server.apply_web_config(&web, parsed)?;
    }
    Ok(settings)
}

/// Parses and validates configuration text; `path` is used for messages only.
pub fn parse(text: &str, path: &Path, env: EnvLookup<'_>) -> Result<Settings, Error> {
    let locator = locate::Locator::new(text);
    let raw: raw::ConfigFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        Error::Syntax {
            location: Location {
                file: path.to_path_buf(),
                line: offset.map(|o| locator.line_of_offset(o)),
            },
            key: offset
                .and_then(|o| locator.path_at(o))
                .unwrap_or_else(|| "(document)".into()),
            message: e.message().trim().to_string(),
        }
    })?;
    settings::validate(raw, path.to_path_buf(), &locator, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_str(text: &str) -> Result<Settings, Error> {
        parse(text, Path::new("pgvigil.toml"), &no_env)
    }

    #[test]
    fn minimal_file_works() {
        let s = parse_str(
            "[server]\nlisten = \"127.0.0.1:9432\"\n[postgres]\ndsn = \"postgresql://postgres@127.0.0.1:5432/postgres\"\n",
        )
        .map_err(|e| e.to_string());
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.server.listen.port(), 9432);
        assert_eq!(
            s.postgres.statement_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(s.postgres.top_tables, 50);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err =
            parse_str("[postgres]\ndsn = \"postgresql://u@h/db\"\nstatment_timeout = \"5s\"\n")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(err.starts_with("pgvigil.toml:3: "), "{err}");
        assert!(err.contains("statment_timeout"), "{err}");
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let err =
            parse_str("[postgres]\ndsn = \"postgresql://u@h/db\"\n\nlock_timeout = \"soon\"\n")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(
            err.starts_with("pgvigil.toml:4: postgres.lock_timeout: "),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let err = parse_str("[postgres]\ndsn = \"postgresql://u@h/db\"\ntop_tables = \"many\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("pgvigil.toml:3: postgres.top_tables: "),
            "{err}"
        );
    }

    #[test]
    fn missing_dsn_is_an_error() {
        let err = parse_str("[server]\nlisten = \"127.0.0.1:1\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("postgres.dsn: is required"), "{err}");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../pgvigil.example.toml");
        let env = |k: &str| (k == "PGVIGIL_DB_PASSWORD").then(|| "pw".to_string());
        if let Err(e) = parse(text, Path::new("pgvigil.example.toml"), &env) {
            panic!("{e}");
        }
    }

    #[test]
    fn custom_query_errors_point_into_the_array() {
        let err = parse_str(
            "[postgres]\ndsn = \"postgresql://u@h/db\"\n[[postgres.queries]]\nname = \"ok\"\nsql = \"select 1 as value\"\n[[postgres.queries]]\nname = \"bad-name\"\nsql = \"select 1\"\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("pgvigil.toml:7: postgres.queries.1.name: "),
            "{err}"
        );
    }

    #[test]
    fn residency_object_lock_and_offsite_are_validated() {
        let base = "[postgres]\ndsn = \"postgresql://u@h/db\"\n";
        let err = |extra: &str| {
            parse_str(&format!("{base}{extra}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("[storage]\nresidency = \"us\"\n")
                .starts_with("pgvigil.toml:4: storage.residency: \"us\" is not"),
            "{}",
            err("[storage]\nresidency = \"us\"\n")
        );
        assert!(err("[storage.s3]\nobject_lock = \"strict\"\n")
            .contains("storage.s3.object_lock: \"strict\" is not"));
        assert!(err("[offsite]\nurl = \"ftp://x\"\n").contains("offsite.url: "));
        assert!(err("[retention]\nschedule = \"daily\"\n").contains("retention.schedule: "));
        assert!(
            err("[storage]\nallowed_regions = []\n").contains("storage.allowed_regions: is empty")
        );

        let s = parse_str(&format!(
            "{base}[storage]\nurl = \"s3://primary/p/\"\nallowed_regions = [\"fsn1\"]\n[storage.s3]\nobject_lock = \"compliance\"\n[offsite]\nurl = \"s3://b/p\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.storage.residency.allows("fsn1") && !s.storage.residency.allows("eu-central-1"));
        let StoreSpec::S3 { bucket, prefix, s3 } = &s.storage.store else {
            panic!("not an S3 store: {:?}", s.storage.store)
        };
        assert_eq!((bucket.as_str(), prefix.as_str()), ("primary", "p"));
        let lock = s3.object_lock.unwrap_or_else(|| panic!("no lock"));
        assert_eq!(lock.mode, LockMode::Compliance);
        // 35 days + one daily backup interval + a day of margin.
        assert_eq!(lock.retain_for, std::time::Duration::from_secs(37 * 86_400));
        // The off-site store inherits [storage.s3].
        let offsite = s.offsite.unwrap_or_else(|| panic!("no offsite"));
        assert_eq!(
            offsite.store,
            StoreSpec::S3 {
                bucket: "b".into(),
                prefix: "p".into(),
                s3: s3.clone(),
            }
        );
        assert_eq!(offsite.schedule.expr(), "0 5 * * 0");
        assert!(offsite.schedule.cron().is_some());
    }

    #[test]
    fn schedules_and_store_urls_arrive_parsed() {
        let base = "[postgres]\ndsn = \"postgresql://u@h/db\"\n";
        let s = parse_str(&format!(
            "{base}[backup]\nschedule = \"off\"\n[drill]\nschedule = \"0 4 1 * *\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.backup.schedule, Schedule::Off);
        assert_eq!(s.drill.schedule.expr(), "0 4 1 * *");
        assert_eq!(s.retention.schedule.expr(), "30 3 * * *");
        assert_eq!(
            s.storage.store,
            StoreSpec::File("/var/lib/pgvigil/repo".into())
        );
        assert_eq!(s.storage.store.to_string(), "file:///var/lib/pgvigil/repo");
        let err = |extra: &str| {
            parse_str(&format!("{base}{extra}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("[drill]\nschedule = \"0 4 1 *\"\n").contains("drill.schedule: "));
        assert!(err("[backup]\nschedule = \"x\"\n").contains("backup.schedule: "));
        assert!(err("[offsite]\nurl = \"s3://b\"\nschedule = \"weekly\"\n")
            .contains("offsite.schedule: "));
        assert!(err("[storage]\nurl = \"s3:///p\"\n").contains("storage.url: "));
        assert!(err("[storage]\nurl = \"file://rel\"\n").contains("storage.url: "));
    }

    #[test]
    fn audit_keys_are_validated_with_key_and_line() {
        let base = "[postgres]\ndsn = \"postgresql://u@h/db\"\n[audit]\n";
        let s = parse_str(&format!(
            "{base}file = \"/var/log/pgvigil/audit.jsonl\"\ntable = \"audit.logged_actions\"\nredact_columns = [\"pin\"]\n"
        ))
        .unwrap();
        assert_eq!(
            s.audit.table.as_ref().map(|t| t.quoted()).as_deref(),
            Some("\"audit\".\"logged_actions\"")
        );
        assert_eq!(s.audit.redact_columns, ["pin"]);
        assert_eq!(
            s.audit.file.as_deref(),
            Some(Path::new("/var/log/pgvigil/audit.jsonl"))
        );
        let defaults = parse_str(base).unwrap();
        assert!(defaults.audit.stdout && defaults.audit.table.is_none());
        assert!(defaults
            .audit
            .redact_columns
            .contains(&"password".to_string()));

        for (line, want) in [
            ("table = \"logged_actions\"", "audit.table"),
            ("table = \"audit.x; drop table y\"", "audit.table"),
            ("file = \"audit.jsonl\"", "audit.file"),
            ("redact_columns = [\"\"]", "audit.redact_columns"),
        ] {
            let e = parse_str(&format!("{base}{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("pgvigil.toml:4") && e.contains(want),
                "{line}: {e}"
            );
        }
    }
}
