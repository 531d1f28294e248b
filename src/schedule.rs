//! Cron jobs (croner: 5-field crontab, UTC). Jobs never overlap (one job runs at a time
//! across the daemon), and each job's history lives in the repository
//! (`state/jobs/<job>.json`), written before the job starts, so a restarted daemon neither
//! repeats a run it already started nor skips one it missed: a missed occurrence is caught
//! up once, right away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::{layout, Metadata, Repo};

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
    if let Some(last) = last_scheduled {
        if let Ok(prev) = cron.find_previous_occurrence(&now, true) {
            if prev > last {
                return Some(prev);
            }
        }
    }
    cron.find_next_occurrence(&now, false).ok()
}

/// A job body: returns its outcome and a message.
pub type JobFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = (JobOutcome, String)> + Send>> + Send + Sync>;

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

/// Runs `body` on `cron` until `token` is cancelled. `exclusive` is shared by every job so
/// that they never overlap; `next_run` receives each next due time (for the metric).
pub async fn run_job(
    job: &'static str,
    cron: croner::Cron,
    repo: Repo,
    exclusive: Arc<Mutex<()>>,
    body: JobFn,
    next_run: impl Fn(DateTime<Utc>) + Send,
    token: CancellationToken,
) {
    let mut history = load_history(&repo, job).await;
    loop {
        let now = Utc::now();
        let Some(due) = next_due(&cron, history.last_scheduled, now) else {
            tracing::error!(
                event = "job.schedule.empty",
                job,
                "the schedule has no next occurrence; job stopped"
            );
            return;
        };
        next_run(due);
        let wait = (due - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let _turn = tokio::select! {
            _ = token.cancelled() => return,
            g = exclusive.lock() => g,
        };
        history.last_scheduled = Some(due);
        history.last_started = Some(Utc::now());
        save_history(&repo, job, &history).await;
        tracing::info!(event = "job.started", job, scheduled = %due, "scheduled job started");
        let (outcome, message) = body().await;
        history.last_finished = Some(Utc::now());
        history.last_outcome = Some(outcome);
        history.last_message = Some(message.clone());
        save_history(&repo, job, &history).await;
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
    fn weekday_one_is_monday() {
        // The reason for croner over cron: "0 5 * * 1" must be Monday.
        let cron: croner::Cron = "0 5 * * 1".parse().unwrap();
        let next = next_due(&cron, None, t("2026-11-22T00:00:00Z")).unwrap(); // a Sunday
        assert_eq!(next, t("2026-11-23T05:00:00Z"));
        use chrono::Datelike;
        assert_eq!(next.weekday(), chrono::Weekday::Mon);
    }
}
