//! Read-ahead of archived WAL during recovery (`[backup] wal_prefetch`), pgBackRest's
//! asynchronous archive-get: PostgreSQL's startup process asks `restore_command` for one
//! file at a time and replays it before asking for the next, so a restore that needs a few
//! hundred segments from a bucket waits for a few hundred downloads in a row. With a
//! prefetcher running beside it, the next `depth` segments after the one asked for are
//! downloaded, decompressed and checked against the SHA-256 recorded at push,
//! `workers` at a time, into a bounded spool directory; `wal-fetch` then finds its file
//! there and moves it into place with a rename.
//!
//! Invariants:
//! - The spool holds only files that passed the same check as a direct fetch
//!   ([`super::wal::fetch_bytes`]); they are written under a temporary name and renamed, so a
//!   file seen in the spool is whole.
//! - It holds at most `depth` segments (the successors of the one asked for last) plus one
//!   per worker being written; everything else is removed on the next round.
//! - The prefetcher is a hint: when it is not running, is behind, or failed, `wal-fetch`
//!   fetches the file itself, exactly as without it. It guesses successors on the same
//!   timeline; after a timeline switch its guesses miss and are pruned.
//! - One prefetcher per spool (an exclusive `flock` on `spool/lock`), and it stops on its
//!   own after [`IDLE`] without a new request, removing what it left in the spool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

use super::pitr::{parse_segment, segment_name, valid_segment_size};
use super::wal::{classify, fetch_bytes, write_atomically, WalKind};
use super::{io, Error};
use crate::store::Repo;

/// How long a prefetcher waits for a new request before it stops.
pub const IDLE: Duration = Duration::from_secs(20);
/// How often it looks for a new request.
const POLL: Duration = Duration::from_millis(20);
/// How long it waits after a download failed before it asks the repository again.
const FAILED_PAUSE: Duration = Duration::from_secs(1);
/// How long `wal-fetch` waits for a file the prefetcher is downloading before it fetches
/// it itself.
const WAIT_IN_FLIGHT: Duration = Duration::from_secs(120);

const LOCK: &str = "lock";
const WANTED: &str = "wanted";
const FETCHING: &str = ".fetching";
const TEMP: &str = "pgvigil-tmp";

/// The directory where a prefetcher leaves files for `wal-fetch`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The spool's default place for a `restore_command` writing to `dest` (`%p`, which
/// PostgreSQL gives as `pg_wal/RECOVERYXLOG`): `pg_wal/pgvigil-prefetch`, on the same file
/// system as the destination so that a spooled file moves into place with a rename. It is
/// never part of a base backup (pg_basebackup sends `pg_wal` empty) and is removed by the
/// prefetcher when recovery stops asking.
pub fn default_dir(dest: &Path) -> PathBuf {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    parent
        .unwrap_or_else(|| Path::new("."))
        .join("pgvigil-prefetch")
}

impl Spool {
    /// The spool at `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Spool, Error> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io(format!("creating the WAL spool {}", dir.display()))(e)),
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that recovery asked for `name` (a segment of `seg_size` bytes), which moves
    /// the prefetcher's window to the segments after it.
    pub fn want(&self, name: &str, seg_size: u64) -> Result<(), Error> {
        let path = self.dir.join(WANTED);
        let tmp = self.dir.join(format!("{WANTED}.{}", std::process::id()));
        std::fs::write(&tmp, format!("{name} {seg_size}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io(format!("writing {}", path.display())))
    }

    fn wanted(&self) -> Option<(String, u64)> {
        let text = std::fs::read_to_string(self.dir.join(WANTED)).ok()?;
        let (name, size) = text.trim().split_once(' ')?;
        let size: u64 = size.parse().ok()?;
        (classify(name) == Some(WalKind::Segment) && valid_segment_size(size))
            .then(|| (name.to_string(), size))
    }

    /// Waits while the prefetcher is downloading `name` (bounded by [`WAIT_IN_FLIGHT`]) and
    /// returns where it would be spooled.
    async fn settled(&self, name: &str) -> PathBuf {
        let spooled = self.dir.join(name);
        let marker = self.dir.join(format!("{name}{FETCHING}"));
        let deadline = tokio::time::Instant::now() + WAIT_IN_FLIGHT;
        // Bounded: WAIT_IN_FLIGHT of POLL steps, and only while the marker exists.
        while !spooled.exists()
            && marker.exists()
            && self.running()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
        spooled
    }

    /// Moves the spooled `name` to `dest` if the prefetcher has it (waiting while it is
    /// being downloaded); false when it is not there and `wal-fetch` must fetch it itself.
    pub async fn take(&self, name: &str, dest: &Path) -> Result<bool, Error> {
        let spooled = self.settled(name).await;
        match std::fs::rename(&spooled, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            // Another file system (pg_wal moved elsewhere by a symlink, a spool set by
            // hand): copy through a temporary name.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EXDEV as i32) => {
                match self.take_bytes(name).await? {
                    Some(raw) => write_atomically(dest, &raw).await.map(|()| true),
                    None => Ok(false),
                }
            }
            Err(e) => Err(io(format!(
                "moving {} to {}",
                spooled.display(),
                dest.display()
            ))(e)),
        }
    }

    /// The spooled `name`'s content, removed from the spool (waiting while it is being
    /// downloaded); None when it is not there.
    pub async fn take_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let spooled = self.settled(name).await;
        match std::fs::read(&spooled) {
            Ok(raw) => {
                let _ = std::fs::remove_file(&spooled);
                Ok(Some(raw))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", spooled.display()))(e)),
        }
    }

    /// Whether a prefetcher holds this spool.
    pub fn running(&self) -> bool {
        match self.try_lock() {
            Ok(Some(_held)) => false,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The spool's lock, if nobody else holds it (released when dropped).
    fn try_lock(&self) -> Result<Option<Flock<std::fs::File>>, Error> {
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Some(held)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io(format!("locking {}", path.display()))(e.into())),
        }
    }

    /// Removes every file in the spool for which `which` holds, but the lock.
    fn clear(&self, which: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != LOCK && which(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes every spooled file that is not in `keep` (and stale temporary files).
    fn prune(&self, keep: &[String]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == LOCK || name == WANTED || name.starts_with(&format!("{WANTED}.")) {
                continue;
            }
            if name.ends_with(FETCHING) || name.ends_with(TEMP) {
                // In flight: the worker writing it removes it.
                continue;
            }
            if !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The `depth` segments after `name` on its timeline, for segments of `seg_size` bytes.
pub fn successors(name: &str, seg_size: u64, depth: usize) -> Vec<String> {
    let segs_per_id = (0x1_0000_0000u64 / seg_size.max(1)).max(1);
    let Some((tli, segno)) = parse_segment(name, segs_per_id) else {
        return Vec::new();
    };
    (1..=depth as u64)
        .filter_map(|i| Some(segment_name((tli, segno.checked_add(i)?), segs_per_id)))
        .collect()
}

/// What a prefetcher did before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prefetched {
    /// Files downloaded into the spool.
    pub files: usize,
    /// Files that failed (wal-fetch fetched them itself).
    pub failed: usize,
    /// Answers "not in the repository" (the end of the archive): at most one per file
    /// recovery asked for.
    pub missing: usize,
}

/// Runs a prefetcher on `spool` until recovery stops asking for `idle` ([`IDLE`]): keeps the
/// `depth` segments after the one asked for last in the spool, downloading `workers` at a
/// time, and stops looking past a segment the repository does not have (the end of the
/// archive) until the window moves. Returns at once when another prefetcher holds the
/// spool. Removes what it leaves in the spool when it stops.
pub async fn run(
    repo: &Repo,
    spool: &Spool,
    depth: usize,
    workers: usize,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<Prefetched, Error> {
    let Some(_lock) = spool.try_lock()? else {
        return Ok(Prefetched::default());
    };
    // Markers and temporary files a killed prefetcher left behind.
    spool.clear(|name| name.ends_with(FETCHING) || name.ends_with(TEMP));
    let mut done = Prefetched::default();
    let mut last_wanted: Option<String> = None;
    // The first segment the repository did not have, and the request that was current
    // then: until recovery asks for another file, nothing at or after it is asked for.
    let mut end: Option<(String, String)> = None;
    let mut idle_since = tokio::time::Instant::now();
    // Bounded by `idle`: the clock restarts only when recovery asks for another file, and
    // every pass that fetched nothing new sleeps.
    while !stop.is_cancelled() && idle_since.elapsed() < idle {
        let Some((name, seg_size)) = spool.wanted() else {
            pause(stop, POLL).await;
            continue;
        };
        if last_wanted.as_deref() != Some(name.as_str()) {
            last_wanted = Some(name.clone());
            idle_since = tokio::time::Instant::now();
        }
        let window = successors(&name, seg_size, depth);
        spool.prune(&window);
        // Recovery got past the end found earlier: the archive has grown.
        if end.as_ref().is_some_and(|(m, _)| *m <= name) {
            end = None;
        }
        // Nothing after the end is asked for; the end itself once more after each new ask
        // (it may have been archived since), not at every pass.
        let todo: Vec<String> = window
            .iter()
            .take_while(|n| match &end {
                Some((m, at)) if *at == name => *n < m,
                Some((m, _)) => *n <= m,
                None => true,
            })
            .filter(|n| !spool.dir.join(n).exists())
            .cloned()
            .collect();
        if todo.is_empty() {
            pause(stop, POLL).await;
            continue;
        }
        let results: Vec<(String, Result<bool, Error>)> = futures_util::stream::iter(todo)
            .map(|n| async move {
                let r = fetch_into(repo, spool, &n, stop).await;
                (n, r)
            })
            .buffered(workers.max(1))
            .collect()
            .await;
        let (mut fetched, mut missing, mut failed) = (false, None::<String>, false);
        for (n, r) in results {
            match r {
                Ok(true) => {
                    done.files += 1;
                    fetched = true;
                }
                Ok(false) => {
                    done.missing += 1;
                    if missing.as_ref().is_none_or(|m| n < *m) {
                        missing = Some(n);
                    }
                }
                Err(e) => {
                    done.failed += 1;
                    failed = true;
                    tracing::debug!(event = "wal.prefetch.failed", wal = %n, error = %e, "prefetch failed; wal-fetch fetches it itself");
                }
            }
        }
        if let Some(m) = missing {
            end = Some((m, name.clone()));
        }
        if failed {
            // A repository that fails is asked again after a while, not in a loop.
            pause(stop, FAILED_PAUSE).await;
        } else if !fetched {
            pause(stop, POLL).await;
        }
    }
    // Nothing of it is needed once recovery stopped asking; a wal-fetch that comes later
    // fetches directly and starts a new prefetcher.
    let _ = std::fs::remove_dir_all(&spool.dir);
    Ok(done)
}

/// Sleeps `how_long`, or less when `stop` is cancelled.
async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(how_long) => {}
    }
}

/// Downloads `name` into the spool; false when the repository does not have it (or the
/// prefetcher was stopped: nothing is written after `stop`).
async fn fetch_into(
    repo: &Repo,
    spool: &Spool,
    name: &str,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    if stop.is_cancelled() {
        return Ok(false);
    }
    let marker = spool.dir.join(format!("{name}{FETCHING}"));
    std::fs::write(&marker, b"").map_err(io(format!("writing {}", marker.display())))?;
    let result = async {
        let fetched = tokio::select! {
            () = stop.cancelled() => return Ok(false),
            fetched = fetch_bytes(repo, name) => fetched?,
        };
        match fetched {
            Some(raw) if !stop.is_cancelled() => {
                write_atomically(&spool.dir.join(name), &raw).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    .await;
    let _ = std::fs::remove_file(&marker);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_cross_the_log_boundary_for_the_segment_size() {
        assert_eq!(
            successors("0000000100000000000000FE", 16 << 20, 3),
            [
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        // 64 MiB segments: 64 per 4 GiB.
        assert_eq!(
            successors("00000002000000000000003F", 64 << 20, 1),
            ["000000020000000100000000"]
        );
        assert!(successors("00000002.history", 16 << 20, 3).is_empty());
    }

    #[test]
    fn the_default_spool_is_beside_the_destination() {
        assert_eq!(
            default_dir(Path::new("pg_wal/RECOVERYXLOG")),
            Path::new("pg_wal/pgvigil-prefetch")
        );
        assert_eq!(
            default_dir(Path::new("RECOVERYXLOG")),
            Path::new("./pgvigil-prefetch")
        );
    }

    #[tokio::test]
    async fn a_spooled_file_is_taken_once_and_the_rest_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let seg = "000000010000000000000003";
        std::fs::write(spool.dir().join(seg), b"wal").unwrap();
        std::fs::write(spool.dir().join("000000010000000000000009"), b"old").unwrap();
        spool.want("000000010000000000000002", 16 << 20).unwrap();
        assert_eq!(
            spool.wanted(),
            Some(("000000010000000000000002".into(), 16 << 20))
        );
        spool.prune(&successors("000000010000000000000002", 16 << 20, 2));
        assert!(!spool.dir().join("000000010000000000000009").exists());
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(spool.take(seg, &dest).await.unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"wal");
        assert!(!spool.take(seg, &dest).await.unwrap(), "taken once");
        assert!(!spool.running());
    }

    /// A repository holding segments 2 and 3 of timeline 1 (1 MiB segments, compressed
    /// as wal-push stores them, with their checksums).
    async fn repo_with_two_segments(dir: &Path) -> Repo {
        let repo = Repo {
            store: std::sync::Arc::new(crate::store::local::LocalStore::new(dir.join("repo"))),
            cluster: "c".into(),
        };
        for seg in ["000000010000000000000002", "000000010000000000000003"] {
            let file = dir.join(seg);
            let mut raw = vec![0u8; 1 << 20];
            // A long page header, so that the push can bind the repository.
            raw[2] = 0x02;
            raw[24..32].copy_from_slice(&7u64.to_le_bytes());
            std::fs::write(&file, &raw).unwrap();
            super::super::wal::push(&repo, &file, 1, &Default::default())
                .await
                .unwrap();
        }
        repo
    }

    #[tokio::test]
    async fn the_prefetcher_stops_at_the_end_of_the_archive_and_when_recovery_stops_asking() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with_two_segments(dir.path()).await;
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spool.want("000000010000000000000001", 1 << 20).unwrap();
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let prefetcher = {
            let (repo, spool, stop) = (repo.clone(), spool.clone(), stop.clone());
            tokio::spawn(
                async move { run(&repo, &spool, 4, 2, Duration::from_secs(1), &stop).await },
            )
        };
        // 2 and 3 arrive; 4 is not in the repository.
        let mut waited = 0;
        let both = || {
            ["000000010000000000000002", "000000010000000000000003"]
                .iter()
                .all(|s| spool.dir().join(s).exists())
        };
        while !both() && waited < 3000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(both(), "2 and 3 are spooled");
        // Recovery moves on to 3, then to 4, which the archive does not have: the
        // prefetcher must neither spin on 4 nor live on; it stops `idle` after the last ask.
        let dest = dir.path().join("RECOVERYXLOG");
        for seg in ["000000010000000000000002", "000000010000000000000003"] {
            assert!(spool.take(seg, &dest).await.unwrap(), "{seg} spooled");
            spool.want(seg, 1 << 20).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        spool.want("000000010000000000000004", 1 << 20).unwrap();
        let done = tokio::time::timeout(Duration::from_secs(10), prefetcher)
            .await
            .expect("the prefetcher stops on its own")
            .unwrap()
            .unwrap();
        // "Not in the repository": 4 and 5 while recovery was at 1 (the window fetched at
        // once), 4 again once for each of the asks for 2 and 3, then 5..8 when it asks for 4
        // (which it got: the archive may have grown): 8. A prefetcher that spins asks
        // hundreds of times.
        assert_eq!(
            done,
            Prefetched {
                files: 2,
                failed: 0,
                missing: 8
            }
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!spool.dir().exists(), "the spool is removed");
    }
}
