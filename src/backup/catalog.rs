//! The repository's record of base backups. A backup exists only if its
//! `backups/<id>/backup.json` exists: it is written last, as the commit marker, and holds
//! what restore, verification and retention need (system identifier, versions, timeline,
//! WAL range, times, sizes and the SHA-256 of every object).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::timeline::Lineage;
use super::Error;
use crate::store::{layout, Metadata, Repo};

/// One stored object of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupObject {
    /// Key relative to the backup's directory, e.g. `base.tar.zst`.
    pub name: String,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// Whether a backup holds the whole data directory or only what changed since its parent.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file (every backup before incremental backups existed).
    #[default]
    Full,
    /// `pg_basebackup --incremental` (PostgreSQL 17+): restored by `pg_combinebackup` over
    /// its chain of parents down to a full backup.
    Incremental,
}

impl BackupKind {
    /// `full` or `incremental`, as `backup.json` and the CLI say it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        }
    }
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupInfo {
    pub format: u32,
    pub id: String,
    pub pgvigil_version: String,
    pub system_identifier: String,
    pub pg_version_num: i32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// First WAL segment the backup needs.
    pub start_wal: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Bytes of the uncompressed tar stream.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub compression: String,
    /// The tar streams of the data directory, restored in parallel.
    pub objects: Vec<BackupObject>,
    #[serde(default)]
    pub kind: BackupKind,
    /// The backup an incremental builds on (its manifest went to `pg_basebackup
    /// --incremental`); restoring it needs every backup down this chain to a full one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The backup's `backup_manifest` (zstd), kept beside it so that the next incremental
    /// can build on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<BackupObject>,
}

impl BackupInfo {
    /// The PostgreSQL major of the backed-up server (restore, verify and drills need
    /// binaries of exactly this major).
    pub fn pg_major(&self) -> u32 {
        crate::pg::binaries::major_of_version_num(self.pg_version_num)
    }
}

/// Writes the commit marker.
pub async fn commit(repo: &Repo, info: &BackupInfo) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(info)
        .map_err(|e| Error::Invalid(format!("encoding backup.json: {e}")))?;
    repo.store
        .put_bytes(
            &repo.key(&layout::backup_marker(&info.id)),
            body.into(),
            Metadata::new(),
        )
        .await?;
    Ok(())
}

/// Every committed backup, oldest first (by stop time, never by name).
pub async fn list(repo: &Repo) -> Result<Vec<BackupInfo>, Error> {
    let mut known = BTreeMap::new();
    refresh(repo, &mut known).await?;
    Ok(oldest_first(known.values()))
}

/// Brings `known` (marker key → `backup.json`) up to date, reading only the markers of
/// backups it does not hold yet (the daemon keeps the catalogue between refreshes).
pub async fn refresh(repo: &Repo, known: &mut BTreeMap<String, BackupInfo>) -> Result<(), Error> {
    let prefix = repo.key(&layout::backups_prefix());
    super::records::refresh(
        repo,
        &prefix,
        layout::is_backup_marker,
        "backup.catalog.invalid",
        known,
    )
    .await
}

/// `backups` sorted oldest first, by stop time (never by name), as [`list`] returns them.
pub fn oldest_first<'a>(backups: impl IntoIterator<Item = &'a BackupInfo>) -> Vec<BackupInfo> {
    let mut out: Vec<BackupInfo> = backups.into_iter().cloned().collect();
    out.sort_by(|a, b| a.stop_time.cmp(&b.stop_time).then_with(|| a.id.cmp(&b.id)));
    out
}

/// The number of committed backups and the newest one (by id, which is its UTC start
/// time), reading only that one `backup.json`: cheap enough to run every minute.
pub async fn newest(repo: &Repo) -> Result<(usize, Option<BackupInfo>), Error> {
    let markers: Vec<String> = repo
        .store
        .list(&repo.key(&layout::backups_prefix()))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| layout::is_backup_marker(k))
        .collect();
    let Some(last) = markers.last() else {
        return Ok((0, None));
    };
    let info = serde_json::from_slice::<BackupInfo>(&repo.store.get_bytes(last).await?).ok();
    Ok((markers.len(), info))
}

/// The chain `backup` is restored from, full backup first and `backup` last: itself for a
/// full backup, its parents down to a full one for an incremental. An error names the
/// missing link (a parent whose `backup.json` is gone or unreadable) or a loop.
pub fn chain<'a>(
    backups: &'a [BackupInfo],
    backup: &'a BackupInfo,
) -> Result<Vec<&'a BackupInfo>, String> {
    let mut chain = vec![backup];
    let mut at = backup;
    // Bounded: a chain longer than the catalogue has a loop.
    for _ in 0..=backups.len() {
        if at.kind == BackupKind::Full {
            chain.reverse();
            return Ok(chain);
        }
        let Some(parent) = at.parent.as_deref() else {
            return Err(format!(
                "incremental backup {} names no parent backup",
                at.id
            ));
        };
        at = backups.iter().find(|b| b.id == parent).ok_or_else(|| {
            format!(
                "its parent backup {parent} (of {}) is missing: its backup.json is gone or unreadable",
                at.id
            )
        })?;
        chain.push(at);
    }
    Err(format!(
        "the parent links of backup {} form a loop",
        backup.id
    ))
}

/// [`broken`] for `backups`, with the listing of the repository's `backups/` it needs
/// (one LIST, no downloads).
pub async fn judge(repo: &Repo, backups: &[BackupInfo]) -> Result<BTreeMap<String, String>, Error> {
    let listing = repo
        .store
        .list(&repo.key(&layout::backups_prefix()))
        .await?;
    Ok(broken(repo, backups, &listing))
}

/// Every backup that cannot be restored, and why: an object that `backup.json` lists is
/// missing from `listing` (every object under `backups/`) or has another size, or a link
/// of its chain is missing or itself broken. Listings only: nothing is downloaded, so it
/// works on encrypted repositories without the key.
pub fn broken(
    repo: &Repo,
    backups: &[BackupInfo],
    listing: &[crate::store::ObjectMeta],
) -> BTreeMap<String, String> {
    let sizes: HashMap<&str, u64> = listing.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for b in backups {
        for o in &b.objects {
            let key = repo.key(&layout::backup_object(&b.id, &o.name));
            match sizes.get(key.as_str()) {
                None => {
                    own.insert(b.id.clone(), format!("its object {key} is missing"));
                    break;
                }
                Some(size) if *size != o.stored_bytes => {
                    own.insert(
                        b.id.clone(),
                        format!(
                            "its object {key} has {size} bytes, backup.json records {}",
                            o.stored_bytes
                        ),
                    );
                    break;
                }
                Some(_) => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    for b in backups {
        let why = match chain(backups, b) {
            Err(why) => Some(why),
            Ok(links) => links.iter().find_map(|l| {
                own.get(&l.id).map(|why| {
                    if l.id == b.id {
                        why.clone()
                    } else {
                        format!("its parent backup {} is broken: {why}", l.id)
                    }
                })
            }),
        };
        if let Some(why) = why {
            out.insert(b.id.clone(), why);
        }
    }
    out
}

/// Parses an LSN like `0/3000028` into a number (each half is 32 bits, as PostgreSQL
/// prints it; anything wider is not an LSN).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let half = |h: &str| u32::from_str_radix(h, 16).ok().map(u64::from);
    Some((half(hi)? << 32) | half(lo)?)
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The newest backup, replayed to the end of the archive.
    Latest,
    /// A backup by id (to the end of the archive, or to `until`).
    Id(String),
    Time(DateTime<Utc>),
    Lsn(u64),
    /// Stop as soon as the backup is consistent.
    Immediate,
}

/// The backup a restore to `target` starts from: the newest that ended before it.
/// The backup a restore to `target` starts from: `backup` when named, else the newest one
/// that ended before the target and lies on `lineage`, the timeline the restore follows
/// (see [`super::timeline`]).
pub fn select<'a>(
    backups: &'a [BackupInfo],
    backup: Option<&str>,
    target: &Target,
    lineage: &Lineage,
) -> Result<&'a BackupInfo, Error> {
    let on_lineage =
        |b: &BackupInfo| parse_lsn(&b.stop_lsn).is_some_and(|s| lineage.reaches(b.timeline, s));
    if let Some(id) = backup.filter(|b| *b != "latest") {
        let found = backups.iter().find(|b| b.id == id).ok_or_else(|| {
            Error::Invalid(format!(
                "no backup {id:?} in the repository (see `pgvigil backups`)"
            ))
        })?;
        if !on_lineage(found) {
            return Err(off_lineage(found, lineage));
        }
        return Ok(found);
    }
    let candidates = backups.iter().filter(|b| match target {
        Target::Time(t) => b.stop_time < *t,
        Target::Lsn(l) => parse_lsn(&b.stop_lsn).is_some_and(|s| s <= *l),
        _ => true,
    });
    let (usable, abandoned): (Vec<&BackupInfo>, Vec<&BackupInfo>) =
        candidates.partition(|b| on_lineage(b));
    usable
        .into_iter()
        .max_by(|a, b| a.stop_time.cmp(&b.stop_time))
        .ok_or_else(|| match (target, abandoned.last()) {
            (_, Some(b)) => off_lineage(b, lineage),
            (Target::Time(t), None) => Error::Invalid(format!(
                "no backup ended before {t}; the oldest ended at {}",
                backups
                    .first()
                    .map(|b| b.stop_time.to_rfc3339())
                    .unwrap_or_else(|| "(no backups)".into())
            )),
            (Target::Lsn(_), None) => Error::Invalid("no backup ended before that LSN".into()),
            _ => Error::Invalid(
                "the repository has no backups; take one with `pgvigil backup`".into(),
            ),
        })
}

fn off_lineage(b: &BackupInfo, lineage: &Lineage) -> Error {
    let fork = match lineage.branch_point(b.timeline) {
        Some(lsn) => format!(
            "timeline {} left timeline {} at {:X}/{:X}, before the backup ended",
            lineage.tli,
            b.timeline,
            lsn >> 32,
            lsn & 0xffff_ffff
        ),
        None => format!("timeline {} does not descend from it", lineage.tli),
    };
    Error::Invalid(format!(
        "backup {} (timeline {}, ended at {}) lies on an abandoned branch and cannot recover onto timeline {}, the newest: {fork}",
        b.id, b.timeline, b.stop_lsn, lineage.tli
    ))
}

/// A `backup.json` for unit tests: one object-less backup of timeline 1 that stopped at
/// `stop` at LSN `lsn`.
#[cfg(test)]
pub(crate) fn example(id: &str, stop: DateTime<Utc>, lsn: &str) -> BackupInfo {
    BackupInfo {
        format: 1,
        id: id.into(),
        pgvigil_version: "0".into(),
        system_identifier: "1".into(),
        pg_version_num: 150000,
        timeline: 1,
        start_lsn: "0/1".into(),
        stop_lsn: lsn.into(),
        start_wal: "000000010000000000000001".into(),
        start_time: stop,
        stop_time: stop,
        duration_seconds: 1.0,
        raw_bytes: 1,
        stored_bytes: 1,
        compression: "zstd".into(),
        objects: vec![],
        kind: BackupKind::Full,
        parent: None,
        manifest: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, stop: &str, lsn: &str) -> BackupInfo {
        example(id, stop.parse().unwrap(), lsn)
    }

    #[test]
    fn selects_newest_before_target() {
        let b = vec![
            info("b1", "2026-01-01T00:00:00Z", "0/100"),
            info("b2", "2026-01-02T00:00:00Z", "0/200"),
        ];
        let t = |s: &str| Target::Time(s.parse().unwrap());
        let one = Lineage::single(1);
        assert_eq!(
            select(&b, None, &t("2026-01-01T12:00:00Z"), &one)
                .unwrap()
                .id,
            "b1"
        );
        assert_eq!(
            select(&b, None, &t("2026-01-03T00:00:00Z"), &one)
                .unwrap()
                .id,
            "b2"
        );
        assert!(select(&b, None, &t("2025-12-31T00:00:00Z"), &one).is_err());
        assert_eq!(
            select(&b, None, &Target::Lsn(0x150), &one).unwrap().id,
            "b1"
        );
        assert_eq!(
            select(&b, Some("b1"), &Target::Latest, &one).unwrap().id,
            "b1"
        );
        assert_eq!(
            select(&b, Some("latest"), &Target::Latest, &one)
                .unwrap()
                .id,
            "b2"
        );
        assert!(select(&b, Some("nope"), &Target::Latest, &one).is_err());
        assert_eq!(parse_lsn("1/0000002A"), Some((1 << 32) | 42));
        // A half wider than 32 bits used to be shifted into (or over) the other half.
        assert_eq!(parse_lsn("100000000/0"), None);
        assert_eq!(parse_lsn("0/100000000"), None);
    }

    /// Timeline 2 left timeline 1 at 0/150, between b1 and b2 (a point-in-time restore to
    /// a time before b2 that was promoted): b2 is on the abandoned branch.
    #[test]
    fn a_backup_on_an_abandoned_branch_is_not_chosen() {
        let b = vec![
            info("b1", "2026-01-01T00:00:00Z", "0/100"),
            info("b2", "2026-01-02T00:00:00Z", "0/200"),
        ];
        let forked = Lineage {
            tli: 2,
            history: vec![(1, 0x150)],
        };
        assert_eq!(select(&b, None, &Target::Latest, &forked).unwrap().id, "b1");
        let e = select(&b, Some("b2"), &Target::Latest, &forked)
            .unwrap_err()
            .to_string();
        assert!(e.contains("abandoned branch") && e.contains("0/150"), "{e}");
        let only_b2 = vec![b[1].clone()];
        let e = select(&only_b2, None, &Target::Latest, &forked)
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup b2"), "{e}");
    }
}
