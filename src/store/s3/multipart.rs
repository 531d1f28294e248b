//! Multipart uploads for the S3 backend: one part uploads while the next one fills (at
//! most two parts in memory), and the upload completes only when every part is in. An
//! error, or dropping the put (a cancelled backup), aborts the upload so no invisible
//! parts are left to be billed. Parts are cut by the backend-neutral
//! [`PartReader`](crate::store::parts::PartReader).

use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};

use super::error::sdk_message;
use super::{user_metadata, S3Store, PART_SIZE};
use crate::store::parts::PartReader;
use crate::store::{Error, Metadata, ObjectStore};

/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: i32 = 10_000;

impl S3Store {
    /// Uploads `first` (a full part) and the rest of `reader` as the parts of `upload`;
    /// returns the completed parts in order. On error the caller aborts the upload (the
    /// part in flight, if any, is in `upload.in_flight`).
    async fn upload_parts(
        &self,
        key: &str,
        upload: &mut Multipart,
        first: BytesMut,
        reader: &mut PartReader,
    ) -> Result<Vec<CompletedPart>, Error> {
        let mut parts = Vec::new();
        let mut number: i32 = 0;
        let mut next = Some(first);
        while let Some(part) = next.take() {
            number += 1;
            if number > MAX_PARTS {
                return Err(self.failed(
                    "uploading",
                    key,
                    format!(
                        "the stream is larger than S3 allows for one object written in \
                         {} MiB parts ({MAX_PARTS} parts, {} GiB)",
                        PART_SIZE >> 20,
                        (PART_SIZE as u64 * MAX_PARTS as u64) >> 30
                    ),
                ));
            }
            // One part uploads while the next one fills: wait for the previous one first.
            if let Some(previous) = upload.in_flight.take() {
                parts.push(self.join_part(key, previous).await?);
            }
            upload.in_flight = Some(tokio::spawn(upload_part(
                self.client.clone(),
                self.bucket.clone(),
                upload.full_key.clone(),
                upload.upload_id.clone(),
                number,
                part.freeze(),
                PartContext {
                    key: key.to_string(),
                    store: self.describe(),
                    checksum: upload.checksums,
                },
            )));
            let (following, _) = reader
                .next_part()
                .await
                .map_err(|e| self.read_error(key, e))?;
            if !following.is_empty() {
                next = Some(following);
            }
        }
        if let Some(last) = upload.in_flight.take() {
            parts.push(self.join_part(key, last).await?);
        }
        Ok(parts)
    }

    async fn join_part(
        &self,
        key: &str,
        handle: tokio::task::JoinHandle<Result<CompletedPart, Error>>,
    ) -> Result<CompletedPart, Error> {
        match handle.await {
            Ok(result) => result,
            Err(e) => Err(self.failed("uploading a part of", key, e.to_string())),
        }
    }

    /// Uploads `first` and the rest of `reader` as one multipart upload, completed only
    /// when every part is in; aborted on any error and when the future is dropped.
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        first: BytesMut,
        mut reader: PartReader,
        meta: &Metadata,
    ) -> Result<u64, Error> {
        let full_key = self.full_key(key);
        let lock = self.lock_for(key);
        let locked = lock.is_some();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .set_metadata(Some(user_metadata(meta)))
            .set_checksum_algorithm(lock.as_ref().map(|_| ChecksumAlgorithm::Crc32))
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .send()
            .await
            .map_err(|e| self.backend("starting a multipart upload of", key, &e))?;
        let Some(upload_id) = created.upload_id else {
            return Err(self.failed(
                "starting a multipart upload of",
                key,
                "the server returned no upload id".into(),
            ));
        };
        // From here on, the guard aborts the upload if this future is dropped.
        let mut upload = Multipart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            full_key,
            upload_id,
            in_flight: None,
            armed: true,
            checksums: locked,
        };
        let result = async {
            let parts = self
                .upload_parts(key, &mut upload, first, &mut reader)
                .await?;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&upload.full_key)
                .upload_id(&upload.upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.backend("completing the multipart upload of", key, &e))?;
            Ok(reader.total())
        }
        .await;
        match result {
            Ok(total) => {
                upload.armed = false;
                Ok(total)
            }
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }
}

/// For messages about a part, and whether it carries a checksum.
struct PartContext {
    key: String,
    store: String,
    /// CRC32 (required for objects written with Object Lock).
    checksum: bool,
}

/// Uploads one part (run as a task, so the next part can fill meanwhile).
async fn upload_part(
    client: Client,
    bucket: String,
    full_key: String,
    upload_id: String,
    number: i32,
    part: Bytes,
    PartContext {
        key,
        store,
        checksum,
    }: PartContext,
) -> Result<CompletedPart, Error> {
    let out = client
        .upload_part()
        .bucket(bucket)
        .key(full_key)
        .upload_id(upload_id)
        .part_number(number)
        .set_checksum_algorithm(checksum.then_some(ChecksumAlgorithm::Crc32))
        .body(SdkByteStream::from(part))
        .send()
        .await
        .map_err(|e| Error::Backend {
            op: "uploading a part of",
            key,
            store,
            message: format!("part {number}: {}", sdk_message(&e)),
        })?;
    Ok(CompletedPart::builder()
        .set_e_tag(out.e_tag)
        .set_checksum_crc32(out.checksum_crc32)
        .part_number(number)
        .build())
}

/// A multipart upload in progress. Dropped while armed (the put was cancelled), it stops
/// the part in flight and aborts the upload in the background, so no invisible parts are
/// left to be billed.
struct Multipart {
    client: Client,
    bucket: String,
    full_key: String,
    upload_id: String,
    in_flight: Option<tokio::task::JoinHandle<Result<CompletedPart, Error>>>,
    armed: bool,
    /// Parts carry CRC32 checksums (required for locked objects).
    checksums: bool,
}

impl Multipart {
    /// Stops the part in flight and aborts the upload (best effort: the error that made us
    /// abort is the one worth reporting).
    async fn abort(&mut self) {
        self.armed = false;
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
            let _ = handle.await;
        }
        if let Err(e) =
            abort_request(&self.client, &self.bucket, &self.full_key, &self.upload_id).await
        {
            tracing::warn!(
                event = "store.s3.abort_failed",
                bucket = %self.bucket,
                key = %self.full_key,
                error = %sdk_message(&e),
                "could not abort a multipart upload; a lifecycle rule will have to remove it"
            );
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, bucket, key, id) = (
                self.client.clone(),
                self.bucket.clone(),
                self.full_key.clone(),
                self.upload_id.clone(),
            );
            rt.spawn(async move {
                // A few tries: nobody waits for this, and a failed abort leaves billed parts.
                for attempt in 0..3u32 {
                    if abort_request(&client, &bucket, &key, &id).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                tracing::warn!(event = "store.s3.abort_failed", bucket = %bucket, key = %key, "could not abort a cancelled multipart upload; a lifecycle rule will have to remove it");
            });
        }
    }
}

async fn abort_request(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), SdkError<aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError>>
{
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map(|_| ())
}
