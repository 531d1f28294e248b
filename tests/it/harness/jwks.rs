//! A JWKS endpoint for the tests and the keys it publishes: RSA keys made by the openssl CLI
//! (rcgen cannot make RSA keys), ECDSA P-256/P-384 and Ed25519 keys made by rcgen. The test
//! changes the published set at will ([`JwksServer::publish`]) and can take the endpoint
//! down ([`JwksServer::set_up`]) to see the proxy keep its cached keys.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK (what the endpoint publishes).
    pub jwk: Value,
    /// The RSA public key as PEM (what an algorithm-confusion attacker uses as an HMAC secret).
    pub public_pem: Vec<u8>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl (install it with `make deps`): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TestKey {
    /// A 2048-bit RSA key for `alg` (RS256/RS384/RS512/PS256), via `openssl genpkey`.
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pem = dir.path().join("key.pem");
        let der = dir.path().join("key.der");
        let pem_s = pem.display().to_string();
        let der_s = der.display().to_string();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &pem_s,
        ]);
        // jsonwebtoken (rust_crypto) signs with a PKCS#1 DER private key.
        openssl(&[
            "rsa",
            "-in",
            &pem_s,
            "-traditional",
            "-outform",
            "DER",
            "-out",
            &der_s,
        ]);
        let modulus = String::from_utf8(openssl(&["rsa", "-in", &pem_s, "-noout", "-modulus"]))
            .unwrap_or_default();
        let n = hex::decode(modulus.trim().trim_start_matches("Modulus="))
            .unwrap_or_else(|e| panic!("modulus: {e}"));
        let public_pem = openssl(&["rsa", "-in", &pem_s, "-pubout"]);
        let key = std::fs::read(&der).unwrap_or_else(|e| panic!("{e}"));
        Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_der(&key),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": format!("{alg:?}"),
                        "n": b64(&n), "e": "AQAB"}),
            public_pem,
        }
    }

    /// An ECDSA key: P-256 for ES256, P-384 for ES384 (rcgen).
    pub fn ec(kid: &str, alg: Algorithm) -> Self {
        let (rc_alg, crv, len) = match alg {
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
            _ => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
        };
        let kp = rcgen::KeyPair::generate_for(rc_alg).unwrap_or_else(|e| panic!("{e}"));
        let point = kp.public_key_raw();
        assert_eq!(point.len(), 1 + 2 * len, "an uncompressed point");
        Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": crv, "alg": format!("{alg:?}"),
                        "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])}),
            public_pem: Vec::new(),
        }
    }

    /// An Ed25519 key for EdDSA (rcgen); its JWK has no `alg`, so the type decides.
    pub fn ed25519(kid: &str) -> Self {
        let kp =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap_or_else(|e| panic!("{e}"));
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&kp.serialize_der()),
            jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(kp.public_key_raw())}),
            public_pem: Vec::new(),
        }
    }

    /// A token with these claims, signed by this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .unwrap_or_else(|e| panic!("sign with {}: {e}", self.kid))
    }
}

struct JwksState {
    set: Mutex<Value>,
    up: AtomicBool,
    hits: AtomicUsize,
}

/// A running JWKS endpoint at `url` (plain HTTP on loopback, or HTTPS).
pub struct JwksServer {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<JwksState>,
    token: CancellationToken,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn keys(State(s): State<Arc<JwksState>>) -> Response {
    s.hits.fetch_add(1, Ordering::AcqRel);
    if !s.up.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let body = s.set.lock().map(|v| v.to_string()).unwrap_or_default();
    ([("content-type", "application/json")], body).into_response()
}

impl JwksServer {
    /// Serves `keys` at `/.well-known/jwks.json`, over HTTPS with `cert` when given.
    pub async fn start(keys_: &[&TestKey], cert: Option<&super::tls::CertFiles>) -> Self {
        let state = Arc::new(JwksState {
            set: Mutex::new(Value::Null),
            up: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
        });
        let token = CancellationToken::new();
        let router = axum::Router::new()
            .route("/.well-known/jwks.json", get(keys))
            .with_state(state.clone());
        let addr = super::https::serve(router, cert, token.clone()).await;
        let scheme = if cert.is_some() { "https" } else { "http" };
        let server = Self {
            url: format!("{scheme}://{addr}/.well-known/jwks.json"),
            addr,
            state,
            token,
        };
        server.publish(keys_);
        server
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[&TestKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        if let Ok(mut v) = self.state.set.lock() {
            *v = set;
        }
    }

    /// Answers 503 while `up` is false.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::Release);
    }

    /// How many times the key set was asked for.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::Acquire)
    }
}
