//! The audit log: one JSON object per line, one schema for `ops`, `data` and `access`
//! events (`event.rs`), written by a background sink (`sink.rs`).

pub mod event;
pub mod sink;

pub use event::{Event, EventKind, Outcome};
pub use sink::AuditLog;
