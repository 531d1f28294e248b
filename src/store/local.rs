//! The local-directory backend (`file:///path`). A put writes a temp file in the target
//! directory and renames it into place (no-overwrite puts use `link`, which fails if the
//! name exists), so readers never see a partial object. Metadata lives in a hidden
//! sidecar file `.<name>.meta.json` next to the object, which listings skip.
//!
//! Durability: a put returns only after the object's data, its metadata and the directory
//! entry naming them are on disk (fsync of the file, then of the directory after the rename
//! or link), so `wal-push` exiting 0 means the segment survives a power loss. A
//! no-overwrite put publishes its metadata only after its link won: a losing writer with
//! other content never replaces the winner's checksum. Readers treat missing metadata as
//! unknown (they hash the content instead), so the instant between link and metadata is
//! harmless.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Error, Metadata, ObjectMeta, ObjectStore};

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key.trim_start_matches('/'))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}.meta.json"))
    }

    fn io(&self, op: &'static str, key: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let key = key.to_string();
        move |source| Error::Io {
            op,
            key,
            store: self.describe(),
            source,
        }
    }

    /// Writes the stream to a temp file next to `path`; returns the temp path and size.
    async fn write_temp(
        &self,
        key: &str,
        path: &Path,
        mut body: ByteStream,
    ) -> Result<(PathBuf, u64), Error> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(self.io("creating directory for", key))?;
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
                Err(self.io("writing", key)(e))
            }
        }
    }

    async fn write_meta(&self, key: &str, path: &Path, meta: &Metadata) -> Result<(), Error> {
        let mp = Self::meta_path(path);
        if meta.is_empty() {
            let _ = tokio::fs::remove_file(&mp).await;
            return Ok(());
        }
        let text = Bytes::from(serde_json::to_vec(meta).unwrap_or_default());
        let stream: ByteStream =
            Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(text)]));
        let (tmp, _) = self.write_temp(key, &mp, stream).await?;
        tokio::fs::rename(&tmp, &mp)
            .await
            .map_err(self.io("writing metadata of", key))
    }

    /// Makes the names in `path`'s directory durable (after a rename or link into it).
    async fn sync_dir(&self, key: &str, path: &Path) -> Result<(), Error> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(self.io("syncing the directory of", key))
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
        // Metadata first: an object that is visible always has its metadata.
        self.write_meta(key, &path, &meta).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(self.io("renaming into place", key))?;
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
        // link() fails if the name exists: atomic no-overwrite, even against a racing writer.
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(self.io("linking into place", key)(e)),
        }
        // Only the writer whose link won publishes metadata.
        self.write_meta(key, &path, &meta).await?;
        self.sync_dir(key, &path).await?;
        Ok(true)
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
            Err(e) => return Err(self.io("opening", key)(e)),
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
            Err(e) => return Err(self.io("inspecting", key)(e)),
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
        let mut out = Vec::new();
        let mut stack = vec![start_dir];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("listing", prefix)(e)),
            };
            while let Some(entry) = rd.next_entry().await.map_err(self.io("listing", prefix))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temp files and metadata sidecars
                }
                let path = entry.path();
                let ft = entry
                    .file_type()
                    .await
                    .map_err(self.io("listing", prefix))?;
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
                    let md = entry.metadata().await.map_err(self.io("listing", prefix))?;
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
            Err(e) => Err(self.io("deleting", key)(e)),
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
