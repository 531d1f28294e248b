//! Retention by recovery window (Barman's `RECOVERY WINDOW OF 35 DAYS`): every point in
//! time in the last `recovery_window` must stay recoverable. So every backup that ended
//! inside the window is kept, plus the newest one that ended before it (the base for the
//! window's first moments) and, after a fork, the newest before it on the newest
//! timeline's history (the other may lie on the abandoned branch); never fewer than
//! `min_backups`, never the last valid backup. WAL before the lowest start position of any
//! kept backup goes, on every timeline (`.history` files stay: they are tiny and recovery
//! across timelines needs them). Objects of backups that never committed
//! (no `backup.json`, e.g. a killed run) are removed after a day's grace.
//!
//! Backups are ordered by the times in `backup.json`, never by names or timelines. The
//! plan is a pure function of the listing and `now` ([`plan`]), so it is tested with an
//! injected clock; [`run`] executes it: a backup's `backup.json` goes first (from then on
//! it no longer counts as valid, and if the run dies, its other objects are orphans that
//! the next run removes). An object under Object Lock whose retain-until date has not
//! passed is reported as locked, not deleted, and does not fail the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::catalog::{self, BackupInfo, BackupKind};
use super::progress::{Progress, Unit};
use super::timeline::Lineage;
use super::wal::{classify, WalKind};
use super::Error;
use crate::store::{layout, ObjectMeta, Repo};

/// How long an uncommitted backup's objects are left alone (a backup may be running).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(86_400);

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub recovery_window: Duration,
    /// Never fewer backups than this; at least 1 whatever is configured.
    pub min_backups: usize,
}

/// Why an object goes (the `reason` label of `pgvigil_retention_deleted_objects_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ExpiredBackup,
    ExpiredWal,
    Orphan,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::ExpiredBackup => "expired_backup",
            Reason::ExpiredWal => "expired_wal",
            Reason::Orphan => "orphan",
        }
    }
}

/// One object the plan removes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Doomed {
    pub key: String,
    pub bytes: u64,
    pub reason: Reason,
    /// For humans: which backup, or which backup's start makes this WAL unnecessary.
    pub why: String,
}

/// A kept backup and why it is kept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Kept {
    pub id: String,
    pub stop_time: DateTime<Utc>,
    pub why: String,
}

/// What retention will do, in the order it does it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// Start of the recovery window: `now - recovery_window`.
    pub window_start: DateTime<Utc>,
    pub kept: Vec<Kept>,
    /// In deletion order: per expired backup its `backup.json` first, then its objects;
    /// then orphans; then WAL.
    pub delete: Vec<Doomed>,
    /// WAL before this segment position is not needed (the oldest kept backup's start).
    pub oldest_needed_wal: Option<String>,
}

/// The WAL position (log, seg) of a segment-like name (segment, `.partial`, `.backup`).
fn position(name: &str) -> Option<(u32, u32)> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    Some((hex(name.get(8..16)?)?, hex(name.get(16..24)?)?))
}

/// The backup id of a key `<cluster>/backups/<id>/<object>`.
fn backup_id_of<'a>(repo: &Repo, key: &'a str) -> Option<&'a str> {
    layout::backup_id_in(key.strip_prefix(&repo.key(&layout::backups_prefix()))?)
}

/// Decides what to keep and delete. `backups` are the committed backups, `objects` every
/// object under `backups/` and `wal/`.
pub fn plan(
    repo: &Repo,
    backups: &[BackupInfo],
    objects: &[ObjectMeta],
    now: DateTime<Utc>,
    policy: Policy,
    lineage: &Lineage,
) -> Plan {
    let window = chrono::Duration::from_std(policy.recovery_window)
        .unwrap_or_else(|_| chrono::Duration::days(36_500));
    // A window longer than the calendar reaches back to its start, never overflows.
    let window_start = now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut sorted: Vec<&BackupInfo> = backups.iter().collect();
    sorted.sort_by(|a, b| a.stop_time.cmp(&b.stop_time).then_with(|| a.id.cmp(&b.id)));

    let mut keep: BTreeMap<&str, String> = BTreeMap::new();
    for b in sorted.iter().filter(|b| b.stop_time >= window_start) {
        keep.insert(&b.id, "ended inside the recovery window".into());
    }
    if let Some(b) = sorted.iter().rev().find(|b| b.stop_time < window_start) {
        keep.entry(&b.id).or_insert_with(|| {
            "newest backup before the window: the base for its first moments".into()
        });
    }
    // After a fork, that one may lie on the abandoned branch: the base a restore onto the
    // newest timeline can use is the newest before the window on its history.
    let on_lineage = |b: &BackupInfo| {
        super::catalog::parse_lsn(&b.stop_lsn).is_some_and(|s| lineage.reaches(b.timeline, s))
    };
    if let Some(b) = sorted
        .iter()
        .rev()
        .find(|b| b.stop_time < window_start && on_lineage(b))
    {
        keep.entry(&b.id).or_insert_with(|| {
            format!(
                "newest backup before the window on timeline {}'s history: the base for its first moments",
                lineage.tli
            )
        });
    }
    for b in sorted.iter().rev().take(policy.min_backups.max(1)) {
        keep.entry(&b.id).or_insert_with(|| {
            format!(
                "one of the newest {} (retention.min_backups)",
                policy.min_backups.max(1)
            )
        });
    }
    // An incremental backup is restored over its chain: every ancestor of a kept one stays.
    let by_id: BTreeMap<&str, &BackupInfo> = sorted.iter().map(|b| (b.id.as_str(), *b)).collect();
    let kept_now: Vec<&str> = keep.keys().copied().collect();
    for id in kept_now {
        let mut at = by_id.get(id).copied();
        // Bounded by the number of backups: parent links may form a loop.
        for _ in 0..sorted.len() {
            let Some(parent) = at
                .filter(|b| b.kind == BackupKind::Incremental)
                .and_then(|b| b.parent.as_deref())
                .and_then(|p| by_id.get(p).copied())
            else {
                break;
            };
            keep.entry(&parent.id)
                .or_insert_with(|| format!("in the chain of kept incremental backup {id}"));
            at = Some(parent);
        }
    }

    let committed: BTreeSet<&str> = sorted.iter().map(|b| b.id.as_str()).collect();
    let mut by_backup: BTreeMap<&str, Vec<&ObjectMeta>> = BTreeMap::new();
    let mut markers: BTreeSet<&str> = BTreeSet::new();
    for o in objects {
        if let Some(id) = backup_id_of(repo, &o.key) {
            by_backup.entry(id).or_default().push(o);
            if layout::is_backup_marker(&o.key) {
                markers.insert(id);
            }
        }
    }

    let mut delete = Vec::new();
    for b in sorted.iter().filter(|b| !keep.contains_key(b.id.as_str())) {
        let why = format!(
            "backup {} ended {}, before the window ({}), and a newer backup covers it",
            b.id,
            b.stop_time.to_rfc3339(),
            window_start.to_rfc3339()
        );
        let mut objs = by_backup.get(b.id.as_str()).cloned().unwrap_or_default();
        // The commit marker first: from then on the backup no longer counts.
        objs.sort_by_key(|o| (!layout::is_backup_marker(&o.key), o.key.clone()));
        delete.extend(objs.into_iter().map(|o| Doomed {
            key: o.key.clone(),
            bytes: o.size,
            reason: Reason::ExpiredBackup,
            why: why.clone(),
        }));
    }

    // Orphans: a backup directory without a commit marker (by key: an unreadable
    // backup.json is not an orphan), old enough not to be a running backup.
    let grace_start = now
        .checked_sub_signed(chrono::Duration::from_std(ORPHAN_GRACE).unwrap_or_default())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    for (id, objs) in &by_backup {
        if markers.contains(id) || committed.contains(id) {
            continue;
        }
        for o in objs {
            let modified = o.last_modified.map(DateTime::<Utc>::from);
            if modified.is_some_and(|m| m < grace_start) {
                delete.push(Doomed {
                    key: o.key.clone(),
                    bytes: o.size,
                    reason: Reason::Orphan,
                    why: format!(
                        "backup {id} never committed (no backup.json) and is older than a day"
                    ),
                });
            }
        }
    }

    // WAL before the lowest start of any kept backup, on every timeline (a newer backup on
    // a younger timeline can start at a lower position than an older one: the fork went
    // back in WAL). No backup, no WAL deletion.
    let oldest_kept = sorted
        .iter()
        .filter(|b| keep.contains_key(b.id.as_str()))
        .min_by_key(|b| position(&b.start_wal).unwrap_or((0, 0)))
        .copied();
    let oldest_needed_wal = oldest_kept.map(|b| b.start_wal.clone());
    if let Some(keep_from) = oldest_kept.and_then(|b| position(&b.start_wal)) {
        let wal_prefix = repo.key(&layout::wal_prefix());
        for o in objects {
            let Some(name) = o.key.strip_prefix(&wal_prefix).and_then(layout::wal_name) else {
                continue;
            };
            let old = match classify(name) {
                Some(WalKind::Segment | WalKind::Partial | WalKind::Backup) => {
                    position(name).is_some_and(|p| p < keep_from)
                }
                Some(WalKind::History) | None => false,
            };
            if old {
                delete.push(Doomed {
                    key: o.key.clone(),
                    bytes: o.size,
                    reason: Reason::ExpiredWal,
                    why: format!(
                        "before {}, where the kept backup that starts earliest ({}) starts",
                        oldest_kept.map(|b| b.start_wal.as_str()).unwrap_or(""),
                        oldest_kept.map(|b| b.id.as_str()).unwrap_or("")
                    ),
                });
            }
        }
    }

    let kept = sorted
        .iter()
        .filter_map(|b| {
            keep.get(b.id.as_str()).map(|why| Kept {
                id: b.id.clone(),
                stop_time: b.stop_time,
                why: why.clone(),
            })
        })
        .collect();
    Plan {
        window_start,
        kept,
        delete,
        oldest_needed_wal,
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Deleted,
    /// A dry run.
    WouldDelete,
    /// Under Object Lock until this date.
    Locked {
        until: String,
    },
}

/// One object retention handled.
#[derive(Debug, Clone, Serialize)]
pub struct Handled {
    #[serde(flatten)]
    pub object: Doomed,
    pub fate: Fate,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub store: String,
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub kept: Vec<Kept>,
    pub oldest_needed_wal: Option<String>,
    pub objects: Vec<Handled>,
    pub deleted_objects: usize,
    pub deleted_bytes: u64,
    pub locked_objects: usize,
    /// Kept objects whose Object Lock was renewed (it would have ended too early).
    pub renewed_locks: usize,
}

/// The last retention run, as the primary repository records it
/// (`state/retention/last.json`, read by `pgvigil status` and the status page): when it
/// finished, what it deleted in each store, or why it failed.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Record {
    pub finished: DateTime<Utc>,
    /// Why the run failed (the stores it finished before are listed).
    pub error: Option<String>,
    pub stores: Vec<StoreRecord>,
}

/// What one run did in one store.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StoreRecord {
    /// The `store` label (`primary`, `offsite`).
    pub store: String,
    pub kept_backups: usize,
    /// Whole backups deleted (their `backup.json` went).
    pub deleted_backups: usize,
    pub deleted_wal_files: usize,
    pub deleted_orphans: usize,
    pub deleted_objects: usize,
    pub deleted_bytes: u64,
    pub locked_objects: usize,
}

impl StoreRecord {
    /// The record of `report`, a run on the store labelled `store`.
    pub fn of(store: &str, report: &Report) -> Self {
        let deleted = |reason: Reason, marker_only: bool| {
            report
                .objects
                .iter()
                .filter(|o| o.fate == Fate::Deleted && o.object.reason == reason)
                .filter(|o| !marker_only || layout::is_backup_marker(&o.object.key))
                .count()
        };
        Self {
            store: store.to_string(),
            kept_backups: report.kept.len(),
            deleted_backups: deleted(Reason::ExpiredBackup, true),
            deleted_wal_files: deleted(Reason::ExpiredWal, false),
            deleted_orphans: deleted(Reason::Orphan, false),
            deleted_objects: report.deleted_objects,
            deleted_bytes: report.deleted_bytes,
            locked_objects: report.locked_objects,
        }
    }
}

/// Records `record` as the last run in `repo` (the primary repository).
pub async fn remember(repo: &Repo, record: &Record) -> Result<(), Error> {
    super::records::write(repo, &repo.key(&layout::retention_record()), record).await
}

/// The last recorded run, if any.
pub async fn last(repo: &Repo) -> Option<Record> {
    super::records::read(repo, &repo.key(&layout::retention_record())).await
}

/// Called for every object as it is deleted or found locked: the caller logs it, audits it
/// and counts it (`events::Events::retention_outcome`); not called in a dry run.
pub type Observer<'a> = &'a (dyn Fn(&Handled) + Send + Sync);

/// Deletes `batch`, recording and observing each object's fate; fails on the first
/// error that is not a lock (after recording what was deleted).
async fn delete_batch(
    repo: &Repo,
    batch: Vec<Doomed>,
    observe: Observer<'_>,
    outcomes: &mut Vec<Handled>,
    progress: &Progress,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = batch.iter().map(|d| d.key.clone()).collect();
    let mut failed: std::collections::HashMap<String, crate::store::Error> =
        repo.store.delete_many(&keys).await.into_iter().collect();
    progress.add(keys.len() as u64);
    let mut first_error = None;
    for doomed in batch {
        let fate = match failed.remove(&doomed.key) {
            None => Fate::Deleted,
            Some(crate::store::Error::Locked { until, .. }) => Fate::Locked { until },
            Some(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        let outcome = Handled {
            object: doomed,
            fate,
        };
        observe(&outcome);
        outcomes.push(outcome);
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Plans and (unless `dry_run`) applies retention to `repo`, as of `now`. `progress` sees
/// the listing, then the deletions counted against the plan. A real run is made under the
/// retention lease, with `repo` fenced by it (`ops::Ops::retention`).
pub async fn run(
    repo: &Repo,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
    observe: Observer<'_>,
    progress: &Progress,
) -> Result<Report, Error> {
    let store = repo.store.describe();
    progress.begin(format!("listing {store}"), Unit::Objects, None);
    let backups = catalog::list(repo).await?;
    let mut objects = repo
        .store
        .list(&repo.key(&layout::backups_prefix()))
        .await?;
    let wal_prefix = repo.key(&layout::wal_prefix());
    objects.extend(repo.store.list(&wal_prefix).await?);
    let lineage = super::timeline::of_listing(
        repo,
        objects
            .iter()
            .filter_map(|o| layout::wal_name(o.key.strip_prefix(&wal_prefix)?)),
    )
    .await?;
    let plan = plan(repo, &backups, &objects, now, policy, &lineage);
    if !dry_run {
        let total = plan.delete.len() as u64;
        progress.begin(format!("deleting in {store}"), Unit::Objects, Some(total));
    }
    let mut outcomes = Vec::with_capacity(plan.delete.len());
    // A backup whose marker is locked stays valid: leave the rest of its objects too.
    let mut locked_backups: BTreeSet<String> = BTreeSet::new();
    // Deleted in batches (one request per 1,000 keys on S3), except each backup's
    // backup.json, which goes alone and first, before the batch holding its objects.
    let mut pending: Vec<Doomed> = Vec::new();
    let doomed_keys: BTreeSet<String> = plan.delete.iter().map(|d| d.key.clone()).collect();
    for doomed in plan.delete {
        if dry_run {
            outcomes.push(Handled {
                object: doomed,
                fate: Fate::WouldDelete,
            });
            continue;
        }
        if let Some(id) = backup_id_of(repo, &doomed.key) {
            if locked_backups.contains(id) {
                continue;
            }
        }
        if !layout::is_backup_marker(&doomed.key) {
            pending.push(doomed);
            continue;
        }
        delete_batch(
            repo,
            std::mem::take(&mut pending),
            observe,
            &mut outcomes,
            progress,
        )
        .await?;
        let marker = doomed.key.clone();
        delete_batch(repo, vec![doomed], observe, &mut outcomes, progress).await?;
        if outcomes
            .last()
            .is_some_and(|o| o.object.key == marker && matches!(o.fate, Fate::Locked { .. }))
        {
            if let Some(id) = backup_id_of(repo, &marker) {
                locked_backups.insert(id.to_string());
            }
        }
    }
    delete_batch(repo, pending, observe, &mut outcomes, progress).await?;

    // What stays must stay protected: renew the Object Lock of kept objects whose lock
    // would end before retention lets them go (no-op without Object Lock).
    let mut renewed_locks = 0;
    if !dry_run && repo.store.object_lock_mode().is_some() {
        for o in &objects {
            let (Some(written), false) = (o.last_modified, doomed_keys.contains(&o.key)) else {
                continue;
            };
            if repo.store.extend_lock(&o.key, written, now.into()).await? {
                renewed_locks += 1;
            }
        }
    }
    let deleted: Vec<&Handled> = outcomes
        .iter()
        .filter(|o| o.fate == Fate::Deleted)
        .collect();
    Ok(Report {
        store,
        dry_run,
        now,
        window_start: plan.window_start,
        kept: plan.kept,
        oldest_needed_wal: plan.oldest_needed_wal,
        deleted_objects: deleted.len(),
        deleted_bytes: deleted.iter().map(|o| o.object.bytes).sum(),
        locked_objects: outcomes
            .iter()
            .filter(|o| matches!(o.fate, Fate::Locked { .. }))
            .count(),
        renewed_locks,
        objects: outcomes,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::local::LocalStore;

    fn repo() -> Repo {
        Repo {
            store: Arc::new(LocalStore::new("/nonexistent".into())),
            cluster: "c".into(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A backup that ran at `stop` and starts at WAL position `seg`.
    fn backup(id: &str, stop: &str, seg: u32, tli: u32) -> BackupInfo {
        let stop_lsn = format!("0/{:X}", (u64::from(seg) + 1) << 24);
        BackupInfo {
            timeline: tli,
            start_wal: format!("{tli:08X}00000000{seg:08X}"),
            ..catalog::example(id, t(stop), &stop_lsn)
        }
    }

    fn obj(key: &str, modified: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 10,
            last_modified: Some(t(modified).into()),
        }
    }

    fn objects_of(backups: &[BackupInfo]) -> Vec<ObjectMeta> {
        let mut out = Vec::new();
        for b in backups {
            let at = b.stop_time.to_rfc3339();
            out.push(obj(&format!("c/backups/{}/base.tar.zst", b.id), &at));
            out.push(obj(&format!("c/backups/{}/backup.json", b.id), &at));
        }
        out
    }

    fn wal(names: &[&str]) -> Vec<ObjectMeta> {
        names
            .iter()
            .map(|n| obj(&format!("c/wal/{n}.zst"), "2026-01-01T00:00:00Z"))
            .collect()
    }

    const POLICY: Policy = Policy {
        recovery_window: Duration::from_secs(35 * 86_400),
        min_backups: 1,
    };

    fn deleted(p: &Plan) -> Vec<&str> {
        p.delete.iter().map(|d| d.key.as_str()).collect()
    }

    /// Timeline 2 left timeline 1 at segment 0x15, before b2 (on timeline 1) ended: b2 lies
    /// on the abandoned branch. b3 on timeline 2 starts at 0x18, below b2's 0x20. Before,
    /// b1 (the only base on timeline 2's history) was deleted, and so was the WAL from 0x18
    /// that b3 needs, because b2 was the oldest kept backup by time.
    #[test]
    fn after_a_fork_the_base_on_the_new_timeline_and_its_wal_are_kept() {
        let b = vec![
            backup("b1", "2026-01-01T02:00:00Z", 0x10, 1),
            backup("b2", "2026-01-20T02:00:00Z", 0x20, 1),
            backup("b3", "2026-03-01T02:00:00Z", 0x18, 2),
        ];
        let mut objects = objects_of(&b);
        objects.extend(wal(&[
            "000000010000000000000010",
            "000000010000000000000014",
            "000000020000000000000015",
            "000000020000000000000018",
            "000000010000000000000020",
            "00000002.history",
        ]));
        let forked = Lineage {
            tli: 2,
            history: vec![(1, 0x15 << 24)],
        };
        let p = plan(
            &repo(),
            &b,
            &objects,
            t("2026-03-08T00:00:00Z"),
            POLICY,
            &forked,
        );
        let gone = deleted(&p);
        assert!(
            !gone.iter().any(|k| k.contains("/b1/")),
            "b1, the base on timeline 2's history, was deleted: {gone:?}"
        );
        for seg in [
            "000000010000000000000010",
            "000000020000000000000015",
            "000000020000000000000018",
        ] {
            assert!(
                !gone.iter().any(|k| k.contains(seg)),
                "{seg} deleted: {gone:?}"
            );
        }
    }

    #[test]
    fn keeps_the_window_and_the_newest_backup_before_it() {
        let b = vec![
            backup("b1", "2026-01-01T02:00:00Z", 0x10, 1),
            backup("b2", "2026-01-20T02:00:00Z", 0x20, 1),
            backup("b3", "2026-02-10T02:00:00Z", 0x30, 1),
            backup("b4", "2026-03-01T02:00:00Z", 0x40, 1),
        ];
        let mut objects = objects_of(&b);
        objects.extend(wal(&[
            "000000010000000000000010",
            "00000001000000000000001F",
            "000000010000000000000020",
            "000000010000000000000020.00000028.backup",
            "00000002.history",
            "000000010000000000000041",
        ]));
        // Window start 2026-02-01: b3 and b4 inside, b2 the base for the window's start.
        let p = plan(
            &repo(),
            &b,
            &objects,
            t("2026-03-08T00:00:00Z"),
            POLICY,
            &Lineage::single(1),
        );
        assert_eq!(p.window_start, t("2026-02-01T00:00:00Z"));
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["b2", "b3", "b4"]);
        assert_eq!(
            deleted(&p),
            [
                "c/backups/b1/backup.json",
                "c/backups/b1/base.tar.zst",
                "c/wal/000000010000000000000010.zst",
                "c/wal/00000001000000000000001F.zst",
            ]
        );
        assert_eq!(
            p.oldest_needed_wal.as_deref(),
            Some("000000010000000000000020")
        );
    }

    #[test]
    fn forty_days_later_only_the_newest_of_three_stays() {
        let b = vec![
            backup("b1", "2026-11-30T10:00:00Z", 0x02, 1),
            backup("b2", "2026-11-30T10:05:00Z", 0x04, 1),
            backup("b3", "2026-11-30T10:10:00Z", 0x06, 1),
        ];
        let mut objects = objects_of(&b);
        objects.extend(wal(&[
            "000000010000000000000002",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007",
        ]));
        let now = t("2026-11-30T10:15:00Z") + chrono::Duration::days(40);
        let p = plan(&repo(), &b, &objects, now, POLICY, &Lineage::single(1));
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["b3"]);
        assert_eq!(
            deleted(&p),
            [
                "c/backups/b1/backup.json",
                "c/backups/b1/base.tar.zst",
                "c/backups/b2/backup.json",
                "c/backups/b2/base.tar.zst",
                "c/wal/000000010000000000000002.zst",
                "c/wal/000000010000000000000005.zst",
            ]
        );
        // The same listing the day after the backups: everything is inside the window.
        let p = plan(
            &repo(),
            &b,
            &objects,
            t("2026-12-01T00:00:00Z"),
            POLICY,
            &Lineage::single(1),
        );
        assert!(p.delete.is_empty());
    }

    #[test]
    fn ordered_by_backup_json_times_not_names_or_timelines() {
        // Names sort the other way round, and the newer backup is on an older timeline's
        // name prefix: only the stop times count.
        let b = vec![
            backup("zzz", "2026-01-01T00:00:00Z", 0x10, 2),
            backup("aaa", "2026-03-01T00:00:00Z", 0x20, 1),
        ];
        let p = plan(
            &repo(),
            &b,
            &objects_of(&b),
            t("2026-05-01T00:00:00Z"),
            POLICY,
            &Lineage::single(1),
        );
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["aaa"]);
        assert!(deleted(&p).contains(&"c/backups/zzz/backup.json"));
    }

    #[test]
    fn never_fewer_than_min_backups_and_never_the_last() {
        let b = vec![
            backup("b1", "2025-01-01T00:00:00Z", 0x10, 1),
            backup("b2", "2025-01-02T00:00:00Z", 0x20, 1),
            backup("b3", "2025-01-03T00:00:00Z", 0x30, 1),
        ];
        let now = t("2026-06-01T00:00:00Z");
        let p = plan(
            &repo(),
            &b,
            &objects_of(&b),
            now,
            Policy {
                min_backups: 2,
                ..POLICY
            },
            &Lineage::single(1),
        );
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["b2", "b3"]);
        let p = plan(
            &repo(),
            &b,
            &objects_of(&b),
            now,
            Policy {
                min_backups: 0,
                ..POLICY
            },
            &Lineage::single(1),
        );
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["b3"]);
        // No backups at all: no WAL is deleted either.
        let p = plan(
            &repo(),
            &[],
            &wal(&["000000010000000000000001"]),
            now,
            POLICY,
            &Lineage::single(1),
        );
        assert!(p.delete.is_empty());
    }

    #[test]
    fn a_window_longer_than_the_calendar_keeps_everything() {
        // `recovery_window = "300000years"` parses; `now - window` overflowed chrono.
        let b = vec![
            backup("b1", "2026-01-01T00:00:00Z", 0x10, 1),
            backup("b2", "2026-02-01T00:00:00Z", 0x20, 1),
        ];
        let mut objects = objects_of(&b);
        objects.extend(wal(&["000000010000000000000010"]));
        let p = plan(
            &repo(),
            &b,
            &objects,
            t("2026-03-01T00:00:00Z"),
            Policy {
                recovery_window: Duration::from_secs(300_000 * 365 * 86_400),
                min_backups: 1,
            },
            &Lineage::single(1),
        );
        assert_eq!(p.window_start, DateTime::<Utc>::MIN_UTC);
        let kept: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["b1", "b2"]);
        assert!(p.delete.is_empty(), "{:?}", deleted(&p));
    }

    mod properties {
        //! Retention over random histories: backups taken at random intervals, each
        //! starting at a later WAL position, WAL archived contiguously (with `.backup`,
        //! `.partial` and `.history` files among it), a random window and `min_backups`.
        use proptest::prelude::*;

        use super::*;

        /// A history: per backup (hours since the previous one, segments since the
        /// previous one's start), then the hours from the last backup to `now`.
        fn history() -> impl Strategy<Value = (Vec<(u32, u32, bool)>, u32, u32, usize)> {
            (
                prop::collection::vec((1u32..24 * 20, 0u32..40, any::<bool>()), 1..10),
                0u32..24 * 60,
                0u32..60,
                0usize..5,
            )
        }

        struct Case {
            backups: Vec<BackupInfo>,
            objects: Vec<ObjectMeta>,
            now: DateTime<Utc>,
            policy: Policy,
        }

        fn case(steps: &[(u32, u32, bool)], tail_hours: u32, window_days: u32, min: usize) -> Case {
            let mut at = t("2026-01-01T00:00:00Z");
            let mut seg = 0x10u32;
            let mut backups: Vec<BackupInfo> = Vec::new();
            for (i, (hours, segs, incremental)) in steps.iter().enumerate() {
                at += chrono::Duration::hours(i64::from(*hours));
                seg += segs;
                let mut b = backup(&format!("b{i:02}"), &at.to_rfc3339(), seg, 1);
                // An incremental on the previous backup (the first is always full).
                if let (true, Some(prev)) = (*incremental, backups.last()) {
                    b.kind = BackupKind::Incremental;
                    b.parent = Some(prev.id.clone());
                }
                backups.push(b);
            }
            let mut objects = objects_of(&backups);
            // Every segment from before the first backup to past the last one.
            let names: Vec<String> = (0x08..=seg + 5)
                .flat_map(|s| {
                    let name = format!("0000000100000000{s:08X}");
                    let mut v = vec![name.clone()];
                    if s % 7 == 0 {
                        v.push(format!("{name}.00000028.backup"));
                    }
                    if s % 11 == 0 {
                        v.push(format!("{name}.partial"));
                    }
                    v
                })
                .chain(["00000002.history".to_string()])
                .collect();
            objects.extend(wal(&names.iter().map(String::as_str).collect::<Vec<_>>()));
            Case {
                now: at + chrono::Duration::hours(i64::from(tail_hours)),
                backups,
                objects,
                policy: Policy {
                    recovery_window: Duration::from_secs(u64::from(window_days) * 86_400),
                    min_backups: min,
                },
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

            #[test]
            fn nothing_a_kept_backup_needs_is_deleted(
                (steps, tail, window, min) in history()
            ) {
                let c = case(&steps, tail, window, min);
                let p = plan(&repo(), &c.backups, &c.objects, c.now, c.policy, &Lineage::single(1));
                let deleted: BTreeSet<&str> = p.delete.iter().map(|d| d.key.as_str()).collect();
                let kept: BTreeSet<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();

                // The newest backup, and at least min_backups (all there are, if fewer).
                let newest = c.backups.iter().max_by_key(|b| b.stop_time).map(|b| b.id.as_str());
                prop_assert!(newest.is_some_and(|n| kept.contains(n)));
                prop_assert!(kept.len() >= min.max(1).min(c.backups.len()));

                // The window: every backup that ended in it, and the newest before it
                // (the base for the window's first moments).
                for b in &c.backups {
                    if b.stop_time >= p.window_start {
                        prop_assert!(kept.contains(b.id.as_str()), "{} ended in the window", b.id);
                    }
                }
                if let Some(base) = c.backups.iter().filter(|b| b.stop_time < p.window_start).max_by_key(|b| b.stop_time) {
                    prop_assert!(kept.contains(base.id.as_str()), "{} is the window's base", base.id);
                }

                // A kept incremental's whole chain is kept.
                for b in c.backups.iter().filter(|b| kept.contains(b.id.as_str())) {
                    let chain = catalog::chain(&c.backups, b);
                    prop_assert!(chain.is_ok());
                    for link in chain.unwrap_or_default() {
                        prop_assert!(kept.contains(link.id.as_str()), "{} is in the chain of kept {}", link.id, b.id);
                    }
                }

                // A kept backup's objects, and every WAL file from its start on, stay.
                for b in c.backups.iter().filter(|b| kept.contains(b.id.as_str())) {
                    let from = position(&b.start_wal);
                    for o in &c.objects {
                        let mine = backup_id_of(&repo(), &o.key) == Some(b.id.as_str());
                        let name = o.key.trim_start_matches("c/wal/").trim_end_matches(".zst");
                        let needed = o.key.starts_with("c/wal/")
                            && (name.ends_with(".history") || position(name) >= from);
                        prop_assert!(
                            !((mine || needed) && deleted.contains(o.key.as_str())),
                            "{} is needed by kept backup {} and deleted", o.key, b.id
                        );
                    }
                }

                // What goes is an expired backup's object or WAL before the oldest kept start.
                for d in &p.delete {
                    match d.reason {
                        Reason::ExpiredBackup => {
                            let id = backup_id_of(&repo(), &d.key);
                            prop_assert!(id.is_some_and(|id| !kept.contains(id)), "{}", d.key);
                        }
                        Reason::ExpiredWal => prop_assert!(d.key.starts_with("c/wal/")),
                        Reason::Orphan => prop_assert!(false, "no orphans here: {}", d.key),
                    }
                }
            }

            #[test]
            fn plan_never_panics_on_any_listing(
                keys in prop::collection::vec("c/(backups|wal)/[0-9A-Fa-z./]{0,40}", 0..30),
                starts in prop::collection::vec("[0-9A-F]{0,26}", 1..4),
                // Windows up to 2^54 s cover those that overflowed chrono (> 262,000 years).
                window in prop_oneof![0u64..u64::MAX, 0u64..(1 << 54)],
                min in 0usize..usize::MAX,
                secs in -(1i64 << 40)..(1i64 << 40),
            ) {
                let now = DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
                let backups: Vec<BackupInfo> = starts
                    .iter()
                    .enumerate()
                    .map(|(i, s)| BackupInfo { start_wal: s.clone(), ..backup(&format!("b{i}"), "2026-01-01T00:00:00Z", 1, 1) })
                    .collect();
                let objects: Vec<ObjectMeta> = keys.iter().map(|k| obj(k, "2026-01-01T00:00:00Z")).collect();
                let p = plan(&repo(), &backups, &objects, now, Policy { recovery_window: Duration::from_secs(window), min_backups: min }, &Lineage::single(1));
                prop_assert!(!p.kept.is_empty());
            }
        }
    }

    #[test]
    fn orphans_go_after_a_day_and_markers_are_judged_by_key() {
        let b = vec![backup("b1", "2026-01-10T00:00:00Z", 0x10, 1)];
        let mut objects = objects_of(&b);
        objects.push(obj("c/backups/killed/base.tar.zst", "2026-01-05T00:00:00Z"));
        objects.push(obj(
            "c/backups/running/base.tar.zst",
            "2026-01-10T11:00:00Z",
        ));
        // An unreadable backup.json (not in `backups`) is not an orphan.
        objects.push(obj("c/backups/future/backup.json", "2026-01-01T00:00:00Z"));
        objects.push(obj("c/backups/future/base.tar.zst", "2026-01-01T00:00:00Z"));
        let p = plan(
            &repo(),
            &b,
            &objects,
            t("2026-01-10T12:00:00Z"),
            POLICY,
            &Lineage::single(1),
        );
        assert_eq!(deleted(&p), ["c/backups/killed/base.tar.zst"]);
        assert_eq!(p.delete[0].reason, Reason::Orphan);
    }
}
