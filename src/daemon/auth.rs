//! Authentication on the metrics server: the bearer token (`server.bearer_token_file`) and
//! HTTP basic auth with bcrypt hashes (`basic_auth_users` of the web configuration file);
//! either one admits a request. It wraps the whole router as a middleware, so a route
//! added later is protected without anyone remembering to.
//!
//! Open without credentials: `/healthz` and `/readyz` (kubelet probes carry none) unless
//! `server.protect_probes`, and the wal-push report, which answers loopback peers only.
//!
//! bcrypt is slow by design (a cost of 10 is ~70 ms of CPU), so a successful check is
//! remembered for [`CACHE_FOR`] under a SHA-256 of (user, password, stored hash), as
//! exporter-toolkit does, and at most [`BCRYPT_AT_ONCE`] checks run at a time, so a 15 s
//! scrape does not pay for bcrypt every time and a flood of guesses cannot take every
//! core. An unknown user is checked against a dummy hash so that timing does not reveal
//! which users exist. Tokens are compared in constant time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a successful basic-auth check is remembered.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// bcrypt verifications running at once; more wait.
pub const BCRYPT_AT_ONCE: usize = 2;
/// Remembered successes at most (the cache is emptied when full).
const CACHE_MAX: usize = 1024;

/// Who may call the protected routes.
pub struct Auth {
    bearer: Option<Vec<u8>>,
    users: BTreeMap<String, String>,
    protect_probes: bool,
    open_paths: Vec<&'static str>,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    bcrypt: Semaphore,
    /// Checked for unknown users: a hash of a random string, with the users' highest cost.
    dummy_hash: String,
}

impl Auth {
    /// `open_paths` are always served without credentials; `probe_paths` too unless
    /// `protect_probes`.
    pub fn new(
        bearer: Option<Vec<u8>>,
        users: BTreeMap<String, String>,
        protect_probes: bool,
        open_paths: &[&'static str],
        probe_paths: &[&'static str],
    ) -> Self {
        let mut open = open_paths.to_vec();
        if !protect_probes {
            open.extend_from_slice(probe_paths);
        }
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|h| h.get_cost())
            .max();
        let dummy_hash = cost
            .and_then(|c| bcrypt::hash(uuid::Uuid::new_v4().to_string(), c).ok())
            .unwrap_or_default();
        Self {
            bearer,
            users,
            dummy_hash,
            protect_probes,
            open_paths: open,
            cache: Mutex::new(HashMap::new()),
            bcrypt: Semaphore::new(BCRYPT_AT_ONCE),
        }
    }

    /// Whether any credential is configured (otherwise everything is open).
    pub fn enabled(&self) -> bool {
        self.bearer.is_some() || !self.users.is_empty()
    }

    /// Whether the probes need credentials.
    pub fn protects_probes(&self) -> bool {
        self.protect_probes && self.enabled()
    }

    async fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        if let (Some(expected), Some(given)) = (&self.bearer, value.strip_prefix("Bearer ")) {
            if bool::from(given.trim().as_bytes().ct_eq(expected)) {
                return true;
            }
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        if self.users.is_empty() {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known && self.remembered(&key) {
            return true;
        }
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            self.remember(key);
        }
        ok && known
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cache.get(key).is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, at| at.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
    }

    fn challenge(&self) -> &'static str {
        if self.users.is_empty() {
            "Bearer"
        } else {
            "Basic realm=\"pgvigil\", charset=\"UTF-8\""
        }
    }
}

/// The middleware: 401 with a challenge unless the path is open or the request carries a
/// valid credential.
pub async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.enabled() || auth.open_paths.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.admits(given).await {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, auth.challenge())],
        "authentication required\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[tokio::test]
    async fn bearer_and_basic_both_admit_and_nothing_else_does() {
        let hash = bcrypt::hash("s3cret-password", 4).unwrap();
        let auth = Auth::new(
            Some(b"t".repeat(32)),
            BTreeMap::from([("prometheus".to_string(), hash)]),
            false,
            &["/internal"],
            &["/healthz"],
        );
        let token = format!("Bearer {}", "t".repeat(32));
        assert!(auth.admits(Some(&token)).await);
        assert!(!auth.admits(Some("Bearer tttt")).await);
        assert!(
            auth.admits(Some(&basic("prometheus", "s3cret-password")))
                .await
        );
        // The second time comes from the cache.
        assert!(
            auth.admits(Some(&basic("prometheus", "s3cret-password")))
                .await
        );
        assert!(!auth.admits(Some(&basic("prometheus", "wrong"))).await);
        assert!(!auth.admits(Some(&basic("nobody", "s3cret-password"))).await);
        assert!(!auth.admits(Some("Basic !!!")).await);
        assert!(!auth.admits(None).await);
        assert!(auth.open_paths.contains(&"/healthz"));
    }
}
