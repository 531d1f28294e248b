//! `pgvigil status`: the facts read now (`status::read`), judged by the one function the
//! daemon's page uses too (`status::gather`), rendered as text or `--json`; the exit code
//! is the verdict (0 healthy, 1 degraded, 2 broken).

use std::process::ExitCode;

use anyhow::Context;

use super::{print_json, Exit, Invocation};
use crate::cli::StatusArgs;
use crate::status::{gather, read, text};
use crate::store::Repo;

pub(super) async fn status(inv: &Invocation<'_>, args: &StatusArgs) -> Exit {
    let settings = crate::config::load_with_web_config(
        &inv.cli.config,
        inv.env,
        args.web_config_file.as_deref(),
    )?;
    let stores = Repo::open_all(&settings)
        .await
        .with_context(|| format!("opening the repositories of {}", inv.cli.config.display()))?;
    let (facts, daemon) = tokio::join!(read::now(&settings, &stores), read::daemon(&settings));
    let facts = facts.context("reading the status")?;
    let status = gather::gather(&facts, Some(daemon), chrono::Utc::now());
    if args.json {
        print_json(&status)?;
    } else {
        super::say_text(&text::render(&status));
    }
    Ok(ExitCode::from(status.health.exit_code()))
}
