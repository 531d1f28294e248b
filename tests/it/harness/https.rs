//! Serving an axum router over real TLS in the tests (tokio-rustls with a certificate from
//! [`super::tls::TestPki`]), so clients under test talk to an HTTPS server, not a mock.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tls::CertFiles;

/// A TLS acceptor for `cert` (TLS 1.2 and 1.3, aws-lc-rs).
pub fn acceptor(cert: &CertFiles) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap_or_else(|e| panic!("{}: {e}", cert.cert.display()))
        .map(|c| c.unwrap_or_else(|e| panic!("{}: {e}", cert.cert.display())))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key)
        .unwrap_or_else(|e| panic!("{}: {e}", cert.key.display()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap_or_else(|e| panic!("server cert: {e}"));
    TlsAcceptor::from(Arc::new(config))
}

/// A TCP listener whose connections are TLS-terminated before axum sees them. Handshakes run
/// in `accept` (bounded by a timeout), which is enough for tests.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            // A client that does not trust us (or speaks plain HTTP) just fails its handshake.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await
            {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A listener on a free loopback port, and its address.
async fn loopback() -> (tokio::net::TcpListener, SocketAddr) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = tcp.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (tcp, addr)
}

/// Serves `router` on a free loopback port, over TLS with `cert` when given, until `token`
/// is cancelled.
pub async fn serve(
    router: axum::Router,
    cert: Option<&CertFiles>,
    token: CancellationToken,
) -> SocketAddr {
    let (tcp, addr) = loopback().await;
    match cert {
        None => {
            tokio::spawn(async move {
                let _ = axum::serve(tcp, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
            });
        }
        Some(cert) => {
            let listener = TlsListener {
                tcp,
                acceptor: acceptor(cert),
            };
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
            });
        }
    }
    addr
}

/// Terminates TLS with `cert` on a free loopback port and relays the plaintext to
/// `target` (a TLS front for servers that speak only HTTP, such as moto_server), until
/// `token` is cancelled.
pub async fn tls_front(
    cert: &CertFiles,
    target: SocketAddr,
    token: CancellationToken,
) -> SocketAddr {
    let (tcp, addr) = loopback().await;
    let acceptor = acceptor(cert);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = tcp.accept() => a,
                _ = token.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A rustls client trusting `ca`, presenting `client` when given.
pub fn client_config(ca: &Path, client: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{e}")) {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&c.cert)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .map(|c| c.unwrap_or_else(|e| panic!("{e}")))
                    .collect(),
                PrivateKeyDer::from_pem_file(&c.key).unwrap_or_else(|e| panic!("{e}")),
            )
            .unwrap_or_else(|e| panic!("{e}")),
    };
    Arc::new(config)
}

/// One HTTPS request (`Connection: close`); returns the status code, the whole response
/// text and the server's leaf certificate (DER).
pub async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, String, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((status, text, leaf))
}
