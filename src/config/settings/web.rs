//! The Prometheus exporter-toolkit web configuration file (`--web.config.file`, YAML), read
//! as postgres_exporter and node_exporter read it, so an operator can reuse the file they
//! already have: `tls_server_config` (certificate, key, client CA and policy, versions,
//! cipher suites), `http_server_config` (`http2`, security `headers`) and
//! `basic_auth_users` (bcrypt hashes). Unknown keys are errors, as in exporter-toolkit
//! (`yaml.UnmarshalStrict`); relative paths are relative to the file's directory.
//!
//! Differences, each refused or reported rather than silently changed: inline `cert`/`key`/
//! `client_ca` and `client_allowed_sans` are refused (use files); `RequireAnyClientCert`
//! is refused (pgvigil verifies every client certificate it asks for); `RequestClientCert`
//! behaves as `NoClientCert` (the certificate would not be checked either way) and
//! `curve_preferences` is ignored, both with a warning at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::server::{ClientAuth, TlsSettings, TlsVersion};
use crate::config::error::{Error, Location};

/// A parsed web configuration file, ready to merge into `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// HTTPS, when `tls_server_config` names a certificate.
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2` (default true).
    pub http2: bool,
    /// `http_server_config.headers`, in file order.
    pub headers: Vec<(String, String)>,
    /// `basic_auth_users`: name → bcrypt hash.
    pub basic_auth_users: BTreeMap<String, String>,
    /// Keys accepted but not applied.
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeb {
    tls_server_config: Option<RawTls>,
    http_server_config: RawHttp,
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    cert_file: String,
    key_file: String,
    cert: String,
    key: String,
    client_auth_type: String,
    client_ca_file: String,
    client_ca: String,
    client_allowed_sans: Vec<String>,
    min_version: String,
    max_version: String,
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit lets a web config set, with the values it allows (empty:
/// any value).
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Parses a web configuration file's text; `file` is its path (for messages and to
/// resolve relative paths).
pub fn parse(text: &str, file: &Path) -> Result<WebConfig, Error> {
    let invalid = |key: &str, line: Option<usize>, message: String| Error::Invalid {
        location: Location {
            file: file.to_path_buf(),
            line,
        },
        key: key.to_string(),
        message,
    };
    let raw: RawWeb = if text.trim().is_empty() {
        RawWeb::default()
    } else {
        serde_norway::from_str(text).map_err(|e| Error::Syntax {
            location: Location {
                file: file.to_path_buf(),
                line: e.location().map(|l| l.line()),
            },
            key: "(document)".into(),
            message: e.to_string(),
        })?
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut warnings = Vec::new();
    let tls = match raw.tls_server_config {
        None => None,
        Some(t) => {
            let k = |name: &str| format!("tls_server_config.{name}");
            for (name, v) in [
                ("cert", &t.cert),
                ("key", &t.key),
                ("client_ca", &t.client_ca),
            ] {
                if !v.is_empty() {
                    return Err(invalid(
                        &k(name),
                        None,
                        format!("inline PEM is not supported; use {name}_file"),
                    ));
                }
            }
            if !t.client_allowed_sans.is_empty() {
                return Err(invalid(
                    &k("client_allowed_sans"),
                    None,
                    "is not supported; issue client certificates from a dedicated CA instead"
                        .into(),
                ));
            }
            let ca = (!t.client_ca_file.is_empty()).then(|| resolve(&t.client_ca_file));
            let client_auth = match t.client_auth_type.as_str() {
                "" | "NoClientCert" => ClientAuth::None,
                "RequestClientCert" => {
                    warnings.push(
                        "tls_server_config.client_auth_type RequestClientCert: the certificate \
                         is not verified, so it is not asked for (as NoClientCert)"
                            .to_string(),
                    );
                    ClientAuth::None
                }
                "RequireAnyClientCert" => {
                    return Err(invalid(
                        &k("client_auth_type"),
                        None,
                        "RequireAnyClientCert (unverified certificates) is not supported; use \
                         RequireAndVerifyClientCert with client_ca_file"
                            .into(),
                    ))
                }
                "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
                "RequireAndVerifyClientCert" => ClientAuth::Require,
                other => {
                    return Err(invalid(
                        &k("client_auth_type"),
                        None,
                        format!("{other:?} is not a client auth type (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"),
                    ))
                }
            };
            match (client_auth, &ca) {
                (ClientAuth::None, Some(_)) if t.client_auth_type != "RequestClientCert" => {
                    return Err(invalid(
                        &k("client_ca_file"),
                        None,
                        "is set but client_auth_type does not ask for client certificates; set \
                         client_auth_type: RequireAndVerifyClientCert"
                            .into(),
                    ))
                }
                (ClientAuth::VerifyIfGiven | ClientAuth::Require, None) => {
                    return Err(invalid(
                        &k("client_ca_file"),
                        None,
                        format!("is required with client_auth_type {}", t.client_auth_type),
                    ))
                }
                _ => {}
            }
            let version = |name: &str, v: &str, default: TlsVersion| match v {
                "" => Ok(default),
                "TLS12" => Ok(TlsVersion::Tls12),
                "TLS13" => Ok(TlsVersion::Tls13),
                "TLS10" | "TLS11" => Err(invalid(
                    &k(name),
                    None,
                    format!("{v} is not offered (TLS 1.2 is the lowest version pgvigil speaks)"),
                )),
                other => Err(invalid(
                    &k(name),
                    None,
                    format!("{other:?} is not a TLS version; use TLS12 or TLS13"),
                )),
            };
            let min_version = version("min_version", &t.min_version, TlsVersion::Tls12)?;
            let max_version = version("max_version", &t.max_version, TlsVersion::Tls13)?;
            if max_version < min_version {
                return Err(invalid(
                    &k("max_version"),
                    None,
                    "is lower than min_version".into(),
                ));
            }
            if !t.curve_preferences.is_empty() {
                warnings.push(
                    "tls_server_config.curve_preferences is ignored: the TLS library's key \
                     exchange groups are used"
                        .to_string(),
                );
            }
            match (t.cert_file.is_empty(), t.key_file.is_empty()) {
                // exporter-toolkit: no certificate means plain HTTP (basic auth only).
                (true, true) => None,
                (false, true) => {
                    return Err(invalid(
                        &k("key_file"),
                        None,
                        "is required with cert_file".into(),
                    ))
                }
                (true, false) => {
                    return Err(invalid(
                        &k("cert_file"),
                        None,
                        "is required with key_file".into(),
                    ))
                }
                (false, false) => Some(TlsSettings {
                    cert_file: resolve(&t.cert_file),
                    key_file: resolve(&t.key_file),
                    client_auth,
                    client_ca_file: ca,
                    min_version,
                    max_version,
                    cipher_suites: t.cipher_suites,
                    prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
                }),
            }
        }
    };
    let mut headers = Vec::new();
    for (name, value) in raw.http_server_config.headers {
        let Some((canonical, values)) = ALLOWED_HEADERS
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            return Err(invalid(
                &format!("http_server_config.headers.{name}"),
                None,
                "can not be configured (allowed: Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)".into(),
            ));
        };
        if !values.is_empty() && !values.iter().any(|v| v.eq_ignore_ascii_case(&value)) {
            return Err(invalid(
                &format!("http_server_config.headers.{name}"),
                None,
                format!("{value:?} is not allowed; use one of {values:?}"),
            ));
        }
        headers.push(((*canonical).to_string(), value));
    }
    for (user, hash) in &raw.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(invalid(
                &format!("basic_auth_users.{user}"),
                None,
                "is not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')".into(),
            ));
        }
    }
    Ok(WebConfig {
        tls,
        http2: raw.http_server_config.http2.unwrap_or(true),
        headers,
        basic_auth_users: raw.basic_auth_users,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    #[test]
    fn parses_the_exporter_toolkit_example() {
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /etc/tls/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\nhttp_server_config:\n  http2: false\n  headers:\n    \
             X-Frame-Options: deny\nbasic_auth_users:\n  prometheus: {HASH}\n"
        );
        let w = parse(&text, Path::new("/etc/pgvigil/web.yml")).unwrap();
        let tls = w.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/pgvigil/server.crt"));
        assert_eq!(tls.key_file, Path::new("/etc/tls/server.key"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/pgvigil/ca.crt"))
        );
        assert_eq!(tls.client_auth, ClientAuth::Require);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert!(!w.http2);
        assert_eq!(
            w.headers,
            [("X-Frame-Options".to_string(), "deny".to_string())]
        );
        assert_eq!(w.basic_auth_users["prometheus"], HASH);
    }

    #[test]
    fn basic_auth_only_is_plain_http() {
        let w = parse(
            &format!("basic_auth_users:\n  alice: {HASH}\n"),
            Path::new("web.yml"),
        )
        .unwrap();
        assert!(w.tls.is_none());
        assert!(parse("", Path::new("web.yml"))
            .unwrap()
            .basic_auth_users
            .is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let p = Path::new("web.yml");
        for bad in [
            "tls_server_config:\n  cert_file: a\n",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
            "http_server_config:\n  headers:\n    Server: pgvigil\n",
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "basic_auth_users:\n  alice: plaintext\n",
            "unknown_key: 1\n",
        ] {
            assert!(parse(bad, p).is_err(), "{bad}");
        }
    }
}
