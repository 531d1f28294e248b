//! Every key name of the repository, in one place. Paths here are relative to the
//! cluster's directory (`Repo::key` puts `<cluster>/` in front); the layout is
//!
//! ```text
//! backups/<id>/base.tar.zst     the base backup, one object
//! backups/<id>/backup.json      written LAST: the commit marker
//! wal/<name>.zst                every archived WAL file (segments, .history, .backup, .partial)
//! state/cluster.json            the binding to one database system
//! state/jobs/<job>.json         scheduled job history
//! state/locks/<job>.json        job leases
//! state/drills/<id>.json        restore drill evidence
//! state/offsite/last.json       the last verified off-site copy
//! state/retention/last.json     the last retention run
//! ```
//!
//! It is on disk and in buckets: existing repositories must keep reading, so a name here
//! never changes. Backup and WAL objects are the protected ones (Object Lock); state
//! objects are rewritten and deleted in normal operation ([`is_protected`]).

/// Directory of base backups.
const BACKUPS: &str = "backups";
/// Directory of archived WAL files.
const WAL: &str = "wal";
/// Directory of pgvigil's own records.
const STATE: &str = "state";
/// Suffix of every stored WAL file (zstd).
const COMPRESSED: &str = ".zst";
/// A backup's commit marker, inside its directory.
const MARKER: &str = "backup.json";

/// The name of a backup's base tar object inside its directory (as recorded in
/// `backup.json`).
pub const BASE_OBJECT: &str = "base.tar.zst";

/// A backup's `backup_manifest` (zstd), which the next incremental backup builds on.
pub const MANIFEST_OBJECT: &str = "backup_manifest.zst";

/// The name of stream `i` of a backup split into `streams` (`base.tar.zst` when there is
/// one, as every backup before streams existed; `base.<i>.tar.zst` otherwise).
pub fn base_object(i: usize, streams: usize) -> String {
    if streams <= 1 {
        BASE_OBJECT.to_string()
    } else {
        format!("base.{i}.tar.zst")
    }
}

/// Every directory of a local repository, parents first (for `pgvigil dev`, which creates
/// them for the user `archive_command` runs as).
pub const DIRECTORIES: &[&str] = &["wal", "state", "state/jobs", "state/locks", "backups"];

/// Prefix of every backup object: `backups/`.
pub fn backups_prefix() -> String {
    format!("{BACKUPS}/")
}

/// Prefix of a backup's objects: `backups/<id>/`.
pub fn backup_prefix(id: &str) -> String {
    format!("{BACKUPS}/{id}/")
}

/// One object of a backup: `backups/<id>/<name>`.
pub fn backup_object(id: &str, name: &str) -> String {
    format!("{BACKUPS}/{id}/{name}")
}

/// A backup's commit marker: `backups/<id>/backup.json`.
pub fn backup_marker(id: &str) -> String {
    backup_object(id, MARKER)
}

/// Whether `key` (relative or full) is a backup's commit marker.
pub fn is_backup_marker(key: &str) -> bool {
    key.strip_suffix(MARKER)
        .is_some_and(|dir| dir.ends_with('/'))
}

/// The backup id of `rest`, a key with the backups prefix already removed
/// (`<id>/<object>`); None when it names no object inside a backup directory.
pub fn backup_id_in(rest: &str) -> Option<&str> {
    let (id, object) = rest.split_once('/')?;
    (!object.is_empty()).then_some(id)
}

/// Prefix of every WAL object: `wal/`.
pub fn wal_prefix() -> String {
    format!("{WAL}/")
}

/// The object of WAL file `name`: `wal/<name>.zst`.
pub fn wal_file(name: &str) -> String {
    format!("{WAL}/{name}{COMPRESSED}")
}

/// The WAL file name stored as `file` (`<name>.zst`, with the WAL prefix removed).
pub fn wal_name(file: &str) -> Option<&str> {
    file.strip_suffix(COMPRESSED)
}

/// The history file of timeline `tli`: `wal/<TTTTTTTT>.history.zst`.
pub fn timeline_history(tli: u32) -> String {
    wal_file(&format!("{tli:08X}.history"))
}

/// The repository's binding to one database system: `state/cluster.json`.
pub fn binding() -> String {
    format!("{STATE}/cluster.json")
}

/// A scheduled job's history: `state/jobs/<job>.json`.
pub fn job_history(job: &str) -> String {
    format!("{STATE}/jobs/{job}.json")
}

/// A job's lease: `state/locks/<job>.json`.
pub fn job_lock(job: &str) -> String {
    format!("{STATE}/locks/{job}.json")
}

/// Prefix of the drill records: `state/drills/`.
pub fn drills_prefix() -> String {
    format!("{STATE}/drills/")
}

/// One drill's record: `state/drills/<id>.json`.
pub fn drill_record(id: &str) -> String {
    format!("{STATE}/drills/{id}.json")
}

/// The last verified off-site copy: `state/offsite/last.json`.
pub fn offsite_record() -> String {
    format!("{STATE}/offsite/last.json")
}

/// The last retention run: `state/retention/last.json`.
pub fn retention_record() -> String {
    format!("{STATE}/retention/last.json")
}

/// Whether `key` (relative to the repository root: `<cluster>/...`) holds backup or WAL
/// data, which is written with Object Lock when enabled. State objects (leases, job
/// history) are rewritten and deleted in normal operation, so they are never locked.
pub fn is_protected(key: &str) -> bool {
    let mut parts = key.trim_start_matches('/').split('/');
    let _cluster = parts.next();
    matches!(parts.next(), Some(BACKUPS) | Some(WAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backup_and_wal_objects_are_protected() {
        assert!(is_protected(
            "default/backups/20261130T000000Z/base.tar.zst"
        ));
        assert!(is_protected("default/wal/000000010000000000000001.zst"));
        assert!(!is_protected("default/state/locks/backup.json"));
        assert!(!is_protected("default/state/jobs/backup.json"));
        assert!(!is_protected("backups"));
    }

    /// The names existing repositories hold: changing one orphans their data.
    #[test]
    fn the_layout_is_stable() {
        assert_eq!(backups_prefix(), "backups/");
        assert_eq!(backup_prefix("b1"), "backups/b1/");
        assert_eq!(backup_object("b1", BASE_OBJECT), "backups/b1/base.tar.zst");
        assert_eq!(backup_marker("b1"), "backups/b1/backup.json");
        assert_eq!(wal_prefix(), "wal/");
        assert_eq!(
            wal_file("000000010000000000000001"),
            "wal/000000010000000000000001.zst"
        );
        assert_eq!(timeline_history(2), "wal/00000002.history.zst");
        assert_eq!(timeline_history(0xAB), "wal/000000AB.history.zst");
        assert_eq!(binding(), "state/cluster.json");
        assert_eq!(job_history("backup"), "state/jobs/backup.json");
        assert_eq!(job_lock("backup"), "state/locks/backup.json");
        assert_eq!(drills_prefix(), "state/drills/");
        assert_eq!(drill_record("d1"), "state/drills/d1.json");
        assert_eq!(offsite_record(), "state/offsite/last.json");
        assert_eq!(retention_record(), "state/retention/last.json");
        // The directories `pgvigil dev` prepares are the ones these keys live in.
        for key in [
            wal_file("x"),
            job_history("x"),
            job_lock("x"),
            backup_marker("x"),
        ] {
            let parent = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            assert!(DIRECTORIES.iter().any(|d| parent.starts_with(d)), "{key}");
        }
    }

    #[test]
    fn keys_parse_back() {
        assert!(is_backup_marker("c/backups/b1/backup.json"));
        assert!(!is_backup_marker("c/backups/b1/base.tar.zst"));
        assert!(!is_backup_marker("c/backups/b1/notbackup.json"));
        assert_eq!(backup_id_in("b1/base.tar.zst"), Some("b1"));
        assert_eq!(backup_id_in("b1/"), None);
        assert_eq!(backup_id_in("b1"), None);
        assert_eq!(
            wal_name("000000010000000000000001.zst"),
            Some("000000010000000000000001")
        );
        assert_eq!(wal_name("000000010000000000000001"), None);
    }
}
