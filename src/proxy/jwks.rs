//! The signing keys behind `api_proxy.jwks_url`: fetched at start, again every
//! `jwks_refresh`, and at once (at most every [`ON_DEMAND_GAP`]) when a token names a `kid`
//! the cached set does not have, so a rotation (publish a new key, sign with it, retire the
//! old one) needs no restart. A failed fetch keeps the last good set: an identity provider
//! that is down must not turn every request into `invalid_token`.
//!
//! Which algorithms a key verifies comes from the key (its `kty`/`crv`, narrowed by its `alg`
//! when present), never from a token's header: an HMAC token whose "secret" is an RSA public
//! key finds no key that accepts HS256. The key set is external input: a malformed key is
//! skipped and a malformed set is a refresh failure, never a panic.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus::{Gauge, IntCounter, Registry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::HttpClient;
use crate::config::ClaimRules;

/// Unknown-`kid` refreshes are at most this frequent: every request can name a `kid`, and a
/// client inventing them must not turn the proxy into a load generator for the key server.
pub const ON_DEMAND_GAP: Duration = Duration::from_secs(10);

/// A fetch (connect, headers and body) gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key set larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

crate::own_metrics! {
    /// The key set's metrics.
    pub struct JwksMetrics {
        pub failures: IntCounter = PGVIGIL_API_JWKS_REFRESH_FAILURES_TOTAL,
        pub last_refresh: Gauge = PGVIGIL_API_JWKS_LAST_REFRESH_TIMESTAMP_SECONDS,
        pub keys: Gauge = PGVIGIL_API_JWKS_KEYS,
    }
}

/// Why a key set could not be fetched or used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("building the request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("fetching: {0}")]
    Fetch(#[source] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("not a JSON Web Key Set: {0}")]
    Json(#[source] serde_json::Error),
    #[error("no usable signing key among {0} keys")]
    NoUsableKey(usize),
}

/// One key a token can be verified with, and the validation that goes with it.
pub struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

impl VerifyKey {
    /// The key and the rules (algorithms of the key's family, claims) to decode with.
    pub fn parts(&self) -> (&DecodingKey, &Validation) {
        (&self.key, &self.validation)
    }
}

/// A parsed key set; small (a handful of keys), so lookups are linear.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The validation for tokens of `algorithms` under `rules`, built once per key, not per request.
pub fn validation(algorithms: &[Algorithm], rules: &ClaimRules) -> Validation {
    let mut v = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::HS256));
    v.algorithms = algorithms.to_vec();
    v.leeway = rules.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.required_spec_claims.clear();
    if rules.require_exp {
        v.required_spec_claims.insert("exp".into());
    }
    match &rules.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        None => v.validate_aud = false,
    }
    if let Some(iss) = &rules.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".into());
    }
    v
}

/// The algorithms a key verifies: what its type allows, narrowed to its `alg` if it has one.
fn algorithms_for(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    use Algorithm::*;
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[ES256],
            EllipticCurve::P384 => &[ES384],
            ref c => return Err(format!("curve {c:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[EdDSA],
            ref c => return Err(format!("curve {c:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => &[HS256, HS384, HS512],
        _ => return Err("key type is not supported".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(by_type.to_vec()),
        Some(ka) => {
            let name = ka.to_string();
            let alg = Algorithm::from_str(&name)
                .map_err(|_| format!("alg {name} is not a signature algorithm"))?;
            if by_type.contains(&alg) {
                Ok(vec![alg])
            } else {
                Err(format!("alg {name} does not fit the key's type"))
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document; keys that cannot verify signatures are skipped (and logged).
    pub fn parse(body: &[u8], rules: &ClaimRules) -> Result<Self, JwksError> {
        let raw: RawSet = serde_json::from_slice(body).map_err(JwksError::Json)?;
        let total = raw.keys.len();
        let mut keys = Vec::with_capacity(total);
        for value in raw.keys {
            let kid = value
                .get("kid")
                .and_then(|k| k.as_str())
                .map(str::to_string);
            // Identity providers publish encryption keys beside signing keys (often with
            // algorithms jsonwebtoken does not model): not ours, not worth a warning.
            if value.get("use").and_then(|u| u.as_str()) == Some("enc") {
                continue;
            }
            let parsed = serde_json::from_value::<Jwk>(value)
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    let algs = algorithms_for(&jwk)?;
                    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                    Ok(VerifyKey {
                        kid: jwk.common.key_id.clone(),
                        key,
                        validation: validation(&algs, rules),
                    })
                });
            match parsed {
                Ok(k) => keys.push(k),
                Err(reason) => tracing::warn!(
                    event = "proxy.jwks.key_skipped",
                    kid = kid.as_deref().unwrap_or(""),
                    reason = %reason,
                    "JWKS key skipped"
                ),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(total));
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys (before the first successful fetch).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether any key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys that may verify a token with this `kid` (any key when the token has none)
    /// and this header `alg`: the key must accept the algorithm, whatever the token says.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            (kid.is_none() || k.kid.as_deref() == kid) && k.validation.algorithms.contains(&alg)
        })
    }
}

/// The cached key set and what it takes to refresh it.
pub struct Jwks {
    url: hyper::Uri,
    client: HttpClient,
    rules: ClaimRules,
    current: RwLock<Arc<KeySet>>,
    /// When the last unknown-`kid` refresh started; held during a refresh, so concurrent
    /// requests for the same new key wait for one fetch instead of making their own.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
    metrics: JwksMetrics,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &self.keys().len())
            .finish()
    }
}

impl Jwks {
    /// An empty cache for `url` (call [`Jwks::refresh`] to fill it).
    pub fn new(
        url: hyper::Uri,
        client: HttpClient,
        rules: ClaimRules,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            url,
            client,
            rules,
            current: RwLock::new(Arc::new(KeySet::default())),
            on_demand: tokio::sync::Mutex::new(None),
            metrics: JwksMetrics::register(registry)?,
        })
    }

    /// The current key set (a cheap clone of a shared pointer).
    pub fn keys(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The URL without its query string, for logs.
    fn shown_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.url.scheme_str().unwrap_or("http"),
            self.url.authority().map(|a| a.as_str()).unwrap_or(""),
            self.url.path()
        )
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let req = axum::http::Request::get(self.url.clone())
            .header("accept", "application/json")
            .body(Body::empty())?;
        let resp = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| JwksError::Timeout(FETCH_TIMEOUT))?
            .map_err(JwksError::Fetch)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status().as_u16()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES);
        let bytes = tokio::time::timeout(FETCH_TIMEOUT, body.collect())
            .await
            .map_err(|_| JwksError::Timeout(FETCH_TIMEOUT))?
            .map_err(|e| JwksError::Body(e.to_string()))?
            .to_bytes();
        KeySet::parse(&bytes, &self.rules)
    }

    /// Fetches the set now; on failure the cached set stays and the failure is counted.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        match self.fetch().await {
            Ok(set) => {
                let n = set.len();
                match self.current.write() {
                    Ok(mut g) => *g = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                self.metrics.keys.set(n as f64);
                self.metrics
                    .last_refresh
                    .set(crate::metrics::own::unix_seconds(chrono::Utc::now()));
                tracing::debug!(event = "proxy.jwks.refreshed", url = %self.shown_url(), keys = n, "JWKS refreshed");
                Ok(n)
            }
            Err(e) => {
                self.metrics.failures.inc();
                tracing::warn!(
                    event = "proxy.jwks.refresh_failed",
                    url = %self.shown_url(),
                    error = %e,
                    cached_keys = self.keys().len(),
                    "JWKS refresh failed; keeping the cached keys"
                );
                Err(e)
            }
        }
    }

    /// A token named `kid` that the cache lacks: refresh now unless an unknown-`kid` refresh
    /// started less than [`ON_DEMAND_GAP`] ago. Returns once the cache is as new as it gets.
    pub async fn refresh_for_unknown_kid(&self, kid: &str) {
        let mut last = self.on_demand.lock().await;
        // Another request may have fetched it while this one waited for the lock.
        if self.keys().has_kid(kid) {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < ON_DEMAND_GAP) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.refresh().await;
    }

    /// Refreshes every `every` until `token` is cancelled (a task on the daemon's tracker).
    pub async fn run(self: Arc<Self>, every: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            tokio::select! {
                () = token.cancelled() => return,
                _ = self.refresh() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
            require_exp: true,
        }
    }

    #[test]
    fn algorithms_come_from_the_key_not_the_token() {
        let set = KeySet::parse(
            br#"{"keys":[
                {"kty":"RSA","kid":"r","n":"sXch","e":"AQAB"},
                {"kty":"RSA","kid":"r256","alg":"RS256","n":"sXch","e":"AQAB"},
                {"kty":"EC","kid":"e","crv":"P-256","x":"AAAA","y":"AAAA"},
                {"kty":"OKP","kid":"d","crv":"Ed25519","x":"AAAA"}
            ]}"#,
            &rules(),
        )
        .unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.candidates(Some("r"), Algorithm::HS256).count(), 0);
        assert_eq!(set.candidates(Some("r"), Algorithm::PS256).count(), 1);
        assert_eq!(set.candidates(Some("r256"), Algorithm::RS512).count(), 0);
        assert_eq!(set.candidates(Some("e"), Algorithm::ES384).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::HS256).count(), 0);
    }

    #[test]
    fn malformed_sets_and_keys_are_errors_or_skipped_never_panics() {
        for body in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"keys\": 3}",
            b"{\"keys\": []}",
            b"{\"keys\": [1, \"x\", {\"kty\": \"RSA\"}, {\"kty\": \"EC\", \"crv\": \"P-521\", \"x\": \"A\", \"y\": \"A\"}]}",
            b"{\"keys\": [{\"kty\":\"RSA\",\"alg\":\"ES256\",\"n\":\"sXch\",\"e\":\"AQAB\"}]}",
            b"{\"keys\": [{\"kty\":\"RSA\",\"use\":\"enc\",\"alg\":\"RSA-OAEP\",\"n\":\"sXch\",\"e\":\"AQAB\"}]}",
        ] {
            assert!(KeySet::parse(body, &rules()).is_err(), "{body:?}");
        }
        let set = KeySet::parse(
            br#"{"keys":[{"kty":"nope"},{"kty":"RSA","kid":"ok","n":"sXch","e":"AQAB"}]}"#,
            &rules(),
        )
        .unwrap();
        assert!(set.has_kid("ok"));
    }

    #[test]
    fn claim_rules_make_aud_and_iss_required_when_configured() {
        let mut r = rules();
        r.audience = Some("api".into());
        r.issuer = Some("https://idp".into());
        let v = validation(&[Algorithm::RS256], &r);
        assert!(v.required_spec_claims.contains("aud"));
        assert!(v.required_spec_claims.contains("iss"));
        assert!(v.required_spec_claims.contains("exp"));
        assert_eq!(v.leeway, 30);
        r.require_exp = false;
        r.audience = None;
        let v = validation(&[Algorithm::RS256], &r);
        assert!(!v.required_spec_claims.contains("exp"));
        assert!(!v.validate_aud);
    }
}
