//! The off-site copy (`pgvigil offsite`, weekly in the daemon): the newest valid backup and
//! the WAL from its start to the newest archived segment (plus every `.history` file) go
//! to a second repository, which is residency-checked like the first (its writes go
//! through the same guard). Objects are copied server-side when both repositories are on
//! one S3 service (`CopyObject`), streamed otherwise, and never staged whole in memory.
//!
//! Every copied object is verified at the destination by reading it back: backup objects
//! against the SHA-256 in `backup.json`, WAL against the SHA-256 of its raw content in the
//! object's metadata. A copy that does not verify is deleted and the run fails. The
//! backup's `backup.json` is written last, so the copy only counts once it is complete;
//! objects already at the destination with the same size are not copied again, so a
//! weekly run moves only what is new. The result is recorded in the source repository
//! (`state/offsite/last.json`).

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::{self, BackupInfo, BackupObject};
use super::compress::{decompress, sha256_hex};
use super::progress::{Progress, Unit};
use super::wal::{self, classify, WalKind};
use super::Error;
use crate::store::{layout, Metadata, ObjectStore, Repo};

/// What a copy did (also the record stored in the source repository).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyReport {
    pub backup_id: String,
    pub source: String,
    pub destination: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Objects copied this run (backup objects and WAL).
    pub objects_copied: usize,
    /// Of those, copied server-side.
    pub server_side: usize,
    /// Objects already at the destination with the same size.
    pub objects_present: usize,
    pub bytes_copied: u64,
    /// WAL files the copy needs (from the backup's start on, and `.history`).
    pub wal_files: usize,
    /// Every copied object was read back and matched its checksum.
    pub verified: bool,
}

/// Copies the newest valid backup of `src` and the WAL it needs to `dst`, counting the
/// bytes copied into `progress` (phases: the backup's objects, then the WAL, each against
/// the size of what is not at the destination yet). The caller holds the off-site lease and
/// passes both repositories fenced by it (`ops::Ops::offsite`).
pub async fn run(src: &Repo, dst: &Repo, progress: &Progress) -> Result<CopyReport, Error> {
    let report = copy(src, dst, progress).await?;
    super::records::write(src, &src.key(&layout::offsite_record()), &report).await?;
    Ok(report)
}

/// The last recorded copy, if any.
pub async fn last(src: &Repo) -> Option<CopyReport> {
    super::records::read(src, &src.key(&layout::offsite_record())).await
}

/// Counters of one run.
struct Tally<'a> {
    copied: usize,
    server_side: usize,
    present: usize,
    bytes: u64,
    progress: &'a Progress,
}

async fn copy(src: &Repo, dst: &Repo, progress: &Progress) -> Result<CopyReport, Error> {
    let started = Utc::now();
    let backups = catalog::list(src).await?;
    // The newest backup that can be restored (whole objects, whole chain).
    let broken = catalog::judge(src, &backups).await?;
    let Some(backup) = backups.iter().rev().find(|b| !broken.contains_key(&b.id)) else {
        return Err(Error::Invalid(format!(
            "{} has no backup to copy off-site; take one with `pgvigil backup`",
            src.store.describe()
        )));
    };
    // The destination is bound to the same cluster (and refuses another one's data).
    let sysid: u64 = backup.system_identifier.parse().map_err(|_| {
        Error::Invalid(format!(
            "backup {} has an unreadable system identifier",
            backup.id
        ))
    })?;
    wal::check_binding(dst, sysid).await?;

    // An incremental backup is copied with its whole chain, so that it restores there.
    let chain = catalog::chain(&backups, backup).map_err(|why| {
        Error::Refused(format!(
            "backup {} cannot be copied off-site: {why}",
            backup.id
        ))
    })?;
    let mut tally = Tally {
        copied: 0,
        server_side: 0,
        present: 0,
        bytes: 0,
        progress,
    };
    for b in &chain {
        copy_backup_objects(src, dst, b, &mut tally).await?;
    }

    let wal_files = copy_wal(src, dst, backup, &mut tally).await?;

    // The commit markers last, parents first: an off-site backup exists once everything
    // it needs is there.
    for b in &chain {
        let marker = dst.key(&layout::backup_marker(&b.id));
        if dst.store.head(&marker).await?.is_none() {
            catalog::commit(dst, b).await?;
        }
    }
    let report = CopyReport {
        backup_id: backup.id.clone(),
        source: src.store.describe(),
        destination: dst.store.describe(),
        started,
        finished: Utc::now(),
        objects_copied: tally.copied,
        server_side: tally.server_side,
        objects_present: tally.present,
        bytes_copied: tally.bytes,
        wal_files,
        verified: true,
    };
    tracing::info!(event = "offsite.completed", backup = %report.backup_id, destination = %report.destination, copied = report.objects_copied, server_side = report.server_side, present = report.objects_present, bytes = report.bytes_copied, "off-site copy verified");
    Ok(report)
}

/// Copies the objects of one backup (its streams and its kept manifest) that the
/// destination does not have with the recorded size, and checks each copy's SHA-256.
async fn copy_backup_objects(
    src: &Repo,
    dst: &Repo,
    backup: &BackupInfo,
    tally: &mut Tally<'_>,
) -> Result<(), Error> {
    let present: std::collections::HashMap<String, u64> = dst
        .store
        .list(&dst.key(&layout::backup_prefix(&backup.id)))
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let objects: Vec<&BackupObject> = backup.objects.iter().chain(&backup.manifest).collect();
    let to_copy: Vec<&BackupObject> = objects
        .iter()
        .copied()
        .filter(|o| {
            let to = dst.key(&layout::backup_object(&backup.id, &o.name));
            present.get(&to) != Some(&o.stored_bytes)
        })
        .collect();
    tally.present += objects.len() - to_copy.len();
    tally.progress.begin(
        format!("copy of backup {}", backup.id),
        Unit::Bytes,
        Some(to_copy.iter().map(|o| o.stored_bytes).sum()),
    );
    for object in to_copy {
        let (from, to) = (
            src.key(&layout::backup_object(&backup.id, &object.name)),
            dst.key(&layout::backup_object(&backup.id, &object.name)),
        );
        copy_object(src, dst, &from, &to, tally).await?;
        let actual = stream_sha256(dst.store.as_ref(), &to).await?;
        if actual != object.sha256 {
            let _ = dst.store.delete(&to).await;
            return Err(Error::Refused(format!(
                "off-site copy of {to} in {} does not verify: sha256 {actual}, backup.json says {}; the copy was deleted",
                dst.store.describe(),
                object.sha256
            )));
        }
    }
    Ok(())
}

/// Copies the WAL `backup` needs from its start on, and every `.history` file; verifies
/// each copied file's raw SHA-256. Returns how many WAL files the copy needs.
async fn copy_wal(
    src: &Repo,
    dst: &Repo,
    backup: &BackupInfo,
    tally: &mut Tally<'_>,
) -> Result<usize, Error> {
    let src_prefix = src.key(&layout::wal_prefix());
    let dst_prefix = dst.key(&layout::wal_prefix());
    let present: std::collections::HashMap<String, u64> = dst
        .store
        .list(&dst_prefix)
        .await?
        .into_iter()
        .filter_map(|o| Some((o.key.strip_prefix(&dst_prefix)?.to_string(), o.size)))
        .collect();
    let start = backup.start_wal.get(8..24).unwrap_or("").to_string();
    let needed: Vec<(String, u64)> = src
        .store
        .list(&src_prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let file = o.key.strip_prefix(&src_prefix)?;
            let name = layout::wal_name(file).unwrap_or(file);
            let wanted = match classify(name) {
                Some(WalKind::History) => true,
                // Position (log, seg) compares as hex text of equal width.
                Some(_) => name.get(8..24).is_some_and(|pos| pos >= start.as_str()),
                None => false,
            };
            wanted.then(|| (file.to_string(), o.size))
        })
        .collect();
    let to_copy: Vec<&(String, u64)> = needed
        .iter()
        .filter(|(file, size)| present.get(file) != Some(size))
        .collect();
    tally.present += needed.len() - to_copy.len();
    tally.progress.begin(
        "copy of the WAL",
        Unit::Bytes,
        Some(to_copy.iter().map(|(_, size)| size).sum()),
    );
    for (file, _) in to_copy {
        let from = format!("{src_prefix}{file}");
        let to = format!("{dst_prefix}{file}");
        let recorded = copy_object(src, dst, &from, &to, tally).await?;
        let stored = dst.store.get_bytes(&to).await?;
        let raw = tokio::task::spawn_blocking(move || decompress(&stored))
            .await
            .map_err(|e| Error::Invalid(format!("decompression task: {e}")))?
            .map_err(super::io(format!("decompressing the off-site copy {to}")))?;
        let actual = sha256_hex(&raw);
        if dst.store.digest_matches(&recorded, &actual) != Some(true) {
            let _ = dst.store.delete(&to).await;
            return Err(Error::Refused(format!(
                "off-site copy of {to} in {} does not verify: its content (sha256 {actual}) is not what was recorded at push; the copy was deleted",
                dst.store.describe(),
            )));
        }
    }
    Ok(needed.len())
}

/// Copies one object as it is stored (server-side when possible, else streamed with its
/// metadata; sealed objects stay sealed, their key id and keyed checksum with them);
/// returns the source's metadata.
async fn copy_object(
    src: &Repo,
    dst: &Repo,
    from: &str,
    to: &str,
    tally: &mut Tally<'_>,
) -> Result<Metadata, Error> {
    let Some((meta, metadata)) = src.raw().head(from).await? else {
        return Err(crate::store::Error::NotFound {
            key: from.to_string(),
            store: src.store.describe(),
        }
        .into());
    };
    if dst.raw().copy_from(src.raw().as_ref(), from, to).await? {
        tally.server_side += 1;
    } else {
        let body = src.raw().get_stream(from).await?;
        dst.raw().put_stream(to, body, metadata.clone()).await?;
    }
    tally.copied += 1;
    tally.bytes += meta.size;
    tally.progress.add(meta.size);
    Ok(metadata)
}

/// The SHA-256 of an object's stored bytes, streamed.
async fn stream_sha256(store: &dyn ObjectStore, key: &str) -> Result<String, Error> {
    let mut body = store.get_stream(key).await?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(super::io(format!("reading back {key}")))?
    {
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}
