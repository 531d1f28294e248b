//! The response body wrapper: passes frames through untouched, counts bytes, and records
//! the request exactly once, when the body ends, fails, or is dropped (client gone).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use super::jwt::Identity;
use super::{RequestHandles, Worker};
use crate::audit::{EventKind, Outcome};

/// One access line in the audit schema. Written by [`AccessLine::write`]; in tests, serde's
/// serialization of the same fields is the reference that writer is held to.
#[cfg_attr(test, derive(serde::Serialize))]
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

#[cfg(test)]
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl AccessLine<'_> {
    /// Appends the line (no newline) as JSON: the same members in the same order as the
    /// serde derive writes them, without a serializer's per-member dispatch and with the
    /// timestamp's date and time formatted once a second. Strings that come from the
    /// request (role, subject, route, request id, error code) are escaped by serde_json.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        write_timestamp(out, self.ts.0);
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        json_str(out, self.event);
        out.extend_from_slice(match self.outcome {
            Outcome::Success => b",\"outcome\":\"success\",\"actor\":{\"role\":",
            Outcome::Failure => b",\"outcome\":\"failure\",\"actor\":{\"role\":",
        });
        json_str(out, self.actor.role);
        out.extend_from_slice(if self.actor.role_verified {
            b",\"role_verified\":true,\"sub\":"
        } else {
            b",\"role_verified\":false,\"sub\":"
        });
        json_opt_str(out, self.actor.sub);
        out.extend_from_slice(b"},\"target\":{\"method\":");
        json_str(out, self.target.method);
        out.extend_from_slice(b",\"route\":");
        json_str(out, self.target.route);
        out.extend_from_slice(b"},\"details\":{\"request_id\":");
        let d = &self.details;
        json_str(out, d.request_id);
        out.extend_from_slice(b",\"code\":");
        out.extend_from_slice(itoa::Buffer::new().format(d.code).as_bytes());
        out.extend_from_slice(b",\"rows\":");
        json_opt_u64(out, d.rows);
        out.extend_from_slice(b",\"total\":");
        json_opt_u64(out, d.total);
        out.extend_from_slice(b",\"latency_ms\":");
        if d.latency_ms.is_finite() {
            out.extend_from_slice(ryu::Buffer::new().format_finite(d.latency_ms).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"bytes\":");
        out.extend_from_slice(itoa::Buffer::new().format(d.bytes).as_bytes());
        out.extend_from_slice(b",\"upstream_error\":");
        json_opt_str(out, d.upstream_error);
        out.extend_from_slice(b"}}");
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

thread_local! {
    /// The second of the last timestamp this thread wrote, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// `t` as RFC 3339 UTC with milliseconds, as `humantime::format_rfc3339_millis` writes it
/// (which formats the date and time once a second here; only the milliseconds change).
fn write_timestamp(out: &mut Vec<u8>, t: std::time::SystemTime) {
    let Ok(since) = t.duration_since(std::time::UNIX_EPOCH) else {
        out.extend_from_slice(humantime::format_rfc3339_millis(t).to_string().as_bytes());
        return;
    };
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        // `2026-12-06T06:10:11Z`; anything else (a year past 9999) is written as it comes.
        let whole = humantime::format_rfc3339_seconds(t).to_string();
        if whole.len() != 20 {
            out.extend_from_slice(humantime::format_rfc3339_millis(t).to_string().as_bytes());
            return;
        }
        prefix[..19].copy_from_slice(&whole.as_bytes()[..19]);
        prefix[19] = b'.';
        SECOND.set((secs, prefix));
    }
    out.extend_from_slice(&prefix);
    // Below 1000: three ASCII digits.
    out.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

#[cfg_attr(test, derive(serde::Serialize))]
struct Actor<'a> {
    role: &'a str,
    role_verified: bool,
    sub: Option<&'a str>,
}

#[cfg_attr(test, derive(serde::Serialize))]
struct Target<'a> {
    method: &'static str,
    route: &'a str,
}

#[cfg_attr(test, derive(serde::Serialize))]
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
    pub(crate) route: &'static str,
    pub(crate) role_label: &'static str,
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
        let handles =
            self.worker
                .handles(self.route, self.method, self.code, self.role_label, || {
                    RequestHandles {
                        requests: m.requests.with_label_values(&[
                            self.route,
                            self.method,
                            &self.code.to_string(),
                            self.role_label,
                        ]),
                        duration: m.duration.with_label_values(&[self.route, self.method]),
                        rows: m.rows.with_label_values(&[self.route, self.method]),
                    }
                });
        handles.requests.inc();
        handles.duration.observe(elapsed.as_secs_f64());
        if let Some(rows) = self.rows {
            handles.rows.inc_by(rows);
        }
        if let Some(err) = &self.upstream_error {
            let err = shared.error_labels.label(err);
            m.upstream_errors
                .with_label_values(&[self.route, err])
                .inc();
        }
        // A token that failed verification (PostgREST answers it with 401), or a 401/403
        // from upstream: an ops event besides the access line, for alerting and SIEM rules.
        if self.code == 401 || self.code == 403 || self.identity.role == super::jwt::INVALID_ROLE {
            shared.events.emit(
                crate::events::Op::refused("auth.denied", "API request denied")
                    .target(serde_json::json!({"method": self.method, "route": self.route}))
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
        shared.audit.emit_with(EventKind::Access, |out| {
            AccessLine {
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
                    route: self.route,
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
            }
            .write(out)
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it finishes.
    pub(crate) struct Observed<B: HttpBody> {
        #[pin]
        inner: B,
        bytes: u64,
        finish: Option<Finish>,
    }

    impl<B: HttpBody> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.finish.take() {
                f.complete(*this.bytes);
            }
        }
    }
}

impl<B: HttpBody> Observed<B> {
    pub(crate) fn new(inner: B, finish: Finish) -> Self {
        Self {
            inner,
            bytes: 0,
            finish: Some(finish),
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
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(line: &AccessLine<'_>) -> String {
        let mut out = Vec::new();
        line.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn line<'a>(
        t: std::time::SystemTime,
        strings: [&'a str; 4],
        sub: Option<&'a str>,
        numbers: (u16, Option<u64>, Option<u64>, f64, u64),
        error: Option<&'a str>,
        flags: (bool, bool),
    ) -> AccessLine<'a> {
        let [role, route, request_id, method] = strings;
        let (code, rows, total, latency_ms, bytes) = numbers;
        AccessLine {
            ts: Timestamp(t),
            kind: EventKind::Access,
            event: "api.request",
            outcome: if flags.0 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            actor: Actor {
                role,
                role_verified: flags.1,
                sub,
            },
            target: Target {
                // The method label is one of a fixed set; any text is escaped alike.
                method: Box::leak(method.to_string().into_boxed_str()),
                route,
            },
            details: Details {
                request_id,
                code,
                rows,
                total,
                latency_ms,
                bytes,
                upstream_error: error,
            },
        }
    }

    #[test]
    fn the_written_line_is_what_serde_writes() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_544_611_007);
        let l = line(
            t,
            ["web_anon", "/articles", "3f1c-\"x\"\\\n", "GET"],
            Some("user\u{1}1 ü"),
            (200, Some(25), None, 0.123, 2058),
            None,
            (false, true),
        );
        let got = written(&l);
        assert_eq!(got, serde_json::to_string(&l).unwrap());
        assert!(
            got.starts_with(r#"{"ts":"2026-12-06T08:10:11.007Z","kind":"access""#),
            "{got}"
        );
        // The same second again comes from the cached prefix, a new one is formatted.
        for ms in [1_796_544_611_999, 1_796_544_612_000, 1_796_544_611_500] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let l = line(
                t,
                ["r", "/", "i", "POST"],
                None,
                (502, None, Some(7), 30000.0, 0),
                Some("upstream_timeout"),
                (true, false),
            );
            assert_eq!(written(&l), serde_json::to_string(&l).unwrap());
        }
    }

    proptest! {
        #[test]
        fn any_line_is_written_as_serde_writes_it(
            ms in 0u64..4_102_444_800_000,
            strings in proptest::array::uniform4(".{0,12}"),
            sub in proptest::option::of(".{0,12}"),
            code in any::<u16>(),
            rows in any::<Option<u64>>(),
            total in any::<Option<u64>>(),
            micros in 0u64..100_000_000_000,
            bytes in any::<u64>(),
            error in proptest::option::of("[a-z_]{0,20}"),
            flags in any::<(bool, bool)>(),
        ) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let [a, b, c, d] = &strings;
            let latency_ms = (micros as f64).round() / 1e3;
            let l = line(
                t,
                [a.as_str(), b.as_str(), c.as_str(), d.as_str()],
                sub.as_deref(),
                (code, rows, total, latency_ms, bytes),
                error.as_deref(),
                flags,
            );
            prop_assert_eq!(written(&l), serde_json::to_string(&l).unwrap());
        }
    }
}
