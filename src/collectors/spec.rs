//! A collector query described as data: label columns, value columns (each tied to a
//! catalogue entry and a version range) and a FROM clause. The SQL is built once per
//! connection for the server's version, every value is cast to float8 and every label to
//! text, and one generic reader turns rows into families. Collectors are therefore just
//! tables of columns, which keeps the SQL next to the metric it feeds.

use std::borrow::Cow;

use crate::metrics::{Family, Kind, MetricDef};

/// One numeric output column. A histogram column's expression is an array
/// `[sum, count, le1, cumulative1, le2, cumulative2, ...]` (see `push_histogram`).
#[derive(Debug)]
pub struct ValueCol {
    pub def: &'static MetricDef,
    /// SQL expression; cast to float8 by the builder.
    pub expr: &'static str,
    /// First `server_version_num` that has it (inclusive).
    pub since: i32,
    /// First version that no longer has it (exclusive); `i32::MAX` = still there.
    pub until: i32,
}

/// Shorthand for a column present in every supported version.
pub const fn col(def: &'static MetricDef, expr: &'static str) -> ValueCol {
    ValueCol {
        def,
        expr,
        since: 0,
        until: i32::MAX,
    }
}

/// A column present from `since` on.
pub const fn col_since(def: &'static MetricDef, expr: &'static str, since: i32) -> ValueCol {
    ValueCol {
        def,
        expr,
        since,
        until: i32::MAX,
    }
}

/// A column present only before `until`.
pub const fn col_until(def: &'static MetricDef, expr: &'static str, until: i32) -> ValueCol {
    ValueCol {
        def,
        expr,
        since: 0,
        until,
    }
}

/// One collector query.
pub struct QuerySpec {
    /// Collector name: the `collector` label of the scrape metrics.
    pub name: &'static str,
    /// SQL expressions for the label values, in the order of each family's label names.
    pub labels: &'static [&'static str],
    pub values: &'static [ValueCol],
    /// FROM clause (and anything after it) for a given server version.
    pub from: fn(i32) -> String,
    /// Lowest server version this query runs on at all.
    pub since: i32,
}

/// A spec resolved for one server version: the SQL and the columns it returns.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: &'static str,
    pub sql: String,
    pub label_count: usize,
    pub values: Vec<&'static MetricDef>,
}

impl QuerySpec {
    /// The SQL for `version`, or None when the server is too old for this collector.
    pub fn build(&self, version: i32) -> Option<Built> {
        if version < self.since {
            return None;
        }
        let values: Vec<&ValueCol> = self
            .values
            .iter()
            .filter(|c| version >= c.since && version < c.until)
            .collect();
        let mut cols: Vec<String> = self
            .labels
            .iter()
            .map(|e| format!("coalesce(({e})::text, '')"))
            .collect();
        cols.extend(values.iter().map(|c| match c.def.kind {
            Kind::Histogram => format!("({})::float8[]", c.expr),
            _ => format!("({})::float8", c.expr),
        }));
        Some(Built {
            name: self.name,
            sql: format!("SELECT {} FROM {}", cols.join(", "), (self.from)(version)),
            label_count: self.labels.len(),
            values: values.iter().map(|c| c.def).collect(),
        })
    }
}

impl Built {
    /// Turns rows into one family per value column (empty families are dropped).
    pub fn read(&self, rows: &[tokio_postgres::Row], out: &mut Vec<Family>) {
        let mut families: Vec<Family> = self.values.iter().map(|d| Family::new(d)).collect();
        for row in rows {
            let labels: Vec<String> = (0..self.label_count)
                .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
                .collect();
            for (j, fam) in families.iter_mut().enumerate() {
                let at = self.label_count + j;
                if fam.kind == Kind::Histogram {
                    if let Ok(Some(v)) = row.try_get::<_, Option<Vec<f64>>>(at) {
                        push_histogram(fam, &labels, &v);
                    }
                // NULL (a timestamp that never happened, a lag with no replay) -> no sample.
                } else if let Ok(Some(v)) = row.try_get::<_, Option<f64>>(at) {
                    fam.push(labels.iter().cloned(), v);
                }
            }
        }
        for f in families {
            f.emit_into(out);
        }
    }
}

/// Adds one histogram from `[sum, count, le1, cumulative1, ...]`; a malformed array adds
/// nothing.
fn push_histogram(fam: &mut Family, labels: &[String], v: &[f64]) {
    let [sum, count, buckets @ ..] = v else {
        return;
    };
    if buckets.len() % 2 != 0 {
        return;
    }
    let labels = fam
        .label_names
        .iter()
        .zip(labels)
        .map(|(n, v)| (Cow::Borrowed(*n), v.clone()))
        .collect();
    let buckets = buckets.chunks_exact(2).map(|p| (p[0], p[1]));
    fam.push_histogram(labels, buckets, *sum, *count);
}
