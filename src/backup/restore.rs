//! Restore: pick the newest backup that ended before the target, stream it from the
//! repository, verify its SHA-256 while unpacking into a staging directory inside the
//! target, move the content into place only once the checksum matched, and configure
//! recovery (`recovery.signal`, `restore_command` through `pgvigil wal-fetch`, the target).
//! The stream is judged entry by entry as it is unpacked ([`super::unpack`]: no links out,
//! no devices), and pgvigil's own files are written without following links. A directory
//! that is not empty is refused, a failed restore removes what it wrote, and the staging
//! directory a killed restore left is swept by the next one.
//!
//! A restored cluster does not archive: its `postgresql.conf` (or `postgresql.auto.conf`,
//! inside the backup) usually still says `archive_command = 'pgvigil wal-push %p'`, and
//! after promotion it would push its new timeline's `.history` and WAL into the production
//! repository, where the next real failover collides with it and `recovery_target_timeline
//! = 'latest'` follows the wrong branch. So a restore appends `archive_mode = off` (read
//! last, it wins) unless [`RestoreRequest::keep_archiving`] says the restored cluster is
//! meant to become the new primary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::catalog::{self, BackupInfo, Target};
use super::compress::HashingReader;
use super::progress::{Counting, Progress, Unit};
use super::unpack::{append_no_follow, replace_no_follow};
use super::{io, Error};
use crate::store::{layout, Repo};

/// What to do when the recovery target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

/// A restore request.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub to: PathBuf,
    /// A backup id or "latest"; default: chosen from the target.
    pub backup: Option<String>,
    pub target: Target,
    pub action: TargetAction,
    /// The restore_command PostgreSQL will run, e.g. `/usr/bin/pgvigil wal-fetch -c /etc/pgvigil.toml %f %p`.
    pub restore_command: String,
    /// Keep the backup's archive settings (a restore meant to become the new primary);
    /// otherwise `archive_mode = off` is written.
    pub keep_archiving: bool,
}

/// What was restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub backup_id: String,
    pub backup_stop_time: DateTime<Utc>,
    pub data_dir: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    /// Whether the restored cluster will archive WAL (`--keep-archiving`).
    pub archiving: bool,
}

/// Where a restore unpacks before the checksum matched, inside the target directory (so
/// it works when the target is a mount point whose parent pgvigil cannot write).
pub const STAGING: &str = ".pgvigil-unpacking";

fn check_empty(dir: &Path) -> Result<(), Error> {
    let staging = dir.join(STAGING);
    if staging.is_dir() && !staging.is_symlink() {
        // A restore killed while unpacking: nothing of it was trusted yet.
        std::fs::remove_dir_all(&staging).map_err(io(format!(
            "removing the unfinished restore in {}",
            staging.display()
        )))?;
    }
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Refused(format!(
                    "{} is not empty: restore only into an empty or new directory, so nothing is overwritten",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))
        }
        Err(e) => Err(io(format!("reading {}", dir.display()))(e)),
    }
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// Restores a backup into `req.to` and configures recovery.
pub async fn restore(repo: &Repo, req: &RestoreRequest) -> Result<Restored, Error> {
    restore_reporting(repo, req, Arc::default()).await
}

/// [`restore`], counting into `progress` (phase `restore`) the bytes unpacked against the
/// backup's raw size from `backup.json`.
pub async fn restore_reporting(
    repo: &Repo,
    req: &RestoreRequest,
    progress: Arc<Progress>,
) -> Result<Restored, Error> {
    let started = tokio::time::Instant::now();
    let backups = catalog::list(repo).await?;
    let lineage = super::timeline::current(repo).await?;
    let backup = catalog::select(&backups, req.backup.as_deref(), &req.target, &lineage)?.clone();
    check_empty(&req.to)?;
    // raw_bytes (the tar stream) is what the data directory takes: refuse before writing
    // rather than fill the disk and fail half-way.
    if let Some(free) = super::free_bytes(&req.to) {
        if free < backup.raw_bytes {
            return Err(Error::Refused(format!(
                "{} has {} MiB free; backup {} needs {} MiB",
                req.to.display(),
                free >> 20,
                backup.id,
                backup.raw_bytes.div_ceil(1 << 20)
            )));
        }
    }
    progress.begin(
        format!("restore of backup {}", backup.id),
        Unit::Bytes,
        Some(backup.raw_bytes),
    );
    match unpack(repo, &backup, &req.to, progress).await {
        Ok(bytes) => {
            configure_recovery(&req.to, req)?;
            {
                use std::os::unix::fs::PermissionsExt;
                // PostgreSQL refuses a data directory others can read.
                std::fs::set_permissions(&req.to, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(format!("chmod 0700 {}", req.to.display())))?;
            }
            crate::pg::binaries::chown_tree_to_server_user(&req.to)
                .map_err(io(format!("chown {}", req.to.display())))?;
            Ok(Restored {
                backup_id: backup.id.clone(),
                backup_stop_time: backup.stop_time,
                data_dir: req.to.clone(),
                bytes,
                seconds: started.elapsed().as_secs_f64(),
                archiving: req.keep_archiving,
            })
        }
        Err(e) => {
            // Leave the directory as we found it: empty.
            let _ = std::fs::remove_dir_all(req.to.join(STAGING));
            if let Ok(rd) = std::fs::read_dir(&req.to) {
                for entry in rd.flatten() {
                    let p = entry.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            Err(e)
        }
    }
}

async fn unpack(
    repo: &Repo,
    backup: &BackupInfo,
    to: &Path,
    progress: Arc<Progress>,
) -> Result<u64, Error> {
    let object = backup
        .objects
        .first()
        .ok_or_else(|| Error::Invalid(format!("backup {} lists no objects", backup.id)))?
        .clone();
    let key = repo.key(&layout::backup_object(&backup.id, &object.name));
    let stream = repo.store.get_stream(&key).await?;
    let reader = StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)));
    let bridge = SyncIoBridge::new(reader);
    let to = to.to_path_buf();
    let describe = repo.store.describe();
    tokio::task::spawn_blocking(move || {
        let staging = to.join(STAGING);
        std::fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
        let mut hashed = HashingReader::new(bridge);
        let result = (|| -> std::io::Result<()> {
            let dec = zstd::stream::read::Decoder::new(&mut hashed)?;
            unpack_tar(Counting::new(dec, &progress), &staging)?;
            // Drain anything after the tar end (zstd frame end) so the hash covers it all.
            std::io::copy(&mut hashed, &mut std::io::sink())?;
            Ok(())
        })();
        result.map_err(|e| {
            let full = e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32);
            let free = match super::free_bytes(&to) {
                Some(free) if full => format!(" ({} MiB free)", free >> 20),
                _ => String::new(),
            };
            io(format!("unpacking {key} into {}{free}", to.display()))(e)
        })?;
        let (sha, bytes) = hashed.finish();
        if sha != object.sha256 {
            return Err(Error::Refused(format!(
                "{key} in {describe} is corrupt: sha256 {sha}, recorded {}; nothing of it was kept",
                object.sha256
            )));
        }
        // Trusted now: move the content into place (renames within one directory tree).
        let entries =
            std::fs::read_dir(&staging).map_err(io(format!("reading {}", staging.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", staging.display())))?;
            let dest = to.join(entry.file_name());
            std::fs::rename(entry.path(), &dest)
                .map_err(io(format!("moving {} into place", dest.display())))?;
        }
        std::fs::remove_dir(&staging).map_err(io(format!("removing {}", staging.display())))?;
        Ok(bytes)
    })
    .await
    .map_err(|e| Error::Invalid(format!("restore task: {e}")))?
}

/// Unpacks a (decompressed) tar stream from the repository into `to`, an empty directory.
/// The stream is hostile until its checksum matched: [`super::unpack`] judges its entries.
pub fn unpack_tar(reader: impl std::io::Read, to: &Path) -> std::io::Result<()> {
    Ok(super::unpack::unpack_tar(reader, to)?)
}

fn configure_recovery(dir: &Path, req: &RestoreRequest) -> Result<(), Error> {
    replace_no_follow(&dir.join("recovery.signal"), b"").map_err(io("writing recovery.signal"))?;
    let mut conf = format!(
        "\n# added by pgvigil restore\nrestore_command = '{}'\nrecovery_target_timeline = 'latest'\n",
        quote(&req.restore_command)
    );
    match &req.target {
        Target::Time(t) => conf.push_str(&format!("recovery_target_time = '{}'\n", t.to_rfc3339())),
        Target::Lsn(l) => conf.push_str(&format!(
            "recovery_target_lsn = '{:X}/{:X}'\n",
            l >> 32,
            l & 0xffff_ffff
        )),
        Target::Immediate => conf.push_str("recovery_target = 'immediate'\n"),
        Target::Latest | Target::Id(_) => {}
    }
    if !matches!(req.target, Target::Latest | Target::Id(_)) {
        let action = match req.action {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        };
        conf.push_str(&format!("recovery_target_action = '{action}'\n"));
    }
    if !req.keep_archiving {
        conf.push_str("archive_mode = off\n");
    }
    append_no_follow(&dir.join("postgresql.auto.conf"), conf.as_bytes())
        .map_err(io("writing postgresql.auto.conf"))?;
    Ok(())
}
