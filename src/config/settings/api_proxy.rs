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
    pub max_routes: usize,
    pub upstream_timeout: Duration,
    /// Largest request body passed upstream; larger ones are answered 413.
    pub max_body_bytes: u64,
    /// TLS, timeouts and connection cap of the proxy's listener.
    pub listener: ListenerSettings,
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
    if raw.jwks_url.is_some() {
        return Err(ctx.invalid(
            &["api_proxy", "jwks_url"],
            "is not supported yet; use jwt_secret_file (HS256)",
        ));
    }
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
        },
    )?;
    Ok(Some(ApiProxySettings {
        listen,
        upstream: ctx.http_url(&["api_proxy", "upstream"], upstream)?,
        role_claim_key,
        anon_role: raw.anon_role.clone(),
        jwt_secret_file: raw.jwt_secret_file.as_ref().map(PathBuf::from),
        max_routes: raw.max_routes,
        upstream_timeout: ctx
            .duration(&["api_proxy", "upstream_timeout"], &raw.upstream_timeout)?,
        max_body_bytes: raw.max_body_bytes,
        listener,
    }))
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
}
