//! `[postgrest]`: PostgREST's admin server, whose metrics are passed through. Owns
//! `PostgrestSettings` and its validator.

use std::time::Duration;

use super::{Ctx, Error};
use crate::config::raw::PostgrestConfig;

/// `[postgrest]`, validated.
#[derive(Debug, Clone)]
pub struct PostgrestSettings {
    pub admin_url: hyper::Uri,
    pub timeout: Duration,
}

pub(super) fn validate(
    ctx: &Ctx<'_>,
    raw: &PostgrestConfig,
) -> Result<Option<PostgrestSettings>, Error> {
    match &raw.admin_url {
        None => Ok(None),
        Some(url) => Ok(Some(PostgrestSettings {
            admin_url: ctx.http_url(&["postgrest", "admin_url"], url)?,
            timeout: ctx.duration(&["postgrest", "timeout"], &raw.timeout)?,
        })),
    }
}
