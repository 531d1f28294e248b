//! The WAL archive: `pgvigil wal-push %p` (archive_command) and `pgvigil wal-fetch %f %p`
//! (restore_command). Segments, `.history`, `.backup` and `.partial` files are stored as
//! `wal/<name>.zst` with the SHA-256 and size of the raw content in the object's metadata,
//! so continuity checks never need to download WAL.
//!
//! The first segment pushed binds the repository to the cluster's system identifier (read
//! from the segment's long page header); segments of another cluster are refused. A push
//! never overwrites: an existing object with the same content is success (PostgreSQL may
//! retry a push that succeeded), different content is a loud failure.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::compress::{compress, decompress, sha256_hex};
use super::{io, Error};
use crate::store::{layout, Metadata, Repo};

/// What kind of file PostgreSQL hands to archive_command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    Segment,
    History,
    Backup,
    Partial,
}

fn is_hex(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
}

/// Classifies a WAL file name; None for anything PostgreSQL would not archive.
pub fn classify(name: &str) -> Option<WalKind> {
    if name.len() == 24 && is_hex(name) {
        return Some(WalKind::Segment);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return (tli.len() == 8 && is_hex(tli)).then_some(WalKind::History);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return (seg.len() == 24 && is_hex(seg)).then_some(WalKind::Partial);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (seg.len() == 24 && is_hex(seg) && off.len() == 8 && is_hex(off))
            .then_some(WalKind::Backup);
    }
    None
}

/// The repository key of a WAL file.
pub fn key(repo: &Repo, name: &str) -> String {
    repo.key(&layout::wal_file(name))
}

/// The system identifier in a segment's first (long) page header, if it has one.
pub fn system_identifier(segment: &[u8]) -> Option<u64> {
    // XLogPageHeaderData: magic u16, info u16, tli u32, pageaddr u64, rem_len u32 (24 bytes
    // with padding); XLogLongPageHeaderData then adds sysid u64 at offset 24.
    const XLP_LONG_HEADER: u16 = 0x0002;
    let info = u16::from_le_bytes(segment.get(2..4)?.try_into().ok()?);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(u64::from_le_bytes(segment.get(24..32)?.try_into().ok()?))
}

/// The repository's binding to one cluster: the database system it takes backups and WAL
/// of now, and the systems it was bound to before a `pg_upgrade` (`pgvigil upgrade`),
/// whose backups and WAL stay restorable as older chains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Binding {
    pub system_identifier: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousSystem>,
}

/// A database system the repository was bound to before an upgrade.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviousSystem {
    pub system_identifier: String,
    /// When `pgvigil upgrade` bound the repository to the next system.
    pub replaced_at: chrono::DateTime<chrono::Utc>,
}

/// Reads the binding; None when the repository is not bound yet.
pub async fn binding(repo: &Repo) -> Result<Option<Binding>, Error> {
    let key = repo.key(&layout::binding());
    let body = match repo.store.get_bytes(&key).await {
        Ok(body) => body,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        Error::Invalid(format!(
            "{key} in {} is not a valid binding: {e}",
            repo.store.describe()
        ))
    })
}

/// Binds the repository to `sysid`, or checks that it is already bound to it.
pub async fn check_binding(repo: &Repo, sysid: u64) -> Result<(), Error> {
    let key = repo.key(&layout::binding());
    let wanted = Binding {
        system_identifier: sysid.to_string(),
        previous: Vec::new(),
    };
    let body = Bytes::from(serde_json::to_vec(&wanted).unwrap_or_default());
    if repo
        .store
        .put_if_absent(&key, body, Metadata::new())
        .await?
    {
        tracing::info!(event = "repo.bound", system_identifier = sysid, store = %repo.store.describe(), "repository bound to this cluster");
        return Ok(());
    }
    let Some(existing) = binding(repo).await? else {
        return Err(Error::Invalid(format!(
            "{key} in {} vanished while it was read",
            repo.store.describe()
        )));
    };
    if existing.system_identifier == wanted.system_identifier {
        return Ok(());
    }
    if let Some(e) = fenced_out(repo, &existing, sysid) {
        return Err(e);
    }
    Err(Error::Refused(format!(
        "repository {} (cluster {:?}) belongs to database system {}, not {sysid}: refusing to mix clusters; \
         after a pg_upgrade run `pgvigil upgrade`, otherwise use another storage.cluster",
        repo.store.describe(),
        repo.cluster,
        existing.system_identifier
    )))
}

/// The refusal for a system the binding was moved away from by `pgvigil upgrade` (the
/// cluster from before the upgrade); None if `sysid` is not in the binding's history.
fn fenced_out(repo: &Repo, binding: &Binding, sysid: u64) -> Option<Error> {
    let wanted = sysid.to_string();
    let p = binding
        .previous
        .iter()
        .find(|p| p.system_identifier == wanted)?;
    Some(Error::Refused(format!(
        "repository {} was moved from database system {sysid} to {} by `pgvigil upgrade` on {}: \
         this is the cluster from before the upgrade, and it may no longer write here",
        repo.store.describe(),
        binding.system_identifier,
        p.replaced_at.to_rfc3339()
    )))
}

/// What `pgvigil upgrade` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Rebound {
    /// The repository was not bound yet; now it is bound to this server.
    Bound { system_identifier: String },
    /// Already bound to this server: nothing to do.
    Already { system_identifier: String },
    /// Moved from the system before the upgrade to this one.
    Upgraded {
        from_system_identifier: String,
        from_major: Option<i32>,
        system_identifier: String,
        major: i32,
    },
}

/// Records a `pg_upgrade`: binds the repository to the upgraded server (`sysid`, PostgreSQL
/// `version_num`), keeping the previous system in the binding's history so that its backups
/// and WAL stay restorable (with the binaries of their major) and the old cluster can no
/// longer write. Refused unless the server's major is newer than that of the newest backup
/// of the current system: a different cluster of the same major is not an upgrade and
/// needs its own `storage.cluster`.
pub async fn rebind_after_upgrade(
    repo: &Repo,
    sysid: u64,
    version_num: i32,
    backups: &[super::catalog::BackupInfo],
) -> Result<Rebound, Error> {
    let system_identifier = sysid.to_string();
    let Some(mut current) = binding(repo).await? else {
        check_binding(repo, sysid).await?;
        return Ok(Rebound::Bound { system_identifier });
    };
    if current.system_identifier == system_identifier {
        return Ok(Rebound::Already { system_identifier });
    }
    if let Some(e) = fenced_out(repo, &current, sysid) {
        return Err(e);
    }
    let from_major = backups
        .iter()
        .filter(|b| b.system_identifier == current.system_identifier)
        .max_by_key(|b| b.stop_time)
        .map(|b| b.pg_version_num / 10000);
    let major = version_num / 10000;
    if let Some(old) = from_major.filter(|old| *old >= major) {
        return Err(Error::Refused(format!(
            "not an upgrade: the newest backup of database system {} in {} is PostgreSQL {old}, and this \
             server (system {sysid}) is PostgreSQL {major}; a different cluster needs its own storage.cluster",
            current.system_identifier,
            repo.store.describe()
        )));
    }
    let from_system_identifier = current.system_identifier.clone();
    current.previous.push(PreviousSystem {
        system_identifier: from_system_identifier.clone(),
        replaced_at: chrono::Utc::now(),
    });
    current.system_identifier = system_identifier.clone();
    let body = Bytes::from(serde_json::to_vec(&current).unwrap_or_default());
    repo.store
        .put_bytes(&repo.key(&layout::binding()), body, Metadata::new())
        .await?;
    tracing::info!(event = "repo.upgraded", from_system_identifier = %from_system_identifier, system_identifier = sysid, major, store = %repo.store.describe(), "repository bound to the upgraded cluster; the previous system's backups stay restorable");
    Ok(Rebound::Upgraded {
        from_system_identifier,
        from_major,
        system_identifier,
        major,
    })
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub name: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// The same content was already archived.
    pub already_archived: bool,
}

/// How long a long-lived process trusts a binding check that passed.
const BINDING_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A binding check that passed, remembered for a while, so that a process that pushes many
/// WAL files (the daemon archiving ahead) does not read `state/cluster.json` for each. The
/// binding only moves by `pgvigil upgrade`, which needs the old cluster stopped; a fresh
/// memo (every `wal-push` process) checks every time.
#[derive(Debug, Default)]
pub struct BindingMemo(std::sync::Mutex<Option<(u64, std::time::Instant)>>);

impl BindingMemo {
    /// [`check_binding`], unless it passed for `sysid` within the last five minutes.
    pub async fn check(&self, repo: &Repo, sysid: u64) -> Result<(), Error> {
        let fresh = self
            .0
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|(s, at)| s == sysid && at.elapsed() < BINDING_MEMO_TTL);
        if fresh {
            return Ok(());
        }
        check_binding(repo, sysid).await?;
        if let Ok(mut g) = self.0.lock() {
            *g = Some((sysid, std::time::Instant::now()));
        }
        Ok(())
    }
}

/// Archives one WAL file. A file already stored with the same content is answered from
/// the stored checksum with one request (a retried push, or one the daemon archived
/// ahead); anything else is checked against the repository's binding (through `memo`),
/// compressed and stored if absent.
pub async fn push(
    repo: &Repo,
    path: &Path,
    level: i32,
    memo: &BindingMemo,
) -> Result<Pushed, Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: not a WAL file name", path.display())))?
        .to_string();
    let kind = classify(&name).ok_or_else(|| {
        Error::Invalid(format!(
            "{name:?} is not a WAL segment, .history, .backup or .partial file"
        ))
    })?;
    let raw = tokio::fs::read(path)
        .await
        .map_err(io(format!("reading {}", path.display())))?;
    let sysid = match kind {
        WalKind::Segment => Some(system_identifier(&raw).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no long page header; not a WAL segment",
                path.display()
            ))
        })?),
        _ => None,
    };
    let raw_sha = sha256_hex(&raw);
    let raw_len = raw.len() as u64;
    // A retried push (PostgreSQL retries pushes that may have succeeded) or one the daemon
    // archived ahead is answered from the stored checksum, without compressing or
    // uploading anything. Identical bytes need no binding check: they are what is stored.
    if let Some((obj, m)) = repo.store.head(&key(repo, &name)).await? {
        if repo.store.digest_matches(&m, &raw_sha) == Some(true) {
            return Ok(Pushed {
                name,
                raw_bytes: raw_len,
                stored_bytes: obj.size,
                already_archived: true,
            });
        }
    }
    if let Some(sysid) = sysid {
        memo.check(repo, sysid).await?;
    }
    let compressed = tokio::task::spawn_blocking(move || compress(&raw, level))
        .await
        .map_err(|e| Error::Invalid(format!("compression task: {e}")))?
        .map_err(io(format!("compressing {name}")))?;
    let stored = compressed.len() as u64;
    let key = key(repo, &name);
    let meta: Metadata = [
        ("sha256".to_string(), raw_sha.clone()),
        ("raw-size".to_string(), raw_len.to_string()),
    ]
    .into();
    if repo
        .store
        .put_if_absent(&key, Bytes::from(compressed), meta)
        .await?
    {
        return Ok(Pushed {
            name,
            raw_bytes: raw_len,
            stored_bytes: stored,
            already_archived: false,
        });
    }
    // Already there: identical content is success (a retried push), anything else is not.
    let recorded = repo.store.head(&key).await?.map(|(_, m)| m);
    let same = match recorded.and_then(|m| repo.store.digest_matches(&m, &raw_sha)) {
        Some(same) => same,
        None => {
            let body = repo.store.get_bytes(&key).await?;
            let existing =
                decompress(&body).map_err(io(format!("decompressing existing {key}")))?;
            sha256_hex(&existing) == raw_sha
        }
    };
    if same {
        Ok(Pushed {
            name,
            raw_bytes: raw_len,
            stored_bytes: stored,
            already_archived: true,
        })
    } else {
        Err(Error::Refused(format!(
            "{name} is already archived in {} with different content (this file's sha256 is {raw_sha}); refusing to overwrite. Two clusters may be archiving into one repository",
            repo.store.describe()
        )))
    }
}

/// Restores one archived WAL file to `dest` (written to a temp name, then renamed).
/// `Ok(false)` when the repository does not have it (PostgreSQL asks for files that may
/// not exist, such as the next timeline's history).
pub async fn fetch(repo: &Repo, name: &str, dest: &Path) -> Result<bool, Error> {
    match fetch_bytes(repo, name).await? {
        Some(raw) => {
            write_atomically(dest, &raw).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// One archived WAL file, decompressed and checked against the SHA-256 recorded at push;
/// None when the repository does not have it.
pub async fn fetch_bytes(repo: &Repo, name: &str) -> Result<Option<Vec<u8>>, Error> {
    if classify(name).is_none() {
        return Err(Error::Invalid(format!("{name:?} is not a WAL file name")));
    }
    let key = key(repo, name);
    let body = match repo.store.get_bytes(&key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let raw = tokio::task::spawn_blocking(move || decompress(&body))
        .await
        .map_err(|e| Error::Invalid(format!("decompression task: {e}")))?
        .map_err(io(format!("decompressing {key}")))?;
    if let Some((_, meta)) = repo.store.head(&key).await? {
        let actual = sha256_hex(&raw);
        if repo.store.digest_matches(&meta, &actual) == Some(false) {
            return Err(Error::Refused(format!(
                "{key} in {} is corrupt: its content (sha256 {actual}) is not what was recorded at push",
                repo.store.describe()
            )));
        }
    }
    Ok(Some(raw))
}

/// Writes `raw` to `dest` through a temporary name and a rename, so PostgreSQL never sees
/// a half-written file.
pub async fn write_atomically(dest: &Path, raw: &[u8]) -> Result<(), Error> {
    let tmp = dest.with_extension("pgvigil-tmp");
    tokio::fs::write(&tmp, raw)
        .await
        .map_err(io(format!("writing {}", tmp.display())))?;
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(io(format!("renaming into {}", dest.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_history_file_with_other_content_than_the_archived_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo {
            store: std::sync::Arc::new(crate::store::local::LocalStore::new(
                dir.path().join("repo"),
            )),
            cluster: "c".into(),
        };
        let file = dir.path().join("00000002.history");
        std::fs::write(&file, "1\t0/3000158\tno recovery target specified\n").unwrap();
        assert!(
            !push(&repo, &file, 3, &BindingMemo::default())
                .await
                .unwrap()
                .already_archived
        );
        // The same content again (a retried push) is success.
        assert!(
            push(&repo, &file, 3, &BindingMemo::default())
                .await
                .unwrap()
                .already_archived
        );
        // Another cluster's (or a restored cluster's) timeline 2 forked elsewhere.
        std::fs::write(&file, "1\t0/5000000\tbefore 2026-12-01\n").unwrap();
        let err = push(&repo, &file, 3, &BindingMemo::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("00000002.history") && err.contains("different content"),
            "{err}"
        );
        let stored = fetch(&repo, "00000002.history", &dir.path().join("back")).await;
        assert!(stored.unwrap());
        let back = std::fs::read_to_string(dir.path().join("back")).unwrap();
        assert!(
            back.contains("0/3000158"),
            "the archived history is unchanged: {back}"
        );
    }

    #[test]
    fn classifies_wal_names() {
        assert_eq!(classify("000000010000000000000002"), Some(WalKind::Segment));
        assert_eq!(classify("00000002.history"), Some(WalKind::History));
        assert_eq!(
            classify("000000010000000000000002.00000028.backup"),
            Some(WalKind::Backup)
        );
        assert_eq!(
            classify("000000010000000000000002.partial"),
            Some(WalKind::Partial)
        );
        assert_eq!(classify("00000001000000000000000g"), None);
        assert_eq!(classify("000000010000000000000002.zst"), None);
        assert_eq!(classify("../etc/passwd"), None);
    }

    #[test]
    fn reads_sysid_from_long_header() {
        let mut seg = vec![0u8; 64];
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        seg[24..32].copy_from_slice(&7_300_000_000_000_000_001u64.to_le_bytes());
        assert_eq!(system_identifier(&seg), Some(7_300_000_000_000_000_001));
        seg[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(system_identifier(&seg), None);
    }
}
