//! `pgvigil verify` and `pgvigil drill`.

use std::process::ExitCode;

use anyhow::Context;

use super::{parse_time, render, Exit, Invocation, ShutdownSignals};
use crate::cli::{DrillArgs, JsonArgs};

pub(super) async fn verify(inv: &Invocation<'_>, args: &JsonArgs) -> Exit {
    let ops = inv.ops(false, "verify").await?;
    let rpo = ops.settings.pitr.rpo;
    let report = ops.verify().await;
    ops.close().await;
    let report = report.context("verify failed")?;
    render(args.json, &report, |report| {
        let t = |x: Option<chrono::DateTime<chrono::Utc>>| {
            x.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
        };
        say!(
            "{}: {} backup(s), timelines {:?}, {} segments checked, newest {}",
            if report.ok { "ok" } else { "FAILED" },
            report.backups,
            report.timelines,
            report.segments_checked,
            report.newest_segment.as_deref().unwrap_or("-")
        );
        say!(
            "recovery window: {} .. {}",
            t(report.window_start),
            t(report.window_end)
        );
        // After `pgvigil upgrade`: one line per database system, oldest first.
        if report.chains.len() > 1 {
            for c in &report.chains {
                say!(
                    "chain: system {} (PostgreSQL {}), {} backup(s) {} .. {}, WAL {} .. {}",
                    c.system_identifier,
                    c.major,
                    c.backups,
                    c.first_backup,
                    c.last_backup,
                    c.wal_from,
                    c.wal_to.as_deref().unwrap_or("-")
                );
            }
        }
        if let Some(a) = report.archive_age_seconds {
            say!("archive age (RPO): {a:.0}s (limit {}s)", rpo.as_secs());
        }
        for m in &report.missing {
            say!("missing: {m}");
        }
        for p in &report.problems {
            say!("problem: {p}");
        }
    })?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) async fn drill(inv: &Invocation<'_>, args: &DrillArgs) -> Exit {
    let ops = inv.ops(false, "drill").await?;
    let target = match &args.target_time {
        Some(t) => Some(parse_time("--target-time", t)?),
        None => None,
    };
    let signals = ShutdownSignals::install()?;
    let progress = std::sync::Arc::new(crate::backup::progress::Progress::default());
    let shown = inv.show("drill", &progress);
    // On SIGTERM/SIGINT the drill future is dropped: its guard stops the postmaster and
    // removes the drill directory.
    let evidence = tokio::select! {
        ev = ops.drill(target, args.timeout, progress.clone()) => ev,
        _ = signals.wait() => {
            shown.finish();
            anyhow::bail!("drill interrupted; its postmaster was stopped and its files removed")
        }
    };
    shown.finish();
    ops.close().await;
    render(args.json, &evidence, |evidence| {
        say!(
            "drill {}: {} (target {}, backup {}, skew {})",
            evidence.id,
            if evidence.success { "PASSED" } else { "FAILED" },
            evidence
                .target_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
            evidence.backup_id.as_deref().unwrap_or("-"),
            evidence
                .target_skew_seconds
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into())
        );
        let t = &evidence.timings;
        say!(
            "RTO {:.1}s = download {:.1}s + replay {:.1}s + checks {:.1}s; {} restored",
            t.total_seconds,
            t.download_seconds,
            t.replay_seconds,
            t.checks_seconds,
            indicatif::HumanBytes(evidence.bytes_restored)
        );
        for c in &evidence.checks {
            say!(
                "  {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if let Some(e) = &evidence.error {
            say!("error: {e}");
        }
    })?;
    Ok(if evidence.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
