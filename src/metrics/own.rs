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

/// A metric type that can be created from its catalogue entry (labels included) and
/// registered in one call; histograms take their buckets.
pub trait OwnMetric: Sized {
    /// Creates the metric from `d` and registers it in `r`.
    fn create(r: &Registry, d: &MetricDef, buckets: &[f64]) -> Result<Self, prometheus::Error>;
}

/// `OwnMetric` for a type built from `Opts` (labelled types also take the labels).
macro_rules! from_opts {
    ($($ty:ty => |$d:ident, $b:ident| $build:expr;)+) => {
        $(impl OwnMetric for $ty {
            fn create(r: &Registry, $d: &MetricDef, $b: &[f64]) -> Result<Self, prometheus::Error> {
                registered(r, $build?)
            }
        })+
    };
}

from_opts! {
    Gauge => |d, _b| Gauge::with_opts(opts(d));
    GaugeVec => |d, _b| GaugeVec::new(opts(d), d.labels);
    IntCounter => |d, _b| IntCounter::with_opts(opts(d));
    IntCounterVec => |d, _b| IntCounterVec::new(opts(d), d.labels);
    Histogram => |d, b| Histogram::with_opts(histogram_opts(d, b));
    HistogramVec => |d, b| HistogramVec::new(histogram_opts(d, b), d.labels);
}

fn histogram_opts(d: &MetricDef, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(d.name, d.help).buckets(buckets.to_vec())
}

/// Creates and registers one metric of type `M` from its catalogue entry.
pub fn create<M: OwnMetric>(r: &Registry, d: &MetricDef) -> Result<M, prometheus::Error> {
    M::create(r, d, &[])
}

/// Declares a component's metrics struct and its `register(&Registry)` from one list of
/// `field: Type = CATALOGUE_ENTRY` (histograms: `= ENTRY with BUCKETS`), so the fields,
/// their catalogue entries and their registration cannot drift apart:
///
/// ```ignore
/// own_metrics! {
///     /// Restore drills.
///     pub struct DrillMetrics {
///         pub last_success: Gauge = PGVIGIL_DRILL_LAST_SUCCESS_TIMESTAMP_SECONDS,
///         pub failures: IntCounter = PGVIGIL_DRILL_FAILURES_TOTAL,
///     }
/// }
/// ```
#[macro_export]
macro_rules! own_metrics {
    (@buckets) => { &[] };
    (@buckets $buckets:expr) => { &$buckets };
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($fvis:vis $field:ident: $ty:ty = $def:ident $(with $buckets:expr)?),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            $($fvis $field: $ty,)+
        }

        impl $name {
            /// Creates the metrics from the catalogue and registers them.
            $vis fn register(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
                Ok(Self {
                    $($field: <$ty as $crate::metrics::own::OwnMetric>::create(
                        r,
                        &$crate::metrics::catalogue::$def,
                        $crate::own_metrics!(@buckets $($buckets)?),
                    )?,)+
                })
            }
        }
    };
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
        let g: Gauge = create(&r, &cat::PGVIGIL_BACKUPS).unwrap();
        g.set(3.0);
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, vec![cat::PGVIGIL_BACKUPS.name.to_string()]);
        // Registering the same family twice is an error, not a silent second copy.
        assert!(create::<Gauge>(&r, &cat::PGVIGIL_BACKUPS).is_err());
    }
}
