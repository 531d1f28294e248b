//! `pgvigil backup`, `backups`, `restore`, `wal-push`, `wal-fetch` and `wal-prefetch`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use indicatif::HumanBytes;

use super::{open_repo, parse_time, print_json, render, rfc3339, Exit, Invocation};
use crate::backup::catalog::BackupKind;
use crate::backup::catalog::{parse_lsn, Target};
use crate::backup::ops::wal_fetch_command;
use crate::backup::progress::Progress;
use crate::backup::restore::RestoreRequest;
use crate::backup::wal::{classify, WalKind};
use crate::backup::wal_prefetch::{self, Spool};
use crate::cli::{BackupArgs, JsonArgs, RestoreArgs};

pub(super) async fn backup(inv: &Invocation<'_>, args: &BackupArgs) -> Exit {
    let ops = inv.ops(false, "backup").await?;
    let progress = Arc::new(Progress::default());
    let shown = inv.show("backup", &progress);
    let kind = if args.incremental {
        BackupKind::Incremental
    } else {
        BackupKind::Full
    };
    let result = ops.backup(progress, kind).await;
    shown.finish();
    ops.close().await;
    let info = result.context("backup failed")?;
    render(args.json, &info, |info| {
        say!(
            "backup {} done: {} raw, {} stored in {:.1}s, WAL {} .. {} (timeline {})",
            info.id,
            HumanBytes(info.raw_bytes),
            HumanBytes(info.stored_bytes),
            info.duration_seconds,
            info.start_lsn,
            info.stop_lsn,
            info.timeline
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn backups(inv: &Invocation<'_>, args: &JsonArgs) -> Exit {
    let settings = inv.load()?;
    let repo = open_repo(&settings).await?;
    let list = crate::backup::catalog::list(&repo).await?;
    if args.json {
        print_json(&list)?;
    } else if list.is_empty() {
        say!(
            "no backups in {} (cluster {})",
            repo.store.describe(),
            repo.cluster
        );
    } else {
        let broken = crate::backup::catalog::judge(&repo, &list).await?;
        say!(
            "{:<18} {:<12} {:<25} {:<25} {:>10} {:>10} {:>8}  wal",
            "id",
            "kind",
            "start",
            "stop",
            "raw",
            "stored",
            "seconds"
        );
        for b in &list {
            say!(
                "{:<18} {:<12} {:<25} {:<25} {:>10} {:>10} {:>8.1}  {} .. {} (tl {})",
                b.id,
                b.kind.as_str(),
                rfc3339(b.start_time),
                rfc3339(b.stop_time),
                HumanBytes(b.raw_bytes).to_string(),
                HumanBytes(b.stored_bytes).to_string(),
                b.duration_seconds,
                b.start_lsn,
                b.stop_lsn,
                b.timeline
            );
            if let Some(parent) = &b.parent {
                say!("{:<18} on {parent}", "");
            }
            if let Some(why) = broken.get(&b.id) {
                say!("{:<18} CANNOT BE RESTORED: {why}", "");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgvigil upgrade`: binds the repository to the upgraded cluster.
pub(super) async fn upgrade(inv: &Invocation<'_>, args: &JsonArgs) -> Exit {
    use crate::backup::wal::Rebound;
    let ops = inv.ops(false, "pgvigil upgrade").await?;
    let result = ops.upgrade().await;
    let repository = ops.primary.store.describe();
    ops.close().await;
    let rebound = result?;
    render(args.json, &rebound, |r| {
        match r {
        Rebound::Bound { system_identifier } => say!(
            "{repository} was not bound to a cluster yet; now it is bound to database system {system_identifier}"
        ),
        Rebound::Already { system_identifier } => say!(
            "{repository} is already bound to this server (database system {system_identifier}): nothing to do"
        ),
        Rebound::Upgraded {
            from_system_identifier,
            from_major,
            system_identifier,
            major,
        } => {
            let from = from_major.map_or(String::new(), |m| format!(" (PostgreSQL {m})"));
            say!(
                "{repository}: bound to database system {system_identifier} (PostgreSQL {major}); the backups and WAL \
                 of {from_system_identifier}{from} stay restorable as the previous chain.\n\
                 Take a backup now, the new chain starts with it: pgvigil backup -c {}",
                inv.cli.config.display()
            );
        }
    }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn wal_push(inv: &Invocation<'_>, path: &Path) -> Exit {
    // No config.loaded line: archive_command runs this once per 16 MB of WAL.
    let ops = inv.ops_quiet(false, "wal-push").await?;
    let result = ops.wal_push(path).await;
    ops.close().await;
    result.with_context(|| format!("wal-push {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn wal_fetch(
    inv: &Invocation<'_>,
    name: &str,
    dest: &Path,
    socket: Option<&Path>,
) -> Exit {
    let fetched = match socket {
        Some(socket) => crate::backup::wal_serve::fetch_via(socket, name, dest).await,
        None => {
            let settings = inv.load_quiet()?;
            let repo = open_repo(&settings).await?;
            let depth = settings.backup.wal_prefetch;
            let segment = classify(name) == Some(WalKind::Segment);
            match (segment && depth > 0)
                .then(|| Spool::open(&wal_prefetch::default_dir(dest)).ok())
                .flatten()
            {
                Some(spool) => fetch_with_read_ahead(inv, &repo, &spool, name, dest).await,
                None => crate::backup::wal::fetch(&repo, name, dest).await,
            }
        }
    };
    if fetched.with_context(|| format!("wal-fetch {name}"))? {
        Ok(ExitCode::SUCCESS)
    } else {
        // Normal during recovery (PostgreSQL probes for files that may not exist): quiet.
        tracing::debug!(event = "wal.fetch.missing", wal = %name, "not in the repository");
        Ok(ExitCode::from(1))
    }
}

/// `wal-fetch` with read-ahead: the file from the spool when the prefetcher has it, else
/// from the repository; then the prefetcher is told what recovery asked for, and started
/// when none runs. The spool is only a hint: any trouble with it falls back to a direct
/// fetch, and the prefetcher's own failures only mean more direct fetches.
async fn fetch_with_read_ahead(
    inv: &Invocation<'_>,
    repo: &crate::store::Repo,
    spool: &Spool,
    name: &str,
    dest: &Path,
) -> Result<bool, crate::backup::Error> {
    let from_spool = spool.take(name, dest).await.unwrap_or(false);
    let fetched = from_spool || crate::backup::wal::fetch(repo, name, dest).await?;
    if fetched {
        let seg_size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if spool.want(name, seg_size).is_ok() && !spool.running() {
            start_prefetcher(inv, spool.dir());
        }
    }
    Ok(fetched)
}

/// Starts `pgvigil wal-prefetch` for `spool` in the background, in a process group of its
/// own (PostgreSQL's signals to restore_command do not reach it) and without stdio; it
/// stops on its own when recovery stops asking.
fn start_prefetcher(inv: &Invocation<'_>, spool: &Path) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let spawned = std::process::Command::new(exe)
        .arg("wal-prefetch")
        .arg("-c")
        .arg(inv.cli.config.as_os_str())
        .arg("--spool")
        .arg(spool)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        tracing::debug!(event = "wal.prefetch.failed", error = %e, "cannot start the WAL prefetcher");
    }
}

pub(super) async fn wal_prefetch(inv: &Invocation<'_>, spool: &Path) -> Exit {
    let settings = inv.load_quiet()?;
    let repo = open_repo(&settings).await?;
    let spool = Spool::open(spool)?;
    let depth = settings.backup.wal_prefetch.max(1);
    let never = tokio_util::sync::CancellationToken::new();
    wal_prefetch::run(
        &repo,
        &spool,
        depth,
        settings.backup.wal_prefetch_workers,
        wal_prefetch::IDLE,
        &never,
    )
    .await
    .with_context(|| format!("wal-prefetch {}", spool.dir().display()))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn restore(inv: &Invocation<'_>, args: &RestoreArgs) -> Exit {
    let settings = inv.load()?;
    let repo = open_repo(&settings).await?;
    let target = match (&args.target_time, &args.target_lsn, &args.target) {
        (Some(t), _, _) => Target::Time(parse_time("--target-time", t)?),
        (_, Some(l), _) => Target::Lsn(
            parse_lsn(l)
                .with_context(|| format!("--target-lsn {l:?} is not an LSN like 0/3000028"))?,
        ),
        (_, _, Some(_)) => Target::Immediate,
        _ => Target::Latest,
    };
    let req = RestoreRequest {
        to: args.to.clone(),
        backup: args.backup.clone(),
        target,
        action: args.target_action,
        restore_command: format!("{} %f %p", wal_fetch_command(&inv.cli.config, None)?),
        keep_archiving: args.keep_archiving,
        binaries: crate::pg::binaries::Search::from_settings(&settings.postgres),
    };
    let progress = Arc::new(Progress::default());
    let shown = inv.show("restore", &progress);
    let restored = crate::backup::restore::restore_reporting(&repo, &req, progress).await;
    shown.finish();
    let restored = restored.context("restore failed")?;
    render(args.json, &restored, |restored| {
        say!(
            "restored backup {} ({} in {:.1}s) into {}; start PostgreSQL on it to replay WAL to the target",
            restored.backup_id,
            HumanBytes(restored.bytes),
            restored.seconds,
            restored.data_dir.display()
        );
        if restored.archiving {
            say!("WAL archiving kept as in the backup (--keep-archiving): this cluster will archive into the repository once it runs");
        } else {
            say!("WAL archiving is off (archive_mode = off in postgresql.auto.conf), so this cluster cannot push into the repository it came from; restore with --keep-archiving for a new primary");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
