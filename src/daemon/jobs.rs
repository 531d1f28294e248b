//! The scheduled jobs: backup, drill, retention and the off-site copy, each on its cron
//! schedule (`schedule.rs` runs them: never two at once, each occurrence once across the
//! daemons on one repository, history in the repository). A job body is one call into
//! `backup::ops` (the same function as the CLI command), made under the lease the scheduler
//! took ([`Ops::under`]: every repository write of the run is fenced by it), and turns its
//! result into the job's outcome and the message kept in the job history.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{GaugeVec, Registry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::StartError;
use crate::backup::catalog::BackupKind;
use crate::backup::ops::Ops;
use crate::backup::progress::Progress;
use crate::backup::Error;
use crate::config::Schedule;
use crate::metrics::catalogue as cat;
use crate::metrics::own::create;
use crate::schedule::{self, JobFn, JobOutcome};
use crate::status::cache::Cache;

/// How long a scheduled drill may take before it is stopped.
const DRILL_PATIENCE: Duration = Duration::from_secs(7200);

/// Schedules every configured job; the status page's facts are refreshed after each run.
pub fn schedule(
    ops: &Ops,
    registry: &Registry,
    status: Arc<Cache>,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> Result<(), StartError> {
    let next_run: GaugeVec = create(registry, &cat::PGVIGIL_JOB_NEXT_RUN_TIMESTAMP_SECONDS)?;
    // Scheduled jobs never overlap.
    let exclusive = Arc::new(tokio::sync::Mutex::new(()));
    let s = &ops.settings;
    let mut jobs: Vec<(&'static str, &Schedule, JobFn)> = vec![
        ("drill", &s.drill.schedule, drill(ops, &status)),
        (
            "backup",
            &s.backup.schedule,
            backup(ops, &status, BackupKind::Full),
        ),
        (
            "backup-incremental",
            &s.backup.incremental_schedule,
            backup(ops, &status, BackupKind::Incremental),
        ),
        ("retention", &s.retention.schedule, retention(ops, &status)),
    ];
    if let (Some(o), Some(_)) = (&s.offsite, &ops.offsite) {
        jobs.push(("offsite", &o.schedule, offsite(ops, &status)));
    }
    if s.backup.initial_backup && s.backup.schedule.cron().is_some() {
        tracker.spawn(initial_backup(
            ops.clone(),
            exclusive.clone(),
            status.clone(),
            token.clone(),
        ));
    }
    for (job, when, body) in jobs {
        let Some(cron) = when.cron() else {
            continue;
        };
        let next_run = next_run.clone();
        tracker.spawn(schedule::run_job(
            job,
            cron.clone(),
            ops.primary.clone(),
            s.storage.lease_ttl,
            exclusive.clone(),
            body,
            move |t| next_run.with_label_values(&[job]).set(t.timestamp() as f64),
            token.clone(),
        ));
    }
    Ok(())
}

/// How long after start the first backup of an empty repository is taken: long enough for
/// PostgreSQL to be up and a crash-looping pod not to start backups in a loop.
const INITIAL_BACKUP_DELAY: Duration = Duration::from_secs(30);

/// How often, and how many times, the initial backup is tried while PostgreSQL cannot say
/// whether it is a primary.
const INITIAL_BACKUP_RETRY: Duration = Duration::from_secs(30);
const INITIAL_BACKUP_ATTEMPTS: u32 = 20;

/// Takes a first backup soon after start when the repository has none and this server is a
/// primary (CloudNativePG's immediate backup), so a new deployment does not wait for the
/// night's schedule to become restorable. Runs under the jobs' lock, so it never overlaps a
/// scheduled job; a standby's sidecar, or a repository that has a backup, does nothing.
async fn initial_backup(
    ops: Ops,
    exclusive: Arc<tokio::sync::Mutex<()>>,
    status: Arc<Cache>,
    token: CancellationToken,
) {
    let mut wait = INITIAL_BACKUP_DELAY;
    for _ in 0..INITIAL_BACKUP_ATTEMPTS {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = INITIAL_BACKUP_RETRY;
        let _turn = tokio::select! {
            _ = token.cancelled() => return,
            g = exclusive.lock() => g,
        };
        match crate::backup::catalog::newest(&ops.primary).await {
            Ok((0, _)) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(event = "backup.initial.failed", error = %e, "cannot list backups; will retry");
                continue;
            }
        }
        match crate::backup::ops::is_primary(&ops.settings.postgres).await {
            Some(true) => {}
            Some(false) => return,
            None => continue,
        }
        tracing::info!(
            event = "backup.initial.started",
            "the repository has no backup: taking the first one now"
        );
        let backup = ops.backup(Arc::default(), BackupKind::Full);
        tokio::select! {
            _ = token.cancelled() => return,
            result = backup => {
                status.changed();
                if result.is_ok() {
                    return;
                }
            }
        }
    }
}

/// A job body that calls `run` on `ops` under the lease the scheduler took, then has the
/// status page refreshed.
fn job<F, Fut>(ops: &Ops, status: &Arc<Cache>, run: F) -> JobFn
where
    F: Fn(Ops) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (JobOutcome, String)> + Send + 'static,
{
    let (ops, status) = (ops.clone(), status.clone());
    let run = Arc::new(run);
    Arc::new(move |lease| {
        let (ops, status, run) = (ops.under(&lease), status.clone(), run.clone());
        Box::pin(async move {
            let done = run(ops).await;
            status.changed();
            done
        })
    })
}

/// The job's outcome for an operation's result: `Skipped` (not this sidecar's turn) is not
/// a failure.
fn outcome<T>(result: Result<T, Error>, message: impl FnOnce(T) -> String) -> (JobOutcome, String) {
    match result {
        Ok(v) => (JobOutcome::Success, message(v)),
        Err(Error::Skipped(why)) => (JobOutcome::Skipped, why),
        Err(e) => (JobOutcome::Failure, e.to_string()),
    }
}

fn backup(ops: &Ops, status: &Arc<Cache>, want: BackupKind) -> JobFn {
    job(ops, status, move |ops| async move {
        let result = ops.backup(Arc::default(), want).await;
        outcome(result, |info| {
            format!(
                "{} backup {} ({} bytes stored)",
                info.kind.as_str(),
                info.id,
                info.stored_bytes
            )
        })
    })
}

fn drill(ops: &Ops, status: &Arc<Cache>) -> JobFn {
    job(ops, status, |ops| async move {
        let ev = ops.drill(None, DRILL_PATIENCE, Arc::default()).await;
        if ev.success {
            (
                JobOutcome::Success,
                format!("drill {} passed in {:.1}s", ev.id, ev.timings.total_seconds),
            )
        } else {
            (
                JobOutcome::Failure,
                ev.error.unwrap_or_else(|| "failed".into()),
            )
        }
    })
}

fn retention(ops: &Ops, status: &Arc<Cache>) -> JobFn {
    job(ops, status, |ops| async move {
        let result = ops.retention(false, &Progress::default()).await;
        let labels = ops.stores().into_iter().map(|s| s.label);
        outcome(result, |reports| {
            reports
                .iter()
                .zip(labels)
                .map(|(r, label)| {
                    format!(
                        "{label}: kept {} backup(s), deleted {} object(s), {} locked",
                        r.kept.len(),
                        r.deleted_objects,
                        r.locked_objects
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    })
}

fn offsite(ops: &Ops, status: &Arc<Cache>) -> JobFn {
    job(ops, status, |ops| async move {
        let result = ops.offsite(&Progress::default()).await;
        outcome(result, |r| {
            format!(
                "backup {} copied to {} ({} objects, {} bytes)",
                r.backup_id, r.destination, r.objects_copied, r.bytes_copied
            )
        })
    })
}
