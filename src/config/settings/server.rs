//! `[server]`: the metrics listener, and [`ListenerSettings`], what every HTTP listener
//! (`[server]` and `[api_proxy]`) is configured with: TLS files and versions, client
//! certificates, timeouts and a connection cap. Pure data: the certificate files are named
//! here and read (and re-read on change) by `daemon::listener`; the exporter-toolkit web
//! configuration file is parsed by `web.rs` and merged in by [`ServerSettings::apply_web_config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::raw::ServerConfig;
use super::web::WebConfig;
use super::{Ctx, Error};
use crate::config::error::Location;

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// When set, /metrics requires `Authorization: Bearer <contents>`.
    pub bearer_token_file: Option<PathBuf>,
    /// The exporter-toolkit web configuration file merged into these settings, if any.
    pub web_config_file: Option<PathBuf>,
    /// Users allowed by HTTP basic auth: name → bcrypt hash (from the web config file).
    pub basic_auth_users: BTreeMap<String, String>,
    /// Whether /healthz and /readyz require authentication when it is configured.
    pub protect_probes: bool,
    /// TLS, timeouts and connection cap of the metrics listener.
    pub listener: ListenerSettings,
    /// Settings accepted but not applied (e.g. `curve_preferences`), logged at start.
    pub warnings: Vec<String>,
}

/// What one HTTP listener is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// HTTPS when set; plain HTTP otherwise.
    pub tls: Option<TlsSettings>,
    /// Limit on the TLS handshake and on reading a request's headers.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Threads serving this listener, each with its own runtime and socket; 0 serves it on
    /// the daemon's shared runtime.
    pub workers: usize,
    /// Whether HTTP/2 is offered (ALPN `h2`, or prior knowledge on plain HTTP).
    pub http2: bool,
    /// Headers added to every response (exporter-toolkit `http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

/// HTTPS on a listener: where the certificate lives and whom it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Whether clients must present a certificate.
    pub client_auth: ClientAuth,
    /// CA bundle that client certificates must chain to; set whenever `client_auth` is not `None`.
    pub client_ca_file: Option<PathBuf>,
    /// Lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Highest protocol version accepted.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites allowed, by IANA name; empty = the library's defaults.
    pub cipher_suites: Vec<String>,
    /// Whether the server's cipher order wins over the client's.
    pub prefer_server_cipher_suites: bool,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is optional, but verified against the client CA when given.
    VerifyIfGiven,
    /// A certificate signed by the client CA is required.
    Require,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The listener keys shared by `[server]` and `[api_proxy]`, borrowed from the raw section.
pub(super) struct ListenerKeys<'a> {
    pub section: &'static str,
    pub tls_cert_file: &'a Option<String>,
    pub tls_key_file: &'a Option<String>,
    pub tls_client_ca_file: &'a Option<String>,
    pub tls_min_version: &'a str,
    pub header_read_timeout: &'a str,
    pub idle_timeout: &'a str,
    pub max_connections: usize,
    /// Worker threads (`[api_proxy] workers`); `None` for a listener that has none.
    pub workers: Option<usize>,
}

/// Most worker threads a listener may have.
pub const MAX_WORKERS: usize = 64;

/// Worker threads of a listener whose `workers` key is not set: one per CPU, at most 16.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16)
}

/// Validates the listener keys of one section.
pub(super) fn validate_listener(
    ctx: &Ctx<'_>,
    keys: ListenerKeys<'_>,
) -> Result<ListenerSettings, Error> {
    let s = keys.section;
    let file = |k: &'static str, v: &Option<String>| -> Result<Option<PathBuf>, Error> {
        match v {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(ctx.invalid(&[s, k], "is empty")),
            Some(v) => Ok(Some(PathBuf::from(ctx.expand(&[s, k], v)?))),
        }
    };
    let cert = file("tls_cert_file", keys.tls_cert_file)?;
    let key = file("tls_key_file", keys.tls_key_file)?;
    let ca = file("tls_client_ca_file", keys.tls_client_ca_file)?;
    let min_version = match keys.tls_min_version.trim() {
        "1.2" | "TLS12" => TlsVersion::Tls12,
        "1.3" | "TLS13" => TlsVersion::Tls13,
        other => {
            return Err(ctx.invalid(
                &[s, "tls_min_version"],
                format!("{other:?} is not a TLS version; use \"1.2\" or \"1.3\""),
            ))
        }
    };
    let tls = match (cert, key) {
        (None, None) => {
            if ca.is_some() {
                return Err(ctx.invalid(
                    &[s, "tls_client_ca_file"],
                    "needs tls_cert_file and tls_key_file (client certificates need TLS)",
                ));
            }
            None
        }
        (Some(_), None) => {
            return Err(ctx.invalid(&[s, "tls_key_file"], "is required with tls_cert_file"))
        }
        (None, Some(_)) => {
            return Err(ctx.invalid(&[s, "tls_cert_file"], "is required with tls_key_file"))
        }
        (Some(cert_file), Some(key_file)) => Some(TlsSettings {
            cert_file,
            key_file,
            client_auth: if ca.is_some() {
                ClientAuth::Require
            } else {
                ClientAuth::None
            },
            client_ca_file: ca,
            min_version,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            prefer_server_cipher_suites: true,
        }),
    };
    let header_read_timeout =
        ctx.duration(&[s, "header_read_timeout"], keys.header_read_timeout)?;
    let idle_timeout = ctx.duration(&[s, "idle_timeout"], keys.idle_timeout)?;
    for (k, d) in [
        ("header_read_timeout", header_read_timeout),
        ("idle_timeout", idle_timeout),
    ] {
        if d.is_zero() {
            return Err(ctx.invalid(&[s, k], "must be more than 0s"));
        }
    }
    if keys.max_connections == 0 {
        return Err(ctx.invalid(&[s, "max_connections"], "must be at least 1"));
    }
    let workers = keys.workers.unwrap_or(0);
    if workers > MAX_WORKERS {
        return Err(ctx.invalid(
            &[s, "workers"],
            format!("{workers} is more than {MAX_WORKERS} threads"),
        ));
    }
    Ok(ListenerSettings {
        tls,
        header_read_timeout,
        idle_timeout,
        max_connections: keys.max_connections,
        workers,
        http2: true,
        headers: Vec::new(),
    })
}

pub(super) fn validate(ctx: &Ctx<'_>, raw: ServerConfig) -> Result<ServerSettings, Error> {
    let listen = ctx.expand(&["server", "listen"], &raw.listen)?;
    let listen: SocketAddr = listen.parse().map_err(|_| {
        ctx.invalid(
            &["server", "listen"],
            format!("{listen:?} is not a socket address; use e.g. \"0.0.0.0:9432\""),
        )
    })?;
    let listener = validate_listener(
        ctx,
        ListenerKeys {
            section: "server",
            tls_cert_file: &raw.tls_cert_file,
            tls_key_file: &raw.tls_key_file,
            tls_client_ca_file: &raw.tls_client_ca_file,
            tls_min_version: &raw.tls_min_version,
            header_read_timeout: &raw.header_read_timeout,
            idle_timeout: &raw.idle_timeout,
            max_connections: raw.max_connections,
            workers: None,
        },
    )?;
    let optional_path = |k: &str, v: Option<String>| -> Result<Option<PathBuf>, Error> {
        v.map(|v| ctx.expand(&["server", k], &v).map(PathBuf::from))
            .transpose()
    };
    Ok(ServerSettings {
        listen,
        bearer_token_file: optional_path("bearer_token_file", raw.bearer_token_file)?,
        web_config_file: optional_path("web_config_file", raw.web_config_file)?,
        basic_auth_users: BTreeMap::new(),
        protect_probes: raw.protect_probes,
        listener,
        warnings: Vec::new(),
    })
}

impl ServerSettings {
    /// Merges a parsed exporter-toolkit web configuration (read from `file`) into these
    /// settings: its TLS section replaces the metrics listener's, its users enable basic
    /// auth, its headers are added to every response. TLS set both in `[server]` and in the
    /// file is refused: which one wins would be a guess.
    pub fn apply_web_config(&mut self, file: &Path, web: WebConfig) -> Result<(), Error> {
        if web.tls.is_some() && self.listener.tls.is_some() {
            return Err(Error::Invalid {
                location: Location {
                    file: file.to_path_buf(),
                    line: None,
                },
                key: "tls_server_config".into(),
                message: "TLS is configured both here and in [server] tls_cert_file; keep one"
                    .into(),
            });
        }
        if web.tls.is_some() {
            self.listener.tls = web.tls;
        }
        self.listener.http2 = web.http2;
        self.listener.headers = web.headers;
        self.basic_auth_users = web.basic_auth_users;
        self.warnings.extend(web.warnings);
        self.web_config_file = Some(file.to_path_buf());
        Ok(())
    }
}
