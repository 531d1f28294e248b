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

use super::catalog::{self, BackupInfo};
use super::compress::{decompress, sha256_hex};
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

/// Copies the newest valid backup of `src` and the WAL it needs to `dst`. The caller holds
/// the off-site lease and passes both repositories fenced by it (`ops::Ops::offsite`).
pub async fn run(src: &Repo, dst: &Repo) -> Result<CopyReport, Error> {
    let report = copy(src, dst).await?;
    let body = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::Invalid(format!("encoding the off-site record: {e}")))?;
    src.store
        .put_bytes(
            &src.key(&layout::offsite_record()),
            body.into(),
            Metadata::new(),
        )
        .await?;
    Ok(report)
}

/// The last recorded copy, if any.
pub async fn last(src: &Repo) -> Option<CopyReport> {
    let body = src
        .store
        .get_bytes(&src.key(&layout::offsite_record()))
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// Counters of one run.
#[derive(Default)]
struct Tally {
    copied: usize,
    server_side: usize,
    present: usize,
    bytes: u64,
}

async fn copy(src: &Repo, dst: &Repo) -> Result<CopyReport, Error> {
    let started = Utc::now();
    let backups = catalog::list(src).await?;
    let Some(backup) = backups.last() else {
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

    let mut tally = Tally::default();
    let present: std::collections::HashMap<String, u64> = dst
        .store
        .list(&dst.key(&layout::backup_prefix(&backup.id)))
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for object in &backup.objects {
        let (from, to) = (
            src.key(&layout::backup_object(&backup.id, &object.name)),
            dst.key(&layout::backup_object(&backup.id, &object.name)),
        );
        if present.get(&to) == Some(&object.stored_bytes) {
            tally.present += 1;
            continue;
        }
        copy_object(src, dst, &from, &to, &mut tally).await?;
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

    let wal_files = copy_wal(src, dst, backup, &mut tally).await?;

    // The commit marker last: the off-site backup exists once everything else is there.
    let marker = dst.key(&layout::backup_marker(&backup.id));
    if dst.store.head(&marker).await?.is_none() {
        catalog::commit(dst, backup).await?;
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

/// Copies the WAL `backup` needs from its start on, and every `.history` file; verifies
/// each copied file's raw SHA-256. Returns how many WAL files the copy needs.
async fn copy_wal(
    src: &Repo,
    dst: &Repo,
    backup: &BackupInfo,
    tally: &mut Tally,
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
    let mut needed = 0;
    for o in src.store.list(&src_prefix).await? {
        let Some(file) = o.key.strip_prefix(&src_prefix) else {
            continue;
        };
        let name = layout::wal_name(file).unwrap_or(file);
        let wanted = match classify(name) {
            Some(WalKind::History) => true,
            // Position (log, seg) compares as hex text of equal width.
            Some(_) => name.get(8..24).is_some_and(|pos| pos >= start.as_str()),
            None => false,
        };
        if !wanted {
            continue;
        }
        needed += 1;
        if present.get(file) == Some(&o.size) {
            tally.present += 1;
            continue;
        }
        let to = format!("{dst_prefix}{file}");
        let recorded = copy_object(src, dst, &o.key, &to, tally).await?;
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
    Ok(needed)
}

/// Copies one object as it is stored (server-side when possible, else streamed with its
/// metadata; sealed objects stay sealed, their key id and keyed checksum with them);
/// returns the source's metadata.
async fn copy_object(
    src: &Repo,
    dst: &Repo,
    from: &str,
    to: &str,
    tally: &mut Tally,
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
