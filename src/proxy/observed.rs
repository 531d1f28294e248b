//! The response body wrapper: passes frames through untouched, counts bytes, and records
//! the request exactly once, when the body ends, fails, or is dropped (client gone).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use super::jwt::Identity;
use super::upstream::Idle;
use super::{RequestHandles, Worker};
use crate::audit::{EventKind, Outcome};

/// One access line in the audit schema, serialized straight from these fields.
#[derive(serde::Serialize)]
struct AccessLine<'a> {
    ts: Timestamp,
    kind: EventKind,
    event: &'static str,
    outcome: Outcome,
    actor: Actor<'a>,
    target: Target<'a>,
    details: Details<'a>,
}

/// The line's time, RFC 3339 with milliseconds (as `now_rfc3339`), written into the line
/// without an intermediate string.
struct Timestamp(std::time::SystemTime);

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

#[derive(serde::Serialize)]
struct Actor<'a> {
    role: &'a str,
    role_verified: bool,
    sub: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Target<'a> {
    method: &'static str,
    route: &'a str,
}

#[derive(serde::Serialize)]
struct Details<'a> {
    request_id: &'a str,
    code: u16,
    rows: Option<u64>,
    total: Option<u64>,
    latency_ms: f64,
    bytes: u64,
    upstream_error: Option<&'a str>,
}

/// What is known about a request by the time its response starts.
pub(crate) struct Finish {
    pub(crate) worker: Arc<Worker>,
    pub(crate) start: Instant,
    pub(crate) method: &'static str,
    pub(crate) route: Arc<str>,
    pub(crate) role_label: Arc<str>,
    pub(crate) identity: Identity,
    pub(crate) request_id: axum::http::HeaderValue,
    pub(crate) code: u16,
    pub(crate) rows: Option<u64>,
    pub(crate) total: Option<u64>,
    pub(crate) upstream_error: Option<String>,
}

impl Finish {
    /// Records metrics and the access line.
    pub(crate) fn complete(self, bytes: u64) {
        let elapsed = self.start.elapsed();
        let shared = &self.worker.shared;
        let m = &shared.metrics;
        let request_id = self.request_id.to_str().unwrap_or("-");
        let handles = self.worker.handles(
            &self.route,
            self.method,
            self.code,
            &self.role_label,
            || RequestHandles {
                requests: m.requests.with_label_values(&[
                    &*self.route,
                    self.method,
                    &self.code.to_string(),
                    &*self.role_label,
                ]),
                duration: m.duration.with_label_values(&[&*self.route, self.method]),
                rows: m.rows.with_label_values(&[&*self.route, self.method]),
            },
        );
        handles.requests.inc();
        handles.duration.observe(elapsed.as_secs_f64());
        if let Some(rows) = self.rows {
            handles.rows.inc_by(rows);
        }
        if let Some(err) = &self.upstream_error {
            let err = shared.error_labels.label(err);
            m.upstream_errors
                .with_label_values(&[&*self.route, &*err])
                .inc();
        }
        // A token that failed verification (PostgREST answers it with 401), or a 401/403
        // from upstream: an ops event besides the access line, for alerting and SIEM rules.
        if self.code == 401 || self.code == 403 || self.identity.role == super::jwt::INVALID_ROLE {
            shared.events.emit(
                crate::events::Op::refused("auth.denied", "API request denied")
                    .target(serde_json::json!({"method": self.method, "route": &*self.route}))
                    .details(serde_json::json!({
                        "request_id": request_id,
                        "code": self.code,
                        "role": self.identity.role,
                        "token_verified": self.identity.verified,
                        "sub": self.identity.sub,
                    })),
            );
        }
        let outcome = if self.code >= 500 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        shared.audit.emit_record(
            EventKind::Access,
            &AccessLine {
                ts: Timestamp(std::time::SystemTime::now()),
                kind: EventKind::Access,
                event: "api.request",
                outcome,
                actor: Actor {
                    role: &self.identity.role,
                    role_verified: self.identity.verified,
                    sub: self.identity.sub.as_deref(),
                },
                target: Target {
                    method: self.method,
                    route: &self.route,
                },
                details: Details {
                    request_id,
                    code: self.code,
                    rows: self.rows,
                    total: self.total,
                    latency_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                    bytes,
                    upstream_error: self.upstream_error.as_deref(),
                },
            },
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it finishes.
    pub(crate) struct Observed<B: HttpBody> {
        #[pin]
        inner: B,
        bytes: u64,
        finish: Option<Finish>,
        // The upstream connection the body comes from: back to the pool once it ended.
        connection: Option<Idle>,
    }

    impl<B: HttpBody> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body with nothing to read (HEAD, 204, 304) may never be polled: its
            // connection is still good.
            if this.inner.is_end_stream() {
                if let Some(c) = this.connection.take() {
                    c.release();
                }
            }
            if let Some(f) = this.finish.take() {
                f.complete(*this.bytes);
            }
        }
    }
}

impl<B: HttpBody> Observed<B> {
    pub(crate) fn new(inner: B, finish: Finish, connection: Idle) -> Self {
        Self {
            inner,
            bytes: 0,
            finish: Some(finish),
            connection: Some(connection),
        }
    }
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(c) = this.connection.take() {
                    c.release();
                }
                if let Some(f) = this.finish.take() {
                    f.complete(*this.bytes);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.connection.take();
                if let Some(f) = this.finish.take() {
                    f.complete(*this.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
