//! `pg_settings_*`: every bool, integer and real server setting, named and normalised as
//! postgres_exporter does (`.` and `-` become `_`; time units to `_seconds`, size units to
//! `_bytes`; -1 passes through unconverted but keeps the suffix). A unit this code does not
//! know skips that one setting instead of failing the scrape.

use std::borrow::Cow;

use tokio_postgres::Client;

use super::CollectError;
use crate::collectors::spec::{col, QuerySpec};
use crate::metrics::{catalogue as c, Family, Kind};

const SQL: &str = "SELECT name, setting, coalesce(unit, ''), coalesce(short_desc, ''), vartype \
                   FROM pg_settings WHERE vartype IN ('bool', 'integer', 'real')";

/// Suffix and multiplier for a pg_settings unit, or None if unknown.
pub(crate) fn normalise(unit: &str) -> Option<(&'static str, f64)> {
    const K: f64 = 1024.0;
    Some(match unit {
        "" => ("", 1.0),
        "ms" => ("_seconds", 0.001),
        "s" => ("_seconds", 1.0),
        "min" => ("_seconds", 60.0),
        "h" => ("_seconds", 3600.0),
        "d" => ("_seconds", 86400.0),
        "B" => ("_bytes", 1.0),
        "kB" => ("_bytes", K),
        "MB" => ("_bytes", K * K),
        "GB" => ("_bytes", K * K * K),
        "TB" => ("_bytes", K * K * K * K),
        "1kB" => ("_bytes", K),
        "2kB" => ("_bytes", 2.0 * K),
        "4kB" => ("_bytes", 4.0 * K),
        "8kB" => ("_bytes", 8.0 * K),
        "16kB" => ("_bytes", 16.0 * K),
        "32kB" => ("_bytes", 32.0 * K),
        "64kB" => ("_bytes", 64.0 * K),
        "16MB" => ("_bytes", 16.0 * K * K),
        "32MB" => ("_bytes", 32.0 * K * K),
        "64MB" => ("_bytes", 64.0 * K * K),
        _ => return None,
    })
}

/// One setting row turned into a family, or None when it cannot be represented.
pub(crate) fn family(
    name: &str,
    setting: &str,
    unit: &str,
    desc: &str,
    vartype: &str,
) -> Option<Family> {
    let value = if vartype == "bool" {
        if setting == "on" {
            1.0
        } else {
            0.0
        }
    } else {
        setting.trim().parse::<f64>().ok()?
    };
    let (suffix, mul) = if vartype == "bool" {
        ("", 1.0)
    } else {
        normalise(unit)?
    };
    let value = if value == -1.0 { value } else { value * mul };
    let metric = format!("pg_settings_{}{suffix}", name.replace(['.', '-'], "_"));
    let help = match suffix {
        "_seconds" => format!("{desc} [Units converted to seconds.]"),
        "_bytes" => format!("{desc} [Units converted to bytes.]"),
        _ => desc.to_string(),
    };
    let mut f = Family::dynamic(&c::PG_SETTINGS, metric, help, Kind::Gauge);
    f.push_labeled(Vec::<(Cow<'static, str>, String)>::new(), value);
    Some(f)
}

/// `pg_static{short_version, version}` 1: postgres_exporter's short version is the
/// server's major.minor with ".0" (semver).
static STATIC: QuerySpec = QuerySpec {
    name: "settings",
    labels: &[
        "regexp_replace(current_setting('server_version'), '^(\\d+)\\.(\\d+).*$', '\\1.\\2.0')",
        "version()",
    ],
    values: &[col(&c::PG_STATIC, "1")],
    from: |_| "(SELECT 1) AS one".into(),
    since: 0,
};

/// Reads all numeric settings, and `pg_static`.
pub(super) async fn collect(client: &Client) -> Result<Vec<Family>, CollectError> {
    let rows = client.query(SQL, &[]).await?;
    let mut out = Vec::with_capacity(rows.len() + 1);
    // postgres_exporter's pg_static: the version, with the settings because it changes
    // only with a restart (which opens a new session and empties the cache).
    if let Some(built) = STATIC.build(0) {
        built.read(&client.query(&built.sql, &[]).await?, &mut out);
    }
    for r in rows {
        let (name, setting, unit, desc, vartype): (String, String, String, String, String) = (
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
        );
        match family(&name, &setting, &unit, &desc, &vartype) {
            Some(f) => out.push(f),
            None => {
                tracing::debug!(setting = %name, unit = %unit, "skipping setting with unknown unit")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(f: &Family) -> f64 {
        f.samples[0].value
    }

    #[test]
    fn normalises_like_postgres_exporter() {
        let f = family("shared_buffers", "16384", "8kB", "Sets buffers.", "integer")
            .unwrap_or_else(|| panic!());
        assert_eq!(f.name, "pg_settings_shared_buffers_bytes");
        assert_eq!(value(&f), 134217728.0);
        assert!(f.help.ends_with("[Units converted to bytes.]"));

        let f = family("checkpoint_timeout", "300", "s", "", "integer").unwrap_or_else(|| panic!());
        assert_eq!(
            (f.name.as_ref(), value(&f)),
            ("pg_settings_checkpoint_timeout_seconds", 300.0)
        );

        let f = family("vacuum_cost_delay", "2", "ms", "", "real").unwrap_or_else(|| panic!());
        assert_eq!(value(&f), 0.002);

        let f = family("log_min_duration_statement", "-1", "ms", "", "integer")
            .unwrap_or_else(|| panic!());
        assert_eq!(
            (f.name.as_ref(), value(&f)),
            ("pg_settings_log_min_duration_statement_seconds", -1.0)
        );

        let f = family("fsync", "on", "", "", "bool").unwrap_or_else(|| panic!());
        assert_eq!((f.name.as_ref(), value(&f)), ("pg_settings_fsync", 1.0));

        let f =
            family("pg_stat_statements.max", "5000", "", "", "integer").unwrap_or_else(|| panic!());
        assert_eq!(f.name, "pg_settings_pg_stat_statements_max");

        assert!(family("x", "1", "furlongs", "", "integer").is_none());
    }
}
