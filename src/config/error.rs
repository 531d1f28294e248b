//! Configuration errors: every variant names the file, and where the key is known, its
//! dotted path and line, so `pgvigil check-config` can point at the exact spot to fix.

use std::path::PathBuf;

/// Where in the configuration file a problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line number, when it could be found.
    pub line: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file.display(), line),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Everything that can go wrong while reading and validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown or has the wrong type.
    #[error("{location}: {key}: {message}")]
    Syntax {
        location: Location,
        /// Dotted key path, or `(document)` when the error is not under a key.
        key: String,
        message: String,
    },
    /// A value parsed but is not acceptable (bad duration, DSN, address, ...).
    #[error("{location}: {key}: {message}")]
    Invalid {
        location: Location,
        key: String,
        message: String,
    },
}

impl Error {
    /// The dotted key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Read { .. } => None,
            Error::Syntax { key, .. } | Error::Invalid { key, .. } => Some(key),
        }
    }
}
