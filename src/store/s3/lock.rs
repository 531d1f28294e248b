//! S3 Object Lock for the S3 backend: the mode and retain-until date backup and WAL
//! objects are written with, renewing the lock of objects kept longer than planned, and
//! deleting every version of an object from a versioned (Object Lock) bucket, where a plain
//! DELETE would only hide it behind a delete marker.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime as SdkDateTime;
use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode};

use super::error::status;
use super::S3Store;
use crate::store::{is_protected, Error, LockMode, ObjectStore};

impl S3Store {
    /// The lock mode and retain-until date to write `key` with, if it is locked: backup
    /// and WAL objects, when Object Lock is configured. The date is now + the recovery
    /// window + one backup interval + a margin, computed by the configuration.
    pub(super) fn lock_for(&self, key: &str) -> Option<(ObjectLockMode, SdkDateTime)> {
        let lock = self.lock.filter(|_| is_protected(key))?;
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        let until = std::time::SystemTime::now() + lock.retain_for;
        Some((mode, SdkDateTime::from(until)))
    }

    /// Renews the lock of `key` (see `ObjectStore::extend_lock`).
    pub(super) async fn renew_lock(
        &self,
        key: &str,
        written: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        let Some(lock) = self.lock.filter(|_| is_protected(key)) else {
            return Ok(false);
        };
        // The lock a write gave it (a renewed one is renewed again a day before it ends:
        // at most one request per kept object and day, and only for the old ones).
        if written + lock.retain_for > now + Duration::from_secs(86_400) {
            return Ok(false);
        }
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(SdkDateTime::from(now + lock.retain_for))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.backend("renewing the Object Lock of", key, &e))?;
        Ok(true)
    }

    /// Every version id of `full_key` (objects and delete markers), for deleting an
    /// object from a versioned (Object Lock) bucket for good.
    async fn versions_of(&self, key: &str, full_key: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        // Bounded: one key has few versions; stop after 100 pages whatever the server says.
        for _ in 0..100 {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(full_key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.backend("listing versions of", key, &e))?;
            let versions = page
                .versions()
                .iter()
                .filter(|v| v.key() == Some(full_key))
                .filter_map(|v| v.version_id());
            let markers = page
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(full_key))
                .filter_map(|m| m.version_id());
            out.extend(versions.chain(markers).map(str::to_string));
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
        }
        Ok(out)
    }

    /// Deletes every version of `key`; a version still under retention is `Locked`.
    pub(super) async fn delete_versions(&self, key: &str) -> Result<(), Error> {
        let full_key = self.full_key(key);
        for version in self.versions_of(key, &full_key).await? {
            let deleted = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full_key)
                .version_id(&version)
                .send()
                .await;
            let Err(e) = deleted else { continue };
            if e.code() == Some("NoSuchVersion") || e.code() == Some("NoSuchKey") {
                continue;
            }
            if e.code() == Some("AccessDenied") || status(&e) == Some(403) {
                let until = self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&full_key)
                    .version_id(&version)
                    .send()
                    .await
                    .ok()
                    .and_then(|h| h.object_lock_retain_until_date().map(|d| d.to_string()));
                if let Some(until) = until {
                    return Err(Error::Locked {
                        key: key.to_string(),
                        store: self.describe(),
                        until,
                    });
                }
            }
            return Err(self.backend("deleting", key, &e));
        }
        Ok(())
    }
}
