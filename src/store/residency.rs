//! Data residency, enforced before writing: a store is asked where its bucket really is
//! (never the region in the configuration), and a store outside the policy refuses every
//! write. The policy fails closed: a location that cannot be determined is a refusal.
//!
//! The policy itself is configuration (`config::Residency`, plain data): `residency = "eu"`
//! allows the AWS regions in EU member states only, matched exactly (London `eu-west-2` and
//! Zurich `eu-central-2` start with `eu-` and are not in the EU); `allowed_regions`
//! replaces the list (other providers name their regions differently, e.g. `fsn1`);
//! `residency = "any"` turns the check off. This module asks the store and judges.
//!
//! [`Guarded`] wraps a backend: the first write of a process (and every write after a
//! failed check) runs the check, and the daemon re-checks periodically with
//! [`Guarded::check`]. Reads and deletes are never refused: they move no data out.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use super::{ByteStream, Error, Metadata, ObjectMeta, ObjectStore, Pinned, Version};
pub use crate::config::{Residency, EU_REGIONS};

/// Turns a `GetBucketLocation` answer into a region name: S3 answers an empty (or absent)
/// constraint for us-east-1 and the legacy `EU` for eu-west-1.
pub fn normalize_location(constraint: Option<&str>) -> String {
    match constraint.map(str::trim) {
        None | Some("") => "us-east-1".into(),
        Some("EU") => "eu-west-1".into(),
        Some(r) => r.to_string(),
    }
}

/// What a backend can tell about where its data lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketFacts {
    /// The bucket, for messages.
    pub bucket: String,
    /// From `GetBucketLocation`, normalized; None if the call failed.
    pub location: Option<String>,
    /// From `HeadBucket`'s `x-amz-bucket-region`; None if absent.
    pub head_region: Option<String>,
    /// Why the location could not be read, if it could not.
    pub location_error: Option<String>,
    /// Replication destinations: bucket and its region when it could be read.
    pub replication: Vec<(String, Option<String>)>,
    /// Why replication could not be read (not fatal: many policies deny it).
    pub replication_error: Option<String>,
    /// Whether the bucket has Object Lock enabled; None when not asked.
    pub object_lock_enabled: Option<bool>,
}

/// The result of a residency check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Writes are allowed.
    pub ok: bool,
    /// The region the data is in, when known.
    pub region: Option<String>,
    /// One line for humans: why it is allowed or refused.
    pub message: String,
    /// The store writes with Object Lock and the bucket supports it.
    pub object_lock: bool,
}

/// Judges a store's facts against the policy. `lock_wanted` is whether the configuration
/// asks for Object Lock (then a bucket without it is refused too).
pub fn judge(
    store: &str,
    facts: Option<&BucketFacts>,
    policy: &Residency,
    lock_wanted: bool,
) -> Verdict {
    let Some(f) = facts else {
        // A local directory has no region: the operator chose the disk.
        return Verdict {
            ok: true,
            region: None,
            message: format!("{store}: local directory, no region to check"),
            object_lock: false,
        };
    };
    let refuse = |region: Option<String>, message: String| Verdict {
        ok: false,
        region,
        message,
        object_lock: false,
    };
    let region = f.location.clone().or_else(|| f.head_region.clone());
    if let Residency::Regions { .. } = policy {
        let Some(region) = region.clone() else {
            return refuse(
                None,
                format!(
                    "cannot determine where bucket {} is ({}): refusing to write; allow \
                     s3:GetBucketLocation for pgvigil's credentials, or set storage.residency = \"any\"",
                    f.bucket,
                    f.location_error.as_deref().unwrap_or("no answer")
                ),
            );
        };
        // Both answers must be allowed: they can only differ on a misbehaving endpoint.
        for r in [f.location.as_deref(), f.head_region.as_deref()]
            .into_iter()
            .flatten()
        {
            if !policy.allows(r) {
                return refuse(
                    Some(r.to_string()),
                    format!(
                        "bucket {} is in {r}, outside {}: refusing to write",
                        f.bucket,
                        policy.describe()
                    ),
                );
            }
        }
        for (dest, dest_region) in &f.replication {
            if let Some(r) = dest_region {
                if !policy.allows(r) {
                    return refuse(
                        Some(region),
                        format!(
                            "bucket {} replicates to bucket {dest} in {r}, outside {}: refusing to write",
                            f.bucket,
                            policy.describe()
                        ),
                    );
                }
            }
        }
    }
    if lock_wanted && f.object_lock_enabled != Some(true) {
        return refuse(
            region,
            format!(
                "storage.s3.object_lock is set but bucket {} has no Object Lock enabled \
                 (it can only be enabled when the bucket is created, with versioning): refusing to write",
                f.bucket
            ),
        );
    }
    let mut message = match (&region, policy) {
        (Some(r), Residency::Any) => format!(
            "bucket {} is in {r}; residency check disabled (storage.residency = \"any\")",
            f.bucket
        ),
        (None, Residency::Any) => format!(
            "bucket {}: residency check disabled (storage.residency = \"any\")",
            f.bucket
        ),
        (Some(r), p) => format!("bucket {} is in {r}, allowed by {}", f.bucket, p.describe()),
        (None, _) => format!("bucket {}", f.bucket),
    };
    if !f.replication.is_empty() {
        let dests: Vec<String> = f
            .replication
            .iter()
            .map(|(b, r)| format!("{b} ({})", r.as_deref().unwrap_or("region unknown")))
            .collect();
        message.push_str(&format!("; replicates to {}", dests.join(", ")));
    }
    if lock_wanted {
        message.push_str("; Object Lock enabled");
    }
    Verdict {
        ok: true,
        region,
        message,
        object_lock: lock_wanted,
    }
}

/// A store that checks residency (and Object Lock, when asked for) before writing.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn ObjectStore>,
    policy: Residency,
    /// The last verdict; None until the first check.
    verdict: Mutex<Option<Verdict>>,
}

impl Guarded {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: Arc<dyn ObjectStore>, policy: Residency) -> Self {
        Self {
            inner,
            policy,
            verdict: Mutex::new(None),
        }
    }

    /// Asks the backend where it is now, judges it, and remembers the verdict. An error
    /// reading the facts is a refusal. The caller reports it (`events::residency_checked`);
    /// a refused write fails with the verdict's message.
    pub async fn check(&self) -> Verdict {
        let store = self.inner.describe();
        let lock_wanted = self.inner.object_lock_mode().is_some();
        let verdict = match self.inner.bucket_facts(lock_wanted).await {
            Ok(facts) => judge(&store, facts.as_ref(), &self.policy, lock_wanted),
            Err(e) => Verdict {
                ok: false,
                region: None,
                message: format!("cannot check where {store} is: {e}; refusing to write"),
                object_lock: false,
            },
        };
        *self.verdict.lock().await = Some(verdict.clone());
        verdict
    }

    /// The last verdict, if a check ran.
    pub async fn last_verdict(&self) -> Option<Verdict> {
        self.verdict.lock().await.clone()
    }

    /// Ok when writes are allowed: checks once per process, and again after a refusal.
    async fn ensure_writable(&self, key: &str) -> Result<(), Error> {
        let cached = self.verdict.lock().await.clone();
        let verdict = match cached {
            Some(v) if v.ok => v,
            _ => self.check().await,
        };
        if verdict.ok {
            Ok(())
        } else {
            Err(Error::Refused {
                key: key.to_string(),
                store: self.inner.describe(),
                message: verdict.message,
            })
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Guarded {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error> {
        self.ensure_writable(key).await?;
        self.inner.put_stream(key, body, meta).await
    }

    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error> {
        self.ensure_writable(key).await?;
        self.inner.put_if_absent(key, bytes, meta).await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<(), Error> {
        self.ensure_writable(key).await?;
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
        self.ensure_writable(key).await?;
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
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<(String, Error)> {
        self.inner.delete_many(keys).await
    }

    async fn bucket_facts(&self, lock: bool) -> Result<Option<BucketFacts>, Error> {
        self.inner.bucket_facts(lock).await
    }

    fn object_lock_mode(&self) -> Option<super::LockMode> {
        self.inner.object_lock_mode()
    }

    async fn lock_until(&self, key: &str) -> Result<Option<std::time::SystemTime>, Error> {
        self.inner.lock_until(key).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        written: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        self.inner.extend_lock(key, written, now).await
    }

    async fn copy_from(
        &self,
        source: &dyn ObjectStore,
        source_key: &str,
        key: &str,
    ) -> Result<bool, Error> {
        self.ensure_writable(key).await?;
        self.inner.copy_from(source, source_key, key).await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(location: Option<&str>) -> BucketFacts {
        BucketFacts {
            bucket: "b".into(),
            location: location.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn location_constraints_are_normalized() {
        assert_eq!(normalize_location(None), "us-east-1");
        assert_eq!(normalize_location(Some("")), "us-east-1");
        assert_eq!(normalize_location(Some("EU")), "eu-west-1");
        assert_eq!(normalize_location(Some("eu-central-1")), "eu-central-1");
        assert_eq!(normalize_location(Some("fsn1")), "fsn1");
    }

    #[test]
    fn eu_means_member_states_not_the_prefix() {
        let eu = Residency::eu();
        for r in EU_REGIONS {
            assert!(eu.allows(r), "{r}");
        }
        // London and Zurich start with eu- but are outside the EU.
        for r in [
            "eu-west-2",
            "eu-central-2",
            "us-east-1",
            "eu",
            "EU",
            "",
            "eu-central-1x",
        ] {
            assert!(!eu.allows(r), "{r}");
        }
        // Through the normalization S3 answers need: "" is us-east-1, "EU" is eu-west-1.
        assert!(!eu.allows(&normalize_location(Some(""))));
        assert!(eu.allows(&normalize_location(Some("EU"))));
    }

    #[test]
    fn judges_locations_and_fails_closed() {
        let eu = Residency::eu();
        assert!(judge("s3://b", Some(&facts(Some("eu-central-1"))), &eu, false).ok);
        let v = judge("s3://b", Some(&facts(Some("eu-west-2"))), &eu, false);
        assert!(!v.ok);
        assert!(
            v.message.contains("bucket b is in eu-west-2"),
            "{}",
            v.message
        );
        // Unknown location: refused.
        let v = judge("s3://b", Some(&facts(None)), &eu, false);
        assert!(
            !v.ok && v.message.contains("cannot determine"),
            "{}",
            v.message
        );
        // HeadBucket's answer counts too.
        let mut f = facts(Some("eu-central-1"));
        f.head_region = Some("us-east-1".into());
        assert!(!judge("s3://b", Some(&f), &eu, false).ok);
        // A replication destination outside the policy is refused; an unknown one is not.
        let mut f = facts(Some("eu-central-1"));
        f.replication = vec![("copy".into(), Some("us-west-2".into()))];
        let v = judge("s3://b", Some(&f), &eu, false);
        assert!(!v.ok && v.message.contains("replicates to bucket copy in us-west-2"));
        f.replication = vec![("copy".into(), None)];
        assert!(judge("s3://b", Some(&f), &eu, false).ok);
        // A local directory has no region.
        assert!(judge("file:///r", None, &eu, false).ok);
        // "any" allows everything, even an unknown location.
        assert!(
            judge(
                "s3://b",
                Some(&facts(Some("us-east-1"))),
                &Residency::Any,
                false
            )
            .ok
        );
        assert!(judge("s3://b", Some(&facts(None)), &Residency::Any, false).ok);
    }

    #[test]
    fn allowed_regions_replace_the_list() {
        let p = Residency::Regions {
            policy: "allowed_regions".into(),
            regions: vec!["fsn1".into()],
        };
        assert!(judge("s3://b", Some(&facts(Some("fsn1"))), &p, false).ok);
        assert!(!judge("s3://b", Some(&facts(Some("eu-central-1"))), &p, false).ok);
        assert!(p.describe().contains("allowed_regions [fsn1]"));
    }

    #[test]
    fn object_lock_wanted_needs_a_lock_enabled_bucket() {
        let eu = Residency::eu();
        let mut f = facts(Some("eu-central-1"));
        f.object_lock_enabled = Some(false);
        let v = judge("s3://b", Some(&f), &eu, true);
        assert!(
            !v.ok && v.message.contains("no Object Lock"),
            "{}",
            v.message
        );
        f.object_lock_enabled = Some(true);
        let v = judge("s3://b", Some(&f), &eu, true);
        assert!(v.ok && v.object_lock);
    }
}
