//! What each subcommand does. This is the CLI's edge: with `main.rs`, the only place
//! that writes to stdout; everything it calls returns data.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{CatalogArgs, Cli, Command, DevArgs};
use crate::config::{self, EnvLookup};
use crate::metrics::catalogue;

/// Runs the parsed command line.
pub async fn execute(cli: Cli, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run => run(&cli, env).await,
        Command::Dev(args) => dev(args).await,
        Command::CheckConfig => check_config(&cli, env).await,
        Command::Catalog(args) => catalog(&cli, args, env),
    }
}

fn load(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<config::Settings> {
    let settings = config::load(&cli.config, env)?;
    tracing::info!(event = "config.loaded", file = %cli.config.display(), "configuration loaded");
    Ok(settings)
}

async fn run(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    // Handlers first: a SIGTERM that arrives while starting must still drain, not kill.
    let signals = ShutdownSignals::install()?;
    let running = crate::App::start(settings).await?;
    signals.wait().await;
    tracing::info!(event = "daemon.stopping", "signal received; draining");
    running.shutdown(Duration::from_secs(10)).await;
    Ok(ExitCode::SUCCESS)
}

async fn dev(args: &DevArgs) -> anyhow::Result<ExitCode> {
    let signals = ShutdownSignals::install()?;
    let env = crate::dev::DevEnvironment::start(args.listen)
        .await
        .context("pgvigil dev")?;
    let addr = env.running.addr;
    println!();
    println!("pgvigil dev is running (Ctrl-C stops it and deletes everything).");
    println!();
    println!("  metrics:    http://{addr}/metrics");
    println!("  health:     http://{addr}/healthz   http://{addr}/readyz");
    println!("  postgres:   psql '{}'", env.cluster.dsn("postgres"));
    println!("  data dir:   {}", env.cluster.data_dir().display());
    match &env.pgbouncer {
        Some(b) => println!(
            "  pgbouncer:  psql '{}'   (admin: psql '{}')",
            b.dsn("postgres", "postgres"),
            b.admin_dsn("postgres")
        ),
        None => println!("  pgbouncer:  not installed (apt-get install pgbouncer), skipped"),
    }
    println!();
    signals.wait().await;
    env.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn check_config(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = match config::load(&cli.config, env) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "FAIL  config             {:<45} {e}",
                cli.config.display().to_string()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "ok    config             {:<45} valid",
        cli.config.display().to_string()
    );
    let checks = crate::check::probe(&settings).await;
    let mut failed = false;
    for c in &checks {
        println!("{c}");
        failed |= c.status == crate::check::Status::Fail;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(serde::Serialize)]
struct CatalogEntry<'a> {
    #[serde(flatten)]
    def: &'a catalogue::MetricDef,
    #[serde(skip_serializing_if = "Option::is_none")]
    configured_name: Option<String>,
}

fn catalog(cli: &Cli, args: &CatalogArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let mut entries: Vec<CatalogEntry<'_>> = catalogue::ALL
        .iter()
        .map(|def| CatalogEntry {
            def,
            configured_name: None,
        })
        .collect();
    // Custom queries are listed when the config is readable; the catalogue works without one.
    if let Ok(settings) = config::load(&cli.config, env) {
        for q in &settings.postgres.queries {
            for v in &q.values {
                let name = if q.values.len() == 1 && v == "value" {
                    q.name.clone()
                } else {
                    format!("{}_{v}", q.name)
                };
                entries.push(CatalogEntry {
                    def: &catalogue::CUSTOM_QUERY,
                    configured_name: Some(name),
                });
            }
        }
    }
    if args.markdown {
        print!("{}", catalogue::markdown());
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        for e in &entries {
            let name = e.configured_name.as_deref().unwrap_or(e.def.name);
            let suffix = if e.def.naming == catalogue::Naming::Prefix {
                "*"
            } else {
                ""
            };
            let compat = if e.def.compat.is_some() {
                " (compat)"
            } else {
                ""
            };
            println!(
                "{name}{suffix:<1} {:?} [{}]{compat}",
                e.def.kind,
                e.def.labels.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
