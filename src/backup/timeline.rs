//! Timelines: which backups a restore can start from. A restore follows
//! `recovery_target_timeline = 'latest'`, the newest timeline in the repository; a backup
//! is a usable start only if it lies on that timeline's history — on the timeline itself,
//! or on an ancestor and ended before the newest timeline branched off it. After a
//! point-in-time restore that forks before the newest backups (timeline 2 leaves timeline 1
//! before backup B ended), B lies on the abandoned branch: PostgreSQL refuses to recover
//! from it onto timeline 2 ("requested timeline 2 is not a child of this server's
//! history"), so choosing backups by stop time alone picks one that cannot be restored.

use super::catalog::parse_lsn;
use super::compress::decompress;
use super::wal::classify;
use super::Error;
use crate::store::{layout, Repo};

/// The newest timeline and its ancestry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The timeline a restore follows.
    pub tli: u32,
    /// Its `.history`: `(ancestor, lsn)` — the ancestor ended at `lsn`, its child began
    /// there.
    pub history: Vec<(u32, u64)>,
}

impl Lineage {
    /// A repository with only `tli` (no history).
    pub fn single(tli: u32) -> Self {
        Self {
            tli,
            history: Vec::new(),
        }
    }

    /// Whether a backup that ended at `stop_lsn` on `tli` can recover onto this timeline.
    pub fn reaches(&self, tli: u32, stop_lsn: u64) -> bool {
        tli == self.tli
            || self
                .history
                .iter()
                .any(|(ancestor, switch)| *ancestor == tli && stop_lsn <= *switch)
    }

    /// Where this timeline left `tli`, if `tli` is one of its ancestors.
    pub fn branch_point(&self, tli: u32) -> Option<u64> {
        self.history
            .iter()
            .find(|(ancestor, _)| *ancestor == tli)
            .map(|(_, lsn)| *lsn)
    }
}

/// Switch points of a timeline's ancestors, from its `.history` file.
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, parse_lsn(f.next()?)?))
        })
        .collect()
}

/// The ancestry of `tli` from its `.history` file in the repository (none for timeline 1).
pub async fn history_of(repo: &Repo, tli: u32) -> Result<Vec<(u32, u64)>, String> {
    if tli <= 1 {
        return Ok(Vec::new());
    }
    let key = repo.key(&layout::timeline_history(tli));
    match repo.store.get_bytes(&key).await {
        Ok(b) => Ok(parse_history(&String::from_utf8_lossy(
            &decompress(&b).unwrap_or_default(),
        ))),
        Err(e) => Err(format!("timeline {tli} has no readable history file ({e})")),
    }
}

/// The newest timeline among WAL file names (segments, `.history`, `.partial`, `.backup`);
/// 1 when there are none.
pub fn latest_in<'a>(names: impl IntoIterator<Item = &'a str>) -> u32 {
    names
        .into_iter()
        .filter(|n| classify(n).is_some())
        .filter_map(|n| u32::from_str_radix(n.get(..8)?, 16).ok())
        .max()
        .unwrap_or(1)
}

/// The ancestry of the newest timeline among `names` (a WAL listing already at hand).
pub async fn of_listing<'a>(
    repo: &Repo,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Lineage, Error> {
    let tli = latest_in(names);
    let history = history_of(repo, tli).await.map_err(Error::Invalid)?;
    Ok(Lineage { tli, history })
}

/// The newest timeline of the repository (from its WAL listing) and its ancestry.
pub async fn current(repo: &Repo) -> Result<Lineage, Error> {
    let prefix = repo.key(&layout::wal_prefix());
    let listing = repo.store.list(&prefix).await?;
    let names = listing
        .iter()
        .filter_map(|o| layout::wal_name(o.key.strip_prefix(&prefix)?));
    of_listing(repo, names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_after_the_branch_point_does_not_reach_the_new_timeline() {
        let l = Lineage {
            tli: 3,
            history: parse_history("1\t0/3000000\tno recovery target\n2\t0/5000000\tbefore 2026\n"),
        };
        assert!(l.reaches(3, 0x9000000));
        assert!(l.reaches(1, 0x3000000));
        assert!(!l.reaches(1, 0x3000001));
        assert!(l.reaches(2, 0x4000000));
        assert!(!l.reaches(2, 0x6000000));
        assert!(!l.reaches(4, 0));
        assert_eq!(l.branch_point(1), Some(0x3000000));
    }
}
