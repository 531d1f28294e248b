//! `[api_proxy]`: the reverse proxy in front of PostgREST. Owns `ApiProxySettings`, its
//! validator, and [`ClaimPath`], the parsed `role_claim_key` (PostgREST's JSPath subset),
//! so the proxy receives a path it only has to follow, never a string to parse.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::server::{validate_listener, ListenerKeys, ListenerSettings};
use super::{Ctx, Error};
use crate::config::raw::ApiProxyConfig;

/// `[api_proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ApiProxySettings {
    pub listen: SocketAddr,
    pub upstream: hyper::Uri,
    pub role_claim_key: ClaimPath,
    pub anon_role: String,
    pub jwt_secret_file: Option<PathBuf>,
    /// Where the JSON Web Key Set is fetched from (`https://`, or `http://` on loopback).
    pub jwks_url: Option<hyper::Uri>,
    /// How often the key set is fetched again.
    pub jwks_refresh: Duration,
    /// CA bundle for `https://` upstreams and `jwks_url`; `None` trusts the system roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// The claims a verified token must satisfy.
    pub claims: ClaimRules,
    pub max_routes: usize,
    pub upstream_timeout: Duration,
    /// Largest request body passed upstream; larger ones are answered 413.
    pub max_body_bytes: u64,
    /// TLS, timeouts and connection cap of the proxy's listener.
    pub listener: ListenerSettings,
}

/// What a verified token's registered claims must satisfy (`exp`, `nbf`, `aud`, `iss`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules {
    /// `aud` must be (or contain) this value.
    pub audience: Option<String>,
    /// `iss` must equal this value.
    pub issuer: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`.
    pub leeway: Duration,
    /// A token without `exp` is refused.
    pub require_exp: bool,
}

/// One step of a claim path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    Key(String),
    Index(usize),
}

/// A parsed `role_claim_key`: where the role sits in a JWT's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<ClaimStep>);

impl ClaimPath {
    /// Parses PostgREST's JSPath subset: `.key`, `."quoted key"`, `[index]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err("is empty; use e.g. \".role\"".into());
        }
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix(".\"") {
                let end = r
                    .find('"')
                    .ok_or_else(|| format!("unterminated quote in {s:?}"))?;
                steps.push(ClaimStep::Key(r[..end].to_string()));
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(format!("empty key in {s:?}"));
                }
                steps.push(ClaimStep::Key(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r
                    .find(']')
                    .ok_or_else(|| format!("unterminated [ in {s:?}"))?;
                let idx = r[..end]
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad index in {s:?}"))?;
                steps.push(ClaimStep::Index(idx));
                rest = &r[end + 1..];
            } else {
                return Err(format!("{s:?} must start with '.', e.g. \".role\""));
            }
        }
        Ok(Self(steps))
    }

    /// The steps to follow from the claims object, in order.
    pub fn steps(&self) -> &[ClaimStep] {
        &self.0
    }
}

pub(super) fn validate(
    ctx: &Ctx<'_>,
    raw: &ApiProxyConfig,
) -> Result<Option<ApiProxySettings>, Error> {
    let (listen, upstream) = match (&raw.listen, &raw.upstream) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ctx.invalid(
                &["api_proxy", "upstream"],
                "is required when api_proxy.listen is set",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.invalid(
                &["api_proxy", "listen"],
                "is required when api_proxy.upstream is set",
            ))
        }
        (Some(l), Some(u)) => (l, u),
    };
    let listen_text = ctx.expand(&["api_proxy", "listen"], listen)?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ctx.invalid(
            &["api_proxy", "listen"],
            format!("{listen_text:?} is not a socket address; use e.g. \"0.0.0.0:3000\""),
        )
    })?;
    let upstream = proxy_url(ctx, &["api_proxy", "upstream"], upstream, false)?;
    let jwks_url = raw
        .jwks_url
        .as_deref()
        .map(|u| proxy_url(ctx, &["api_proxy", "jwks_url"], u, true))
        .transpose()?;
    let jwks_refresh = ctx.duration(&["api_proxy", "jwks_refresh"], &raw.jwks_refresh)?;
    if jwks_refresh < Duration::from_secs(1) {
        return Err(ctx.invalid(&["api_proxy", "jwks_refresh"], "must be at least 1s"));
    }
    let non_empty = |key: &str, v: &Option<String>| -> Result<Option<String>, Error> {
        match v {
            None => Ok(None),
            Some(v) => {
                let v = ctx.expand(&["api_proxy", key], v)?;
                if v.is_empty() {
                    return Err(ctx.invalid(&["api_proxy", key], "is empty; leave it out instead"));
                }
                Ok(Some(v))
            }
        }
    };
    let claims = ClaimRules {
        audience: non_empty("jwt_audience", &raw.jwt_audience)?,
        issuer: non_empty("jwt_issuer", &raw.jwt_issuer)?,
        leeway: ctx.duration(&["api_proxy", "jwt_leeway"], &raw.jwt_leeway)?,
        require_exp: raw.require_exp,
    };
    let upstream_ca_file = non_empty("upstream_ca_file", &raw.upstream_ca_file)?.map(PathBuf::from);
    let role_claim_key = ClaimPath::parse(&raw.role_claim_key)
        .map_err(|e| ctx.invalid(&["api_proxy", "role_claim_key"], e))?;
    if raw.max_routes == 0 {
        return Err(ctx.invalid(&["api_proxy", "max_routes"], "must be at least 1"));
    }
    if raw.max_body_bytes == 0 {
        return Err(ctx.invalid(&["api_proxy", "max_body_bytes"], "must be at least 1"));
    }
    let listener = validate_listener(
        ctx,
        ListenerKeys {
            section: "api_proxy",
            tls_cert_file: &raw.tls_cert_file,
            tls_key_file: &raw.tls_key_file,
            tls_client_ca_file: &raw.tls_client_ca_file,
            tls_min_version: &raw.tls_min_version,
            header_read_timeout: &raw.header_read_timeout,
            idle_timeout: &raw.idle_timeout,
            max_connections: raw.max_connections,
            workers: Some(raw.workers.unwrap_or_else(super::server::default_workers)),
        },
    )?;
    Ok(Some(ApiProxySettings {
        listen,
        upstream,
        role_claim_key,
        anon_role: raw.anon_role.clone(),
        jwt_secret_file: raw.jwt_secret_file.as_ref().map(PathBuf::from),
        jwks_url,
        jwks_refresh,
        upstream_ca_file,
        claims,
        max_routes: raw.max_routes,
        upstream_timeout: ctx
            .duration(&["api_proxy", "upstream_timeout"], &raw.upstream_timeout)?,
        max_body_bytes: raw.max_body_bytes,
        listener,
    }))
}

/// An `http://` or `https://` URL with a host. With `loopback_http_only`, plain `http://`
/// is accepted only for a loopback host: a key set fetched in clear text over a network
/// could be replaced by anyone on the path, and every token they sign would verify.
fn proxy_url(
    ctx: &Ctx<'_>,
    path: &[&str],
    value: &str,
    loopback_http_only: bool,
) -> Result<hyper::Uri, Error> {
    let value = ctx.expand(path, value)?;
    let uri: hyper::Uri = value.parse().map_err(|_| {
        ctx.invalid(
            path,
            format!("{value:?} is not a URL; use e.g. \"https://127.0.0.1:3002\""),
        )
    })?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if !host.is_empty() => {
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback_http_only && !loopback {
                return Err(ctx.invalid(
                    path,
                    format!("{value:?}: plain http is allowed on loopback only; use https://"),
                ));
            }
            Ok(uri)
        }
        _ => Err(ctx.invalid(
            path,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgrest_jspath() {
        let p = ClaimPath::parse(".\"https://example.com/claims\".roles[1]").unwrap();
        assert_eq!(
            p.steps(),
            [
                ClaimStep::Key("https://example.com/claims".into()),
                ClaimStep::Key("roles".into()),
                ClaimStep::Index(1),
            ]
        );
        assert_eq!(
            ClaimPath::parse(".role").unwrap().steps(),
            [ClaimStep::Key("role".into())]
        );
        assert!(ClaimPath::parse("role").is_err());
        assert!(ClaimPath::parse("").is_err());
        assert!(ClaimPath::parse(".\"open").is_err());
        assert!(ClaimPath::parse(".roles[x]").is_err());
    }

    fn proxy(extra: &str) -> Result<ApiProxySettings, String> {
        let text = format!(
            "[postgres]\ndsn = \"postgresql://x@127.0.0.1/x\"\n[api_proxy]\nlisten = \"127.0.0.1:0\"\n{extra}\n"
        );
        let env = |_: &str| None;
        crate::config::parse(&text, std::path::Path::new("t.toml"), &env)
            .map_err(|e| e.to_string())
            .and_then(|s| s.api_proxy.ok_or_else(|| "no api_proxy".to_string()))
    }

    #[test]
    fn https_upstreams_and_jwks_urls_and_claim_rules() {
        let p = proxy("upstream = \"https://postgrest.internal:3000/api\"").unwrap();
        assert_eq!(p.upstream.scheme_str(), Some("https"));
        assert_eq!(p.jwks_url, None);
        assert_eq!(p.jwks_refresh, Duration::from_secs(300));
        assert_eq!(
            p.claims,
            ClaimRules {
                audience: None,
                issuer: None,
                leeway: Duration::from_secs(30),
                require_exp: true
            }
        );
        let p = proxy(
            "upstream = \"http://127.0.0.1:3002\"\njwks_url = \"http://127.0.0.1:9/jwks\"\n\
             jwt_audience = \"api\"\njwt_issuer = \"https://idp/\"\njwt_leeway = \"5s\"\n\
             require_exp = false\njwks_refresh = \"1m\"",
        )
        .unwrap();
        assert!(p.jwks_url.is_some());
        assert_eq!(p.claims.audience.as_deref(), Some("api"));
        assert_eq!(p.claims.leeway, Duration::from_secs(5));
        assert!(!p.claims.require_exp);
        assert!(
            proxy("upstream = \"http://[::1]:3002\"\njwks_url = \"http://localhost/j\"").is_ok()
        );
        let e = proxy("upstream = \"http://127.0.0.1:3002\"\njwks_url = \"http://idp.example/j\"")
            .unwrap_err();
        assert!(
            e.contains("api_proxy.jwks_url") && e.contains("loopback"),
            "{e}"
        );
        let e = proxy("upstream = \"ftp://x\"").unwrap_err();
        assert!(e.contains("api_proxy.upstream"), "{e}");
        let e = proxy("upstream = \"http://127.0.0.1:1\"\njwt_audience = \"\"").unwrap_err();
        assert!(e.contains("api_proxy.jwt_audience"), "{e}");
    }
}
