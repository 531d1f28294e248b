//! libpq's TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslcrl`,
//! `sslnegotiation`, `sslsni`, `ssl_min_protocol_version`, `ssl_max_protocol_version`) for
//! a PostgreSQL or PgBouncer DSN, with libpq's precedence (DSN, then `PGSSL*` variables,
//! then `~/.postgresql/` defaults) and libpq's meaning.
//!
//! tokio-postgres parses only `sslmode=disable|prefer|require`, so these keys are taken out
//! of the DSN text here, before it is parsed, and become a [`PgTls`]: pure data that
//! `pg::tls` turns into a rustls client configuration and that child processes receive as
//! `PGSSL*` environment variables (never on a command line). Files are only named here;
//! they are read at each connection, so rotated certificates are picked up.

use std::path::PathBuf;

use super::EnvLookup;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Plaintext first; TLS only if the server refuses plaintext.
    Allow,
    /// TLS if the server offers it (libpq's default).
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// Whether a missing root certificate is an error (the verify-* modes).
    pub fn requires_verification(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (`sslrootcert=/path`, or `~/.postgresql/root.crt` if it exists).
    File(OptionalFile),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

/// A file libpq names by default and uses only if it exists, or one the user named, which
/// must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalFile {
    pub path: PathBuf,
    /// Named in the DSN or a `PGSSL*` variable (so a missing file is an error).
    pub explicit: bool,
}

/// A TLS protocol version for `ssl_min_protocol_version` / `ssl_max_protocol_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PgTlsVersion {
    Tls12,
    Tls13,
}

/// The TLS parameters of one DSN, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub cert: Option<OptionalFile>,
    pub key: Option<OptionalFile>,
    pub crl: Option<OptionalFile>,
    /// `sslnegotiation=direct`: TLS from the first byte (PostgreSQL 17+), with ALPN.
    pub direct: bool,
    /// `sslsni` (default on): send the host name in the handshake.
    pub sni: bool,
    pub min_version: PgTlsVersion,
    pub max_version: Option<PgTlsVersion>,
}

impl PgTls {
    /// No TLS at all (`sslmode=disable`): throwaway local clusters.
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            root_cert: None,
            cert: None,
            key: None,
            crl: None,
            direct: false,
            sni: true,
            min_version: PgTlsVersion::Tls12,
            max_version: None,
        }
    }

    /// The `PGSSL*` variables that give a libpq child process (pg_basebackup) the same
    /// TLS behaviour. `sslrootcert=system` becomes the system bundle's path, which every
    /// libpq version understands (only libpq 16+ knows `system`).
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PGSSLMODE", self.mode.as_str().to_string())];
        let path = |f: &OptionalFile| f.path.display().to_string();
        match &self.root_cert {
            Some(RootCert::File(f)) => env.push(("PGSSLROOTCERT", path(f))),
            Some(RootCert::System) => env.push(("PGSSLROOTCERT", SYSTEM_BUNDLE.to_string())),
            None => {}
        }
        if let Some(f) = &self.cert {
            env.push(("PGSSLCERT", path(f)));
        }
        if let Some(f) = &self.key {
            env.push(("PGSSLKEY", path(f)));
        }
        if let Some(f) = &self.crl {
            env.push(("PGSSLCRL", path(f)));
        }
        if self.direct {
            env.push(("PGSSLNEGOTIATION", "direct".into()));
        }
        if !self.sni {
            env.push(("PGSSLSNI", "0".into()));
        }
        let version = |v: PgTlsVersion| match v {
            PgTlsVersion::Tls12 => "TLSv1.2".to_string(),
            PgTlsVersion::Tls13 => "TLSv1.3".to_string(),
        };
        env.push(("PGSSLMINPROTOCOLVERSION", version(self.min_version)));
        if let Some(v) = self.max_version {
            env.push(("PGSSLMAXPROTOCOLVERSION", version(v)));
        }
        env
    }
}

/// Debian's (and most distributions') bundle of the system's trusted CAs.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS keys libpq knows, as DSN keyword and environment variable.
const KEYS: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("sslsni", "PGSSLSNI"),
    ("sslpassword", ""),
    ("sslcompression", "PGSSLCOMPRESSION"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("requiressl", "PGREQUIRESSL"),
];

/// Takes libpq's TLS keys out of a DSN (either form: `key=value …` or a
/// `postgresql://…?key=value&…` URI). Returns the rest of the DSN, for tokio-postgres,
/// and the TLS pairs in order.
pub fn split_dsn(dsn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let trimmed = dsn.trim();
    if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        split_uri(trimmed)
    } else {
        split_keywords(trimmed)
    }
}

fn is_tls_key(key: &str) -> bool {
    KEYS.iter().any(|(k, _)| *k == key)
}

fn split_uri(uri: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        if is_tls_key(&key) {
            tls.push((key, percent_decode(v)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Splits `key = value` pairs as libpq does (values may be single-quoted, with `\'` and
/// `\\` escapes), keeping the text of the non-TLS pairs as written.
fn split_keywords(dsn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let chars: Vec<(usize, char)> = dsn.char_indices().collect();
    let mut i = 0;
    let mut kept: Vec<&str> = Vec::new();
    let mut tls = Vec::new();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(dsn.len(), |&(o, _)| o);
    loop {
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i).is_none() {
            break;
        }
        let start = offset(i);
        let key_start = i;
        while at(i).is_some_and(|c| c != '=' && !c.is_whitespace()) {
            i += 1;
        }
        let key = dsn[offset(key_start)..offset(i)].to_string();
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i) != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        i += 1;
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        let mut value = String::new();
        if at(i) == Some('\'') {
            i += 1;
            loop {
                match at(i) {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        if let Some(c) = at(i + 1) {
                            value.push(c);
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(c) = at(i).filter(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = at(i + 1) {
                        value.push(n);
                    }
                    i += 2;
                } else {
                    value.push(c);
                    i += 1;
                }
            }
        }
        if is_tls_key(&key) {
            tls.push((key, value));
        } else {
            kept.push(&dsn[start..offset(i.min(chars.len()))]);
        }
    }
    Ok((kept.join(" "), tls))
}

/// Resolves the TLS pairs taken from a DSN with libpq's precedence: DSN, `PGSSL*`
/// variables, then the files under `$HOME/.postgresql/` if they exist. The error names the
/// parameter.
pub fn resolve(pairs: &[(String, String)], env: EnvLookup<'_>) -> Result<PgTls, String> {
    let get = |key: &str| -> Option<String> {
        if let Some((_, v)) = pairs.iter().rev().find(|(k, _)| k == key) {
            return Some(v.clone());
        }
        let var = KEYS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)?;
        if var.is_empty() {
            return None;
        }
        env(var).filter(|v| !v.is_empty())
    };
    if get("sslpassword").is_some() {
        return Err("sslpassword (an encrypted client key) is not supported; give sslkey an unencrypted key file with mode 0600".into());
    }
    if get("sslcrldir").is_some() {
        return Err(
            "sslcrldir is not supported; give the revocation list as one file with sslcrl".into(),
        );
    }
    let root_cert_given = get("sslrootcert");
    let mode = match get("sslmode") {
        Some(m) => SslMode::parse(&m).ok_or_else(|| {
            format!("sslmode {m:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")
        })?,
        None if get("requiressl").as_deref() == Some("1") => SslMode::Require,
        // libpq 16+: sslrootcert=system makes verify-full the default.
        None if root_cert_given.as_deref() == Some("system") => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    let home = env("HOME").map(PathBuf::from);
    let file = |key: &str, default: &str| -> Option<OptionalFile> {
        match get(key) {
            Some(p) => Some(OptionalFile {
                path: PathBuf::from(p),
                explicit: true,
            }),
            None => home.as_ref().map(|h| OptionalFile {
                path: h.join(".postgresql").join(default),
                explicit: false,
            }),
        }
    };
    let root_cert = match root_cert_given.as_deref() {
        Some("system") => {
            if mode != SslMode::VerifyFull {
                return Err(format!(
                    "sslrootcert=system requires sslmode=verify-full (libpq refuses sslmode={} with it)",
                    mode.as_str()
                ));
            }
            Some(RootCert::System)
        }
        _ => file("sslrootcert", "root.crt").map(RootCert::File),
    };
    let direct = match get("sslnegotiation").as_deref() {
        None | Some("postgres") => false,
        Some("direct") => true,
        Some(other) => {
            return Err(format!(
                "sslnegotiation {other:?} is not one of postgres, direct"
            ))
        }
    };
    if direct && matches!(mode, SslMode::Disable | SslMode::Allow | SslMode::Prefer) {
        return Err(format!(
            "sslnegotiation=direct needs sslmode=require or stronger, not {}",
            mode.as_str()
        ));
    }
    let sni = match get("sslsni").as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(format!("sslsni {other:?} is not 0 or 1")),
    };
    let version = |key: &str| -> Result<Option<PgTlsVersion>, String> {
        match get(key).as_deref() {
            None | Some("") => Ok(None),
            Some("TLSv1.2") => Ok(Some(PgTlsVersion::Tls12)),
            Some("TLSv1.3") => Ok(Some(PgTlsVersion::Tls13)),
            Some(v @ ("TLSv1" | "TLSv1.1")) => Err(format!(
                "{key} {v:?} is older than TLS 1.2, which pgvigil does not speak"
            )),
            Some(v) => Err(format!("{key} {v:?} is not one of TLSv1.2, TLSv1.3")),
        }
    };
    let min_version = version("ssl_min_protocol_version")?.unwrap_or(PgTlsVersion::Tls12);
    let max_version = version("ssl_max_protocol_version")?;
    if max_version.is_some_and(|max| max < min_version) {
        return Err("ssl_max_protocol_version is older than ssl_min_protocol_version".into());
    }
    Ok(PgTls {
        mode,
        root_cert,
        cert: file("sslcert", "postgresql.crt"),
        key: file("sslkey", "postgresql.key"),
        crl: file("sslcrl", "root.crl"),
        direct,
        sni,
        min_version,
        max_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn tls_keys_come_out_of_keyword_dsns_and_the_rest_stays_as_written() {
        let (rest, tls) = split_dsn(
            "host=db.internal  port = 5432 sslmode=verify-full sslrootcert='/etc/ca dir/ca.crt' user=pgvigil password='it\\'s'",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=db.internal port = 5432 user=pgvigil password='it\\'s'"
        );
        assert_eq!(
            tls,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca dir/ca.crt".to_string()),
            ]
        );
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn tls_keys_come_out_of_uri_dsns() {
        let (rest, tls) = split_dsn(
            "postgresql://pgvigil@db:5432/postgres?sslmode=require&application_name=x&sslrootcert=%2Fca.crt",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://pgvigil@db:5432/postgres?application_name=x"
        );
        assert_eq!(tls[1], ("sslrootcert".to_string(), "/ca.crt".to_string()));
        let (rest, _) = split_dsn("postgresql://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://u@h/db");
    }

    #[test]
    fn malformed_dsns_are_errors_not_panics() {
        assert!(split_dsn("host=x sslmode").is_err());
        assert!(split_dsn("host='x").is_err());
        assert!(split_dsn("postgresql://h/db?sslrootcert=%G1").is_err());
        assert!(split_dsn("host=ü sslmode=require").is_ok());
    }

    #[test]
    fn precedence_is_dsn_then_environment_then_home_defaults() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLROOTCERT" => Some("/env/ca.crt".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        let tls = resolve(&[("sslmode".into(), "verify-full".into())], &env).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCert::File(OptionalFile {
                path: "/env/ca.crt".into(),
                explicit: true
            }))
        );
        assert_eq!(
            tls.key,
            Some(OptionalFile {
                path: "/home/u/.postgresql/postgresql.key".into(),
                explicit: false
            })
        );
        assert_eq!(resolve(&[], &no_env).unwrap().mode, SslMode::Prefer);
    }

    #[test]
    fn libpq_rules_for_system_roots_direct_negotiation_and_bad_values() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let tls = resolve(&pairs(&[("sslrootcert", "system")]), &no_env).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCert::System));
        let e = resolve(
            &pairs(&[("sslrootcert", "system"), ("sslmode", "require")]),
            &no_env,
        )
        .unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        let e = resolve(&pairs(&[("sslnegotiation", "direct")]), &no_env).unwrap_err();
        assert!(e.contains("require"), "{e}");
        let e = resolve(&pairs(&[("sslmode", "verify_full")]), &no_env).unwrap_err();
        assert!(e.contains("\"verify_full\""), "{e}");
        let e = resolve(&pairs(&[("sslpassword", "x")]), &no_env).unwrap_err();
        assert!(e.contains("sslpassword"), "{e}");
        let child = resolve(&pairs(&[("sslrootcert", "system")]), &no_env)
            .unwrap()
            .child_env();
        assert!(child.contains(&("PGSSLROOTCERT", SYSTEM_BUNDLE.to_string())));
        assert!(child.contains(&("PGSSLMODE", "verify-full".to_string())));
    }
}
