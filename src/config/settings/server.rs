//! `[server]`: the metrics listener. Owns `ServerSettings` and its validator; HTTPS keys
//! are rejected here until TLS is implemented, so a file asking for it fails loudly.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::super::raw::ServerConfig;
use super::{Ctx, Error};

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// When set, /metrics requires `Authorization: Bearer <contents>`.
    pub bearer_token_file: Option<PathBuf>,
}

pub(super) fn validate(ctx: &Ctx<'_>, raw: ServerConfig) -> Result<ServerSettings, Error> {
    let listen = ctx.expand(&["server", "listen"], &raw.listen)?;
    let listen: SocketAddr = listen.parse().map_err(|_| {
        ctx.invalid(
            &["server", "listen"],
            format!("{listen:?} is not a socket address; use e.g. \"0.0.0.0:9432\""),
        )
    })?;
    if raw.tls_cert_file.is_some() || raw.tls_key_file.is_some() {
        let key = if raw.tls_cert_file.is_some() {
            "tls_cert_file"
        } else {
            "tls_key_file"
        };
        return Err(ctx.invalid(
            &["server", key],
            "HTTPS is not supported yet; terminate TLS in front of pgvigil (ingress or mesh)",
        ));
    }
    Ok(ServerSettings {
        listen,
        bearer_token_file: raw.bearer_token_file.map(PathBuf::from),
    })
}
