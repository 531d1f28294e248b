//! `pgvigil run`, `dev`, `check-config`, `catalog` and `audit`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{Exit, Invocation, ShutdownSignals};
use crate::cli::{CatalogArgs, DevArgs, RunArgs};
use crate::metrics::catalogue;

pub(super) async fn run(inv: &Invocation<'_>, args: &RunArgs) -> Exit {
    // App::start emits config.loaded (log, metric and audit line together).
    let settings = crate::config::load_with_web_config(
        &inv.cli.config,
        inv.env,
        args.web_config_file.as_deref(),
    )?;
    // Handlers first: a SIGTERM that arrives while starting must still drain, not kill.
    let signals = ShutdownSignals::install()?;
    let running = crate::App::start(settings).await?;
    signals.wait().await;
    tracing::info!(event = "daemon.stopping", "signal received; draining");
    running.shutdown(Duration::from_secs(10)).await;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn dev(args: &DevArgs) -> Exit {
    let signals = ShutdownSignals::install()?;
    let exe = std::env::current_exe().context("finding the pgvigil binary")?;
    let env = crate::dev::DevEnvironment::start(args.listen, &exe)
        .await
        .context("pgvigil dev")?;
    let addr = env.running.addr;
    // Written, not printed: a closed stdout (`pgvigil dev | head`) must not panic the
    // environment before Ctrl-C tears it down.
    let mut banner = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(banner);
    let _ = writeln!(
        banner,
        "pgvigil dev is running (Ctrl-C stops it and deletes everything)."
    );
    let _ = writeln!(banner);
    let _ = writeln!(
        banner,
        "  status:     http://{addr}/   (the recovery window, backups, drills)"
    );
    let _ = writeln!(banner, "  metrics:    http://{addr}/metrics");
    let _ = writeln!(
        banner,
        "  health:     http://{addr}/healthz   http://{addr}/readyz"
    );
    let _ = writeln!(
        banner,
        "  postgres:   psql '{}'",
        env.cluster.dsn("postgres")
    );
    let _ = writeln!(banner, "  data dir:   {}", env.cluster.data_dir().display());
    let _ = writeln!(banner, "  repository: {}", env.repo_url);
    let _ = writeln!(banner, "  config:     {}", env.config_file.display());
    // The binary by its full path: after `make dev` it is not on the PATH (`make install`);
    // the copy archive_command runs, which the server user can execute, so that `restore`
    // (whose restore_command runs as that user) works as typed too.
    let _ = writeln!(
        banner,
        "  try:        {} status -c {}",
        env.binary.display(),
        env.config_file.display()
    );
    let _ = writeln!(
        banner,
        "              (also backups, backup, verify, drill, restore --to DIR; WAL is archived at least every minute, so a drill can restore once a minute has passed)"
    );
    let _ = match &env.first_backup {
        Ok(b) => writeln!(
            banner,
            "  backup:     {} taken ({} stored in {:.1}s); WAL is archived through pgvigil wal-push",
            b.id,
            indicatif::HumanBytes(b.stored_bytes),
            b.duration_seconds
        ),
        Err(e) => writeln!(banner, "  backup:     FAILED: {e}"),
    };
    let _ = match &env.pgbouncer {
        Some(b) => writeln!(
            banner,
            "  pgbouncer:  psql '{}'   (admin: psql '{}')",
            b.dsn("postgres", "postgres"),
            b.admin_dsn("postgres")
        ),
        None => writeln!(
            banner,
            "  pgbouncer:  not installed (apt-get install pgbouncer), skipped"
        ),
    };
    let _ = writeln!(banner);
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(banner.as_bytes());
    signals.wait().await;
    env.stop().await;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn check_config(inv: &Invocation<'_>) -> Exit {
    let settings = match inv.load_quiet() {
        Ok(s) => s,
        Err(e) => {
            say!(
                "FAIL  config             {:<45} {e}",
                inv.cli.config.display().to_string()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    say!(
        "ok    config             {:<45} valid",
        inv.cli.config.display().to_string()
    );
    let checks = crate::check::probe(&settings).await;
    let mut failed = false;
    for c in &checks {
        say!("{c}");
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

pub(super) fn catalog(inv: &Invocation<'_>, args: &CatalogArgs) -> Exit {
    let mut entries: Vec<CatalogEntry<'_>> = catalogue::ALL
        .iter()
        .map(|def| CatalogEntry {
            def,
            configured_name: None,
        })
        .collect();
    // Custom queries are listed when the config is readable; the catalogue works without one.
    if let Ok(settings) = inv.load_quiet() {
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
        super::say_text(&catalogue::markdown());
    } else if args.json {
        say!("{}", serde_json::to_string_pretty(&entries)?);
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
            say!(
                "{name}{suffix:<1} {:?} [{}]{compat}",
                e.def.kind,
                e.def.labels.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn audit(inv: &Invocation<'_>, cmd: &crate::cli::AuditCommand) -> Exit {
    use crate::cli::AuditCommand;
    match cmd {
        AuditCommand::Install(args) => {
            let settings = inv.load()?;
            let opts = crate::pg::ConnectOptions::from_settings(&settings.postgres);
            let done = crate::audit::schema::install(&opts, &args.tables).await?;
            say!(
                "installed the database change audit (schema audit) into {}",
                done.target
            );
            for t in &done.tables {
                say!("auditing {t}");
            }
            if settings.audit.table.is_none() {
                say!("to forward its rows, set [audit] table = \"audit.logged_actions\" and restart pgvigil run");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify(args) => {
            use crate::audit::chain::{verify_file, VerifyError};
            match verify_file(&args.file) {
                Ok(v) => {
                    if args.json {
                        say!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        say!(
                            "ok: {} intact, {} lines, seq {}..{}, last hash {}",
                            args.file.display(),
                            v.lines,
                            v.first_seq.map_or("-".into(), |s| s.to_string()),
                            v.last_seq.map_or("-".into(), |s| s.to_string()),
                            v.last_hash.as_deref().unwrap_or("-")
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ VerifyError::Broken { .. }) => {
                    eprintln!("pgvigil: {e}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("pgvigil: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
