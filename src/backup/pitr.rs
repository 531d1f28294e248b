//! Continuous PITR verification, from listings only: every WAL segment from the oldest
//! backup's start to the newest archived segment is present, following `.history` files
//! across timelines (a segment number belongs to the timeline that was current for it, so
//! a failover creates no false gap: the old timeline's last, partial segment is not
//! expected); every backup's own WAL range is present; and the last WAL file that
//! `pg_stat_archiver` reports archived is in the repository. Segments are checked from the
//! listing (their SHA-256 was recorded at push time); the small `.history` files are read,
//! and so is the newest segment before any gap (or up to [`END_SCAN_SEGMENTS`] before it,
//! once per segment per process): the recovery window ends at the newest commit or abort
//! inside it ([`super::wal_scan`]), the last point replay provably reaches, not at the time
//! the segment arrived.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::{self, parse_lsn, BackupInfo};
use super::compress::decompress;
use super::wal::{classify, WalKind};
use super::wal_scan;
use super::Error;
use crate::store::{layout, Repo};

/// Default WAL segment size; the real one is read from a pushed segment's metadata.
const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Continuity holds, there is a backup, and the end-to-end check passed.
    pub ok: bool,
    /// Every expected WAL file that is not in the repository.
    pub missing: Vec<String>,
    /// The missing segments as runs, each named by its first and last segment and placed in
    /// time by the arrival of the segments around it.
    pub gaps: Vec<Gap>,
    pub backups: usize,
    pub timelines: Vec<u32>,
    pub segments_checked: u64,
    pub newest_segment: Option<String>,
    /// Earliest recoverable time: the oldest backup's end.
    pub window_start: Option<DateTime<Utc>>,
    /// Latest recoverable time: the newest commit or abort in the archived WAL before any
    /// gap (None when there is none after the oldest backup ended).
    pub window_end: Option<DateTime<Utc>>,
    /// Seconds since the last WAL file was archived (the RPO now).
    pub archive_age_seconds: Option<f64>,
    /// `pg_stat_archiver.last_archived_wal`, and whether the repository has it.
    pub last_archived_wal: Option<String>,
    pub last_archived_in_repository: Option<bool>,
    /// Human-readable problems besides missing segments.
    pub problems: Vec<String>,
    /// One chain per database system, oldest first: more than one after `pgvigil upgrade`
    /// (a pg_upgrade makes a new system). WAL between two chains is not expected, so an
    /// upgrade is not a gap; points between the old chain's last WAL and the new chain's
    /// first backup cannot be restored.
    pub chains: Vec<Chain>,
    /// Where the newest chain's window starts (its first backup's end); the same as
    /// `window_start` without an upgrade. Drills pick their targets after it.
    pub chain_start: Option<DateTime<Utc>>,
    /// The newest timeline and its ancestry, which restores and drills follow.
    #[serde(skip)]
    pub lineage: super::timeline::Lineage,
    /// Backups that cannot be restored and why: an object listed in `backup.json` is
    /// missing or has another size, or a link of an incremental backup's chain is missing
    /// or broken. Restores and drills never choose them.
    pub broken: std::collections::BTreeMap<String, String>,
}

/// A run of consecutive missing WAL files: every point from `after` to `before` is lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub first: String,
    pub last: String,
    /// How many files are missing in the run.
    pub files: u64,
    /// When the newest segment before the gap arrived in the repository.
    pub after: Option<DateTime<Utc>>,
    /// When the oldest segment after the gap arrived.
    pub before: Option<DateTime<Utc>>,
}

/// `missing` (sorted) as runs of consecutive segments on one timeline, placed between the
/// arrival times of the stored segments around them. A missing file that is no segment
/// (a `.history` file, a `.partial`) is a run of its own with no place in time.
fn gaps(
    missing: &[String],
    segments: &BTreeMap<Seg, Option<SystemTime>>,
    segs_per_id: u64,
) -> Vec<Gap> {
    let mut runs: Vec<(Option<Seg>, Gap)> = Vec::new();
    for name in missing {
        let seg = parse_segment(name, segs_per_id);
        if let (Some((tli, segno)), Some((Some((ltli, lsegno)), last))) = (seg, runs.last_mut()) {
            if tli == *ltli && segno == *lsegno + 1 {
                *lsegno = segno;
                last.last = name.clone();
                last.files += 1;
                continue;
            }
        }
        let gap = Gap {
            first: name.clone(),
            last: name.clone(),
            files: 1,
            after: None,
            before: None,
        };
        runs.push((seg, gap));
    }
    let arrived = |pick: &dyn Fn(u64) -> bool, newest: bool| {
        let times = segments
            .iter()
            .filter(|((_, segno), _)| pick(*segno))
            .filter_map(|(_, t)| t.map(to_utc));
        if newest {
            times.max()
        } else {
            times.min()
        }
    };
    runs.into_iter()
        .map(|(end, mut gap)| {
            let start = parse_segment(&gap.first, segs_per_id);
            if let (Some((_, first)), Some((_, last))) = (start, end) {
                gap.after = arrived(&|s| s < first, true);
                gap.before = arrived(&|s| s > last, false);
            }
            gap
        })
        .collect()
}

/// The backups of one database system and the WAL range continuity is checked over.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub system_identifier: String,
    /// PostgreSQL major of its newest backup.
    pub major: i32,
    pub backups: usize,
    pub first_backup: String,
    pub last_backup: String,
    /// Continuity is checked from this segment (the first backup's start) ...
    pub wal_from: String,
    /// ... to this one: the last backup's end, or for the newest chain the newest segment.
    pub wal_to: Option<String>,
}

/// The segment holding the last WAL byte before `stop`: a backup whose stop LSN is exactly a
/// segment boundary ends in the segment before it, and does not need the next one.
fn last_segno(stop: u64, seg_size: u64) -> u64 {
    stop.saturating_sub(1) / seg_size.max(1)
}

impl Chain {
    /// The summary of `chain` (one system's backups, oldest first), checked up to `wal_to`.
    fn of(chain: &[&BackupInfo], wal_to: Option<String>) -> Self {
        let (first, last) = (chain[0], chain[chain.len() - 1]);
        Chain {
            system_identifier: first.system_identifier.clone(),
            major: last.pg_version_num / 10000,
            backups: chain.len(),
            first_backup: first.id.clone(),
            last_backup: last.id.clone(),
            wal_from: first.start_wal.clone(),
            wal_to,
        }
    }
}

/// The backups grouped by database system, in the order each system first appears
/// (`backups` sorted by stop time, as `catalog::list` returns them).
fn chains_of(backups: &[BackupInfo]) -> Vec<Vec<&BackupInfo>> {
    let mut chains: Vec<Vec<&BackupInfo>> = Vec::new();
    for b in backups {
        match chains
            .iter_mut()
            .find(|c| c[0].system_identifier == b.system_identifier)
        {
            Some(c) => c.push(b),
            None => chains.push(vec![b]),
        }
    }
    chains
}

/// A segment: timeline and segment number.
type Seg = (u32, u64);

/// The timeline and segment number of a segment name (`000000010000000A000000FF`); None
/// for anything else, such as a short or non-hex `start_wal` in a hostile `backup.json`.
pub fn parse_segment(name: &str, segs_per_id: u64) -> Option<Seg> {
    if classify(name) != Some(WalKind::Segment) {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(name.get(r)?, 16).ok();
    let tli = u32::try_from(hex(0..8)?).ok()?;
    let (hi, lo) = (hex(8..16)?, hex(16..24)?);
    if lo >= segs_per_id {
        return None; // PostgreSQL never names such a segment for this segment size
    }
    Some((tli, hi.checked_mul(segs_per_id)?.checked_add(lo)?))
}

/// A WAL segment size PostgreSQL can have (`wal_segment_size`: a power of two from 1 MiB to
/// 1 GiB); anything else, e.g. a `raw-size` of 0 in an object's metadata, is not trusted.
pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)
}

/// The most segments one range check enumerates (16 TiB of WAL at 16 MiB): a listing or a
/// `backup.json` naming a far-away segment must not make `verify` loop for hours.
const MAX_CHECKED_SEGMENTS: u64 = 1 << 20;

/// The file name of a segment.
pub fn segment_name((tli, segno): Seg, segs_per_id: u64) -> String {
    let segs_per_id = segs_per_id.max(1);
    format!(
        "{tli:08X}{:08X}{:08X}",
        segno / segs_per_id,
        segno % segs_per_id
    )
}

pub use super::timeline::parse_history;

/// Which timeline owns each segment number on the path to `latest`: a sorted list of
/// `(first_segno, tli)`.
fn timeline_path(latest: u32, history: &[(u32, u64)], seg_size: u64) -> Vec<(u64, u32)> {
    let mut path = Vec::new();
    let mut start = 0u64;
    for (parent, lsn) in history {
        path.push((start, *parent));
        start = lsn / seg_size.max(1);
    }
    path.push((start, latest));
    path
}

fn owner(path: &[(u64, u32)], segno: u64) -> u32 {
    path.iter()
        .rev()
        .find(|(first, _)| segno >= *first)
        .map(|(_, t)| *t)
        .unwrap_or(1)
}

fn to_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// How many segments back from the newest contiguous one the window's end is looked for
/// (a segment may hold no commit: one closed by `archive_timeout` on an idle server).
pub const END_SCAN_SEGMENTS: u64 = 8;

/// Scanned segments' newest transaction times, by store and key: segments never change
/// once stored, so each is downloaded once per process. Bounded (cleared when full).
static SCANNED: std::sync::Mutex<BTreeMap<String, Option<DateTime<Utc>>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The newest commit/abort time in `last` or the segments before it that are stored.
async fn newest_xact_time(
    repo: &Repo,
    segments: &BTreeMap<Seg, Option<SystemTime>>,
    path: &[(u64, u32)],
    (_, last): Seg,
    segs_per_id: u64,
) -> Result<Option<DateTime<Utc>>, Error> {
    for segno in (last.saturating_sub(END_SCAN_SEGMENTS - 1)..=last).rev() {
        let seg = (owner(path, segno), segno);
        if !segments.contains_key(&seg) {
            continue;
        }
        let key = super::wal::key(repo, &segment_name(seg, segs_per_id));
        // Keys are relative to the store: two repositories hold the same names.
        let id = format!("{} {key}", repo.store.describe());
        let cached = SCANNED.lock().ok().and_then(|m| m.get(&id).copied());
        let found = match cached {
            Some(found) => found,
            None => {
                let body = repo.store.get_bytes(&key).await?;
                let found = tokio::task::spawn_blocking(move || {
                    decompress(&body)
                        .ok()
                        .and_then(|raw| wal_scan::newest_xact_time(&raw))
                })
                .await
                .map_err(|e| Error::Invalid(format!("WAL scan task: {e}")))?;
                if let Ok(mut m) = SCANNED.lock() {
                    if m.len() >= 256 {
                        m.clear();
                    }
                    m.insert(id, found);
                }
                found
            }
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// What pg_stat_archiver says (None when PostgreSQL could not be asked).
#[derive(Debug, Clone, Default)]
pub struct ArchiverState {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
}

/// Checks the repository.
pub async fn verify(repo: &Repo, archiver: Option<ArchiverState>) -> Result<Report, Error> {
    let backups = catalog::list(repo).await?;
    verify_backups(repo, &backups, archiver).await
}

/// Checks the repository whose catalogue (`catalog::list`) is `backups`.
pub async fn verify_backups(
    repo: &Repo,
    backups: &[BackupInfo],
    archiver: Option<ArchiverState>,
) -> Result<Report, Error> {
    // Backups whose objects or incremental chain are not whole: named, never restorable.
    let broken = catalog::judge(repo, backups).await?;
    let wal_prefix = repo.key(&layout::wal_prefix());
    // One pass over the listing: (name, kind, arrival) of every WAL file.
    let wal: Vec<(String, WalKind, Option<SystemTime>)> = repo
        .store
        .list(&wal_prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = layout::wal_name(o.key.strip_prefix(&wal_prefix)?)?.to_string();
            let kind = classify(&name)?;
            Some((name, kind, o.last_modified))
        })
        .collect();
    let names: HashSet<String> = wal.iter().map(|(n, _, _)| n.clone()).collect();
    let newest_any = wal.iter().filter_map(|(_, _, t)| *t).max();
    let mut problems = Vec::new();
    // The segment size is recorded with each pushed segment.
    let seg_size = match wal.iter().find(|(_, k, _)| *k == WalKind::Segment) {
        Some((name, _, _)) => {
            let recorded: Option<u64> = repo
                .store
                .head(&super::wal::key(repo, name))
                .await?
                .and_then(|(_, m)| m.get("raw-size").and_then(|s| s.parse().ok()));
            match recorded {
                Some(size) if valid_segment_size(size) => size,
                Some(size) => {
                    problems.push(format!(
                        "WAL segment {name} records raw-size {size}, which is no WAL segment size; assuming {DEFAULT_SEGMENT_SIZE}"
                    ));
                    DEFAULT_SEGMENT_SIZE
                }
                None => DEFAULT_SEGMENT_SIZE,
            }
        }
        None => DEFAULT_SEGMENT_SIZE,
    };
    let segs_per_id = (0x1_0000_0000u64 / seg_size).max(1);
    let segments: BTreeMap<Seg, Option<SystemTime>> = wal
        .iter()
        .filter(|(_, k, _)| *k == WalKind::Segment)
        .filter_map(|(n, _, t)| Some((parse_segment(n, segs_per_id)?, *t)))
        .collect();

    let latest_tli = super::timeline::latest_in(wal.iter().map(|(n, _, _)| n.as_str()));
    let history = match super::timeline::history_of(repo, latest_tli).await {
        Ok(h) => h,
        Err(problem) => {
            problems.push(problem);
            Vec::new()
        }
    };
    let path = timeline_path(latest_tli, &history, seg_size);
    let lineage = super::timeline::Lineage {
        tli: latest_tli,
        history: history.clone(),
    };
    let mut timelines: Vec<u32> = path.iter().map(|(_, t)| *t).collect();
    timelines.dedup();

    let mut missing = Vec::new();
    let mut checked = 0u64;
    let newest_segno = segments
        .keys()
        .filter(|(t, _)| *t == latest_tli)
        .map(|(_, s)| *s)
        .max();
    let newest_segment = newest_segno.map(|s| segment_name((latest_tli, s), segs_per_id));
    let mut first_gap: Option<u64> = None;
    let by_system = chains_of(backups);
    let mut chains = Vec::with_capacity(by_system.len());
    // Older chains (before a `pgvigil upgrade`): from their first backup's start to their
    // last backup's end, so every point between their backups stays restorable.
    for chain in by_system.iter().take(by_system.len().saturating_sub(1)) {
        let (first, last) = (chain[0], chain[chain.len() - 1]);
        let to = match (
            parse_segment(&first.start_wal, segs_per_id),
            parse_lsn(&last.stop_lsn),
        ) {
            (Some((_, start)), Some(stop)) => {
                let tli = last.timeline;
                let end = last_segno(stop, seg_size)
                    .max(start)
                    .min(start + MAX_CHECKED_SEGMENTS - 1);
                for segno in start..=end {
                    checked += 1;
                    if !segments.contains_key(&(tli, segno)) {
                        missing.push(segment_name((tli, segno), segs_per_id));
                    }
                }
                Some(segment_name((tli, end), segs_per_id))
            }
            _ => None,
        };
        chains.push(Chain::of(chain, to));
    }
    if let Some(chain) = by_system.last() {
        chains.push(Chain::of(chain, newest_segment.clone()));
    }
    // The newest chain: from its first backup's start to the newest archived segment.
    if let (Some(oldest), Some(end)) = (by_system.last().map(|c| c[0]), newest_segno) {
        if let Some((_, start)) = parse_segment(&oldest.start_wal, segs_per_id) {
            let end = if end.saturating_sub(start) >= MAX_CHECKED_SEGMENTS {
                problems.push(format!(
                    "the WAL from {} to {} spans more than {MAX_CHECKED_SEGMENTS} segments; only the first are checked",
                    oldest.start_wal,
                    segment_name((latest_tli, end), segs_per_id)
                ));
                start + MAX_CHECKED_SEGMENTS - 1
            } else {
                end
            };
            for segno in start..=end {
                let seg = (owner(&path, segno), segno);
                checked += 1;
                if !segments.contains_key(&seg) {
                    first_gap.get_or_insert(segno);
                    missing.push(segment_name(seg, segs_per_id));
                }
            }
        }
    }
    // Every backup's own WAL range (also those on timelines off the current path).
    for b in backups {
        let (Some((tli, start)), Some(stop)) = (
            parse_segment(&b.start_wal, segs_per_id),
            parse_lsn(&b.stop_lsn),
        ) else {
            problems.push(format!("backup {} has an unreadable WAL range", b.id));
            continue;
        };
        let stop_segno = last_segno(stop, seg_size).max(start);
        if stop_segno - start >= MAX_CHECKED_SEGMENTS {
            problems.push(format!(
                "backup {} claims a WAL range of more than {MAX_CHECKED_SEGMENTS} segments",
                b.id
            ));
            continue;
        }
        for segno in start..=stop_segno {
            let name = segment_name((tli, segno), segs_per_id);
            // Duplicates go with the sort and dedup below (a linear `contains` here would be
            // quadratic in the range).
            if !segments.contains_key(&(tli, segno)) {
                missing.push(name);
            }
        }
    }
    if backups.is_empty() {
        problems.push("the repository has no backups: nothing can be restored".into());
    }
    for (id, why) in &broken {
        problems.push(format!("backup {id} cannot be restored: {why}"));
    }

    // End to end: what PostgreSQL says it archived must be in the repository.
    let (last_archived_wal, last_archived_in_repository) = match &archiver {
        Some(ArchiverState {
            last_archived_wal: Some(w),
            ..
        }) => {
            let present = names.contains(w);
            if !present {
                problems.push(format!(
                    "pg_stat_archiver reports {w} archived, but the repository does not have it"
                ));
                missing.push(w.clone());
            }
            (Some(w.clone()), Some(present))
        }
        _ => (None, None),
    };

    let window_start = backups
        .iter()
        .find(|b| !broken.contains_key(&b.id))
        .map(|b: &BackupInfo| b.stop_time);
    let last_contiguous = match (first_gap, newest_segno) {
        (Some(gap), _) => segments
            .range(..(owner(&path, gap), gap))
            .next_back()
            .map(|(seg, _)| *seg),
        (None, Some(n)) => Some((latest_tli, n)),
        (None, None) => None,
    };
    let window_end = match (window_start, last_contiguous) {
        // PostgreSQL stops a time target (inclusive) before the first commit *after* it:
        // the newest commit itself can be reached only by "latest", so the window ends a
        // microsecond before it (recovery_target_time's resolution).
        (Some(start), Some(last)) => newest_xact_time(repo, &segments, &path, last, segs_per_id)
            .await?
            .and_then(|t| t.checked_sub_signed(chrono::Duration::microseconds(1)))
            .filter(|end| *end >= start),
        _ => None,
    };
    let last_archive = archiver
        .as_ref()
        .and_then(|a| a.last_archived_time)
        .or_else(|| newest_any.map(to_utc));
    let archive_age_seconds =
        last_archive.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0);
    missing.sort();
    missing.dedup();
    Ok(Report {
        ok: missing.is_empty() && problems.is_empty(),
        gaps: gaps(&missing, &segments, segs_per_id),
        missing,
        backups: backups.len(),
        timelines,
        segments_checked: checked,
        newest_segment,
        window_start,
        window_end,
        archive_age_seconds,
        last_archived_wal,
        last_archived_in_repository,
        problems,
        chain_start: by_system.last().map(|c| c[0].stop_time),
        chains,
        lineage,
        broken,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::Metadata;

    /// A `file://` repository in a temp dir with one backup (its `backup.json` given
    /// `start_wal`) and one archived segment whose metadata records `raw_size`.
    async fn repo_with(start_wal: &str, raw_size: &str) -> (tempfile::TempDir, Repo) {
        repo_with_stop(start_wal, "0/2000100", raw_size).await
    }

    /// As [`repo_with`], with the backup's stop LSN.
    async fn repo_with_stop(
        start_wal: &str,
        stop_lsn: &str,
        raw_size: &str,
    ) -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo {
            store: Arc::new(LocalStore::new(dir.path().into())),
            cluster: "c".into(),
        };
        let info = serde_json::json!({
            "format": 1, "id": "b1", "pgvigil_version": "0", "system_identifier": "1",
            "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/2000028",
            "stop_lsn": stop_lsn, "start_wal": start_wal,
            "start_time": "2026-01-01T00:00:00Z", "stop_time": "2026-01-01T00:00:01Z",
            "duration_seconds": 1.0, "raw_bytes": 0, "stored_bytes": 0,
            "compression": "zstd", "objects": []
        });
        repo.store
            .put_bytes(
                "c/backups/b1/backup.json",
                serde_json::to_vec(&info).unwrap().into(),
                Metadata::new(),
            )
            .await
            .unwrap();
        let meta: Metadata = [("raw-size".to_string(), raw_size.to_string())].into();
        repo.store
            .put_bytes(
                "c/wal/000000010000000000000002.zst",
                bytes::Bytes::from_static(b"x"),
                meta,
            )
            .await
            .unwrap();
        (dir, repo)
    }

    #[tokio::test]
    async fn a_backup_stopping_on_a_segment_boundary_needs_no_next_segment() {
        // Stop LSN 0/3000000 is the first byte of segment 3: the backup's WAL ends in 2.
        let (_dir, repo) =
            repo_with_stop("000000010000000000000002", "0/3000000", "16777216").await;
        let r = verify(&repo, None).await.unwrap();
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        let (_dir, repo) =
            repo_with_stop("000000010000000000000002", "0/3000001", "16777216").await;
        let r = verify(&repo, None).await.unwrap();
        assert_eq!(r.missing, ["000000010000000000000003"]);
    }

    #[tokio::test]
    async fn a_short_start_wal_is_a_problem_not_a_panic() {
        let (_dir, repo) = repo_with("0000", "16777216").await;
        let r = verify(&repo, None).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.backups, 1);
        assert_eq!(r.segments_checked, 0);
        assert_eq!(r.problems, ["backup b1 has an unreadable WAL range"]);
    }

    #[tokio::test]
    async fn a_zero_raw_size_is_a_problem_not_a_panic() {
        let (_dir, repo) = repo_with("000000010000000000000002", "0").await;
        let r = verify(&repo, None).await.unwrap();
        assert!(!r.ok);
        assert_eq!(
            r.problems,
            ["WAL segment 000000010000000000000002 records raw-size 0, which is no WAL segment size; assuming 16777216"]
        );
        // The default size is used instead, and the one segment the backup needs is there.
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        assert_eq!(r.segments_checked, 1);
        assert_eq!(
            r.newest_segment.as_deref(),
            Some("000000010000000000000002")
        );
    }

    #[tokio::test]
    async fn a_far_away_segment_name_does_not_make_verify_loop() {
        // The oldest backup starts at segment 2; a listed segment 0xFFFFFFFF/0xFF would be
        // 2^40 segments to enumerate.
        let (_dir, repo) = repo_with("000000010000000000000002", "16777216").await;
        repo.store
            .put_bytes(
                "c/wal/00000001FFFFFFFF000000FF.zst",
                bytes::Bytes::from_static(b"x"),
                [("raw-size".to_string(), "16777216".to_string())].into(),
            )
            .await
            .unwrap();
        let r = verify(&repo, None).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.segments_checked, MAX_CHECKED_SEGMENTS);
        assert!(
            r.problems[0].contains("spans more than 1048576 segments"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn segment_names_of_any_length_parse_or_not() {
        for bad in [
            "",
            "0000",
            "00000001000000000000000",
            "0000000100000000000000é2",
        ] {
            assert_eq!(parse_segment(bad, 256), None, "{bad:?}");
        }
        // The low part must fit the segment size: 0x100 is no 16 MiB segment.
        assert_eq!(parse_segment("000000010000000000000100", 256), None);
        assert_eq!(
            parse_segment("00000001FFFFFFFF000000FF", 256),
            Some((1, 0xFFFF_FFFF * 256 + 0xFF))
        );
        assert!(!valid_segment_size(0) && !valid_segment_size(3 << 20));
        assert!(valid_segment_size(16 << 20) && valid_segment_size(1 << 30));
    }

    #[test]
    fn missing_segments_become_named_runs_placed_between_their_neighbours() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        let segments: BTreeMap<Seg, Option<SystemTime>> = [
            ((1, 4), at(100)),
            ((1, 7), at(200)),
            ((1, 8), at(300)),
            ((1, 10), at(500)),
        ]
        .into_iter()
        .collect();
        let missing: Vec<String> = [
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000009",
            "00000002.history",
        ]
        .map(String::from)
        .to_vec();
        let g = gaps(&missing, &segments, 256);
        let utc = |s: u64| at(s).map(to_utc);
        assert_eq!(g.len(), 3, "{g:?}");
        assert_eq!(
            (g[0].first.as_str(), g[0].last.as_str(), g[0].files),
            ("000000010000000000000005", "000000010000000000000006", 2)
        );
        assert_eq!((g[0].after, g[0].before), (utc(100), utc(200)));
        assert_eq!(
            (g[1].files, g[1].after, g[1].before),
            (1, utc(300), utc(500))
        );
        assert_eq!(
            (g[2].first.as_str(), g[2].after),
            ("00000002.history", None)
        );
    }

    #[test]
    fn names_and_histories() {
        let n = 256;
        assert_eq!(parse_segment("000000020000000100000003", n), Some((2, 259)));
        assert_eq!(segment_name((2, 259), n), "000000020000000100000003");
        let h = parse_history(
            "1\t0/3000000\tno recovery target specified\n\n2\t0/5800000\tbefore 2026\n",
        );
        assert_eq!(h, vec![(1, 0x3000000), (2, 0x5800000)]);
        let seg = 16 * 1024 * 1024;
        let path = timeline_path(3, &h, seg);
        // Segment 2 is timeline 1's, 3 and 4 are timeline 2's, 5 onwards timeline 3's:
        // the old timeline's last (partial) segment is never expected.
        assert_eq!(owner(&path, 2), 1);
        assert_eq!(owner(&path, 3), 2);
        assert_eq!(owner(&path, 5), 3);
    }
}
