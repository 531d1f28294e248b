//! The role behind a request: the JWT claim at `role_claim_key` (PostgREST's JSPath syntax:
//! `.role`, `."https://example.com/claims".role`, `.roles[0]`, parsed by config as a
//! `config::ClaimPath`), verified with HS256 when a
//! secret is configured, read unverified otherwise (and marked so in the access log). The
//! token itself never leaves this module.

use base64::Engine as _;
use serde_json::Value;

use crate::config::{ClaimPath, ClaimStep};

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
    key: Option<jsonwebtoken::DecodingKey>,
}

impl std::fmt::Debug for RoleResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleResolver")
            .field("path", &self.path)
            .field("anon_role", &self.anon_role)
            .field("verifies", &self.key.is_some())
            .finish()
    }
}

/// Role label for a token that failed verification (PostgREST answers it with 401).
pub const INVALID_ROLE: &str = "invalid_token";

impl RoleResolver {
    /// A resolver; `secret` enables HS256 verification.
    pub fn new(path: ClaimPath, anon_role: String, secret: Option<&[u8]>) -> Self {
        Self {
            path,
            anon_role,
            key: secret.map(jsonwebtoken::DecodingKey::from_secret),
        }
    }

    /// The identity for an `Authorization` header value (or its absence).
    pub fn identify(&self, authorization: Option<&str>) -> Identity {
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
        let (claims, verified) = match &self.key {
            Some(key) => {
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                v.required_spec_claims.clear();
                v.validate_aud = false;
                match jsonwebtoken::decode::<Value>(token, key, &v) {
                    Ok(data) => (Some(data.claims), true),
                    Err(_) => (None, false),
                }
            }
            None => (decode_unverified(token), false),
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

    #[test]
    fn verifies_or_marks_unverified() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = sign(&serde_json::json!({"role": "author", "sub": "u1"}), secret);
        let header = format!("Bearer {token}");
        let r = RoleResolver::new(
            ClaimPath::parse(".role").unwrap(),
            "anon".into(),
            Some(secret),
        );
        assert_eq!(
            r.identify(Some(&header)),
            Identity {
                role: "author".into(),
                verified: true,
                sub: Some("u1".into())
            }
        );
        let wrong = RoleResolver::new(
            ClaimPath::parse(".role").unwrap(),
            "anon".into(),
            Some(b"other-secret-other-secret-other!"),
        );
        assert_eq!(wrong.identify(Some(&header)).role, INVALID_ROLE);
        let unverified = RoleResolver::new(ClaimPath::parse(".role").unwrap(), "anon".into(), None);
        let id = unverified.identify(Some(&header));
        assert_eq!((id.role.as_str(), id.verified), ("author", false));
        assert_eq!(unverified.identify(None).role, "anon");
    }
}
