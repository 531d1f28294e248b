//! Bounded label values. A route is the request path without its query string (PostgREST
//! puts filters in the query, so paths are few: `/articles`, `/rpc/login`); past the limit,
//! new values count as `other`, so a client cannot blow up the metrics' cardinality. The
//! same guard bounds roles and upstream error codes, which a client or upstream controls.

use std::collections::HashSet;
use std::sync::RwLock;

/// The label used once the limit is reached.
pub const OTHER: &str = "other";

/// A set of label values that stops growing at `max`. Values are interned for the life of
/// the process (at most `max` of them per set, so the memory is bounded): a label is a
/// `&'static str` shared by every request that carries it, so labelling allocates nothing
/// and no reference count is touched (two worker threads bumping the same count bounce its
/// cache line between cores on every request).
#[derive(Debug)]
pub struct BoundedLabels {
    max: usize,
    seen: RwLock<HashSet<&'static str>>,
}

impl BoundedLabels {
    /// An empty set that admits at most `max` distinct values.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// `value` if it is known or there is room for it, else `other`.
    pub fn label(&self, value: &str) -> &'static str {
        if let Ok(seen) = self.seen.read() {
            if let Some(known) = seen.get(value) {
                return known;
            }
            if seen.len() >= self.max {
                return OTHER;
            }
        }
        match self.seen.write() {
            Ok(mut seen) => {
                if let Some(known) = seen.get(value) {
                    return known;
                }
                if seen.len() >= self.max {
                    return OTHER;
                }
                let label: &'static str = Box::leak(value.into());
                seen.insert(label);
                label
            }
            Err(_) => OTHER,
        }
    }
}

/// The route label of a request path: the path as sent, without the query string, with
/// trailing slashes folded (`/articles/` is `/articles`).
pub fn route_of(path: &str) -> &str {
    let p = path.split('?').next().unwrap_or("/");
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The method label: standard methods as they are, anything else `OTHER`.
pub fn method_label(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::GET => "GET",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_paths_and_bounded() {
        assert_eq!(route_of("/articles?id=eq.1"), "/articles");
        assert_eq!(route_of("/rpc/login/"), "/rpc/login");
        assert_eq!(route_of("/"), "/");
        let b = BoundedLabels::new(2);
        assert_eq!(b.label("/a"), "/a");
        assert_eq!(b.label("/b"), "/b");
        assert_eq!(b.label("/c"), OTHER);
        assert_eq!(b.label("/a"), "/a");
        assert!(
            std::ptr::eq(b.label("/a"), b.label("/a")),
            "labels are interned"
        );
    }
}
