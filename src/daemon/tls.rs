//! HTTPS for the listeners: a rustls server configuration built from certificate, key and
//! client-CA files, and rebuilt when they change on disk. cert-manager and Kubernetes
//! secret volumes replace the files in place (a symlink swap of a `..data` directory), so
//! every new connection first compares the files' identity (device, inode, size, mtime:
//! three `stat` calls, following symlinks) with the last load, and rebuilds on a change.
//! A rebuild that fails (files half-written, key not matching the certificate, bad PEM)
//! keeps the previous configuration and logs `tls.reload.failed`; the next change is
//! tried again. The whole configuration is swapped rather than only the certificate (a
//! `ResolvesServerCert`) so that a rotated client CA is picked up the same way.
//!
//! Crypto is rustls with the aws-lc-rs provider, chosen explicitly (not the process
//! default, which is ambiguous when a dependency also enables ring).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, SupportedCipherSuite};

use crate::config::{check_private, ClientAuth, SecretError, TlsSettings, TlsVersion};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{listener}: cannot read {}: {source}", path.display())]
    Read {
        listener: &'static str,
        path: PathBuf,
        #[source]
        source: Box<rustls::pki_types::pem::Error>,
    },
    #[error("{listener}: {} holds no certificate", path.display())]
    NoCertificate {
        listener: &'static str,
        path: PathBuf,
    },
    #[error(transparent)]
    KeyPermissions(#[from] SecretError),
    #[error("{listener}: cipher suite {name:?} is not available (TLS 1.2 suites: {available})")]
    CipherSuite {
        listener: &'static str,
        name: String,
        available: String,
    },
    #[error("{listener}: {source}")]
    ClientCa {
        listener: &'static str,
        #[source]
        source: crate::trust::TrustError,
    },
    #[error("{listener}: client certificate verifier: {source}")]
    Verifier {
        listener: &'static str,
        #[source]
        source: Box<rustls::server::VerifierBuilderError>,
    },
    #[error("{listener}: certificate {} and key {}: {source}", cert.display(), key.display())]
    Config {
        listener: &'static str,
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: Box<rustls::Error>,
    },
}

/// A file's identity on disk; `None` when it cannot be stat'ed (then a load fails loudly).
type Stamp = Vec<Option<(u64, u64, u64, i64, i64)>>;

/// A server configuration that follows its files.
pub struct Reloading {
    listener: &'static str,
    settings: TlsSettings,
    http2: bool,
    state: Mutex<(Stamp, Arc<ServerConfig>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("listener", &self.listener)
            .field("cert_file", &self.settings.cert_file)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    /// Loads the files once; an error here stops the daemon from starting.
    pub fn load(
        listener: &'static str,
        settings: TlsSettings,
        http2: bool,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(&settings);
        let config = build(listener, &settings, http2)?;
        Ok(Self {
            listener,
            settings,
            http2,
            state: Mutex::new((stamp, Arc::new(config))),
        })
    }

    /// The configuration for a new connection, rebuilt first if a file changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.settings);
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.0 != now {
            state.0 = now;
            match build(self.listener, &self.settings, self.http2) {
                Ok(config) => {
                    state.1 = Arc::new(config);
                    tracing::info!(event = "tls.reloaded", listener = self.listener, cert_file = %self.settings.cert_file.display(), "TLS certificate files changed; reloaded");
                }
                Err(e) => {
                    tracing::warn!(event = "tls.reload.failed", listener = self.listener, error = %e, "TLS files changed but cannot be loaded; keeping the previous certificate");
                }
            }
        }
        state.1.clone()
    }
}

fn stamp(s: &TlsSettings) -> Stamp {
    let files: [Option<&Path>; 3] = [
        Some(&s.cert_file),
        Some(&s.key_file),
        s.client_ca_file.as_deref(),
    ];
    files
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn provider(listener: &'static str, s: &TlsSettings) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if s.cipher_suites.is_empty() {
        return Ok(provider);
    }
    let name = |suite: &SupportedCipherSuite| format!("{:?}", suite.suite());
    let tls12: Vec<String> = provider
        .cipher_suites
        .iter()
        .filter(|c| matches!(c, SupportedCipherSuite::Tls12(_)))
        .map(name)
        .collect();
    // Go spells two ChaCha20 suites without the `_SHA256` suffix.
    let wanted: Vec<String> = s
        .cipher_suites
        .iter()
        .map(|n| {
            if tls12.contains(n) {
                Ok(n.clone())
            } else if tls12.contains(&format!("{n}_SHA256")) {
                Ok(format!("{n}_SHA256"))
            } else {
                Err(TlsError::CipherSuite {
                    listener,
                    name: n.clone(),
                    available: tls12.join(", "),
                })
            }
        })
        .collect::<Result<_, _>>()?;
    // As in Go, the list governs TLS 1.2 only; TLS 1.3 suites are always offered.
    provider.cipher_suites.retain(|c| match c {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => wanted.contains(&name(c)),
    });
    Ok(provider)
}

fn build(listener: &'static str, s: &TlsSettings, http2: bool) -> Result<ServerConfig, TlsError> {
    let read = |path: &Path, source| TlsError::Read {
        listener,
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| read(&s.cert_file, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            listener,
            path: s.cert_file.clone(),
        });
    }
    check_private(listener_key(listener), &s.key_file)?;
    let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| read(&s.key_file, e))?;
    let provider = Arc::new(provider(listener, s)?);
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match (s.min_version, s.max_version) {
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
            (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
            (TlsVersion::Tls12, TlsVersion::Tls13) => {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            }
        };
    let config_err = |source| TlsError::Config {
        listener,
        cert: s.cert_file.clone(),
        key: s.key_file.clone(),
        source: Box::new(source),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(config_err)?;
    let builder = match (s.client_auth, &s.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (policy, Some(ca)) => {
            let roots = crate::trust::roots_from_file(ca, "client_ca_file")
                .map_err(|source| TlsError::ClientCa { listener, source })?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if policy == ClientAuth::VerifyIfGiven {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                listener,
                source: Box::new(source),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // with_single_cert checks that the key matches the certificate.
    let mut config = builder.with_single_cert(certs, key).map_err(config_err)?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.ignore_client_order = s.prefer_server_cipher_suites;
    Ok(config)
}

/// The configuration key of a listener's key file, for permission errors.
fn listener_key(listener: &'static str) -> &'static str {
    match listener {
        "api_proxy.listen" => "api_proxy.tls_key_file",
        _ => "server.tls_key_file (or tls_server_config.key_file)",
    }
}
