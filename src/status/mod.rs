//! The operator's view: can I restore, to when, and how long will it take? One [`Status`]
//! answers it for `pgvigil status` (text or `--json`) and for the daemon's status page
//! (`/`, `/status`; `/status.json`). It is built in one place, [`gather::gather`], a pure
//! function of [`Facts`] (what was read from the repository, PostgreSQL and the daemon)
//! and the time, which also judges it: [`Health::Healthy`], [`Health::Degraded`] (something
//! needs attention: the window is shorter than its goal, the RPO is exceeded, no recent
//! drill) or [`Health::Broken`] (a restore would fail or lose data: no backup, a WAL gap, a
//! failed drill, a repository outside its residency). Each output has its renderer:
//! `text.rs` for the terminal, `page.rs` (with `timeline.rs`, the picture of the recovery
//! window) for the browser.
//!
//! Where the facts come from differs, what is done with them does not: the CLI reads them
//! now (`read.rs`), the daemon keeps them in a [`cache::Cache`] that its loops refresh (the
//! PITR check, the catalogue refresh, the custody check, the jobs), so a page view reads
//! memory only.

pub mod cache;
pub mod gather;
pub mod page;
pub mod read;
pub mod text;
mod timeline;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backup::catalog::BackupInfo;
use crate::backup::drill::{Evidence, Timings};
use crate::backup::offsite::CopyReport;
use crate::backup::pitr::{self, Gap};
use crate::backup::retention;
use crate::schedule::History;
use crate::store::Verdict;

/// How far back the status looks: the 35-day goal and a few days before it, so the backup
/// a window starts from is in the picture.
pub const HORIZON_DAYS: i64 = 40;

/// The verdict, and `pgvigil status`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every point in the goal is restorable, recently proven, and archived within the RPO.
    Healthy,
    /// Restorable, but something needs attention. Exit code 1.
    Degraded,
    /// A restore would fail or lose data. Exit code 2.
    Broken,
}

impl Health {
    /// The exit code of `pgvigil status`: 0, 1 or 2.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Broken => 2,
        }
    }

    /// The word shown to people.
    pub fn word(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Degraded => "DEGRADED",
            Health::Broken => "BROKEN",
        }
    }
}

/// One reason the status is not healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub health: Health,
    /// What it is about: `window`, `wal`, `rpo`, `backups`, `drills`, `custody`, `daemon`.
    pub area: String,
    pub message: String,
}

/// Everything `pgvigil status` shows, judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    pub health: Health,
    /// Why it is not healthy, worst first.
    pub findings: Vec<Finding>,
    pub repository: String,
    pub cluster: String,
    pub window: Window,
    pub wal: Wal,
    pub backups: Backups,
    pub drills: Drills,
    pub custody: Custody,
    /// The daemon's own health: None when it was not asked.
    pub daemon: Option<Daemon>,
}

/// The recovery window now, against its goal (`retention.recovery_window`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// The earliest restorable point: the oldest backup's end.
    pub earliest: Option<DateTime<Utc>>,
    /// The latest restorable point: just before the newest archived commit before any gap.
    pub latest: Option<DateTime<Utc>>,
    pub goal_seconds: u64,
    /// `latest - earliest`.
    pub covered_seconds: Option<f64>,
    /// Where the newest chain starts after `pgvigil upgrade` (restores and drills use it).
    pub chain_start: Option<DateTime<Utc>>,
}

/// The WAL archive: RPO now and continuity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wal {
    /// When the PITR check these facts come from ran (None: not yet).
    pub checked_at: Option<DateTime<Utc>>,
    /// Why the check could not run, if it could not.
    pub check_error: Option<String>,
    /// Seconds since the last WAL file was archived: the RPO now.
    pub archive_age_seconds: Option<f64>,
    pub rpo_seconds: u64,
    pub last_archived_wal: Option<String>,
    pub continuity_ok: bool,
    pub segments_checked: u64,
    pub newest_segment: Option<String>,
    pub timelines: Vec<u32>,
    /// Runs of missing WAL, each named.
    pub gaps: Vec<Gap>,
    /// Other problems the check found.
    pub problems: Vec<String>,
    /// Where the archived WAL starts being needed: the oldest backup's start.
    pub coverage_from: Option<DateTime<Utc>>,
}

/// One backup, as the status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupLine {
    pub id: String,
    /// `full` or `incremental`.
    pub kind: Option<String>,
    /// The backup an incremental one builds on.
    pub parent: Option<String>,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub timeline: u32,
    pub age_seconds: f64,
}

impl BackupLine {
    /// The line of `b` at `now`. The one place a `backup.json` field becomes a status field.
    pub fn of(b: &BackupInfo, now: DateTime<Utc>) -> Self {
        Self {
            id: b.id.clone(),
            kind: Some(b.kind.as_str().to_string()),
            parent: b.parent.clone(),
            start_time: b.start_time,
            stop_time: b.stop_time,
            duration_seconds: b.duration_seconds,
            raw_bytes: b.raw_bytes,
            stored_bytes: b.stored_bytes,
            timeline: b.timeline,
            age_seconds: seconds_between(b.stop_time, now),
        }
    }
}

/// The backups in the repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backups {
    /// Why the catalogue could not be read, if it could not.
    pub error: Option<String>,
    pub count: usize,
    pub stored_bytes: u64,
    /// Every backup that ended within the horizon, and the one the window starts from;
    /// newest first.
    pub recent: Vec<BackupLine>,
    /// The next scheduled backup.
    pub next: Option<DateTime<Utc>>,
    /// When the first backup comes, while there is none (for people).
    pub first_due: Option<String>,
}

/// One drill, as the status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillLine {
    pub id: String,
    pub success: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub target_time: Option<DateTime<Utc>>,
    pub backup_id: Option<String>,
    /// The RTO, split into download, replay and checks.
    pub rto: Timings,
    pub target_skew_seconds: Option<f64>,
    pub error: Option<String>,
    /// The checks that failed.
    pub failed_checks: Vec<String>,
}

impl DrillLine {
    /// The line of a drill's evidence.
    pub fn of(e: &Evidence) -> Self {
        Self {
            id: e.id.clone(),
            success: e.success,
            started_at: e.started_at,
            finished_at: e.finished_at,
            target_time: e.target_time,
            backup_id: e.backup_id.clone(),
            rto: e.timings.clone(),
            target_skew_seconds: e.target_skew_seconds,
            error: e.error.clone(),
            failed_checks: e
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.name.clone())
                .collect(),
        }
    }

    /// Where the drill stands in time: the point it restored to, or when it started.
    pub fn at(&self) -> DateTime<Utc> {
        self.target_time.unwrap_or(self.started_at)
    }
}

/// Restore drills.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drills {
    pub last: Option<DrillLine>,
    /// The drills within the horizon, newest first.
    pub recent: Vec<DrillLine>,
    pub next: Option<DateTime<Utc>>,
}

/// A repository's custody: where it is and how it is locked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreLine {
    /// `primary` or `offsite`.
    pub label: String,
    pub url: String,
    /// The last residency check: None when it has not run yet.
    pub residency: Option<Residency>,
    /// `governance` or `compliance` when backup and WAL objects are written locked.
    pub object_lock: Option<String>,
    /// When the lock of the oldest backup ends (the first object retention could delete).
    pub oldest_lock_until: Option<DateTime<Utc>>,
}

/// A residency check's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Residency {
    pub ok: bool,
    pub region: Option<String>,
    pub message: String,
    pub checked_at: DateTime<Utc>,
}

/// The last retention run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionLine {
    pub finished: DateTime<Utc>,
    pub error: Option<String>,
    pub stores: Vec<retention::StoreRecord>,
}

/// The last off-site copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsiteLine {
    pub finished: DateTime<Utc>,
    pub backup_id: String,
    pub destination: String,
    pub objects_copied: usize,
    pub bytes_copied: u64,
    pub verified: bool,
}

/// Custody of the backups: residency, Object Lock, retention and the off-site copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Custody {
    pub stores: Vec<StoreLine>,
    pub retention: Option<RetentionLine>,
    pub retention_next: Option<DateTime<Utc>>,
    /// Whether an off-site repository is configured.
    pub offsite_configured: bool,
    pub offsite: Option<OffsiteLine>,
    pub offsite_next: Option<DateTime<Utc>>,
    /// The daemon's last off-site job, when it failed after the last copy.
    pub offsite_failure: Option<String>,
}

/// The daemon's own health, as it answers on its HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Daemon {
    pub url: String,
    pub reachable: bool,
    /// Why it could not be asked, when it could not.
    pub error: Option<String>,
    pub version: Option<String>,
    /// The readiness conditions not met (empty when ready).
    pub unmet: Vec<String>,
    /// Collectors whose last run failed.
    pub failing_collectors: Vec<String>,
}

/// What the status is made of: read now by the CLI, kept by the daemon.
#[derive(Debug, Clone)]
pub struct Facts {
    pub repository: String,
    pub cluster: String,
    pub recovery_window: std::time::Duration,
    pub rpo: std::time::Duration,
    /// The last PITR check and when it ran (None: not yet).
    pub check: Option<(Result<pitr::Report, String>, DateTime<Utc>)>,
    /// When the daemon last saw a WAL file archived (each `wal-push` reports to it), which
    /// keeps the RPO current between two checks.
    pub last_push: Option<DateTime<Utc>>,
    /// The catalogue, oldest first (None: not read yet).
    pub backups: Option<Result<Vec<BackupInfo>, String>>,
    /// When the first backup comes, for people ([`crate::backup::ops::first_backup_due`]).
    pub first_backup_due: String,
    /// Drills within the horizon.
    pub drills: Vec<Evidence>,
    /// Each scheduled job: its name, schedule and history.
    pub jobs: Vec<Job>,
    pub retention: Option<retention::Record>,
    pub offsite_configured: bool,
    pub offsite: Option<CopyReport>,
    pub stores: Vec<StoreFacts>,
}

/// A scheduled job's schedule and history.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub cron: Option<croner::Cron>,
    pub history: History,
}

/// What is known about one repository's custody.
#[derive(Debug, Clone)]
pub struct StoreFacts {
    pub label: &'static str,
    pub url: String,
    pub verdict: Option<(Verdict, DateTime<Utc>)>,
    pub object_lock: Option<crate::config::LockMode>,
    pub oldest_lock_until: Option<DateTime<Utc>>,
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}
