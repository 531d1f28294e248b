//! The audit log: one JSON object per line, one schema for `ops`, `data` and `access`
//! events (`event.rs`), hash-chained per sink (`chain.rs`), written by a background sink
//! to stdout and an optional file (`sink.rs`). `schema.rs` installs the database change
//! audit (`deploy/sql/audit.sql`) and `tail.rs` forwards its rows as `data` lines.

pub mod chain;
pub mod event;
pub mod schema;
pub mod sink;
pub mod tail;

pub use event::{Event, EventKind, Outcome};
pub use sink::{AuditLog, SinkConfig};
