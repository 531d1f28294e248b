//! Metrics: the catalogue of every family pgvigil exports, the per-scrape family model,
//! the exposition encoders, and the process-wide registry for pgvigil's own metrics.

pub mod catalogue;
pub mod encode;
pub mod family;
pub mod own;
pub mod parse;

pub use catalogue::{Kind, MetricDef};
pub use encode::{encode, Format};
pub use family::Family;
