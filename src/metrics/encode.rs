//! Exposition encoders: Prometheus text 0.0.4 and OpenMetrics 1.0, chosen by the scraper's
//! `Accept` header. Hand-written because the `prometheus` crate has no OpenMetrics encoder.
//! Prometheus asks for OpenMetrics first but accepts text; pgvigil has nothing that only
//! OpenMetrics can carry (no exemplars), so text is served whenever it is acceptable, and
//! Prometheus' metadata then types postgres_exporter's counters without `_total` as
//! counters, as postgres_exporter's page does. OpenMetrics goes to scrapers that ask for it
//! alone.
//!
//! OpenMetrics names a counter family without `_total` and its samples with it. Counters
//! kept under postgres_exporter names that lack `_total` (`pg_stat_database_xact_commit`)
//! are exposed as type `unknown` there, so the series name a dashboard queries is the same
//! whichever format Prometheus negotiated.

use std::fmt::Write as _;

use super::catalogue::Kind;
use super::family::{format_value, Family};

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// The Content-Type header for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Picks the format from an `Accept` header: OpenMetrics only when plain text is not
    /// acceptable (no `text/plain`, `text/*` or `*/*` with q > 0).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut om_q: f32 = 0.0;
        let mut text_q: f32 = 0.0;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => om_q = om_q.max(q),
                "text/plain" | "text/*" | "*/*" => text_q = text_q.max(q),
                _ => {}
            }
        }
        if om_q > 0.0 && text_q <= 0.0 {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str, format: Format) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn type_name(fam: &Family, format: Format) -> &'static str {
    match (format, fam.kind) {
        (_, Kind::Gauge) => "gauge",
        (_, Kind::Histogram) => "histogram",
        (_, Kind::Summary) => "summary",
        (Format::Text, Kind::Counter) => "counter",
        (Format::Text, Kind::Untyped) => "untyped",
        (Format::OpenMetrics, Kind::Counter) if fam.name.ends_with("_total") => "counter",
        (Format::OpenMetrics, _) => "unknown",
    }
}

/// Writes all families in the chosen format.
pub fn encode(families: &[Family], format: Format) -> String {
    let mut out = String::with_capacity(families.iter().map(|f| 64 + f.samples.len() * 80).sum());
    for fam in families {
        let ty = type_name(fam, format);
        let family_name = match (format, ty) {
            (Format::OpenMetrics, "counter") => {
                fam.name.strip_suffix("_total").unwrap_or(&fam.name)
            }
            _ => &fam.name,
        };
        out.push_str("# HELP ");
        out.push_str(family_name);
        out.push(' ');
        escape_help(&mut out, &fam.help, format);
        out.push_str("\n# TYPE ");
        out.push_str(family_name);
        out.push(' ');
        out.push_str(ty);
        out.push('\n');
        for s in &fam.samples {
            out.push_str(&fam.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(&mut out, v);
                    out.push('"');
                }
                out.push('}');
            }
            let _ = write!(out, " {}", format_value(s.value));
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::catalogue;

    #[test]
    fn negotiates_like_prometheus() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text,text/plain;q=0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.1,text/plain;q=0.9")),
            Format::Text
        );
    }

    #[test]
    fn escapes_and_names_counters() {
        let mut f = Family::new(&catalogue::PG_STAT_DATABASE_XACT_COMMIT);
        f.push(["1", "we\"ird\\db\n"], 5.0);
        let text = encode(std::slice::from_ref(&f), Format::Text);
        assert!(
            text.contains("# TYPE pg_stat_database_xact_commit counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pg_stat_database_xact_commit{datid=\"1\",datname=\"we\\\"ird\\\\db\\n\"} 5\n"
            ),
            "{text}"
        );
        let om = encode(std::slice::from_ref(&f), Format::OpenMetrics);
        assert!(
            om.contains("# TYPE pg_stat_database_xact_commit unknown\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));

        let mut t = Family::new(&catalogue::PGVIGIL_SCRAPES_TOTAL);
        t.push(Vec::<String>::new(), 3.0);
        let om = encode(&[t], Format::OpenMetrics);
        assert!(
            om.contains("# TYPE pgvigil_scrapes counter\npgvigil_scrapes_total 3\n"),
            "{om}"
        );
    }
}
