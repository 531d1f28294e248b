//! The local-directory backend (`file:///path`). A put writes a temp file in the target
//! directory and renames it into place (no-overwrite puts use `link`, which fails if the
//! name exists), so readers never see a partial object. Metadata lives in a hidden
//! sidecar file `.<name>.meta.json` next to the object, which listings skip.
//!
//! Durability: a put returns only after the object's data, its metadata and the directory
//! entry naming them are on disk (fsync of the file, then of the directory after the rename
//! or link), so `wal-push` exiting 0 means the segment survives a power loss. A
//! no-overwrite put writes its metadata to a temp file first and publishes it only after
//! its link won: a losing writer with other content never replaces the winner's checksum,
//! and a full disk fails the put before anything is visible. Readers treat missing
//! metadata as unknown (they hash the content instead), so the instant between link and
//! metadata is harmless.
//!
//! Compare-and-swap (`put_versioned`) runs under an exclusive `flock` on a hidden lock file
//! beside the object (`.<name>.lock`), and a pin (`pin`) holds a shared one: so a lease
//! cannot change hands between a fenced writer's check and its write. The lock is taken
//! without blocking, retried for [`LOCK_PATIENCE`]: a holder stopped while writing makes
//! others wait and then fail as busy, never proceed. A version is the content's SHA-256.
//!
//! Disk full (ENOSPC, or a quota) is `Error::Full`, naming the directory and its free
//! space; the temp files of the failed write are removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Error, Metadata, ObjectMeta, ObjectStore, Pinned, Version};

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

/// How long a conditional write or a pin waits for an object's lock before it fails as
/// busy: a compare-and-swap holds it for a few milliseconds, so only a holder that is
/// stopped, or writing a large object under a pin, makes anyone wait this long.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// The version of an object with content `bytes`.
fn version_of(bytes: &[u8]) -> Version {
    hex::encode(Sha256::digest(bytes))
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key.trim_start_matches('/'))
    }

    /// A hidden file beside `path`: `.<name><suffix>`.
    fn beside(path: &Path, suffix: &str) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}{suffix}"))
    }

    fn meta_path(path: &Path) -> PathBuf {
        Self::beside(path, ".meta.json")
    }

    /// An I/O error of `op` on `key`; a full disk names the directory and its free space.
    fn io<'a>(
        &'a self,
        op: &'static str,
        key: &str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        let key = key.to_string();
        move |source| {
            if crate::disk::is_full(&source) {
                let dir = path.parent().unwrap_or(path);
                return Error::Full {
                    key,
                    store: self.describe(),
                    message: crate::disk::full_message(dir),
                };
            }
            Error::Io {
                op,
                key,
                store: self.describe(),
                source,
            }
        }
    }

    /// Writes the stream to a temp file next to `path`; returns the temp path and size.
    /// Nothing is left behind when it fails.
    async fn write_temp(
        &self,
        key: &str,
        path: &Path,
        mut body: ByteStream,
    ) -> Result<(PathBuf, u64), Error> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(self.io(
            "creating directory for",
            key,
            path,
        ))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                f.write_all(&chunk).await?;
            }
            f.sync_all().await?;
            Ok::<_, std::io::Error>(size)
        }
        .await;
        match result {
            Ok(size) => Ok((tmp, size)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(self.io("writing", key, path)(e))
            }
        }
    }

    /// Writes `meta` to a temp file beside `path`'s metadata sidecar; None when there is
    /// no metadata to write.
    async fn write_meta_temp(
        &self,
        key: &str,
        path: &Path,
        meta: &Metadata,
    ) -> Result<Option<PathBuf>, Error> {
        if meta.is_empty() {
            return Ok(None);
        }
        let text = Bytes::from(serde_json::to_vec(meta).unwrap_or_default());
        let stream: ByteStream =
            Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(text)]));
        let (tmp, _) = self.write_temp(key, &Self::meta_path(path), stream).await?;
        Ok(Some(tmp))
    }

    /// Puts the metadata temp file (if any) in place as `path`'s sidecar, or removes a
    /// stale sidecar when there is none.
    async fn publish_meta(
        &self,
        key: &str,
        path: &Path,
        tmp: Option<PathBuf>,
    ) -> Result<(), Error> {
        let mp = Self::meta_path(path);
        match tmp {
            None => {
                let _ = tokio::fs::remove_file(&mp).await;
                Ok(())
            }
            Some(tmp) => tokio::fs::rename(&tmp, &mp).await.map_err(self.io(
                "writing metadata of",
                key,
                path,
            )),
        }
    }

    /// Makes the names in `path`'s directory durable (after a rename or link into it).
    async fn sync_dir(&self, key: &str, path: &Path) -> Result<(), Error> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(self.io("syncing the directory of", key, path))
    }

    /// Takes `path`'s lock file (`.<name>.lock`), shared or exclusive, waiting at most
    /// [`LOCK_PATIENCE`]; released when the returned value drops.
    async fn lock(
        &self,
        key: &str,
        path: &Path,
        exclusive: bool,
    ) -> Result<Flock<std::fs::File>, Error> {
        let lock_path = Self::beside(path, ".lock");
        if let Some(dir) = lock_path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(self.io(
                "creating directory for",
                key,
                path,
            ))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(self.io("opening the lock file of", key, path))?;
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match Flock::lock(file, arg) {
                Ok(locked) => return Ok(locked),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Busy {
                            key: key.to_string(),
                            store: self.describe(),
                            message: format!(
                                "{} stayed locked for {LOCK_PATIENCE:?} (a holder is writing under it, or is stopped)",
                                lock_path.display()
                            ),
                        });
                    }
                    file = f;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((_, errno)) => {
                    return Err(self.io("locking", key, path)(std::io::Error::from(errno)))
                }
            }
        }
    }

    /// The content of `path`, None when it does not exist.
    async fn read_if_exists(&self, key: &str, path: &Path) -> Result<Option<Bytes>, Error> {
        match tokio::fs::read(path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("reading", key, path)(e)),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error> {
        let path = self.path(key);
        let (tmp, size) = self.write_temp(key, &path, body).await?;
        let placed = async {
            // Metadata first: an object that is visible always has its metadata.
            let meta_tmp = self.write_meta_temp(key, &path, &meta).await?;
            self.publish_meta(key, &path, meta_tmp).await?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(self.io("renaming into place", key, &path))
        }
        .await;
        if let Err(e) = placed {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.sync_dir(key, &path).await?;
        Ok(size)
    }

    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error> {
        let path = self.path(key);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(false);
        }
        let stream: ByteStream =
            Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]));
        let (tmp, _) = self.write_temp(key, &path, stream).await?;
        // The metadata is written before the link (a full disk fails here, with nothing
        // visible) and published after it (only by the writer whose link won).
        let meta_tmp = match self.write_meta_temp(key, &path, &meta).await {
            Ok(m) => m,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        // link() fails if the name exists: atomic no-overwrite, even against a racing writer.
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => {}
            Err(e) => {
                if let Some(m) = &meta_tmp {
                    let _ = tokio::fs::remove_file(m).await;
                }
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    return Ok(false);
                }
                return Err(self.io("linking into place", key, &path)(e));
            }
        }
        self.publish_meta(key, &path, meta_tmp).await?;
        self.sync_dir(key, &path).await?;
        Ok(true)
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error> {
        let path = self.path(key);
        Ok(self.read_if_exists(key, &path).await?.map(|b| {
            let v = version_of(&b);
            (b, v)
        }))
    }

    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error> {
        let path = self.path(key);
        let _lock = self.lock(key, &path, true).await?;
        let current = self.read_if_exists(key, &path).await?;
        let new_version = version_of(&bytes);
        match (&current, expected) {
            (Some(cur), _) if *cur == bytes => return Ok(Some(new_version)),
            (Some(cur), Some(exp)) if version_of(cur) == exp => {}
            (None, None) => {}
            _ => return Ok(None),
        }
        let stream: ByteStream =
            Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]));
        let (tmp, _) = self.write_temp(key, &path, stream).await?;
        let placed = if current.is_none() {
            // Not over anything: link, so that a writer not taking the lock (put_if_absent)
            // is not overwritten either.
            let r = tokio::fs::hard_link(&tmp, &path).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
                other => other,
            }
        } else {
            let r = tokio::fs::rename(&tmp, &path).await;
            if r.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            r
        };
        placed.map_err(self.io("writing", key, &path))?;
        self.sync_dir(key, &path).await?;
        Ok(Some(new_version))
    }

    async fn pin(&self, key: &str) -> Result<Option<Pinned>, Error> {
        let path = self.path(key);
        let lock = self.lock(key, &path, false).await?;
        Ok(Some(Box::new(lock)))
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        let path = self.path(key);
        let f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    key: key.into(),
                    store: self.describe(),
                })
            }
            Err(e) => return Err(self.io("opening", key, &path)(e)),
        };
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            f,
            256 * 1024,
        )))
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error> {
        let path = self.path(key);
        let md = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("inspecting", key, &path)(e)),
        };
        let meta: Metadata = match tokio::fs::read(Self::meta_path(&path)).await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Metadata::new(),
        };
        Ok(Some((
            ObjectMeta {
                key: key.into(),
                size: md.len(),
                last_modified: md.modified().ok(),
            },
            meta,
        )))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        let prefix = prefix.trim_start_matches('/');
        // Walk from the deepest directory the prefix names.
        let start_dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let root = self.root.clone();
        let mut out = Vec::new();
        let mut stack = vec![start_dir];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("listing", prefix, &root)(e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(self.io("listing", prefix, &root))?
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temp files and metadata sidecars
                }
                let path = entry.path();
                let ft = entry
                    .file_type()
                    .await
                    .map_err(self.io("listing", prefix, &root))?;
                let rel = path
                    .strip_prefix(&self.root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if ft.is_dir() {
                    if prefix.starts_with(&format!("{rel}/"))
                        || rel.starts_with(prefix)
                        || prefix.is_empty()
                    {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    let md = entry
                        .metadata()
                        .await
                        .map_err(self.io("listing", prefix, &root))?;
                    out.push(ObjectMeta {
                        key: rel,
                        size: md.len(),
                        last_modified: md.modified().ok(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key);
        let _ = tokio::fs::remove_file(Self::meta_path(&path)).await;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("deleting", key, &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: Vec<Result<Bytes, std::io::Error>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(parts))
    }

    #[tokio::test]
    async fn a_losing_no_overwrite_put_leaves_the_winners_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf());
        let key = "c/wal/000000010000000000000003.zst";
        let sha = |v: &str| -> Metadata { [("sha256".to_string(), v.to_string())].into() };
        assert!(s
            .put_if_absent(key, Bytes::from("first"), sha("aaa"))
            .await
            .unwrap());
        // Another writer with other content loses the race: nothing of it may remain.
        assert!(!s
            .put_if_absent(key, Bytes::from("second"), sha("bbb"))
            .await
            .unwrap());
        let (m, md) = s.head(key).await.unwrap().unwrap();
        assert_eq!((m.size, md), (5, sha("aaa")));
        assert_eq!(s.get_bytes(key).await.unwrap(), Bytes::from("first"));
        // No temp files left behind (they would be listed as hidden files in the directory).
        let names: Vec<String> = std::fs::read_dir(dir.path().join("c/wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(TMP_PREFIX)),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn put_get_list_head_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf());
        let meta: Metadata = [("sha256".to_string(), "abc".to_string())].into();
        let n = s
            .put_stream(
                "c/wal/0001.zst",
                stream(vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cd"))]),
                meta.clone(),
            )
            .await
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            s.get_bytes("c/wal/0001.zst").await.unwrap(),
            Bytes::from("abcd")
        );
        let (m, md) = s.head("c/wal/0001.zst").await.unwrap().unwrap();
        assert_eq!((m.size, md), (4, meta));
        s.put_bytes(
            "c/backups/b1/backup.json",
            Bytes::from("{}"),
            Metadata::new(),
        )
        .await
        .unwrap();
        let keys: Vec<String> = s
            .list("c/wal/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["c/wal/0001.zst"]);
        assert_eq!(s.list("c/").await.unwrap().len(), 2);
        assert!(!s
            .put_if_absent("c/wal/0001.zst", Bytes::from("zz"), Metadata::new())
            .await
            .unwrap());
        assert_eq!(
            s.get_bytes("c/wal/0001.zst").await.unwrap(),
            Bytes::from("abcd")
        );
        assert!(s
            .put_if_absent("c/wal/0002.zst", Bytes::from("zz"), Metadata::new())
            .await
            .unwrap());
        s.delete("c/wal/0001.zst").await.unwrap();
        assert!(s.head("c/wal/0001.zst").await.unwrap().is_none());
        assert!(s
            .get_stream("c/wal/0001.zst")
            .await
            .err()
            .is_some_and(|e| e.is_not_found()));
    }

    #[tokio::test]
    async fn a_failed_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf());
        let body = stream(vec![
            Ok(Bytes::from("partial")),
            Err(std::io::Error::other("child died")),
        ]);
        assert!(s
            .put_stream("c/backups/b/base.tar.zst", body, Metadata::new())
            .await
            .is_err());
        assert!(s.list("c/").await.unwrap().is_empty());
        // Not even a temp file in the directory.
        let mut rd = std::fs::read_dir(dir.path().join("c/backups/b")).unwrap();
        assert!(rd.next().is_none());
    }
}
