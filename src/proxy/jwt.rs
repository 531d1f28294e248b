//! The role behind a request: the JWT claim at `role_claim_key` (PostgREST's JSPath syntax:
//! `.role`, `."https://example.com/claims".role`, `.roles[0]`, parsed by config as a
//! `config::ClaimPath`). A token is verified when a key is configured: HS256/384/512 with
//! `jwt_secret_file`, and the algorithms of the keys at `jwks_url` (RS*, PS*, ES256/384,
//! EdDSA); `exp` (unless `require_exp = false`), `nbf`, `aud` and `iss` are checked as
//! configured. The algorithm a token may use comes from the key that verifies it, so
//! `alg: none` (not an algorithm jsonwebtoken knows) and HMAC-with-a-public-key fail. A token
//! that fails is `invalid_token`, never verified; with no key configured the claim is read
//! unverified and marked so in the access log. The token itself never leaves this module.

use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::Jwks;
use crate::config::{ClaimPath, ClaimRules, ClaimStep};

/// The value at `path` in `claims`, if every step exists.
fn lookup<'a>(path: &ClaimPath, mut v: &'a Value) -> Option<&'a Value> {
    for step in path.steps() {
        v = match step {
            ClaimStep::Key(k) => v.get(k)?,
            ClaimStep::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

/// Who made a request, as far as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: String,
    /// False when the token's signature was not (or could not be) checked.
    pub verified: bool,
    pub sub: Option<String>,
}

/// Extracts identities from `Authorization: Bearer` tokens.
pub struct RoleResolver {
    path: ClaimPath,
    anon_role: String,
    secret: Option<(DecodingKey, Validation)>,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for RoleResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleResolver")
            .field("path", &self.path)
            .field("anon_role", &self.anon_role)
            .field("secret", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .finish()
    }
}

/// Role label for a token that failed verification (PostgREST answers it with 401).
pub const INVALID_ROLE: &str = "invalid_token";

impl RoleResolver {
    /// A resolver; `secret` enables HMAC verification, `jwks` verification with its keys.
    pub fn new(
        path: ClaimPath,
        anon_role: String,
        secret: Option<&[u8]>,
        jwks: Option<Arc<Jwks>>,
        rules: &ClaimRules,
    ) -> Self {
        let hmac = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        Self {
            path,
            anon_role,
            secret: secret.map(|s| {
                (
                    DecodingKey::from_secret(s),
                    super::jwks::validation(&hmac, rules),
                )
            }),
            jwks,
        }
    }

    /// The identity for an `Authorization` header value (or its absence). Waits only when a
    /// token names a key the JWKS cache does not have yet (one rate-limited refresh).
    pub async fn identify(&self, authorization: Option<&str>) -> Identity {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Identity {
                role: self.anon_role.clone(),
                verified: true,
                sub: None,
            };
        };
        let (claims, verified) = if self.secret.is_some() || self.jwks.is_some() {
            (self.verify(token).await, true)
        } else {
            (decode_unverified(token), false)
        };
        let Some(claims) = claims else {
            return Identity {
                role: INVALID_ROLE.into(),
                verified: false,
                sub: None,
            };
        };
        let role = lookup(&self.path, &claims)
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.anon_role.clone());
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string);
        Identity {
            role,
            verified,
            sub,
        }
    }

    /// The claims of `token` if a configured key verifies it and its claims pass.
    async fn verify(&self, token: &str) -> Option<Value> {
        // Fails for `alg: none` and any algorithm jsonwebtoken does not implement.
        let header = jsonwebtoken::decode_header(token).ok()?;
        if let Some((key, validation)) = &self.secret {
            if validation.algorithms.contains(&header.alg) {
                return jsonwebtoken::decode::<Value>(token, key, validation)
                    .ok()
                    .map(|d| d.claims);
            }
        }
        let jwks = self.jwks.as_ref()?;
        let kid = header.kid.as_deref();
        let mut keys = jwks.keys();
        if let Some(kid) = kid {
            if !keys.has_kid(kid) {
                jwks.refresh_for_unknown_kid(kid).await;
                keys = jwks.keys();
            }
        }
        let claims = keys.candidates(kid, header.alg).find_map(|k| {
            let (key, validation) = k.parts();
            jsonwebtoken::decode::<Value>(token, key, validation)
                .ok()
                .map(|d| d.claims)
        });
        claims
    }
}

fn decode_unverified(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Signs claims with HS256 (tests only).
    pub(crate) fn sign(claims: &Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap_or_default()
    }

    #[test]
    fn follows_a_claim_path() {
        let p = ClaimPath::parse(".\"https://example.com/claims\".roles[1]").unwrap();
        let v = serde_json::json!({"https://example.com/claims": {"roles": ["a", "b"]}});
        assert_eq!(lookup(&p, &v).and_then(Value::as_str), Some("b"));
        assert_eq!(lookup(&p, &serde_json::json!({"roles": ["a"]})), None);
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: None,
            issuer: None,
            leeway: std::time::Duration::from_secs(30),
            require_exp: true,
        }
    }

    fn resolver(secret: Option<&[u8]>, rules: &ClaimRules) -> RoleResolver {
        RoleResolver::new(
            ClaimPath::parse(".role").unwrap(),
            "anon".into(),
            secret,
            None,
            rules,
        )
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[tokio::test]
    async fn verifies_or_marks_unverified() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = sign(
            &serde_json::json!({"role": "author", "sub": "u1", "exp": in_an_hour()}),
            secret,
        );
        let header = format!("Bearer {token}");
        let r = resolver(Some(secret), &rules());
        assert_eq!(
            r.identify(Some(&header)).await,
            Identity {
                role: "author".into(),
                verified: true,
                sub: Some("u1".into())
            }
        );
        let wrong = resolver(Some(b"other-secret-other-secret-other!"), &rules());
        assert_eq!(wrong.identify(Some(&header)).await.role, INVALID_ROLE);
        let unverified = resolver(None, &rules());
        let id = unverified.identify(Some(&header)).await;
        assert_eq!((id.role.as_str(), id.verified), ("author", false));
        assert_eq!(unverified.identify(None).await.role, "anon");
    }

    #[tokio::test]
    async fn claims_are_checked_and_alg_none_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let now = jsonwebtoken::get_current_timestamp();
        let mut strict = rules();
        strict.audience = Some("api".into());
        strict.issuer = Some("https://idp.example".into());
        let r = resolver(Some(secret), &strict);
        let r = &r;
        let role = |claims: Value| {
            let t = format!("Bearer {}", sign(&claims, secret));
            async move { r.identify(Some(&t)).await }
        };
        let ok = serde_json::json!({"role": "author", "exp": now + 60, "aud": "api", "iss": "https://idp.example"});
        assert!(role(ok.clone()).await.verified);
        let mut bad = ok.clone();
        bad["aud"] = "other".into();
        assert_eq!(role(bad).await.role, INVALID_ROLE);
        let mut bad = ok.clone();
        bad["iss"] = "https://evil.example".into();
        assert_eq!(role(bad).await.role, INVALID_ROLE);
        let mut bad = ok.clone();
        bad.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            role(bad).await.role,
            INVALID_ROLE,
            "aud is required when configured"
        );
        let mut bad = ok.clone();
        bad["exp"] = (now - 120).into();
        assert_eq!(
            role(bad).await.role,
            INVALID_ROLE,
            "expired beyond the leeway"
        );
        let mut within = ok.clone();
        within["exp"] = (now - 5).into();
        assert!(role(within).await.verified, "expired within the 30s leeway");
        let mut bad = ok.clone();
        bad["nbf"] = (now + 600).into();
        assert_eq!(role(bad).await.role, INVALID_ROLE, "not yet valid");
        let mut bad = ok.clone();
        bad.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            role(bad.clone()).await.role,
            INVALID_ROLE,
            "exp is required"
        );
        let mut lax = strict.clone();
        lax.require_exp = false;
        let t = format!("Bearer {}", sign(&bad, secret));
        assert!(
            resolver(Some(secret), &lax)
                .identify(Some(&t))
                .await
                .verified
        );

        // alg: none, with the claims that would otherwise pass.
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "Bearer {}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&ok)
        );
        let id = r.identify(Some(&none)).await;
        assert_eq!((id.role.as_str(), id.verified), (INVALID_ROLE, false));
        for garbage in [
            "Bearer x",
            "Bearer a.b.c",
            "Bearer ....",
            "Bearer \u{0}.\u{1}.",
        ] {
            assert_eq!(
                r.identify(Some(garbage)).await.role,
                INVALID_ROLE,
                "{garbage:?}"
            );
        }
    }
}
