//! The fenced store: the store a job writes through while it holds its lease
//! ([`Lease::fence`]). Every write and delete is admitted by the lease first (it must still
//! name this holding; see `lease.rs`) and takes effect while the lease is pinned, so a
//! holder that lost its lease (stopped, paused, partitioned past its TTL) cannot delete or
//! overwrite anything when it wakes up: retention deletes, off-site copy writes, the
//! backup's objects and commit marker, drill evidence and job history all go through here.
//! Reads pass through unchecked. Enforced by wrapping, as residency is: a job is handed
//! only fenced repositories, so no writer can forget the check.

use std::sync::Arc;

use bytes::Bytes;

use super::lease::Lease;
use super::{
    BucketFacts, ByteStream, Error, LockMode, Metadata, ObjectMeta, ObjectStore, Pinned, Version,
};

/// A store whose writes are admitted by a lease.
#[derive(Debug)]
pub struct Fenced {
    inner: Arc<dyn ObjectStore>,
    lease: Lease,
}

impl Fenced {
    /// Wraps `inner` with `lease`.
    pub fn new(inner: Arc<dyn ObjectStore>, lease: Lease) -> Fenced {
        Fenced { inner, lease }
    }

    async fn admit(&self, key: &str) -> Result<Option<Pinned>, Error> {
        self.lease.admit(key, &self.inner.describe()).await
    }
}

#[async_trait::async_trait]
impl ObjectStore for Fenced {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error> {
        let _pin = self.admit(key).await?;
        self.inner.put_stream(key, body, meta).await
    }

    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error> {
        let _pin = self.admit(key).await?;
        self.inner.put_if_absent(key, bytes, meta).await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<(), Error> {
        let _pin = self.admit(key).await?;
        self.inner.put_bytes(key, bytes, meta).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error> {
        self.inner.get_versioned(key).await
    }

    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error> {
        let _pin = self.admit(key).await?;
        self.inner.put_versioned(key, bytes, expected).await
    }

    async fn pin(&self, key: &str) -> Result<Option<Pinned>, Error> {
        self.inner.pin(key).await
    }

    fn has_own_clock(&self) -> bool {
        self.inner.has_own_clock()
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        self.inner.get_stream(key).await
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, Error> {
        self.inner.get_bytes(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let _pin = self.admit(key).await?;
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<(String, Error)> {
        let Some(first) = keys.first() else {
            return Vec::new();
        };
        match self.admit(first).await {
            Ok(_pin) => self.inner.delete_many(keys).await,
            Err(e) => {
                // One refusal, named for every key (the caller reports the first).
                let message = e.to_string();
                keys.iter()
                    .map(|k| {
                        let refused = match &e {
                            Error::Fenced { store, .. } => Error::Fenced {
                                key: k.clone(),
                                store: store.clone(),
                                message: message.clone(),
                            },
                            _ => Error::Backend {
                                op: "deleting",
                                key: k.clone(),
                                store: self.describe(),
                                message: message.clone(),
                            },
                        };
                        (k.clone(), refused)
                    })
                    .collect()
            }
        }
    }

    async fn bucket_facts(&self, lock: bool) -> Result<Option<BucketFacts>, Error> {
        self.inner.bucket_facts(lock).await
    }

    fn object_lock_mode(&self) -> Option<LockMode> {
        self.inner.object_lock_mode()
    }

    async fn extend_lock(
        &self,
        key: &str,
        written: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        let _pin = self.admit(key).await?;
        self.inner.extend_lock(key, written, now).await
    }

    async fn copy_from(
        &self,
        source: &dyn ObjectStore,
        source_key: &str,
        key: &str,
    ) -> Result<bool, Error> {
        let _pin = self.admit(key).await?;
        self.inner.copy_from(source, source_key, key).await
    }

    fn digest_matches(&self, meta: &Metadata, sha256_hex: &str) -> Option<bool> {
        self.inner.digest_matches(meta, sha256_hex)
    }

    fn unsealed(&self) -> Option<Arc<dyn ObjectStore>> {
        let raw = self.inner.unsealed()?;
        Some(Arc::new(Fenced::new(raw, self.lease.clone())))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }
}
