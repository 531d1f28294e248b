//! pgvigil's own metrics (`pgvigil_*` and the few compatibility families it measures itself)
//! live in a `prometheus::Registry`. Every one of them is created here, from its catalogue
//! entry, and registered in the same call: a component's `*Metrics::register` is then a list
//! of one-liners, the name and help text come from the one catalogue, and a metric cannot be
//! created without being exported.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

use super::MetricDef;

/// Registers a pgvigil metric and hands it back.
fn registered<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn opts(d: &MetricDef) -> Opts {
    Opts::new(d.name, d.help)
}

/// A gauge without labels.
pub fn gauge(r: &Registry, d: &MetricDef) -> Result<Gauge, prometheus::Error> {
    registered(r, Gauge::with_opts(opts(d))?)
}

/// A gauge with the catalogue's labels.
pub fn gauge_vec(r: &Registry, d: &MetricDef) -> Result<GaugeVec, prometheus::Error> {
    registered(r, GaugeVec::new(opts(d), d.labels)?)
}

/// A counter without labels.
pub fn counter(r: &Registry, d: &MetricDef) -> Result<IntCounter, prometheus::Error> {
    registered(r, IntCounter::with_opts(opts(d))?)
}

/// A counter with the catalogue's labels.
pub fn counter_vec(r: &Registry, d: &MetricDef) -> Result<IntCounterVec, prometheus::Error> {
    registered(r, IntCounterVec::new(opts(d), d.labels)?)
}

/// A histogram without labels.
pub fn histogram(
    r: &Registry,
    d: &MetricDef,
    buckets: Vec<f64>,
) -> Result<Histogram, prometheus::Error> {
    registered(
        r,
        Histogram::with_opts(HistogramOpts::new(d.name, d.help).buckets(buckets))?,
    )
}

/// A histogram with the catalogue's labels.
pub fn histogram_vec(
    r: &Registry,
    d: &MetricDef,
    buckets: Vec<f64>,
) -> Result<HistogramVec, prometheus::Error> {
    registered(
        r,
        HistogramVec::new(
            HistogramOpts::new(d.name, d.help).buckets(buckets),
            d.labels,
        )?,
    )
}

/// Seconds since the Unix epoch, as the `*_timestamp_seconds` gauges hold them.
pub fn unix_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::catalogue as cat;

    #[test]
    fn a_metric_is_registered_under_its_catalogue_name() {
        let r = Registry::new();
        let g = gauge(&r, &cat::PGVIGIL_BACKUPS).unwrap();
        g.set(3.0);
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, vec![cat::PGVIGIL_BACKUPS.name.to_string()]);
        // Registering the same family twice is an error, not a silent second copy.
        assert!(gauge(&r, &cat::PGVIGIL_BACKUPS).is_err());
    }
}
