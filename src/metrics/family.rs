//! The per-scrape metric model: a `Family` of `Sample`s, built fresh by collectors on each
//! collection. Collectors describe families with a catalogue `MetricDef`, so a name that is
//! not in the catalogue cannot be emitted by accident.

use std::borrow::Cow;

use super::catalogue::{Kind, MetricDef};

/// One sample: optional suffix (`_bucket`, `_sum`, `_count`), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(Cow<'static, str>, String)>,
    pub value: f64,
}

/// A metric family: name, help, type and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: Kind,
    /// Label names for `push`, in order (from the catalogue entry).
    pub label_names: &'static [&'static str],
    /// True for names kept for postgres_exporter / pgbouncer_exporter compatibility
    /// (a counter without `_total` keeps its name in OpenMetrics as type `unknown`).
    pub compat: bool,
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family described by a catalogue entry.
    pub fn new(def: &'static MetricDef) -> Self {
        Self {
            name: Cow::Borrowed(def.name),
            help: Cow::Borrowed(def.help),
            kind: def.kind,
            label_names: def.labels,
            compat: def.compat.is_some(),
            samples: Vec::new(),
        }
    }

    /// A family whose name is built at run time under a catalogue prefix entry
    /// (`pg_settings_*`, custom queries).
    pub fn dynamic(def: &'static MetricDef, name: String, help: String, kind: Kind) -> Self {
        Self {
            name: Cow::Owned(name),
            help: Cow::Owned(help),
            kind,
            label_names: def.labels,
            compat: def.compat.is_some(),
            samples: Vec::new(),
        }
    }

    /// Adds a sample; `values` pairs with the catalogue's label names, in order.
    pub fn push<S: Into<String>>(&mut self, values: impl IntoIterator<Item = S>, value: f64) {
        let labels = self
            .label_names
            .iter()
            .zip(values)
            .map(|(n, v)| (Cow::Borrowed(*n), v.into()))
            .collect();
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
    }

    /// Adds a sample with labels given by name (for run-time label sets).
    pub fn push_labeled(&mut self, labels: Vec<(Cow<'static, str>, String)>, value: f64) {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
    }

    /// Adds one histogram: a `_bucket` per `(upper bound, cumulative count)`, the `+Inf`
    /// bucket (= `count`) unless the buckets already end with it, `_sum` and `_count`.
    pub fn push_histogram(
        &mut self,
        labels: Vec<(Cow<'static, str>, String)>,
        buckets: impl IntoIterator<Item = (f64, f64)>,
        sum: f64,
        count: f64,
    ) {
        let mut inf_seen = false;
        let bucket = |le: String, value: f64| {
            let mut l = labels.clone();
            l.push((Cow::Borrowed("le"), le));
            Sample {
                suffix: "_bucket",
                labels: l,
                value,
            }
        };
        for (upper, cumulative) in buckets {
            inf_seen |= upper.is_infinite();
            self.samples.push(bucket(format_value(upper), cumulative));
        }
        if !inf_seen {
            self.samples.push(bucket("+Inf".into(), count));
        }
        self.samples.push(Sample {
            suffix: "_sum",
            labels: labels.clone(),
            value: sum,
        });
        self.samples.push(Sample {
            suffix: "_count",
            labels,
            value: count,
        });
    }

    /// Appends this family to `out` unless it has no samples.
    pub fn emit_into(self, out: &mut Vec<Family>) {
        if !self.samples.is_empty() {
            out.push(self);
        }
    }
}

/// Converts families gathered from a `prometheus::Registry` (pgvigil's own metrics).
pub fn from_registry(families: Vec<prometheus::proto::MetricFamily>) -> Vec<Family> {
    use prometheus::proto::MetricType;
    let mut out = Vec::with_capacity(families.len());
    for mf in families {
        let kind = match mf.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            // pgvigil registers no summaries or untyped metrics.
            _ => continue,
        };
        let mut fam = Family {
            name: Cow::Owned(mf.name().to_string()),
            help: Cow::Owned(mf.help().to_string()),
            kind,
            label_names: &[],
            compat: false,
            samples: Vec::new(),
        };
        for m in mf.get_metric() {
            let labels: Vec<(Cow<'static, str>, String)> = m
                .get_label()
                .iter()
                .map(|l| (Cow::Owned(l.name().to_string()), l.value().to_string()))
                .collect();
            match kind {
                Kind::Counter => fam.push_labeled(labels, m.get_counter().get_value()),
                Kind::Gauge => fam.push_labeled(labels, m.get_gauge().get_value()),
                Kind::Untyped | Kind::Summary => {}
                Kind::Histogram => {
                    let h = m.get_histogram();
                    fam.push_histogram(
                        labels,
                        h.get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count() as f64)),
                        h.get_sample_sum(),
                        h.get_sample_count() as f64,
                    );
                }
            }
        }
        out.push(fam);
    }
    out
}

/// Formats a sample value the way Prometheus parsers expect.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}
