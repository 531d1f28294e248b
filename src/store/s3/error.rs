//! Error mapping for the S3 backend: every SDK error becomes a `store::Error` naming the
//! store and the key, with the service's error code and message (`NoSuchBucket: …`) rather
//! than the SDK's bare "service error", or the whole source chain when no answer came.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;

use super::S3Store;
use crate::store::{Error, ObjectStore};

impl S3Store {
    /// A `Backend` error for a failed request.
    pub(super) fn backend<E>(&self, op: &'static str, key: &str, err: &SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Error::Backend {
            op,
            key: key.to_string(),
            store: self.describe(),
            message: sdk_message(err),
        }
    }

    /// A `Backend` error with a message of our own.
    pub(super) fn failed(&self, op: &'static str, key: &str, message: String) -> Error {
        Error::Backend {
            op,
            key: key.to_string(),
            store: self.describe(),
            message,
        }
    }

    /// An `Io` error reading the body to upload.
    pub(super) fn read_error(&self, key: &str, source: std::io::Error) -> Error {
        Error::Io {
            op: "reading the body for",
            key: key.to_string(),
            store: self.describe(),
            source,
        }
    }
}

/// The HTTP status of a failed request, if a response came back.
pub(super) fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// What went wrong, for humans: the service's error code and message when the server
/// answered (`NoSuchBucket: The specified bucket does not exist (HTTP 404, request id …)`),
/// otherwise the whole source chain (connection refused, timeout, bad endpoint URL…).
pub(super) fn sdk_message<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut context = Vec::new();
    if let Some(s) = status(err) {
        context.push(format!("HTTP {s}"));
    }
    if let Some(id) = err.request_id() {
        context.push(format!("request id {id}"));
    }
    let context = if context.is_empty() {
        String::new()
    } else {
        format!(" ({})", context.join(", "))
    };
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}{context}"),
        (Some(code), None) => format!("{code}{context}"),
        _ => format!("{}{context}", source_chain(err)),
    }
}

/// Every error in the source chain, joined with ": " (the SDK's own `Display` says only
/// "service error" or "dispatch failure"; its `DisplayErrorContext` appends a `Debug` dump
/// of the whole response). Repeated messages are skipped and the result is bounded.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = crate::errors::chain(err);
    if out.len() > 1000 {
        let mut end = 1000;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}
