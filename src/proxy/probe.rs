//! What `check-config` learns about the proxy's outbound side before the daemon runs: whether
//! the upstream answers through the same client the proxy will use (so an `https://` upstream
//! is a real TLS handshake against the configured trust, not a bare TCP connect), and whether
//! `jwks_url` serves a key set with usable keys.

use std::time::Duration;

use axum::body::Body;

use super::client;
use super::jwks::Jwks;
use crate::config::ApiProxySettings;

/// How long each probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One probe's result: its configuration key, what it reached, and a detail or the failure.
#[derive(Debug)]
pub struct Probe {
    pub name: &'static str,
    pub target: String,
    pub outcome: Result<String, String>,
}

/// Probes the upstream and, when configured, the JWKS endpoint.
pub async fn probe(settings: &ApiProxySettings) -> Vec<Probe> {
    let trust = match &settings.upstream_ca_file {
        Some(p) => format!("verified against {}", p.display()),
        None => "verified against the system roots".to_string(),
    };
    let client = match client::build(settings) {
        Ok(c) => c,
        Err(e) => {
            return vec![Probe {
                name: "api_proxy.upstream",
                target: settings.upstream.to_string(),
                outcome: Err(crate::errors::chain(&e)),
            }]
        }
    };
    let mut out = Vec::new();
    let https = settings.upstream.scheme_str() == Some("https");
    let req = axum::http::Request::get(settings.upstream.clone()).body(Body::empty());
    let outcome = match req {
        Err(e) => Err(e.to_string()),
        Ok(req) => match tokio::time::timeout(PROBE_TIMEOUT, client.request(req)).await {
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            Ok(Err(e)) => Err(crate::errors::chain(&e)),
            Ok(Ok(resp)) => Ok(format!(
                "answered HTTP {}{}; proxy will listen on {}",
                resp.status().as_u16(),
                if https {
                    format!(" over TLS, certificate {trust}")
                } else {
                    " (plain http)".to_string()
                },
                settings.listen
            )),
        },
    };
    out.push(Probe {
        name: "api_proxy.upstream",
        target: settings.upstream.to_string(),
        outcome,
    });
    if let Some(url) = &settings.jwks_url {
        let registry = prometheus::Registry::new();
        let outcome = match Jwks::new(url.clone(), client, settings.claims.clone(), &registry) {
            Err(e) => Err(e.to_string()),
            Ok(jwks) => match jwks.refresh().await {
                Ok(n) => Ok(format!("{n} usable signing keys")),
                Err(e) => Err(crate::errors::chain(&e)),
            },
        };
        out.push(Probe {
            name: "api_proxy.jwks_url",
            target: url.to_string(),
            outcome,
        });
    }
    out
}
