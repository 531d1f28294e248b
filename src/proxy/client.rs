//! The one HTTP client of the proxy, for the upstream and the JWKS endpoint alike. An
//! `https://` URL is spoken over rustls (aws-lc-rs, TLS 1.2+), trusting
//! `api_proxy.upstream_ca_file` when set and the system roots otherwise; an `http://` URL goes
//! through the same pooled client untouched, so plaintext pays nothing for TLS being possible.
//! The roots are only loaded when some configured URL is `https://`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::config::ApiProxySettings;

/// The proxy's pooled client: plain HTTP or rustls per URL scheme.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Why the client's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read api_proxy.upstream_ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("api_proxy.upstream_ca_file {path} holds no usable certificate")]
    NoCa { path: PathBuf },
    #[error("no system root certificates could be loaded ({0}); set api_proxy.upstream_ca_file")]
    NoSystemRoots(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|source| TlsError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    for cert in certs {
        let cert = cert.map_err(|source| TlsError::CaFile {
            path: path.to_path_buf(),
            source,
        })?;
        // A certificate rustls cannot parse as a trust anchor is an error too, not a skip:
        // the operator named this file to be trusted.
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoSystemRoots(if why.is_empty() {
            "none found".into()
        } else {
            why
        }));
    }
    Ok(roots)
}

/// What every client of the proxy is made from: the TLS configuration (built once: loading
/// the roots is the part that can fail) and the connect timeout. Each proxy worker thread
/// gets a client of its own, so a pooled upstream connection is always driven by the
/// thread that uses it (nginx keeps its keep-alive pool per worker for the same reason).
#[derive(Clone)]
pub struct Clients {
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
}

impl Clients {
    /// Loads the roots for `settings` (the CA file, or the system roots when some URL is
    /// `https://`).
    pub fn new(settings: &ApiProxySettings) -> Result<Self, TlsError> {
        let https = |u: &hyper::Uri| u.scheme_str() == Some("https");
        let needs_tls = https(&settings.upstream) || settings.jwks_url.as_ref().is_some_and(https);
        let roots = match (&settings.upstream_ca_file, needs_tls) {
            (Some(path), _) => ca_file(path)?,
            (None, true) => system_roots()?,
            (None, false) => RootCertStore::empty(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls,
            connect_timeout: settings.upstream_timeout.min(Duration::from_secs(5)),
        })
    }

    /// A new client with a pool of its own.
    pub fn client(&self) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector)
    }
}

/// One client for `settings` (the `check-config` probe).
pub fn build(settings: &ApiProxySettings) -> Result<HttpClient, TlsError> {
    Ok(Clients::new(settings)?.client())
}
