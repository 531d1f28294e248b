//! What each subcommand does. This is the CLI's edge: with `main.rs`, the only place
//! that writes to stdout; everything it calls returns data.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{
    CatalogArgs, Cli, Command, DevArgs, DrillArgs, JsonArgs, RestoreArgs, RetentionArgs,
};
use crate::config::{self, EnvLookup};
use crate::metrics::catalogue;

/// Runs the parsed command line. `interactive` is true when stdout is a terminal.
pub async fn execute(cli: Cli, env: EnvLookup<'_>, interactive: bool) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run => run(&cli, env).await,
        Command::Dev(args) => dev(args).await,
        Command::CheckConfig => check_config(&cli, env).await,
        Command::Catalog(args) => catalog(&cli, args, env),
        Command::Backup(args) => backup(&cli, args, env, interactive).await,
        Command::Backups(args) => backups(&cli, args, env).await,
        Command::WalPush { path } => wal_push(&cli, path, env).await,
        Command::WalFetch { name, dest } => wal_fetch(&cli, name, dest, env).await,
        Command::Restore(args) => restore(&cli, args, env).await,
        Command::Verify(args) => verify(&cli, args, env).await,
        Command::Drill(args) => drill(&cli, args, env).await,
        Command::Retention(args) => retention(&cli, args, env).await,
        Command::Offsite(args) => offsite(&cli, args, env).await,
        Command::Audit(cmd) => audit(&cli, cmd, env).await,
    }
}

async fn open_repo(settings: &config::Settings) -> anyhow::Result<crate::store::Repo> {
    crate::store::Repo::open(settings, crate::store::Which::Primary)
        .await
        .with_context(|| format!("opening repository {}", settings.storage.store))
}

/// The off-site repository, if `[offsite] url` is set.
async fn open_offsite(settings: &config::Settings) -> anyhow::Result<Option<crate::store::Repo>> {
    match &settings.offsite {
        Some(o) => Ok(Some(
            crate::store::Repo::open(settings, crate::store::Which::Offsite)
                .await
                .with_context(|| format!("opening repository {}", o.store))?,
        )),
        None => Ok(None),
    }
}

async fn retention(
    cli: &Cli,
    args: &RetentionArgs,
    env: EnvLookup<'_>,
) -> anyhow::Result<ExitCode> {
    use crate::backup::retention::{self, Fate, Policy};
    let settings = load(cli, env)?;
    let policy = Policy {
        recovery_window: settings.retention.recovery_window,
        min_backups: settings.retention.min_backups,
    };
    let mut repos = vec![open_repo(&settings).await?];
    repos.extend(open_offsite(&settings).await?);
    let events = crate::events::Events::for_cli(&settings, "retention");
    let mut reports = Vec::new();
    let mut failure = None;
    for repo in &repos {
        let store = repo.store.describe();
        let observe = |o: &retention::Outcome| events.retention_outcome(&store, o, None);
        match retention::run(repo, policy, chrono::Utc::now(), args.dry_run, &observe).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                events.retention_failed(&store, &e, None);
                failure = Some(anyhow::Error::new(e).context(format!("retention on {store}")));
                break;
            }
        }
    }
    events.close().await;
    if let Some(e) = failure {
        return Err(e);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        println!(
            "{}{}: recovery window from {} ({} backup(s) kept)",
            r.store,
            if r.dry_run { " (dry run)" } else { "" },
            r.window_start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.kept.len()
        );
        for k in &r.kept {
            println!(
                "  keep    backup {} (ended {}): {}",
                k.id,
                k.stop_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                k.why
            );
        }
        for o in &r.objects {
            let verb = match &o.fate {
                Fate::Deleted => "deleted".to_string(),
                Fate::WouldDelete => "would delete".to_string(),
                Fate::Locked { until } => format!("locked until {until}, kept"),
            };
            println!(
                "  {verb} {} ({}, {}): {}",
                o.object.key,
                o.object.reason.label(),
                indicatif::HumanBytes(o.object.bytes),
                o.object.why
            );
        }
        let would = r
            .objects
            .iter()
            .filter(|o| o.fate == Fate::WouldDelete)
            .count();
        println!(
            "  {} object(s) deleted ({}), {} would be deleted, {} locked, {} lock(s) renewed",
            r.deleted_objects,
            indicatif::HumanBytes(r.deleted_bytes),
            would,
            r.locked_objects,
            r.renewed_locks
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn offsite(cli: &Cli, args: &JsonArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    let Some(dest) = open_offsite(&settings).await? else {
        anyhow::bail!(
            "{}: no off-site repository configured; set [offsite] url = \"s3://bucket/prefix\"",
            cli.config.display()
        );
    };
    let repo = open_repo(&settings).await?;
    let events = crate::events::Events::for_cli(&settings, "offsite");
    let result = crate::backup::offsite::run(&repo, &dest).await;
    events.offsite_finished(&dest.store.describe(), result.as_ref(), None);
    events.close().await;
    let report = result.context("off-site copy failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "backup {} copied to {}: {} object(s) copied ({} server-side, {}), {} already there, {} WAL file(s) needed; every copy verified",
            report.backup_id,
            report.destination,
            report.objects_copied,
            report.server_side,
            indicatif::HumanBytes(report.bytes_copied),
            report.objects_present,
            report.wal_files
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn backup(
    cli: &Cli,
    args: &JsonArgs,
    env: EnvLookup<'_>,
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    let repo = open_repo(&settings).await?;
    let progress = std::sync::Arc::new(crate::backup::basebackup::Progress::default());
    let bar = (interactive && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} backup {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                let raw = progress
                    .raw_bytes
                    .load(std::sync::atomic::Ordering::Relaxed);
                let stored = progress
                    .stored_bytes
                    .load(std::sync::atomic::Ordering::Relaxed);
                let rate = raw as f64 / start.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{} read, {} stored, {}/s",
                    indicatif::HumanBytes(raw),
                    indicatif::HumanBytes(stored),
                    indicatif::HumanBytes(rate as u64)
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let events = crate::events::Events::for_cli(&settings, "backup");
    let result = crate::backup::basebackup::run(&settings, &repo, progress).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match &result {
        Ok(info) => events.backup_completed(&repo.store.describe(), info),
        Err(e) => events.backup_failed(&repo.store.describe(), e, None),
    }
    events.close().await;
    let info = result.context("backup failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "backup {} done: {} raw, {} stored in {:.1}s, WAL {} .. {} (timeline {})",
            info.id,
            indicatif::HumanBytes(info.raw_bytes),
            indicatif::HumanBytes(info.stored_bytes),
            info.duration_seconds,
            info.start_lsn,
            info.stop_lsn,
            info.timeline
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn backups(cli: &Cli, args: &JsonArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    let repo = open_repo(&settings).await?;
    let list = crate::backup::catalog::list(&repo).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!(
            "no backups in {} (cluster {})",
            repo.store.describe(),
            repo.cluster
        );
    } else {
        println!(
            "{:<18} {:<25} {:<25} {:>10} {:>10} {:>8}  wal",
            "id", "start", "stop", "raw", "stored", "seconds"
        );
        for b in &list {
            println!(
                "{:<18} {:<25} {:<25} {:>10} {:>10} {:>8.1}  {} .. {} (tl {})",
                b.id,
                b.start_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                b.stop_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                indicatif::HumanBytes(b.raw_bytes).to_string(),
                indicatif::HumanBytes(b.stored_bytes).to_string(),
                b.duration_seconds,
                b.start_lsn,
                b.stop_lsn,
                b.timeline
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wal_push(
    cli: &Cli,
    path: &std::path::Path,
    env: EnvLookup<'_>,
) -> anyhow::Result<ExitCode> {
    let settings = config::load(&cli.config, env)?;
    let repo = open_repo(&settings).await?;
    let start = tokio::time::Instant::now();
    let result = crate::backup::wal::push(&repo, path, settings.backup.compression_level).await;
    let seconds = start.elapsed().as_secs_f64();
    crate::backup::report::wal_push(&settings, result.is_ok(), seconds).await;
    if let Err(e) = &result {
        // Successful pushes are not audited (one per 16 MB of WAL); failures and refusals are.
        let events = crate::events::Events::for_cli(&settings, "wal-push");
        let wal = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        events.wal_push_failed(&repo.store.describe(), &wal, e);
        events.close().await;
    }
    let pushed = result.with_context(|| format!("wal-push {}", path.display()))?;
    tracing::info!(
        event = if pushed.already_archived { "wal.push.duplicate" } else { "wal.push.completed" },
        wal = %pushed.name, raw_bytes = pushed.raw_bytes, stored_bytes = pushed.stored_bytes, seconds,
        "archived"
    );
    Ok(ExitCode::SUCCESS)
}

async fn wal_fetch(
    cli: &Cli,
    name: &str,
    dest: &std::path::Path,
    env: EnvLookup<'_>,
) -> anyhow::Result<ExitCode> {
    let settings = config::load(&cli.config, env)?;
    let repo = open_repo(&settings).await?;
    if crate::backup::wal::fetch(&repo, name, dest)
        .await
        .with_context(|| format!("wal-fetch {name}"))?
    {
        Ok(ExitCode::SUCCESS)
    } else {
        // Normal during recovery (PostgreSQL probes for files that may not exist): quiet.
        tracing::debug!(event = "wal.fetch.missing", wal = %name, "not in the repository");
        Ok(ExitCode::from(1))
    }
}

/// `<this binary> wal-fetch -c <absolute config path>`, for restore_command.
fn wal_fetch_command(config: &std::path::Path) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the pgvigil binary for restore_command")?;
    let config =
        std::fs::canonicalize(config).with_context(|| format!("resolving {}", config.display()))?;
    Ok(format!(
        "{} wal-fetch -c {}",
        exe.display(),
        config.display()
    ))
}

async fn drill(cli: &Cli, args: &DrillArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    let repo = open_repo(&settings).await?;
    let target = match &args.target_time {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--target-time {t:?} is not RFC 3339"))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let wal_fetch = wal_fetch_command(&cli.config)?;
    let signals = ShutdownSignals::install()?;
    // On SIGTERM/SIGINT the drill future is dropped: its guard stops the postmaster and
    // removes the drill directory.
    let evidence = tokio::select! {
        ev = crate::backup::drill::run(&settings, &repo, &wal_fetch, target, args.timeout) => ev,
        _ = signals.wait() => anyhow::bail!("drill interrupted; its postmaster was stopped and its files removed"),
    };
    let events = crate::events::Events::for_cli(&settings, "drill");
    events.drill_finished(&repo.store.describe(), &evidence, None);
    events.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evidence)?);
    } else {
        println!(
            "drill {}: {} (target {}, backup {}, skew {:.1}s)",
            evidence.id,
            if evidence.success { "PASSED" } else { "FAILED" },
            evidence
                .target_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
            evidence.backup_id.as_deref().unwrap_or("-"),
            evidence.target_skew_seconds.unwrap_or(f64::NAN)
        );
        let t = &evidence.timings;
        println!(
            "RTO {:.1}s = download {:.1}s + replay {:.1}s + checks {:.1}s; {} restored",
            t.total_seconds,
            t.download_seconds,
            t.replay_seconds,
            t.checks_seconds,
            indicatif::HumanBytes(evidence.bytes_restored)
        );
        for c in &evidence.checks {
            println!(
                "  {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if let Some(e) = &evidence.error {
            println!("error: {e}");
        }
    }
    Ok(if evidence.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn verify(cli: &Cli, args: &JsonArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    let settings = load(cli, env)?;
    let repo = open_repo(&settings).await?;
    let archiver = crate::backup::jobs::archiver_state(&settings.postgres).await;
    let report = crate::backup::pitr::verify(&repo, archiver).await;
    let events = crate::events::Events::for_cli(&settings, "verify");
    events.pitr_checked(
        &repo.store.describe(),
        report.as_ref().map_err(ToString::to_string),
    );
    events.close().await;
    let report = report.context("verify failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let t = |x: Option<chrono::DateTime<chrono::Utc>>| {
            x.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
        };
        println!(
            "{}: {} backup(s), timelines {:?}, {} segments checked, newest {}",
            if report.ok { "ok" } else { "FAILED" },
            report.backups,
            report.timelines,
            report.segments_checked,
            report.newest_segment.as_deref().unwrap_or("-")
        );
        println!(
            "recovery window: {} .. {}",
            t(report.window_start),
            t(report.window_end)
        );
        if let Some(a) = report.archive_age_seconds {
            println!(
                "archive age (RPO): {a:.0}s (limit {}s)",
                settings.pitr.rpo.as_secs()
            );
        }
        for m in &report.missing {
            println!("missing: {m}");
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn restore(cli: &Cli, args: &RestoreArgs, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    use crate::backup::catalog::{parse_lsn, Target};
    let settings = load(cli, env)?;
    let repo = open_repo(&settings).await?;
    let target = match (&args.target_time, &args.target_lsn, &args.target) {
        (Some(t), _, _) => Target::Time(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--target-time {t:?} is not RFC 3339 (e.g. 2026-11-23T14:05:00Z)")
                })?
                .with_timezone(&chrono::Utc),
        ),
        (_, Some(l), _) => Target::Lsn(
            parse_lsn(l)
                .with_context(|| format!("--target-lsn {l:?} is not an LSN like 0/3000028"))?,
        ),
        (_, _, Some(_)) => Target::Immediate,
        _ => Target::Latest,
    };
    let wal_fetch = wal_fetch_command(&cli.config)?;
    let req = crate::backup::restore::RestoreRequest {
        to: args.to.clone(),
        backup: args.backup.clone(),
        target,
        action: args.target_action,
        restore_command: format!("{wal_fetch} %f %p"),
    };
    let restored = crate::backup::restore::restore(&repo, &req)
        .await
        .context("restore failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&restored)?);
    } else {
        println!(
            "restored backup {} ({} in {:.1}s) into {}; start PostgreSQL on it to replay WAL to the target",
            restored.backup_id,
            indicatif::HumanBytes(restored.bytes),
            restored.seconds,
            restored.data_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<config::Settings> {
    let settings = config::load(&cli.config, env)?;
    tracing::info!(event = "config.loaded", file = %cli.config.display(), "configuration loaded");
    Ok(settings)
}

async fn run(cli: &Cli, env: EnvLookup<'_>) -> anyhow::Result<ExitCode> {
    // App::start emits config.loaded (log, metric and audit line together).
    let settings = config::load(&cli.config, env)?;
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
    let exe = std::env::current_exe().context("finding the pgvigil binary")?;
    let env = crate::dev::DevEnvironment::start(args.listen, &exe)
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
    println!("  repository: {}", env.repo_url);
    println!(
        "  config:     {}   (try: pgvigil backups -c {})",
        env.config_file.display(),
        env.config_file.display()
    );
    match &env.first_backup {
        Ok(b) => println!(
            "  backup:     {} taken ({} stored in {:.1}s); WAL is archived through pgvigil wal-push",
            b.id,
            indicatif::HumanBytes(b.stored_bytes),
            b.duration_seconds
        ),
        Err(e) => println!("  backup:     FAILED: {e}"),
    }
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

async fn audit(
    cli: &Cli,
    cmd: &crate::cli::AuditCommand,
    env: EnvLookup<'_>,
) -> anyhow::Result<ExitCode> {
    use crate::cli::AuditCommand;
    match cmd {
        AuditCommand::Install(args) => {
            let settings = load(cli, env)?;
            let opts = crate::pg::ConnectOptions::from_settings(&settings.postgres);
            let done = crate::audit::schema::install(&opts, &args.tables).await?;
            println!(
                "installed the database change audit (schema audit) into {}",
                done.target
            );
            for t in &done.tables {
                println!("auditing {t}");
            }
            if settings.audit.table.is_none() {
                println!("to forward its rows, set [audit] table = \"audit.logged_actions\" and restart pgvigil run");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify(args) => {
            use crate::audit::chain::{verify_file, VerifyError};
            match verify_file(&args.file) {
                Ok(v) => {
                    if args.json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        println!(
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
