//! The one HTTP client of the proxy, for the upstream and the JWKS endpoint alike. An
//! `https://` URL is spoken over rustls (aws-lc-rs, TLS 1.2+), trusting
//! `api_proxy.upstream_ca_file` when set and the system roots otherwise; an `http://` URL goes
//! through the same pooled client untouched, so plaintext pays nothing for TLS being possible.
//! The roots are only loaded when some configured URL is `https://`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use crate::config::ApiProxySettings;

/// The proxy's pooled client: plain HTTP or rustls per URL scheme.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Why the client's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    CaFile(crate::trust::TrustError),
    #[error("{0}; set api_proxy.upstream_ca_file")]
    NoSystemRoots(crate::trust::TrustError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
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
            (Some(path), _) => crate::trust::roots_from_file(path, "api_proxy.upstream_ca_file")
                .map_err(TlsError::CaFile)?,
            (None, true) => crate::trust::system_roots().map_err(TlsError::NoSystemRoots)?,
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

    /// The upstream connections of one worker for `scheme://authority` (the proxy's own
    /// pool; see [`super::upstream`]).
    pub fn upstream(
        &self,
        scheme: &axum::http::uri::Scheme,
        authority: &axum::http::uri::Authority,
    ) -> Result<super::upstream::Upstream, String> {
        super::upstream::Upstream::new(scheme, authority, &self.tls, self.connect_timeout)
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
