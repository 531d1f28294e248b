//! What each subcommand does. This is the CLI's edge: with `main.rs`, the only place that
//! writes to stdout. A command parses its flags, calls one operation (`backup::ops` for the
//! backup operations, the same functions the daemon's jobs call) and renders what it
//! returns, as text or `--json`. One file per group of commands:
//! `backups.rs` (backup, backups, upgrade, restore, wal-push, wal-fetch), `checks.rs` (verify, drill),
//! `custody.rs` (retention, offsite), `status.rs` (status), `admin.rs` (run, dev,
//! check-config, catalog, audit); `progress.rs` shows a long operation's progress.

/// `println!` for a command's report: a closed stdout is ignored, not a panic (the work is
/// done when it reports, and a reader that went away must not turn that into exit 101).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` of text that ends its own lines, as `say!` ignores a closed stdout.
fn say_text(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

mod admin;
mod backups;
mod checks;
mod custody;
mod progress;
mod status;

use std::process::ExitCode;

use anyhow::Context;

use crate::backup::ops::Ops;
use crate::cli::{Cli, Command};
use crate::config::{self, EnvLookup, Settings};
use crate::store::{Repo, Which};

/// What a command returns: its exit code, or an error `main` prints as one line.
type Exit = anyhow::Result<ExitCode>;

/// The command line being run and what it may read.
struct Invocation<'a> {
    cli: &'a Cli,
    env: EnvLookup<'a>,
    /// Where progress bars draw (stderr; hidden when it is not a terminal).
    bars: indicatif::MultiProgress,
}

impl Invocation<'_> {
    /// Loads the configuration and logs that it did.
    fn load(&self) -> anyhow::Result<Settings> {
        let settings = self.load_quiet()?;
        tracing::info!(event = "config.loaded", file = %self.cli.config.display(), "configuration loaded");
        Ok(settings)
    }

    /// Loads the configuration without a log line (`wal-push`, `wal-fetch`: once a segment).
    fn load_quiet(&self) -> anyhow::Result<Settings> {
        Ok(config::load(&self.cli.config, self.env)?)
    }

    /// The operations' context for command `process`: the primary repository, and the
    /// off-site one when `offsite` is asked for and configured.
    async fn ops(&self, offsite: bool, process: &str) -> anyhow::Result<Ops> {
        ops(self.load()?, offsite, process).await
    }

    /// Shows the progress of operation `what` until [`progress::Shown::finish`].
    fn show(
        &self,
        what: &'static str,
        progress: &std::sync::Arc<crate::backup::progress::Progress>,
    ) -> progress::Shown {
        progress::show(&self.bars, what, progress)
    }

    /// Like [`Invocation::ops`], without the `config.loaded` log line.
    async fn ops_quiet(&self, offsite: bool, process: &str) -> anyhow::Result<Ops> {
        ops(self.load_quiet()?, offsite, process).await
    }
}

/// Runs the parsed command line; long operations show their progress in `bars`.
pub async fn execute(cli: Cli, env: EnvLookup<'_>, bars: indicatif::MultiProgress) -> Exit {
    let inv = Invocation {
        cli: &cli,
        env,
        bars,
    };
    let inv = &inv;
    match &cli.command {
        Command::Run(args) => admin::run(inv, args).await,
        Command::Dev(args) => admin::dev(args).await,
        Command::CheckConfig => admin::check_config(inv).await,
        Command::Catalog(args) => admin::catalog(inv, args),
        Command::Audit(cmd) => admin::audit(inv, cmd).await,
        Command::Backup(args) => backups::backup(inv, args).await,
        Command::Backups(args) => backups::backups(inv, args).await,
        Command::Upgrade(args) => backups::upgrade(inv, args).await,
        Command::WalPush { path } => backups::wal_push(inv, path).await,
        Command::WalFetch { name, dest, socket } => {
            backups::wal_fetch(inv, name, dest, socket.as_deref()).await
        }
        Command::WalPrefetch { spool } => backups::wal_prefetch(inv, spool).await,
        Command::Restore(args) => backups::restore(inv, args).await,
        Command::Verify(args) => checks::verify(inv, args).await,
        Command::Drill(args) => checks::drill(inv, args).await,
        Command::Retention(args) => custody::retention(inv, args).await,
        Command::Offsite(args) => custody::offsite(inv, args).await,
        Command::Status(args) => status::status(inv, args).await,
    }
}

/// Opens repository `which` (the primary one, or the off-site one).
async fn open(settings: &Settings, which: Which) -> anyhow::Result<Repo> {
    Repo::open(settings, which).await.with_context(|| {
        let spec = match (which, &settings.offsite) {
            (Which::Offsite, Some(o)) => &o.store,
            _ => &settings.storage.store,
        };
        format!("opening repository {spec}")
    })
}

/// The primary repository.
async fn open_repo(settings: &Settings) -> anyhow::Result<Repo> {
    open(settings, Which::Primary).await
}

/// The operations' context for command `process` (see [`Invocation::ops`]).
async fn ops(settings: Settings, offsite: bool, process: &str) -> anyhow::Result<Ops> {
    let primary = open_repo(&settings).await?;
    let offsite = match (&settings.offsite, offsite) {
        (Some(_), true) => Some(open(&settings, Which::Offsite).await?),
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
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as pretty JSON (`--json`) or as `text` renders it for people.
fn render<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        print_json(value)
    } else {
        text(value);
        Ok(())
    }
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
