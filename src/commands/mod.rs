//! What each subcommand does. This is the CLI's edge: with `main.rs`, the only place that
//! writes to stdout. A command parses its flags, calls one operation (`backup::ops` for the
//! backup operations, the same functions the daemon's jobs call) and renders what it
//! returns, as text or `--json`. One file per group of commands:
//! `backups.rs` (backup, backups, restore, wal-push, wal-fetch), `checks.rs` (verify, drill),
//! `custody.rs` (retention, offsite), `admin.rs` (run, dev, check-config, catalog, audit).

mod admin;
mod backups;
mod checks;
mod custody;

use std::process::ExitCode;

use anyhow::Context;

use crate::backup::ops::Ops;
use crate::cli::{Cli, Command};
use crate::config::{self, EnvLookup, Settings};
use crate::store::Repo;

/// Runs the parsed command line. `interactive` is true when stdout is a terminal.
pub async fn execute(cli: Cli, env: EnvLookup<'_>, interactive: bool) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run => admin::run(&cli, env).await,
        Command::Dev(args) => admin::dev(args).await,
        Command::CheckConfig => admin::check_config(&cli, env).await,
        Command::Catalog(args) => admin::catalog(&cli, args, env),
        Command::Audit(cmd) => admin::audit(&cli, cmd, env).await,
        Command::Backup(args) => backups::backup(&cli, args, env, interactive).await,
        Command::Backups(args) => backups::backups(&cli, args, env).await,
        Command::WalPush { path } => backups::wal_push(&cli, path, env).await,
        Command::WalFetch { name, dest } => backups::wal_fetch(&cli, name, dest, env).await,
        Command::Restore(args) => backups::restore(&cli, args, env).await,
        Command::Verify(args) => checks::verify(&cli, args, env).await,
        Command::Drill(args) => checks::drill(&cli, args, env).await,
        Command::Retention(args) => custody::retention(&cli, args, env).await,
        Command::Offsite(args) => custody::offsite(&cli, args, env).await,
    }
}

/// Loads the configuration and logs that it did.
fn load(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<Settings> {
    let settings = config::load(&cli.config, env)?;
    tracing::info!(event = "config.loaded", file = %cli.config.display(), "configuration loaded");
    Ok(settings)
}

/// Opens the repository at `url`.
async fn open_repo_at(
    settings: &Settings,
    url: &str,
    s3: &config::S3Settings,
) -> anyhow::Result<Repo> {
    let store = crate::store::open(url, s3, &settings.storage.residency)
        .await
        .with_context(|| format!("opening repository {url}"))?;
    Ok(Repo {
        store,
        cluster: settings.storage.cluster.clone(),
    })
}

/// The primary repository.
async fn open_repo(settings: &Settings) -> anyhow::Result<Repo> {
    open_repo_at(settings, &settings.storage.url, &settings.storage.s3).await
}

/// The operations' context for command `process`: the primary repository, and the
/// off-site one when `offsite` is asked for and configured.
async fn ops(settings: Settings, offsite: bool, process: &str) -> anyhow::Result<Ops> {
    let primary = open_repo(&settings).await?;
    let offsite = match (&settings.offsite, offsite) {
        (Some(o), true) => Some(open_repo_at(&settings, &o.url, &o.s3).await?),
        _ => None,
    };
    Ok(Ops::for_cli(settings, primary, offsite, process)?)
}

/// Parses an RFC 3339 `--target-time`.
fn parse_time(flag: &str, t: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{flag} {t:?} is not RFC 3339 (e.g. 2026-11-23T14:05:00Z)"))?
        .with_timezone(&chrono::Utc))
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A time as the text output shows it.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// SIGTERM and SIGINT handlers, installed before anything starts.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
