//! TLS for sessions to PostgreSQL and PgBouncer: a rustls client configuration built from
//! a DSN's [`PgTls`] at each connection (so rotated CA, certificate and key files are read
//! afresh), with libpq's meaning of each `sslmode`:
//!
//! - `prefer`/`require` verify nothing, unless a root certificate file exists (named, or
//!   `~/.postgresql/root.crt`): then the chain is verified as in `verify-ca`, as libpq does;
//! - `verify-ca` verifies the chain, `verify-full` the chain and the host name.
//!
//! The verifier wraps rustls' WebPKI verifier only to say what failed in words an operator
//! can act on (which CA file did not trust the certificate, which name it was not valid
//! for) and to record what happened for `check-config` ([`Handshake`]). No cryptography is
//! done here: chain, name and signature checks are rustls'.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{OptionalFile, PgTls, PgTlsVersion, RootCert, SslMode};

/// Why a TLS client configuration could not be built; each names the file and the DSN key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {}: {message}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("root certificate file {} does not exist, and sslmode={mode} needs one to verify the server; give sslrootcert a CA file, use sslrootcert=system, or choose a weaker sslmode", path.display())]
    NoRootCert { path: PathBuf, mode: &'static str },
    #[error("sslmode={0} needs a root certificate to verify the server; give sslrootcert a CA file or sslrootcert=system")]
    NoRootCertAtAll(&'static str),
    #[error("sslcert {} is given without a key (sslkey)", cert.display())]
    CertWithoutKey { cert: PathBuf },
    #[error(transparent)]
    KeyPermissions(#[from] crate::config::SecretError),
    #[error("the system trust store: {0}")]
    SystemRoots(String),
    #[error("TLS client configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
}

/// What a TLS handshake did, for `check-config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// "TLSv1.3" or "TLSv1.2"; None if the session is not encrypted.
    pub version: Option<&'static str>,
    /// How the server certificate was checked.
    pub verified: Verified,
    /// Why the server certificate was refused, in an operator's words (the error
    /// tokio-postgres returns only carries rustls' debug form).
    pub refused: Option<String>,
}

/// How a server certificate was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verified {
    /// Not at all (`prefer`/`require` without a root certificate).
    #[default]
    No,
    /// Its chain, against the named CA source (`verify-ca`, or `require` with a root file).
    Chain(String),
    /// Its chain and the host name.
    Full(String),
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::No => f.write_str("server certificate NOT verified"),
            Self::Chain(ca) => write!(
                f,
                "server certificate verified against {ca} (host name not checked)"
            ),
            Self::Full(ca) => write!(
                f,
                "server certificate verified against {ca}, host name checked"
            ),
        }
    }
}

/// A connector for one connection attempt and the slot its handshake is recorded in.
pub struct Connector {
    pub make: tokio_postgres_rustls::MakeRustlsConnect,
    pub handshake: Arc<Mutex<Handshake>>,
}

/// Builds the connector for `tls` (files are read now).
pub fn connector(tls: &PgTls) -> Result<Connector, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let handshake = Arc::new(Mutex::new(Handshake::default()));
    let check = match tls.mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => Check::None,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::Full,
    };
    let roots = load_roots(tls)?;
    let (inner, check, ca) = match (roots, check) {
        (None, Check::None) => (None, Check::None, String::new()),
        (None, _) => return Err(missing_root(tls)),
        (Some((store, ca)), check) => {
            // libpq: with a root certificate, require (and prefer) verify the chain.
            let check = if check == Check::None {
                Check::Chain
            } else {
                check
            };
            let mut builder =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone());
            if let Some(crl) = existing(&tls.crl, "sslcrl")? {
                builder = builder
                    .with_crls(crate::trust::pem_objects::<
                        CertificateRevocationListDer<'static>,
                    >(
                        &crl, "sslcrl", "PEM certificate revocation list"
                    )?)
                    .allow_unknown_revocation_status();
            }
            let verifier = builder
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            (Some(verifier), check, ca)
        }
    };
    let verifier = Arc::new(Verifier {
        inner,
        check,
        ca,
        provider: provider.clone(),
        handshake: handshake.clone(),
    });
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (PgTlsVersion::Tls12, &rustls::version::TLS12),
        (PgTlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= tls.min_version && tls.max_version.is_none_or(|max| *v <= max))
    .map(|(_, v)| v)
    .collect();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_identity(tls)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    // PostgreSQL 17's direct negotiation requires it; earlier servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    config.enable_sni = tls.sni;
    // Every connection is verified in full (and so reported truthfully).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Connector {
        make: tokio_postgres_rustls::MakeRustlsConnect::new(config),
        handshake,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Chain,
    Full,
}

fn missing_root(tls: &PgTls) -> TlsError {
    match &tls.root_cert {
        Some(RootCert::File(f)) => TlsError::NoRootCert {
            path: f.path.clone(),
            mode: tls.mode.as_str(),
        },
        _ => TlsError::NoRootCertAtAll(tls.mode.as_str()),
    }
}

/// The file, if it was named (then it must exist) or its default exists.
fn existing(file: &Option<OptionalFile>, key: &'static str) -> Result<Option<PathBuf>, TlsError> {
    match file {
        Some(f) if f.path.exists() => Ok(Some(f.path.clone())),
        Some(f) if f.explicit => Err(TlsError::Read {
            key,
            path: f.path.clone(),
            message: "no such file".into(),
        }),
        _ => Ok(None),
    }
}

fn load_roots(tls: &PgTls) -> Result<Option<(RootCertStore, String)>, TlsError> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    match &tls.root_cert {
        Some(RootCert::System) => {
            let store =
                crate::trust::system_roots().map_err(|e| TlsError::SystemRoots(e.to_string()))?;
            Ok(Some((store, "the system trust store".into())))
        }
        Some(RootCert::File(f)) => {
            let Some(path) = existing(&Some(f.clone()), "sslrootcert")? else {
                return Ok(None);
            };
            let store = crate::trust::roots_from_file(&path, "sslrootcert")?;
            Ok(Some((store, path.display().to_string())))
        }
        None => Ok(None),
    }
}

/// The client certificate chain and key, if configured (or present at libpq's defaults).
/// The key file's permissions are checked as libpq checks them.
fn client_identity(
    tls: &PgTls,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let Some(cert) = existing(&tls.cert, "sslcert")? else {
        return Ok(None);
    };
    let key = match existing(&tls.key, "sslkey")? {
        Some(k) => k,
        None => return Err(TlsError::CertWithoutKey { cert }),
    };
    crate::config::check_private("sslkey", &key)?;
    let chain = crate::trust::certificates(&cert, "sslcert")?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Read {
        key: "sslkey",
        path: key.clone(),
        message: e.to_string(),
    })?;
    Ok(Some((chain, key_der)))
}

/// rustls' verifier, with errors that name the CA source and the host, and a record of
/// the protocol version and what was verified.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check: Check,
    /// The CA source, for messages.
    ca: String,
    provider: Arc<CryptoProvider>,
    handshake: Arc<Mutex<Handshake>>,
}

/// A certificate refusal in an operator's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

impl Verifier {
    /// Records `message` as the refusal and returns it as rustls' error.
    fn refuse(&self, message: String) -> rustls::Error {
        if let Ok(mut h) = self.handshake.lock() {
            h.refused = Some(message.clone());
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            Refusal(message),
        ))))
    }

    fn record(&self, version: Option<&'static str>, verified: Option<Verified>) {
        if let Ok(mut h) = self.handshake.lock() {
            if version.is_some() {
                h.version = version;
            }
            if let Some(v) = verified {
                h.verified = v;
            }
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            self.record(None, Some(Verified::No));
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(ok) => {
                let v = match self.check {
                    Check::Full => Verified::Full(self.ca.clone()),
                    _ => Verified::Chain(self.ca.clone()),
                };
                self.record(None, Some(v));
                Ok(ok)
            }
            Err(rustls::Error::InvalidCertificate(
                e @ (CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }),
            )) => {
                if self.check == Check::Full {
                    let name = server_name.to_str();
                    Err(self.refuse(format!(
                        "the server certificate is not valid for host {name:?} (sslmode=verify-full): {e}"
                    )))
                } else {
                    // verify-ca: the chain was good (webpki checks the name last).
                    self.record(None, Some(Verified::Chain(self.ca.clone())));
                    Ok(ServerCertVerified::assertion())
                }
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Err(self
                .refuse(format!(
                    "the server certificate is not trusted by {} (unknown issuer)",
                    self.ca
                ))),
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
                Err(self.refuse("the server certificate is revoked (sslcrl)".to_string()))
            }
            Err(rustls::Error::InvalidCertificate(e)) => Err(self.refuse(format!(
                "the server certificate was refused (checked against {}): {e}",
                self.ca
            ))),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.record(Some("TLSv1.2"), None);
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
        self.record(Some("TLSv1.3"), None);
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
