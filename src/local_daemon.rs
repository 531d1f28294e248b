//! The one HTTP client for talking to this host's pgvigil daemon: `wal-push` reports each
//! push to it, `pgvigil status` reads its own health from it. It goes where the
//! configuration says the daemon listens (`server.listen`; an unspecified address such as
//! `0.0.0.0` means loopback), over HTTPS when that listener has TLS, and with the bearer
//! token when one is configured (read from `server.bearer_token_file`, as the daemon does).
//!
//! Over HTTPS it trusts exactly the certificate the daemon serves: the leaf of the
//! configured `cert_file`. The address is an IP that certificates rarely name, and the file
//! the daemon itself reads needs no CA to be trusted; anything else presented is refused.
//! Basic-auth passwords and client certificates are not the client's to have: a daemon
//! that requires them answers 401 or refuses the handshake, and the caller says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::ServerSettings;

/// Bodies larger than this are not the daemon's answer.
const MAX_BODY: usize = 8 << 20;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] crate::trust::TrustError),
    #[error(transparent)]
    Token(#[from] crate::config::SecretError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url}: no answer within {patience:?}")]
    Timeout { url: String, patience: Duration },
}

/// A client for the daemon of one configuration.
pub struct LocalDaemon {
    /// `http://127.0.0.1:9432` or `https://...`.
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    bearer: Option<String>,
}

impl LocalDaemon {
    /// A client for the daemon `server` configures, with its credentials when
    /// `credentials` (a bearer token file must then be readable).
    pub fn new(server: &ServerSettings, credentials: bool) -> Result<Self, Error> {
        let addr = local(server.listen);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (scheme, verifier): (&str, Option<Arc<dyn ServerCertVerifier>>) =
            match &server.listener.tls {
                Some(tls) => {
                    let chain: Vec<CertificateDer<'static>> = crate::trust::pem_objects(
                        &tls.cert_file,
                        "server.web_config_file tls_server_config.cert_file",
                        "certificate",
                    )?;
                    let pinned = Pinned {
                        leaf: chain.into_iter().next(),
                        provider: provider.clone(),
                    };
                    ("https", Some(Arc::new(pinned)))
                }
                None => ("http", None),
            };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?;
        let tls = match verifier {
            Some(v) => builder
                .dangerous()
                .with_custom_certificate_verifier(v)
                .with_no_client_auth(),
            None => builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let bearer = match (&server.bearer_token_file, credentials) {
            (Some(path), true) => {
                let token = crate::config::read_secret_file("server.bearer_token_file", path)?;
                Some(format!("Bearer {}", String::from_utf8_lossy(&token).trim()))
            }
            _ => None,
        };
        Ok(Self {
            base: format!("{scheme}://{addr}"),
            client: Client::builder(TokioExecutor::new()).build(connector),
            bearer,
        })
    }

    /// Where the daemon is asked, e.g. `http://127.0.0.1:9432`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs `path`; the status and the body.
    pub async fn get(&self, path: &str, patience: Duration) -> Result<(StatusCode, Bytes), Error> {
        self.send(Method::GET, path, None, patience).await
    }

    /// POSTs `body` (JSON) to `path`; the status and the body.
    pub async fn post_json(
        &self,
        path: &str,
        body: String,
        patience: Duration,
    ) -> Result<(StatusCode, Bytes), Error> {
        self.send(Method::POST, path, Some(body), patience).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        patience: Duration,
    ) -> Result<(StatusCode, Bytes), Error> {
        let url = format!("{}{path}", self.base);
        let fail = |message: String| Error::Request {
            url: url.clone(),
            message,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(b) = &self.bearer {
            req = req.header(hyper::header::AUTHORIZATION, b);
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| fail(crate::errors::chain(&e)))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(patience, exchange)
            .await
            .map_err(|_| Error::Timeout {
                url: url.clone(),
                patience,
            })?
    }
}

/// The address to reach a daemon listening on `listen` from this host.
fn local(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Trusts exactly one certificate: the leaf of the daemon's own `cert_file`.
#[derive(Debug)]
struct Pinned {
    leaf: Option<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.leaf {
            Some(leaf) if leaf.as_ref() == end_entity.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::General(
                "the daemon presented a certificate other than its configured cert_file".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let at = |s: &str| local(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9432"), "127.0.0.1:9432");
        assert_eq!(at("[::]:9432"), "[::1]:9432");
        assert_eq!(at("127.0.0.2:1"), "127.0.0.2:1");
    }
}
