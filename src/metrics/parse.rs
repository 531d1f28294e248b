//! A parser for the Prometheus text exposition format, for metrics pgvigil passes through
//! from another exporter (PostgREST's admin /metrics). Histogram and summary samples
//! (`_bucket`, `_sum`, `_count`) are grouped under their family; timestamps are dropped;
//! a malformed line is skipped rather than failing the whole page.

use std::borrow::Cow;

use super::catalogue::Kind;
use super::family::{Family, Sample};

fn kind_of(t: &str) -> Kind {
    match t {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" => Kind::Histogram,
        "summary" => Kind::Summary,
        _ => Kind::Untyped,
    }
}

fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let idx = match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: Cow::Owned(name.to_string()),
                help: Cow::Borrowed(""),
                kind: Kind::Untyped,
                label_names: &[],
                compat: false,
                samples: Vec::new(),
            });
            families.len() - 1
        }
    };
    &mut families[idx]
}

fn parse_labels(s: &str) -> Option<Vec<(Cow<'static, str>, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        let key = key.trim().trim_start_matches(',').trim();
        if !valid_label_name(key) {
            return None;
        }
        out.push((Cow::Owned(key.to_string()), value));
        rest = after
            .get(end + 1..)?
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(out)
}

/// Splits a sample line into name, label text and the rest (value and timestamp). The
/// label set ends at the last `}` *after* its `{`; a line such as `pgrst_}a{b 1` has none
/// and is malformed (None).
fn split_sample(line: &str) -> Option<(&str, &str, &str)> {
    let i = line.find(['{', ' ', '\t'])?;
    if line.as_bytes().get(i) != Some(&b'{') {
        return Some((line.get(..i)?, "", line.get(i..)?));
    }
    let after = line.get(i + 1..)?;
    let close = after.rfind('}')?;
    Some((line.get(..i)?, after.get(..close)?, after.get(close + 1..)?))
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: a name Prometheus accepts. Anything else would make the
/// whole /metrics page unparseable for Prometheus, so such a sample is skipped.
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: a label name Prometheus accepts.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape_help(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

/// Parses exposition text into families, keeping only names for which `keep` is true.
pub fn parse_text(text: &str, keep: impl Fn(&str) -> bool) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if keep(name) {
                family(&mut families, name).help = Cow::Owned(unescape_help(help));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            if keep(name) {
                family(&mut families, name).kind = kind_of(t.trim());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, labels, rest)) = split_sample(line) else {
            continue;
        };
        if !valid_metric_name(name) {
            continue;
        }
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let Some(labels) = parse_labels(labels) else {
            continue;
        };
        // A sample belongs to a declared histogram/summary family when its name is the
        // family name plus one of the standard suffixes.
        let (fam_name, suffix) = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|sfx| {
                let base = name.strip_suffix(sfx)?;
                families
                    .iter()
                    .any(|f| f.name == base && matches!(f.kind, Kind::Histogram | Kind::Summary))
                    .then_some((base, *sfx))
            })
            .unwrap_or((name, ""));
        if !keep(fam_name) {
            continue;
        }
        family(&mut families, fam_name).samples.push(Sample {
            suffix,
            labels,
            value,
        });
    }
    families.retain(|f| !f.samples.is_empty());
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_skipped_and_the_rest_kept() {
        // Each of these once panicked or produced a page Prometheus cannot parse.
        let text = "pgrst_}a{b 1\n\
pgrst_ok 2\n\
pgrst_x{a=\"1\"}}{ 3\n\
pgrst_bad-name 4\n\
pgrst_l{1a=\"x\"} 5\n\
pgrst_y{a=\"\\\"} 6\n\
pgrst_{ 7\n\
pgrst_tab\t8\n";
        let f = parse_text(text, |n| n.starts_with("pgrst_"));
        let got: Vec<(&str, f64)> = f
            .iter()
            .flat_map(|f| f.samples.iter().map(|s| (f.name.as_ref(), s.value)))
            .collect();
        assert_eq!(got, [("pgrst_ok", 2.0), ("pgrst_tab", 8.0)]);
    }

    #[test]
    fn groups_histograms_and_keeps_types() {
        let text =
            "# HELP pgrst_db_pool_timeouts_total The total number of pool connection timeouts\n\
# TYPE pgrst_db_pool_timeouts_total counter\n\
pgrst_db_pool_timeouts_total 7.0\n\
# HELP pgrst_schema_cache_loads_total The total number of times the schema cache was loaded\n\
# TYPE pgrst_schema_cache_loads_total counter\n\
pgrst_schema_cache_loads_total{status=\"SUCCESS\"} 3.0\n\
# TYPE pgrst_x_seconds histogram\n\
pgrst_x_seconds_bucket{le=\"0.1\"} 1\n\
pgrst_x_seconds_bucket{le=\"+Inf\"} 2\n\
pgrst_x_seconds_sum 0.3\n\
pgrst_x_seconds_count 2\n\
other_metric 1\n";
        let f = parse_text(text, |n| n.starts_with("pgrst_"));
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(f[0].samples[0].value, 7.0);
        assert_eq!(f[1].samples[0].labels[0].1, "SUCCESS");
        assert_eq!(f[2].kind, Kind::Histogram);
        assert_eq!(f[2].samples.len(), 4);
        assert_eq!(f[2].samples[3].suffix, "_count");
        let round = crate::metrics::encode(&f, crate::metrics::Format::Text);
        assert!(
            round.contains("pgrst_x_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{round}"
        );
        assert!(!round.contains("other_metric"));
    }
}
