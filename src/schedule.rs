//! Cron jobs (croner: 5-field crontab, UTC). Jobs never overlap (one job runs at a time
//! across the daemon), and each job's history lives in the repository
//! (`state/jobs/<job>.json`), written before the job starts, so a restarted daemon neither
//! repeats a run it already started nor skips one it missed: a missed occurrence is caught
//! up once, right away.
//!
//! Every occurrence runs once across all the daemons on one repository: a daemon takes the
//! job's lease before anything else, reads the history under it, and runs the occurrence
//! only if no other daemon started it (one whose turn it was not, a standby, leaves it to
//! the next). The body runs under that lease, and the history is written through it, so
//! a daemon that lost the lease while it ran cannot record over the next holder's run.
//! While another daemon holds the lease the occurrence waits (bounded by
//! [`LEASE_PATIENCE`]) and looks at the history again. Occurrences only move forward: a
//! clock that jumps back never makes an occurrence that already ran due again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::lease::Lease;
use crate::store::{layout, Metadata, Repo};

/// How long a due occurrence waits for a lease another daemon holds before it is recorded
/// as skipped.
pub const LEASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// How often a waiting occurrence tries the lease again.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Success,
    Failure,
    /// Not this sidecar's turn (a standby, or another sidecar holds the lease).
    Skipped,
}

/// What the repository remembers about a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// The occurrence last started (not wall-clock time).
    pub last_scheduled: Option<DateTime<Utc>>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_outcome: Option<JobOutcome>,
    pub last_message: Option<String>,
    /// Who ran it (`host/pid`) and under which lease generation.
    #[serde(default)]
    pub last_holder: Option<String>,
}

impl History {
    /// Whether occurrence `due` was started by a daemon whose turn it was (a skipped run,
    /// not that daemon's turn, leaves it to another).
    fn claimed(&self, due: DateTime<Utc>) -> bool {
        self.last_scheduled.is_some_and(|s| s >= due)
            && self.last_outcome != Some(JobOutcome::Skipped)
    }
}

/// When the job should run next: a missed occurrence since the last one started (once,
/// now), otherwise the next occurrence after `now`.
pub fn next_due(
    cron: &croner::Cron,
    last_scheduled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // croner carries `now`'s fraction of a second into the occurrences it finds, so the
    // same occurrence found a few milliseconds later compares as later: whole seconds only.
    use chrono::{SubsecRound, Timelike};
    let now = now.with_nanosecond(0).unwrap_or(now);
    let last_scheduled = last_scheduled.map(|t| t.trunc_subsecs(0));
    let Some(last) = last_scheduled else {
        return cron.find_next_occurrence(&now, false).ok();
    };
    if let Ok(prev) = cron.find_previous_occurrence(&now, true) {
        if prev > last {
            return Some(prev);
        }
    }
    // Never one at or before the last that ran: after the clock jumped back, the next
    // occurrence after `now` may be one that already ran.
    cron.find_next_occurrence(&now.max(last), false).ok()
}

/// A job body, run under the job's lease: returns its outcome and a message.
pub type JobFn =
    Arc<dyn Fn(Lease) -> Pin<Box<dyn Future<Output = (JobOutcome, String)> + Send>> + Send + Sync>;

fn history_key(repo: &Repo, job: &str) -> String {
    repo.key(&layout::job_history(job))
}

/// Reads a job's history (empty if none).
pub async fn load_history(repo: &Repo, job: &str) -> History {
    match repo.store.get_bytes(&history_key(repo, job)).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => History::default(),
    }
}

async fn save_history(repo: &Repo, job: &str, h: &History) {
    let body = Bytes::from(serde_json::to_vec_pretty(h).unwrap_or_default());
    if let Err(e) = repo
        .store
        .put_bytes(&history_key(repo, job), body, Metadata::new())
        .await
    {
        tracing::warn!(event = "job.history.failed", job, error = %e, "could not record job history");
    }
}

/// Takes the lease of `job` for occurrence `due`, waiting (at most [`LEASE_PATIENCE`]) while
/// another daemon holds it. None when the occurrence is not this daemon's to run: another
/// started it, the wait ran out, or the daemon stops; said in the log.
async fn turn_for(
    job: &'static str,
    due: DateTime<Utc>,
    repo: &Repo,
    ttl: std::time::Duration,
    token: &CancellationToken,
) -> Option<(Lease, History)> {
    let deadline = tokio::time::Instant::now() + LEASE_PATIENCE;
    loop {
        let why = match Lease::acquire(repo, job, ttl).await {
            Ok(lease) => {
                let history = load_history(repo, job).await;
                if !history.claimed(due) {
                    return Some((lease, history));
                }
                lease.release().await;
                format!(
                    "occurrence {due} already ran on {}",
                    history.last_holder.as_deref().unwrap_or("another daemon")
                )
            }
            Err(crate::store::Error::Held { message, .. }) => {
                let history = load_history(repo, job).await;
                if history.claimed(due) {
                    format!(
                        "occurrence {due} is running on {}",
                        history.last_holder.as_deref().unwrap_or("another daemon")
                    )
                } else if tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        _ = token.cancelled() => return None,
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                    }
                    continue;
                } else {
                    message
                }
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(event = "job.lease.failed", job, error = %e, "cannot take the job's lease; retrying");
                tokio::select! {
                    _ = token.cancelled() => return None,
                    _ = tokio::time::sleep(LEASE_RETRY * 5) => {}
                }
                continue;
            }
            Err(e) => e.to_string(),
        };
        tracing::info!(event = "job.skipped", job, scheduled = %due.to_rfc3339(), reason = %why, "not this daemon's turn");
        return None;
    }
}

/// Runs `body` on `cron` until `token` is cancelled. `exclusive` is shared by every job so
/// that they never overlap; `next_run` receives each next due time (for the metric);
/// `ttl` is the lease's (`storage.lease_ttl`).
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    job: &'static str,
    cron: croner::Cron,
    repo: Repo,
    ttl: std::time::Duration,
    exclusive: Arc<Mutex<()>>,
    body: JobFn,
    next_run: impl Fn(DateTime<Utc>) + Send,
    token: CancellationToken,
) {
    // This daemon's own record of the last occurrence it handled (ran or left to another).
    let mut last_scheduled = load_history(&repo, job).await.last_scheduled;
    loop {
        let now = Utc::now();
        let Some(due) = next_due(&cron, last_scheduled, now) else {
            tracing::error!(
                event = "job.schedule.empty",
                job,
                "the schedule has no next occurrence; job stopped"
            );
            return;
        };
        next_run(due);
        tracing::info!(
            event = "job.waiting",
            job,
            next = %due.to_rfc3339(),
            after = %last_scheduled.map(|t| t.to_rfc3339()).unwrap_or_default(),
            "next occurrence planned"
        );
        let wait = (due - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let _turn = tokio::select! {
            _ = token.cancelled() => return,
            g = exclusive.lock() => g,
        };
        last_scheduled = Some(due);
        let Some((lease, mut history)) = turn_for(job, due, &repo, ttl, &token).await else {
            continue;
        };
        let fenced = lease.fence(&repo);
        history.last_scheduled = Some(due);
        history.last_started = Some(Utc::now());
        history.last_finished = None;
        history.last_holder = Some(format!(
            "{} (lease generation {})",
            lease.holder(),
            lease.generation()
        ));
        save_history(&fenced, job, &history).await;
        tracing::info!(event = "job.started", job, scheduled = %due.to_rfc3339(), generation = lease.generation(), "scheduled job started");
        let (outcome, message) = body(lease.clone()).await;
        history.last_finished = Some(Utc::now());
        history.last_outcome = Some(outcome);
        history.last_message = Some(message.clone());
        save_history(&fenced, job, &history).await;
        lease.release().await;
        tracing::info!(event = "job.finished", job, outcome = ?outcome, message = %message, "scheduled job finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn next_due_neither_repeats_nor_skips() {
        let cron: croner::Cron = "0 2 * * *".parse().unwrap();
        // Fresh: the next 02:00.
        assert_eq!(
            next_due(&cron, None, t("2026-11-23T01:00:00Z")),
            Some(t("2026-11-23T02:00:00Z"))
        );
        // Ran at 02:00, restarted at 02:01: not again today.
        assert_eq!(
            next_due(
                &cron,
                Some(t("2026-11-23T02:00:00Z")),
                t("2026-11-23T02:01:00Z")
            ),
            Some(t("2026-11-24T02:00:00Z"))
        );
        // Down over 02:00 (last run yesterday): catch up now, once.
        assert_eq!(
            next_due(
                &cron,
                Some(t("2026-11-22T02:00:00Z")),
                t("2026-11-23T02:30:00Z")
            ),
            Some(t("2026-11-23T02:00:00Z"))
        );
        // Down for three days: one catch-up run (the latest missed), not three.
        assert_eq!(
            next_due(
                &cron,
                Some(t("2026-11-20T02:00:00Z")),
                t("2026-11-23T03:00:00Z")
            ),
            Some(t("2026-11-23T02:00:00Z"))
        );
    }

    #[test]
    fn a_caught_up_run_is_not_repeated_a_few_milliseconds_later() {
        let cron: croner::Cron = "0 5 * * 0".parse().unwrap();
        let now = t("2026-11-30T21:48:40.752441690Z");
        let due = next_due(&cron, Some(t("2026-01-01T00:00:00Z")), now).unwrap();
        assert_eq!(due, t("2026-11-29T05:00:00Z"));
        // The job ran; asked again 100 ms later (a larger fraction), the next is a week on.
        let later = now + chrono::Duration::milliseconds(100);
        assert_eq!(
            next_due(&cron, Some(due), later),
            Some(t("2026-12-06T05:00:00Z"))
        );
    }

    #[test]
    fn a_clock_that_jumps_back_never_makes_a_run_occurrence_due_again() {
        let cron: croner::Cron = "0 2 * * *".parse().unwrap();
        // Ran at 02:00; the clock jumps back to 01:30 the same night.
        assert_eq!(
            next_due(
                &cron,
                Some(t("2026-11-23T02:00:00Z")),
                t("2026-11-23T01:30:00Z")
            ),
            Some(t("2026-11-24T02:00:00Z"))
        );
        // Back by a whole day: still not the one that ran, nor the one before it.
        assert_eq!(
            next_due(
                &cron,
                Some(t("2026-11-23T02:00:00Z")),
                t("2026-11-22T01:00:00Z")
            ),
            Some(t("2026-11-24T02:00:00Z"))
        );
    }

    #[test]
    fn a_skipped_run_leaves_the_occurrence_to_another_daemon() {
        let due = t("2026-11-23T02:00:00Z");
        let mut h = History {
            last_scheduled: Some(due),
            last_outcome: Some(JobOutcome::Skipped),
            ..Default::default()
        };
        assert!(!h.claimed(due));
        h.last_outcome = None; // started, still running (or killed)
        assert!(h.claimed(due));
        assert!(!h.claimed(t("2026-11-24T02:00:00Z")));
    }

    #[test]
    fn weekday_one_is_monday() {
        // The reason for croner over cron: "0 5 * * 1" must be Monday.
        let cron: croner::Cron = "0 5 * * 1".parse().unwrap();
        let next = next_due(&cron, None, t("2026-11-22T00:00:00Z")).unwrap(); // a Sunday
        assert_eq!(next, t("2026-11-23T05:00:00Z"));
        use chrono::Datelike;
        assert_eq!(next.weekday(), chrono::Weekday::Mon);
    }
}
