//! Header handling for the proxy: hop-by-hop headers (RFC 9110 7.6.1) are not forwarded,
//! and PostgREST's response headers are parsed: `Content-Range` (rows and total),
//! `Proxy-Status` (its error code) and `Server-Timing` (stage durations).

use hyper::header::{HeaderMap, HeaderName, CONNECTION};

/// `X-Request-Id`, sent upstream and back to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`, `-Host` and `-Proto`, as PostgREST reads them.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// PostgREST's response headers that the proxy reads.
pub const CONTENT_RANGE: HeaderName = HeaderName::from_static("content-range");
pub const PROXY_STATUS: HeaderName = HeaderName::from_static("proxy-status");
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Whether a header is hop-by-hop by itself (RFC 9110 7.6.1, plus `Proxy-Connection` and
/// `Keep-Alive`). A match on the name's text: a name's `as_str` is a table lookup for the
/// standard ones, and this compiles to a length switch and a compare.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those named in `Connection`. Most requests have
/// none and most responses only `Connection: keep-alive`: one pass over the names finds
/// which are present; nothing is allocated unless a header other than `Connection` goes.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let (mut connection, mut others) = (false, false);
    for k in headers.keys() {
        if k == CONNECTION {
            connection = true;
        } else if is_hop_by_hop(k) {
            others = true;
        }
    }
    let mut doomed: Vec<HeaderName> = Vec::new();
    if others {
        doomed.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    }
    if connection {
        // The names it lists go too; `close` and `keep-alive` are options, not other
        // headers (a `Keep-Alive` header present was found above).
        for name in headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.eq_ignore_ascii_case("close") && !n.eq_ignore_ascii_case("keep-alive"))
        {
            if let Ok(h) = HeaderName::from_bytes(name.as_bytes()) {
                doomed.push(h);
            }
        }
        headers.remove(CONNECTION);
    }
    for n in doomed {
        headers.remove(n);
    }
}

/// Rows in a response and the total, from `Content-Range: 0-24/3573`, `0-24/*` or `*/0`.
pub fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let rows = match range.trim() {
        "*" => 0,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            // `0-18446744073709551615` is u64::MAX + 1 rows: not a count we can hold.
            b.checked_sub(a)?.checked_add(1)?
        }
    };
    Some((rows, total))
}

/// The `error` parameter of `Proxy-Status: PostgREST; error=PGRST116`.
pub fn proxy_status_error(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("error")).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Stages and their durations in seconds from `Server-Timing: jwt;dur=0.1, plan;dur=2.5`.
pub fn server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let name = parts.next()?.trim();
            let dur = parts.find_map(|p| p.trim().strip_prefix("dur="))?;
            let ms: f64 = dur.trim().parse().ok()?;
            (!name.is_empty() && ms.is_finite() && ms >= 0.0)
                .then(|| (name.to_string(), ms / 1000.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("0-24/*"), Some((25, None)));
        assert_eq!(content_range("0-24/3573"), Some((25, Some(3573))));
        assert_eq!(content_range("*/0"), Some((0, Some(0))));
        assert_eq!(content_range("*/*"), Some((0, None)));
        assert_eq!(content_range("10-5/*"), None);
        assert_eq!(content_range("junk"), None);
        // The largest range overflowed the row count (a panic in debug builds).
        assert_eq!(content_range("0-18446744073709551615/*"), None);
        assert_eq!(
            content_range("1-18446744073709551615/*"),
            Some((u64::MAX, None))
        );
        assert_eq!(content_range("0-1/18446744073709551616"), None);
    }

    #[test]
    fn parses_proxy_status_and_server_timing() {
        assert_eq!(
            proxy_status_error("PostgREST; error=PGRST116").as_deref(),
            Some("PGRST116")
        );
        assert_eq!(proxy_status_error("PostgREST"), None);
        let st = server_timing(
            "jwt;dur=0.5, parse;dur=1, plan;dur=2.5, transaction;dur=10, response;dur=0.2",
        );
        assert_eq!(st.len(), 5);
        assert_eq!(st[3], ("transaction".to_string(), 0.01));
    }

    #[test]
    fn strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("accept", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
        // The common response: only `Connection: keep-alive`, which goes alone.
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive".parse().unwrap());
        h.insert("content-length", "2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-length"]
        );
        // `close` is an option; the other names listed go, in any case.
        let mut h = HeaderMap::new();
        h.append("connection", "Close, X-Hop-A".parse().unwrap());
        h.append("connection", "x-hop-b".parse().unwrap());
        for n in ["x-hop-a", "x-hop-b", "te", "x-kept"] {
            h.insert(n, "1".parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn a_named_hop_header_alone_is_stripped_and_others_are_kept() {
        // `Upgrade` without `Connection`: the scan must still find it.
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("upgrade"));
        assert_eq!(
            h.get(&X_REQUEST_ID).map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before, "nothing to strip: the map is left as it is");
    }
}
