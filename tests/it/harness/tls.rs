//! Real TLS for the tests: a certificate authority made per run (rcgen), server certificates
//! for `localhost` and `127.0.0.1`, and client certificates, written as PEM files into a
//! private directory. Key files are mode 0600 and, when the tests run as root, owned by the
//! PostgreSQL server user, which PostgreSQL and PgBouncer require of their keys. A second,
//! unrelated CA ([`other_ca`]) stands in for "a CA the server was not signed by".

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that signs server and client certificates, in its own directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    /// The CA's certificate (the `sslrootcert` / `ca_file` of clients).
    pub ca_cert: PathBuf,
    serial: u64,
}

fn write(path: &Path, text: &str, private: bool) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pgvigil::pg::binaries::chown_to_server_user(path)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl TestPki {
    /// A new CA, named `name` (its common name), in a fresh private directory.
    pub fn new(name: &str) -> Self {
        let dir = crate::harness::postgres_dir();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let ca = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("CA cert: {e}"));
        let ca_cert = dir.path().join(format!("{name}-ca.crt"));
        write(&ca_cert, &ca.pem(), false);
        Self {
            dir,
            ca_params,
            ca_key,
            ca_cert,
            serial: 1,
        }
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn issue(
        &mut self,
        file: &str,
        common_name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("params: {e}"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    SanType::DnsName((*s).try_into().unwrap_or_else(|e| panic!("SAN {s}: {e}")))
                }
            })
            .collect();
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.serial += 1;
        params.serial_number = Some(self.serial.into());
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("sign {common_name}: {e}"));
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        write(&files.cert, &cert.pem(), false);
        write(&files.key, &key.serialize_pem(), true);
        files
    }

    /// A server certificate for `localhost` and `127.0.0.1` (or the names given).
    pub fn server(&mut self, file: &str, names: &[&str]) -> CertFiles {
        let names: Vec<&str> = if names.is_empty() {
            vec!["localhost", "127.0.0.1"]
        } else {
            names.to_vec()
        };
        self.issue(file, names[0], &names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `user` (PostgreSQL's `cert` auth maps the
    /// CN to the role).
    pub fn client(&mut self, file: &str, user: &str) -> CertFiles {
        self.issue(file, user, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes a readable file (e.g. a `pg_hba.conf`) next to the certificates, owned by the
    /// server user as they are.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write(&path, text, false);
        path
    }

    /// The serial number the next certificate will get (each one is new).
    pub fn next_serial(&self) -> u64 {
        self.serial + 1
    }
}

/// The certificate of a CA that signed nothing the tests serve (for "untrusted" cases).
pub fn other_ca(name: &str) -> (TestPki, PathBuf) {
    let pki = TestPki::new(name);
    let path = pki.ca_cert.clone();
    (pki, path)
}

#[test]
fn the_pki_issues_certificates_that_verify_against_its_ca_only() {
    crate::harness::require_binary("/usr/bin/openssl", "openssl");
    let mut pki = TestPki::new("pgvigil-test");
    let server = pki.server("server", &[]);
    let client = pki.client("client", "pgvigil");
    let (_other, other) = other_ca("elsewhere");
    let verify = |ca: &Path, cert: &Path| {
        std::process::Command::new("/usr/bin/openssl")
            .args(["verify", "-CAfile"])
            .arg(ca)
            .arg(cert)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"))
            .status
            .success()
    };
    assert!(verify(&pki.ca_cert, &server.cert));
    assert!(verify(&pki.ca_cert, &client.cert));
    assert!(!verify(&other, &server.cert));
    let mode = std::fs::metadata(&server.key)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
