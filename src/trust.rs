//! Trust anchors for every TLS connection pgvigil makes or accepts: a PEM file the operator
//! names (a private CA for PostgreSQL's `sslrootcert`, the API proxy's upstream, S3, or the
//! client CA of a listener) or the system store. One reader, so every such file is read,
//! checked and reported the same way: a file that cannot be read, holds no certificate or
//! holds one rustls rejects as a trust anchor is an error naming its setting and path, never
//! a silent skip, because the operator named it to be trusted.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why trust anchors could not be loaded; names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{key}: cannot read {}: {message}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{key}: {} holds no {what}", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{key}: {} holds a certificate that cannot be a trust anchor: {message}", path.display())]
    Rejected {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("no system root certificates could be loaded ({0})")]
    NoSystemRoots(String),
}

/// Every PEM object of type `T` (`what`, for the message) in `path`, the file named by
/// setting `key`; at least one.
pub fn pem_objects<T: PemObject + 'static>(
    path: &Path,
    key: &'static str,
    what: &'static str,
) -> Result<Vec<T>, TrustError> {
    let items: Vec<T> = T::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TrustError::Read {
            key,
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if items.is_empty() {
        return Err(TrustError::Empty {
            key,
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(items)
}

/// Every certificate in the PEM file `path` (named by setting `key`); at least one.
pub fn certificates(
    path: &Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    pem_objects(path, key, "PEM certificate")
}

/// The certificates of the PEM file `path` as trust anchors; every one must be usable.
pub fn roots_from_file(path: &Path, key: &'static str) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, key)? {
        roots.add(cert).map_err(|e| TrustError::Rejected {
            key,
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The system trust store (what `sslrootcert=system` and the default HTTPS clients use);
/// an error when it yields no usable certificate.
pub fn system_roots() -> Result<RootCertStore, TrustError> {
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
        return Err(TrustError::NoSystemRoots(if why.is_empty() {
            "none found".into()
        } else {
            why
        }));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = roots_from_file(&empty, "api_proxy.upstream_ca_file").unwrap_err();
        assert!(matches!(e, TrustError::Empty { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("api_proxy.upstream_ca_file") && text.contains("empty.pem"),
            "{text}"
        );
        let missing = dir.path().join("missing.pem");
        let e = certificates(&missing, "sslrootcert").unwrap_err();
        assert!(matches!(e, TrustError::Read { .. }), "{e}");
    }

    #[test]
    fn a_generated_ca_is_a_trust_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        assert_eq!(roots_from_file(&path, "sslrootcert").unwrap().len(), 1);
    }
}
