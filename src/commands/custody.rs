//! `pgvigil retention` and `pgvigil offsite`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use indicatif::HumanBytes;

use super::{print_json, render, rfc3339, Exit, Invocation};
use crate::backup::progress::Progress;
use crate::backup::retention::Fate;
use crate::cli::{JsonArgs, RetentionArgs};

pub(super) async fn retention(inv: &Invocation<'_>, args: &RetentionArgs) -> Exit {
    let ops = inv.ops(true, "retention").await?;
    let progress = Arc::new(Progress::default());
    let shown = inv.show("retention", &progress);
    let result = ops.retention(args.dry_run, &progress).await;
    shown.finish();
    ops.close().await;
    let reports = result.context("retention failed")?;
    if args.json {
        print_json(&reports)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        say!(
            "{}{}: recovery window from {} ({} backup(s) kept)",
            r.store,
            if r.dry_run { " (dry run)" } else { "" },
            rfc3339(r.window_start),
            r.kept.len()
        );
        for k in &r.kept {
            say!(
                "  keep    backup {} (ended {}): {}",
                k.id,
                rfc3339(k.stop_time),
                k.why
            );
        }
        for o in &r.objects {
            let verb = match &o.fate {
                Fate::Deleted => "deleted".to_string(),
                Fate::WouldDelete => "would delete".to_string(),
                Fate::Locked { until } => format!("locked until {until}, kept"),
            };
            say!(
                "  {verb} {} ({}, {}): {}",
                o.object.key,
                o.object.reason.label(),
                HumanBytes(o.object.bytes),
                o.object.why
            );
        }
        let would = r
            .objects
            .iter()
            .filter(|o| o.fate == Fate::WouldDelete)
            .count();
        say!(
            "  {} object(s) deleted ({}), {} would be deleted, {} locked, {} lock(s) renewed",
            r.deleted_objects,
            HumanBytes(r.deleted_bytes),
            would,
            r.locked_objects,
            r.renewed_locks
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn offsite(inv: &Invocation<'_>, args: &JsonArgs) -> Exit {
    let ops = inv.ops(true, "offsite").await?;
    let progress = Arc::new(Progress::default());
    let shown = inv.show("offsite", &progress);
    let result = ops.offsite(&progress).await;
    shown.finish();
    ops.close().await;
    let report = result.context("off-site copy failed")?;
    render(args.json, &report, |report| {
        say!(
            "backup {} copied to {}: {} object(s) copied ({} server-side, {}), {} already there, {} WAL file(s) needed; every copy verified",
            report.backup_id,
            report.destination,
            report.objects_copied,
            report.server_side,
            HumanBytes(report.bytes_copied),
            report.objects_present,
            report.wal_files
        );
    })?;
    Ok(ExitCode::SUCCESS)
}
