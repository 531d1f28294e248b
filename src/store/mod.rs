//! The backup repository: an `ObjectStore` trait with a local-directory backend
//! (`file://`, the default) and an S3 backend (`s3://bucket/prefix`; `s3/` is the only
//! module that touches AWS SDK types). Stores are opened from a parsed
//! [`StoreSpec`](crate::config::StoreSpec), never from a URL string: [`open`] for one
//! spec, [`Repo::open`] / [`Repo::open_guarded`] for the primary or off-site repository of
//! the configuration ([`Which`]). Keys are relative to the repository root (the URL's
//! path, then `storage.cluster`); every key name is built in `layout.rs`.
//!
//! Data flows one way: this module reads configuration values (`StoreSpec`, `Residency`,
//! `S3Settings`, `LockMode`); config never imports it.
//!
//! Invariants every backend keeps:
//! - a streamed put becomes visible only when complete (local: temp file + rename; S3:
//!   multipart completion) and leaves nothing behind when the stream fails;
//! - memory stays bounded: bodies stream in parts (`parts.rs`), never whole;
//! - `put_if_absent` never overwrites an existing object.
//! - `put_versioned` is a compare-and-swap that cannot lose an update: it writes only over
//!   the version it was given (S3: `If-Match` / `If-None-Match: *`; local: under an
//!   exclusive lock on the object's lock file), and a retried request whose first attempt
//!   landed finds its own bytes and succeeds.
//! - every store opened with [`open`] checks residency before its first write
//!   (`residency.rs`); with Object Lock, backup and WAL objects are written locked.
//! - a job's writes go through [`fence::Fenced`], which refuses every write and delete once
//!   the job's [`lease::Lease`] is no longer held (`lease.rs`).

pub mod fence;
pub mod layout;
pub mod lease;
pub mod local;
pub mod parts;
pub mod residency;
pub mod s3;
pub mod sealed;

pub use crate::config::LockMode;
pub use layout::is_protected;
pub use residency::{BucketFacts, Guarded, Residency, Verdict};

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use crate::config::{Settings, StoreSpec};

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// User metadata stored with an object (e.g. the SHA-256 of a WAL segment's raw content),
/// readable by `head` and `list` without downloading the object.
pub type Metadata = BTreeMap<String, String>;

/// A version of an object, for compare-and-swap: S3's ETag, the local store's content hash.
pub type Version = String;

/// What keeps a fenced write's permission valid until the write has taken effect (the
/// local store's shared lock on the lease); dropped after the write. See
/// [`ObjectStore::pin`].
pub type Pinned = Box<dyn std::any::Any + Send + Sync>;

/// What a listing or head returns about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the repository root.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// Errors of any backend; every variant names the object or operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {key} in {store}: {source}")]
    Io {
        op: &'static str,
        key: String,
        store: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} not found in {store}")]
    NotFound { key: String, store: String },
    #[error("{op} {key} in {store}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        store: String,
        message: String,
    },
    #[error("storage.url {url:?}: {message}")]
    Url { url: String, message: String },
    /// A write refused by the residency (or Object Lock) check.
    #[error("writing {key} to {store}: {message}")]
    Refused {
        key: String,
        store: String,
        message: String,
    },
    /// A repository that the configuration does not have.
    #[error("no {which} repository is configured; set [offsite] url")]
    NotConfigured { which: &'static str },
    /// A sealed (encrypted) object that cannot be opened, or a plain one where only
    /// sealed ones are accepted.
    #[error("{key} in {store} {message}")]
    Sealed {
        key: String,
        store: String,
        message: String,
    },
    /// An encryption key that cannot be loaded (the message names the configuration key).
    #[error("{0}")]
    Key(String),
    /// A write that found the local disk full (ENOSPC, or the user's quota); the message
    /// names the path and its free space. Nothing of the write is left behind.
    #[error(
        "writing {key} to {store}: {message}; nothing of it was kept: free space and run again"
    )]
    Full {
        key: String,
        store: String,
        message: String,
    },
    /// A conditional write or a pin that could not get its turn within its patience
    /// (another writer holds the object's lock).
    #[error("{key} in {store} is busy: {message}")]
    Busy {
        key: String,
        store: String,
        message: String,
    },
    /// A job's lease that another holder has (the job is not this process's to run now).
    #[error("{message}")]
    Held { key: String, message: String },
    /// A write or delete refused because the lease it was made under is no longer held
    /// (a paused or partitioned holder that woke up after another took over).
    #[error("writing {key} to {store} refused: {message}")]
    Fenced {
        key: String,
        store: String,
        message: String,
    },
    /// A delete refused because the object's Object Lock retention has not passed.
    #[error("{key} in {store} is locked until {until}")]
    Locked {
        key: String,
        store: String,
        until: String,
    },
}

impl Error {
    /// Whether this is a missing object (as opposed to a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// A repository backend.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Where this store is, without credentials (for messages and labels).
    fn describe(&self) -> String;

    /// Streams `body` into `key`, replacing any existing object. Visible only once
    /// complete; on a stream error nothing is left. Returns the stored size.
    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error>;

    /// Writes `bytes` to `key` unless it already exists; returns false (and writes
    /// nothing) if it does.
    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error>;

    /// Writes small `bytes` to `key`, replacing any existing object.
    async fn put_bytes(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<(), Error> {
        let stream: ByteStream =
            Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]));
        self.put_stream(key, stream, meta).await.map(|_| ())
    }

    /// Streams an object's content.
    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error>;

    /// Reads a small object whole.
    async fn get_bytes(&self, key: &str) -> Result<Bytes, Error> {
        use futures_util::TryStreamExt;
        let mut s = self.get_stream(key).await?;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = s.try_next().await.map_err(|source| Error::Io {
            op: "reading",
            key: key.to_string(),
            store: self.describe(),
            source,
        })? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Reads a small object whole with its version; None when it does not exist.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error>;

    /// Writes small `bytes` to `key` only if the object is still at version `expected`
    /// (None: only if it does not exist), atomically against every other conditional
    /// writer. Returns the new version, or None when the condition did not hold (nothing
    /// was written). A retried request whose first attempt landed (the answer was lost)
    /// finds exactly its own bytes there and succeeds.
    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error>;

    /// Keeps `key` from changing through `put_versioned` until the returned pin is
    /// dropped, for a write whose permission depends on it (a fenced write checks its
    /// lease, then writes). None when the store cannot hold an object still (S3 has no
    /// locks: there the check and the write are two requests).
    async fn pin(&self, _key: &str) -> Result<Option<Pinned>, Error> {
        Ok(None)
    }

    /// Whether the times this store stamps on objects come from a clock of its own (the
    /// S3 service's), independent of this host's; a local directory's come from the same
    /// kernel clock as `now`.
    fn has_own_clock(&self) -> bool {
        false
    }

    /// Size, time and metadata of an object, or None if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error>;

    /// Deletes an object; deleting a missing object is not an error. In a store written
    /// with Object Lock every version is deleted, and an object whose retention has not
    /// passed yields `Error::Locked`.
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Deletes several objects (missing ones are not an error); returns the keys that
    /// could not be deleted, with why. Backends with a batch API override this.
    async fn delete_many(&self, keys: &[String]) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for key in keys {
            if let Err(e) = self.delete(key).await {
                failed.push((key.clone(), e));
            }
        }
        failed
    }

    /// Where the bucket is and what it is configured with (asked of the service, never
    /// taken from the configuration); None for a backend without regions (a local
    /// directory). `object_lock` asks whether the bucket has Object Lock enabled.
    async fn bucket_facts(&self, _object_lock: bool) -> Result<Option<BucketFacts>, Error> {
        Ok(None)
    }

    /// The Object Lock mode this store writes backup and WAL objects with, if any.
    fn object_lock_mode(&self) -> Option<LockMode> {
        None
    }

    /// When the Object Lock retention of `key` ends (None: not locked, or a store without
    /// Object Lock).
    async fn lock_until(&self, _key: &str) -> Result<Option<SystemTime>, Error> {
        Ok(None)
    }

    /// Renews the Object Lock of `key` (written at `written`) to `now` + the configured
    /// retention when its lock ends within a day of `now`: for objects retention keeps longer
    /// than planned (the last backup when no new ones come, `min_backups`). Returns whether it
    /// renewed; stores without Object Lock never do.
    async fn extend_lock(
        &self,
        _key: &str,
        _written: std::time::SystemTime,
        _now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        Ok(false)
    }

    /// Copies `source_key` of `source` to `key` without the data passing through pgvigil,
    /// when both are on one service; `Ok(false)` when that is not possible (the caller
    /// then streams the object).
    async fn copy_from(
        &self,
        _source: &dyn ObjectStore,
        _source_key: &str,
        _key: &str,
    ) -> Result<bool, Error> {
        Ok(false)
    }

    /// Whether an object's recorded content checksum (`sha256` metadata, or its keyed
    /// form in a sealed repository) is that of content whose SHA-256 is `sha256_hex`; None
    /// when the metadata records none this store can judge (then read the object).
    fn digest_matches(&self, meta: &Metadata, sha256_hex: &str) -> Option<bool> {
        meta.get("sha256").map(|v| v == sha256_hex)
    }

    /// The store under client-side encryption, which reads and writes objects as they
    /// are stored (ciphertext); None for a store that does not seal.
    fn unsealed(&self) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    /// The concrete backend, for [`ObjectStore::copy_from`].
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A repository: a backend plus the cluster directory inside it.
#[derive(Debug, Clone)]
pub struct Repo {
    pub store: Arc<dyn ObjectStore>,
    /// `storage.cluster`: the top-level directory for this cluster's objects.
    pub cluster: String,
}

/// Which of the configured repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    /// `[storage]`: where backups and WAL are written.
    Primary,
    /// `[offsite]`: the second repository the off-site copy goes to.
    Offsite,
}

impl Which {
    /// The `store` metric label value: `primary` or `offsite`.
    pub const fn label(self) -> &'static str {
        match self {
            Which::Primary => "primary",
            Which::Offsite => "offsite",
        }
    }
}

impl Repo {
    /// The store as objects are stored: ciphertext in a repository with
    /// `[storage.encryption]` (for copying objects without opening them).
    pub fn raw(&self) -> Arc<dyn ObjectStore> {
        self.store.unsealed().unwrap_or_else(|| self.store.clone())
    }

    /// The key of `path` inside this cluster's directory.
    pub fn key(&self, path: &str) -> String {
        format!("{}/{}", self.cluster, path.trim_start_matches('/'))
    }

    /// Opens repository `which` of `settings`, guarded by the residency policy.
    /// `Error::NotConfigured` for the off-site repository when `[offsite] url` is unset.
    pub async fn open(settings: &Settings, which: Which) -> Result<Repo, Error> {
        Ok(Self::open_guarded(settings, which).await?.0)
    }

    /// Like [`Repo::open`], and also returns the guard, for the daemon's periodic
    /// residency checks ([`Guarded::check`]); the repository writes through it.
    pub async fn open_guarded(
        settings: &Settings,
        which: Which,
    ) -> Result<(Repo, Arc<Guarded>), Error> {
        let spec = match which {
            Which::Primary => &settings.storage.store,
            Which::Offsite => match &settings.offsite {
                Some(o) => &o.store,
                None => {
                    return Err(Error::NotConfigured {
                        which: which.label(),
                    })
                }
            },
        };
        let guard = open(spec, &settings.storage.residency).await?;
        let ring = match &settings.storage.encryption {
            Some(e) => Some(sealed::Keyring::load(e)?),
            None => None,
        };
        let repo = Repo {
            store: Arc::new(sealed::Sealed::new(guard.clone(), ring)),
            cluster: settings.storage.cluster.clone(),
        };
        Ok((repo, guard))
    }
}

/// A configured repository, opened: its `store` label, the repository and its residency
/// guard (for the periodic checks and `pgvigil status`).
#[derive(Debug, Clone)]
pub struct Opened {
    pub label: &'static str,
    pub repo: Repo,
    pub guard: Arc<Guarded>,
}

impl Repo {
    /// Opens every repository of `settings`: the primary one, then the off-site one when
    /// configured.
    pub async fn open_all(settings: &Settings) -> Result<Vec<Opened>, Error> {
        let mut which = vec![Which::Primary];
        if settings.offsite.is_some() {
            which.push(Which::Offsite);
        }
        let mut out = Vec::with_capacity(which.len());
        for w in which {
            let (repo, guard) = Self::open_guarded(settings, w).await?;
            out.push(Opened {
                label: w.label(),
                repo,
                guard,
            });
        }
        Ok(out)
    }
}

/// Opens the store at `spec`, guarded by `residency`: its first write checks where the
/// bucket really is.
pub async fn open(spec: &StoreSpec, residency: &Residency) -> Result<Arc<Guarded>, Error> {
    let backend: Arc<dyn ObjectStore> = match spec {
        StoreSpec::File(path) => Arc::new(local::LocalStore::new(path.clone())),
        StoreSpec::S3 { bucket, prefix, s3 } => {
            Arc::new(s3::S3Store::connect(bucket, prefix, s3).await?)
        }
    };
    Ok(Arc::new(Guarded::new(backend, residency.clone())))
}
