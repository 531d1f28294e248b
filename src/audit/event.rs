//! The audit event schema shared by every kind of event: `ts` (RFC 3339, UTC, ms), `kind`,
//! `event` (a stable dotted name), `outcome`, `actor`, `target`, `details`.

use serde::Serialize;
use serde_json::Value;

/// Which stream an event belongs to: `ops` (what pgvigil did), `data` (database changes
/// from the audit table), `access` (proxied API requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Ops,
    Data,
    Access,
}

impl EventKind {
    /// The `kind` value, also the `kind` label of `pgvigil_audit_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ops => "ops",
            Self::Data => "data",
            Self::Access => "access",
        }
    }
}

/// How it ended (`success` or `failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// One audit line, before the sink adds `seq`, `prev` and `hash`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub ts: String,
    pub kind: EventKind,
    pub event: &'static str,
    pub outcome: Outcome,
    pub actor: Value,
    pub target: Value,
    pub details: Value,
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
