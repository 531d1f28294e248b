//! Backups and the WAL archive. `ops` is the entry point: one function per operation
//! (backup, verify, drill, retention, off-site copy, WAL push) that the CLI and the daemon
//! both call; it emits the operation's event and sets its metrics (`metrics`). Below it:
//! streamed base backups (`basebackup`), zstd and hashing (`compress`), the repository's
//! record of backups (`catalog`), WAL push/fetch (`wal`, with `wal_report` for the push
//! reports sent to the daemon), restore (`restore`), continuity and the recovery window
//! (`pitr`), the heartbeat table (`heartbeat`), drills (`drill`), retention (`retention`),
//! and the off-site copy (`offsite`). The lease that keeps two sidecars from running one
//! job at once, and fences the writes of a holder that lost it, is a repository primitive
//! (`store::lease`); `ops` takes it.

pub mod basebackup;
pub mod catalog;
pub mod compress;
pub mod drill;
pub mod heartbeat;
pub mod metrics;
pub mod offsite;
pub mod ops;
pub mod pitr;
pub mod progress;
pub mod records;
pub mod restore;
pub mod retention;
pub mod split;
pub mod timeline;
pub mod unpack;
pub mod wal;
pub mod wal_ahead;
pub mod wal_prefetch;
pub mod wal_report;
pub mod wal_scan;
pub mod wal_serve;

/// Errors of backup, WAL and restore operations; each names the object or step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{0}")]
    Refused(String),
    #[error("{step}: {cause}")]
    Io { step: String, cause: std::io::Error },
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("{program} failed ({status}): {stderr}")]
    Child {
        program: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// Not this sidecar's turn: a standby, or another sidecar holds the job's lease.
    #[error("skipped: {0}")]
    Skipped(String),
}

impl Error {
    /// A bounded label for metrics and audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Store(crate::store::Error::Refused { .. }) => "refused",
            Error::Store(_) => "store",
            Error::Refused(_) => "refused",
            Error::Io { .. } => "io",
            Error::Postgres(_) => "postgres",
            Error::Child { .. } => "child",
            Error::Invalid(_) => "invalid",
            Error::Skipped(_) => "skipped",
        }
    }
}

/// Bytes available to this process on the filesystem of `dir`.
pub(crate) fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    crate::disk::free_bytes(dir)
}

pub(crate) fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let step = step.into();
    move |cause| Error::Io { step, cause }
}
