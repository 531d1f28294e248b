//! A small PromQL lexer for the artefact tests: which metric names and label matchers an
//! expression selects (functions, keywords, label lists, strings, numbers and durations
//! skipped), and Grafana's `$variables` replaced by values Prometheus accepts. It does not
//! validate syntax: promtool and a real Prometheus do that.

/// Replaces Grafana's variables with concrete values: `$__rate_interval` and `$__interval`
/// with `rate_interval`, `$__range` with `range`, every other `$var` / `${var}` with `.+`
/// (they only appear inside `=~"..."` matchers).
pub fn substitute(expr: &str, rate_interval: &str, range: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(s) => {
                let end = s.find('}').unwrap_or(s.len());
                let name = s[..end].split(':').next().unwrap_or("");
                (name, end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        out.push_str(match name {
            "__rate_interval" | "__interval" => rate_interval,
            "__range" => range,
            _ => ".+",
        });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
    // Aggregations may be followed by `by (...)` instead of their parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords followed by a parenthesised label list.
const LABEL_LIST: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression selects: identifiers that are not functions, keywords,
/// label names (in `{...}` or after by/on/...), strings, numbers or durations.
pub fn metric_names(expr: &str) -> Vec<String> {
    selectors(expr).into_iter().map(|(name, _)| name).collect()
}

/// The index just past the string whose opening quote is at `open` (backslash escapes
/// skipped); past the end if it is not closed.
fn skip_quoted(chars: &[char], open: usize) -> usize {
    let q = chars[open];
    let mut j = open + 1;
    while j < chars.len() && chars[j] != q {
        if chars[j] == '\\' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The label names matched in `{...}` from index `open` (the brace).
fn matcher_labels(chars: &[char], open: usize) -> Vec<String> {
    let mut labels = Vec::new();
    let mut j = open + 1;
    while j < chars.len() && chars[j] != '}' {
        let c = chars[j];
        if c == '"' || c == '\'' || c == '`' {
            j = skip_quoted(chars, j);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = j;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            labels.push(chars[start..j].iter().collect());
        } else {
            j += 1;
        }
    }
    labels
}

/// Every metric selector of an expression: its name and the label names it matches on.
pub fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    // Index just past the bracket that closes the one at `open`, skipping strings.
    let close = |open: usize| {
        let (o, c) = (chars[open], if chars[open] == '(' { ')' } else { ']' });
        let mut depth = 0;
        let mut j = open;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => {
                    j = skip_quoted(&chars, j);
                    continue;
                }
                x if x == o => depth += 1,
                x if x == c => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        chars.len()
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_quoted(&chars, i);
        } else if c == '{' {
            // Label matchers: skip to the closing brace (strings may contain braces).
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == '"' || chars[i] == '\'' || chars[i] == '`' {
                    i = skip_quoted(&chars, i);
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '[' {
            i = close(i);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                // 1e+3
                if (chars[i] == 'e' || chars[i] == 'E')
                    && matches!(chars.get(i + 1), Some('+') | Some('-'))
                {
                    i += 1;
                }
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = close(next);
                }
            } else if lower == "offset" {
                // The duration that follows is skipped as a number.
            } else if KEYWORDS.contains(&lower.as_str()) || chars.get(next) == Some(&'(') {
                // A keyword, or a function / aggregation.
            } else {
                let labels = if chars.get(next) == Some(&'{') {
                    matcher_labels(&chars, next)
                } else {
                    Vec::new()
                };
                names.push((word, labels));
            }
        } else {
            i += 1;
        }
    }
    names
}
