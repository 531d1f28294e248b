//! The S3 backend (`s3://bucket/prefix`), for AWS S3 and S3-compatible stores (custom
//! endpoint, path-style addressing). This is the only module that touches AWS SDK types: the
//! client is built here once, and every SDK error is turned into a `store::Error` naming the
//! store and the key, with the service's error code and message (`NoSuchBucket: …`) rather
//! than the SDK's bare "service error". Keeping the SDK private means the rest of the crate
//! (and its tests) sees one `ObjectStore` trait whatever the backend.
//!
//! Object `key` lives at `<prefix>/<key>` in the bucket (no leading slash; with an empty
//! prefix, at `<key>`). Invariants, as for every backend:
//! - `put_stream` buffers at most two parts (one uploading, one filling: 2 × 16 MiB) and
//!   makes the object visible only by completing the multipart upload; on any stream or
//!   request error, and when the put is cancelled, the upload is aborted so nothing is left
//!   (a bucket lifecycle rule `AbortIncompleteMultipartUpload` is still a good backstop
//!   against a killed process).
//! - `put_if_absent` never overwrites: `PutObject` with `If-None-Match: *`.
//!
//! Request checksums are calculated and response checksums validated only "when required"
//! by the operation: since 2025 the SDK defaults to adding CRC32 trailers (aws-chunked
//! uploads) to every request, which many S3-compatible servers (older MinIO, Ceph RGW, most
//! hosted S3 clones) reject or mishandle. Integrity is checked end to end anyway: the
//! repository records the SHA-256 of every object it writes.
//!
//! This file holds the client setup and the `ObjectStore` impl; `multipart.rs` the
//! multipart upload (parts cut by the backend-neutral `store::parts`), `lock.rs` Object
//! Lock (lock dates, renewal, deleting every version), `versioned.rs` the conditional
//! writes of leases and job history, and `error.rs` the SDK error mapping.

mod error;
mod lock;
mod multipart;
mod versioned;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, Delete, MetadataDirective, ObjectIdentifier, ObjectLockEnabled,
};
use aws_sdk_s3::Client;

use self::error::{sdk_message, status};
use super::parts::PartReader;
use super::residency::{normalize_location, BucketFacts};
use super::{ByteStream, Error, LockMode, Metadata, ObjectMeta, ObjectStore, Version};
use crate::config::{ObjectLockSettings, S3Settings};

/// The largest object one `CopyObject` may copy (5 GiB); larger ones are streamed.
const MAX_COPY_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Size of every multipart part but the last. S3 allows at most 10,000 parts per upload,
/// so one object can hold up to 10,000 × 16 MiB = 156 GiB (about 168 GB); a larger stream
/// fails with an error saying so (a bigger part size would lift the limit at the cost of
/// memory). Memory use is at most two parts plus one body chunk.
pub const PART_SIZE: usize = 16 * 1024 * 1024;

/// How often `put_if_absent` retries a `409 ConditionalRequestConflict` (a conflicting
/// write of the same key in progress; AWS says to retry, and the retry sees either no object
/// or `412 PreconditionFailed`).
const CONFLICT_RETRIES: u32 = 4;

/// Explicit credentials for [`S3Store::connect_with`], replacing the standard chain. Used
/// by tests (which may not set process environment variables) and by anything that must
/// pass keys explicitly. The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// A repository in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// No leading or trailing slash; may be empty.
    prefix: String,
    /// The custom endpoint, if any (server-side copies need both stores on one service).
    endpoint: Option<String>,
    /// Object Lock for backup and WAL objects (`storage.s3.object_lock`).
    lock: Option<ObjectLockSettings>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The SDK's HTTPS client trusting the system roots and the certificates in `path` (the
/// credential chain's own requests, e.g. STS for IRSA, go through it too, so the system
/// roots stay).
fn https_client_trusting(
    path: &std::path::Path,
) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls;
    // Checked as every CA file is (the SDK itself would skip what it cannot parse).
    crate::trust::roots_from_file(path, "storage.s3.ca_file").map_err(|e| e.to_string())?;
    let pem =
        std::fs::read(path).map_err(|e| format!("storage.s3.ca_file {}: {e}", path.display()))?;
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| format!("storage.s3.ca_file {}: {e}", path.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// A plaintext endpoint off loopback sends the repository's content, and request
/// signatures anyone on the path can replay within their validity, unencrypted.
fn warn_if_plaintext(endpoint: Option<&str>) {
    let Some(rest) = endpoint.and_then(|e| e.strip_prefix("http://")) else {
        return;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        tracing::warn!(
            event = "storage.plaintext",
            endpoint = %endpoint.unwrap_or_default(),
            "storage.s3.endpoint is plain http:// and not on loopback: backups, WAL and request signatures cross the network unencrypted; use https:// (with storage.s3.ca_file for a private CA)"
        );
    }
}

impl S3Store {
    /// HeadObject of `key`; None when it does not exist. A HEAD response has no body, so a
    /// missing bucket is a plain 404 too: this alone cannot tell it from a missing object
    /// (any write or listing names it).
    async fn head_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, Error> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_not_found())
                    || status(&e) == Some(404) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.backend("inspecting", key, &e)),
        }
    }

    /// Builds the client from the standard AWS credential chain (environment, profile,
    /// web identity / IRSA, ECS, IMDS) and `[storage.s3]`. Credentials are resolved lazily,
    /// on the first request; the region must be known now (`storage.s3.region`, or
    /// `AWS_REGION`, the profile, IMDS).
    pub async fn connect(bucket: &str, prefix: &str, settings: &S3Settings) -> Result<Self, Error> {
        Self::connect_with(bucket, prefix, settings, None).await
    }

    /// Like [`S3Store::connect`], but with explicit credentials instead of the chain when
    /// `credentials` is `Some`.
    pub async fn connect_with(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        credentials: Option<StaticCredentials>,
    ) -> Result<Self, Error> {
        let prefix = prefix.trim_matches('/').to_string();
        // Without these the SDK waits forever on a stalled endpoint, and a backup would hang
        // instead of failing. A 16 MiB part gets five minutes per attempt.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(std::time::Duration::from_secs(60))
            .operation_attempt_timeout(std::time::Duration::from_secs(300))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = settings.region.as_deref().filter(|r| !r.is_empty()) {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "pgvigil-static",
            ));
        }
        if let Some(path) = &settings.ca_file {
            loader =
                loader.http_client(https_client_trusting(path).map_err(|message| Error::Url {
                    url: describe(bucket, &prefix),
                    message,
                })?);
        }
        warn_if_plaintext(settings.endpoint.as_deref());
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::Url {
                url: describe(bucket, &prefix),
                message: "no AWS region found: set storage.s3.region (or AWS_REGION, or a \
                          region in the AWS profile)"
                    .into(),
            });
        }
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(settings.force_path_style);
        if let Some(endpoint) = settings.endpoint.as_deref().filter(|e| !e.is_empty()) {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(conf.build()),
            bucket: bucket.to_string(),
            prefix,
            endpoint: settings.endpoint.clone().filter(|e| !e.is_empty()),
            lock: settings.object_lock,
        })
    }

    /// The bucket's region as `GetBucketLocation` tells it, for `bucket` (ours or a
    /// replication destination).
    async fn location_of(&self, bucket: &str) -> Result<String, String> {
        self.client
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .map(|o| normalize_location(o.location_constraint().map(|c| c.as_str())))
            .map_err(|e| sdk_message(&e))
    }

    /// `GetObject` of `key`; None when there is no such key.
    async fn fetch(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, Error> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.backend("reading", key, &e)),
        }
    }

    /// The bucket key of repository key `key`.
    fn full_key(&self, key: &str) -> String {
        join_key(&self.prefix, key)
    }

    async fn put_single(&self, key: &str, body: Bytes, meta: &Metadata) -> Result<(), Error> {
        let lock = self.lock_for(key);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_metadata(Some(user_metadata(meta)))
            // S3 requires a checksum on every locked write.
            .set_checksum_algorithm(lock.as_ref().map(|_| ChecksumAlgorithm::Crc32))
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.backend("uploading", key, &e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        describe(&self.bucket, &self.prefix)
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: Metadata) -> Result<u64, Error> {
        // A stream that ends within the first part is one PutObject.
        let mut reader = PartReader::new(body, PART_SIZE);
        let (first, ended) = reader
            .next_part()
            .await
            .map_err(|e| self.read_error(key, e))?;
        if ended {
            self.put_single(key, first.freeze(), &meta).await?;
            return Ok(reader.total());
        }
        self.put_multipart(key, first, reader, &meta).await
    }

    async fn put_if_absent(&self, key: &str, bytes: Bytes, meta: Metadata) -> Result<bool, Error> {
        // One conditional PUT: atomic against racing writers where `If-None-Match: *` is
        // honoured (AWS S3 since August 2024, moto, MinIO, Ceph RGW). A server that ignores
        // the header overwrites silently; no HEAD-then-PUT could make that safe either.
        let full_key = self.full_key(key);
        let metadata = user_metadata(&meta);
        let mut attempt = 0;
        loop {
            let lock = self.lock_for(key);
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full_key)
                .if_none_match("*")
                .set_metadata(Some(metadata.clone()))
                .set_checksum_algorithm(lock.as_ref().map(|_| ChecksumAlgorithm::Crc32))
                .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
                .set_object_lock_retain_until_date(lock.map(|l| l.1))
                .body(SdkByteStream::from(bytes.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(true),
                Err(e) => e,
            };
            match (err.code(), status(&err)) {
                (Some("PreconditionFailed"), _) | (_, Some(412)) => return Ok(false),
                (Some("ConditionalRequestConflict"), _) | (_, Some(409))
                    if attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                _ => return Err(self.backend("uploading", key, &err)),
            }
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error> {
        self.read_versioned(key).await
    }

    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<Version>, Error> {
        self.write_versioned(key, bytes, expected).await
    }

    fn has_own_clock(&self) -> bool {
        true
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        let out = self.fetch(key).await?.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
            store: self.describe(),
        })?;
        let stream = futures_util::stream::unfold(Some(out.body), |body| async move {
            let mut body = body?;
            match body.next().await? {
                Ok(chunk) => Some((Ok(chunk), Some(body))),
                // Stop after the first error: the body is not usable after it.
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error> {
        let Some(out) = self.head_object(key).await? else {
            return Ok(None);
        };
        let meta: Metadata = out
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(Some((
            ObjectMeta {
                key: key.to_string(),
                size: out.content_length.unwrap_or(0).max(0) as u64,
                last_modified: out.last_modified.and_then(|t| t.try_into().ok()),
            },
            meta,
        )))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        let full_prefix = join_key(&self.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.backend("listing", prefix, &e))?;
            for object in page.contents.unwrap_or_default() {
                let Some(key) = object
                    .key
                    .as_deref()
                    .and_then(|k| relative_key(&self.prefix, k))
                else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size.unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified.and_then(|t| t.try_into().ok()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        if self.lock.is_some() {
            // Versioned: a plain DELETE would only hide the object behind a delete marker.
            return self.delete_versions(key).await;
        }
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some compatible servers say NoSuchKey.
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(self.backend("deleting", key, &e)),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<(String, Error)> {
        if self.lock.is_some() {
            // Every version, one key at a time, with the lock date of a locked one.
            let mut failed = Vec::new();
            for key in keys {
                if let Err(e) = self.delete_versions(key).await {
                    failed.push((key.clone(), e));
                }
            }
            return failed;
        }
        let mut failed = Vec::new();
        // DeleteObjects takes at most 1,000 keys per request.
        for chunk in keys.chunks(1000) {
            let objects: Result<Vec<ObjectIdentifier>, _> = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect();
            let delete =
                objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let delete = match delete {
                Ok(d) => d,
                Err(e) => {
                    failed.extend(
                        chunk
                            .iter()
                            .map(|k| (k.clone(), self.failed("deleting", k, e.to_string()))),
                    );
                    continue;
                }
            };
            match self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
            {
                Ok(out) => {
                    for err in out.errors() {
                        let full = err.key().unwrap_or("");
                        let key = relative_key(&self.prefix, full).unwrap_or(full).to_string();
                        let message = format!(
                            "{}: {}",
                            err.code().unwrap_or("error"),
                            err.message().unwrap_or("")
                        );
                        failed.push((key.clone(), self.failed("deleting", &key, message)));
                    }
                }
                Err(e) => {
                    failed.extend(
                        chunk
                            .iter()
                            .map(|k| (k.clone(), self.backend("deleting", k, &e))),
                    );
                }
            }
        }
        failed
    }

    async fn bucket_facts(&self, object_lock: bool) -> Result<Option<BucketFacts>, Error> {
        let mut facts = BucketFacts {
            bucket: self.bucket.clone(),
            ..Default::default()
        };
        // HeadBucket answers x-amz-bucket-region even on a 301 from the wrong region.
        facts.head_region = match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(out) => out.bucket_region().map(str::to_string),
            Err(e) => match e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
            {
                Some(r) => Some(r.to_string()),
                None if status(&e) == Some(404) => {
                    return Err(self.failed(
                        "checking",
                        "the bucket",
                        format!(
                            "bucket {} does not exist ({})",
                            self.bucket,
                            sdk_message(&e)
                        ),
                    ))
                }
                None => None,
            },
        };
        match self.location_of(&self.bucket).await {
            Ok(r) => facts.location = Some(r),
            Err(e) => facts.location_error = Some(format!("GetBucketLocation: {e}")),
        }
        match self
            .client
            .get_bucket_replication()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => {
                let rules = out
                    .replication_configuration()
                    .map(|c| c.rules())
                    .unwrap_or_default();
                for rule in rules {
                    let Some(dest) = rule.destination() else {
                        continue;
                    };
                    // arn:aws:s3:::bucket
                    let name = dest.bucket().rsplit(':').next().unwrap_or("").to_string();
                    let region = self.location_of(&name).await.ok();
                    facts.replication.push((name, region));
                }
            }
            Err(e) if e.code() == Some("ReplicationConfigurationNotFoundError") => {}
            Err(e) => facts.replication_error = Some(sdk_message(&e)),
        }
        if object_lock {
            facts.object_lock_enabled = match self
                .client
                .get_object_lock_configuration()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(out) => Some(
                    out.object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        == Some(&ObjectLockEnabled::Enabled),
                ),
                Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Some(false),
                Err(e) => {
                    return Err(self.backend(
                        "reading the Object Lock configuration of",
                        "the bucket",
                        &e,
                    ))
                }
            };
        }
        Ok(Some(facts))
    }

    fn object_lock_mode(&self) -> Option<LockMode> {
        self.lock.map(|l| l.mode)
    }

    async fn lock_until(&self, key: &str) -> Result<Option<std::time::SystemTime>, Error> {
        Ok(self
            .head_object(key)
            .await?
            .and_then(|out| out.object_lock_retain_until_date)
            .and_then(|t| t.try_into().ok()))
    }

    async fn extend_lock(
        &self,
        key: &str,
        written: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<bool, Error> {
        self.renew_lock(key, written, now).await
    }

    async fn copy_from(
        &self,
        source: &dyn ObjectStore,
        source_key: &str,
        key: &str,
    ) -> Result<bool, Error> {
        let Some(src) = source.as_any().downcast_ref::<S3Store>() else {
            return Ok(false);
        };
        if src.endpoint != self.endpoint {
            return Ok(false);
        }
        let size = match src.head(source_key).await? {
            Some((m, _)) => m.size,
            None => {
                return Err(Error::NotFound {
                    key: source_key.to_string(),
                    store: src.describe(),
                })
            }
        };
        if size > MAX_COPY_BYTES {
            return Ok(false);
        }
        let lock = self.lock_for(key);
        let copy_source = format!("{}/{}", src.bucket, src.full_key(source_key));
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .copy_source(percent_encode_path(&copy_source))
            .metadata_directive(MetadataDirective::Copy)
            .set_checksum_algorithm(lock.as_ref().map(|_| ChecksumAlgorithm::Crc32))
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .send()
            .await
            .map_err(|e| self.backend("copying", key, &e))?;
        Ok(true)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `x-amz-copy-source` is a URL path: escape everything but unreserved characters and `/`.
fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s3://bucket/prefix`, or `s3://bucket` with no prefix.
fn describe(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

/// The bucket key for `key` under `prefix` (no leading slash).
fn join_key(prefix: &str, key: &str) -> String {
    let key = key.trim_start_matches('/');
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

/// The repository key of bucket key `full`, if it is under `prefix`.
fn relative_key<'a>(prefix: &str, full: &'a str) -> Option<&'a str> {
    if prefix.is_empty() {
        Some(full)
    } else {
        full.strip_prefix(prefix)?.strip_prefix('/')
    }
}

/// Metadata as S3 user metadata (`x-amz-meta-*`): S3 lower-cases the names, so we do too
/// and `head` returns exactly what was written.
fn user_metadata(meta: &Metadata) -> HashMap<String, String> {
    meta.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_and_strip_the_prefix() {
        assert_eq!(join_key("", "c/wal/1"), "c/wal/1");
        assert_eq!(join_key("", "/c/wal/1"), "c/wal/1");
        assert_eq!(join_key("repo/a", "c/wal/1"), "repo/a/c/wal/1");
        assert_eq!(join_key("repo", ""), "repo/");
        assert_eq!(relative_key("", "c/wal/1"), Some("c/wal/1"));
        assert_eq!(relative_key("repo", "repo/c/wal/1"), Some("c/wal/1"));
        // A sibling that merely shares the prefix's spelling is not in the repository.
        assert_eq!(relative_key("repo", "repository/c"), None);
    }

    #[test]
    fn describe_has_no_trailing_slash() {
        assert_eq!(describe("b", ""), "s3://b");
        assert_eq!(describe("b", "p/q"), "s3://b/p/q");
    }

    #[test]
    fn metadata_names_are_lower_case() {
        let meta: Metadata = [("SHA256".to_string(), "AbC".to_string())].into();
        let m = user_metadata(&meta);
        assert_eq!(m.get("sha256").map(String::as_str), Some("AbC"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    }
}
