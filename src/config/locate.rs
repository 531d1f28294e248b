//! Maps between byte offsets in the TOML text and dotted key paths, so that errors from
//! serde (which know a span) and from validation (which know a key) both end up as
//! `file:line: key.path: message`.

use toml_edit::{ImDocument, Item, Table};

/// A parsed view of the file kept only for error locations.
pub(crate) struct Locator {
    text: String,
    doc: Option<ImDocument<String>>,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            doc: ImDocument::parse(text.to_string()).ok(),
        }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Line of the key at `path` (segments; array indices as numbers), if present.
    pub(crate) fn line_of_key(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table: &Table = doc.as_table();
        let mut span = None;
        let mut iter = path.iter().peekable();
        while let Some(seg) = iter.next() {
            let (key, item) = table.get_key_value(seg)?;
            span = key.span().or_else(|| item.span());
            let item = match (item, iter.peek().and_then(|s| s.parse::<usize>().ok())) {
                (Item::ArrayOfTables(arr), Some(idx)) => {
                    iter.next();
                    let t = arr.get(idx)?;
                    span = t.span().or(span);
                    table = t;
                    continue;
                }
                (item, _) => item,
            };
            match item {
                Item::Table(t) => table = t,
                Item::Value(toml_edit::Value::InlineTable(t)) => {
                    // Inline tables: look the remaining segment up directly.
                    if let Some(next) = iter.next() {
                        let (k, v) = t.get_key_value(next)?;
                        span = k.span().or_else(|| v.span());
                    }
                    break;
                }
                _ => break,
            }
        }
        span.map(|s| self.line_of_offset(s.start))
    }

    /// The dotted key path whose key or value contains `offset`, deepest first.
    pub(crate) fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        walk(doc.as_table(), offset, &mut path);
        (!path.is_empty()).then(|| path.join("."))
    }
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn walk(table: &Table, offset: usize, path: &mut Vec<String>) {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        match item {
            Item::Table(t) => {
                if contains(key_span.clone(), offset) || contains(t.span(), offset) {
                    path.push(key.to_string());
                    walk(t, offset, path);
                    return;
                }
                // A [section] header's span covers only the header: look inside anyway.
                let before = path.len();
                path.push(key.to_string());
                walk(t, offset, path);
                if path.len() > before + 1 {
                    return;
                }
                path.truncate(before);
            }
            Item::ArrayOfTables(arr) => {
                for (i, t) in arr.iter().enumerate() {
                    let before = path.len();
                    path.push(format!("{key}.{i}"));
                    walk(t, offset, path);
                    if path.len() > before + 1 || contains(t.span(), offset) {
                        return;
                    }
                    path.truncate(before);
                }
            }
            Item::Value(v) => {
                if contains(key_span, offset) || contains(v.span(), offset) {
                    path.push(key.to_string());
                    return;
                }
            }
            Item::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[server]\nlisten = \"x\"\n\n[postgres]\ndsn = \"y\"\nstatement_timeout = \"5q\"\n\n[[postgres.queries]]\nname = \"a\"\nsql = \"select 1\"\n";

    #[test]
    fn finds_lines_of_keys() {
        let l = Locator::new(DOC);
        assert_eq!(l.line_of_key(&["server", "listen"]), Some(2));
        assert_eq!(l.line_of_key(&["postgres", "statement_timeout"]), Some(6));
        assert_eq!(
            l.line_of_key(&["postgres", "queries", "0", "sql"]),
            Some(10)
        );
        assert_eq!(l.line_of_key(&["postgres", "nope"]), None);
    }

    #[test]
    fn finds_path_of_offset() {
        let l = Locator::new(DOC);
        let off = DOC.find("\"5q\"").unwrap_or(0);
        assert_eq!(
            l.path_at(off).as_deref(),
            Some("postgres.statement_timeout")
        );
        let off = DOC.find("select 1").unwrap_or(0);
        assert_eq!(l.path_at(off).as_deref(), Some("postgres.queries.0.sql"));
    }
}
