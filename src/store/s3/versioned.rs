//! Conditional writes for the S3 backend: the compare-and-swap that leases and job history
//! rely on. `PutObject` with `If-None-Match: *` creates only where nothing is, and with
//! `If-Match: <ETag>` replaces only the version that was read (AWS S3 since November 2024;
//! moto, MinIO and Ceph RGW honour both). A `412 PreconditionFailed` means another writer
//! moved first; a `409 ConditionalRequestConflict` (a conflicting write in flight) is
//! retried. The SDK retries a request whose answer was lost (a dropped connection, a 5xx),
//! and the retry of a write that had landed fails its own precondition: so a failed
//! precondition is checked against what is stored, and exactly our bytes there is success.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;

use super::error::status;
use super::{S3Store, CONFLICT_RETRIES};
use crate::store::{Error, Version};

impl S3Store {
    /// `ObjectStore::get_versioned`: the body and its ETag.
    pub(super) async fn read_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(Bytes, Version)>, Error> {
        let Some(out) = self.fetch(key).await? else {
            return Ok(None);
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.failed("reading", key, e.to_string()))?
            .into_bytes();
        Ok(Some((body, etag)))
    }

    /// `ObjectStore::put_versioned`.
    pub(super) async fn write_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error> {
        let full_key = self.full_key(key);
        let mut attempt = 0;
        loop {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full_key)
                .body(SdkByteStream::from(bytes.clone()));
            req = match expected {
                Some(etag) => req.if_match(etag),
                None => req.if_none_match("*"),
            };
            let err = match req.send().await {
                Ok(out) => {
                    return match out.e_tag() {
                        Some(etag) => Ok(Some(etag.to_string())),
                        // A server that does not say: read the version back.
                        None => self.own_version(key, &bytes).await,
                    };
                }
                Err(e) => e,
            };
            match (err.code(), status(&err)) {
                // Someone moved first, or our own earlier attempt landed.
                (Some("PreconditionFailed"), _) | (_, Some(412)) => {
                    return self.own_version(key, &bytes).await
                }
                // If-Match on an object that is gone.
                (Some("NoSuchKey"), _) | (_, Some(404)) => return Ok(None),
                (Some("ConditionalRequestConflict"), _) | (_, Some(409))
                    if attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                _ => return Err(self.backend("writing", key, &err)),
            }
        }
    }

    /// The version of `key` if it holds exactly `bytes`, else None.
    async fn own_version(&self, key: &str, bytes: &Bytes) -> Result<Option<Version>, Error> {
        Ok(self
            .read_versioned(key)
            .await?
            .filter(|(stored, _)| stored == bytes)
            .map(|(_, etag)| etag))
    }
}
