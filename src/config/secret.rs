//! Reading a secret file (`server.bearer_token_file`, `api_proxy.jwt_secret_file`): the one
//! place that decides what a usable secret is, so no reader can forget a check. An empty
//! secret used to disable authentication and an empty JWT secret made forged tokens
//! "verified"; now a secret shorter than [`MIN_SECRET_BYTES`] (after trimming surrounding
//! whitespace) or a file that others may read is an error naming the key and the file, and
//! the daemon does not start.
//!
//! Permissions follow libpq's rule for key files: no access for group or others, except
//! that a root-owned file may be group-readable (0640, a secret shared through a group).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The shortest secret accepted, in bytes (256 bits, what HS256 needs).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a secret file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {} is empty", path.display())]
    Empty { key: &'static str, path: PathBuf },
    #[error("{key}: {} holds {len} bytes; at least {MIN_SECRET_BYTES} are required (e.g. openssl rand -hex 32)", path.display())]
    TooShort {
        key: &'static str,
        path: PathBuf,
        len: usize,
    },
    #[error("{key}: {} has mode {mode:04o}; group and others must not read it (chmod 600)", path.display())]
    Permissions {
        key: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

/// Checks that `path` is readable by its owner only (root-owned: group read allowed).
pub fn check_private(key: &'static str, path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(SecretError::Permissions {
            key,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret: private permissions, surrounding whitespace trimmed, at least
/// [`MIN_SECRET_BYTES`] long.
pub fn read_secret_file(key: &'static str, path: &Path) -> Result<Vec<u8>, SecretError> {
    check_private(key, path)?;
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let secret = bytes.trim_ascii().to_vec();
    match secret.len() {
        0 => Err(SecretError::Empty {
            key,
            path: path.to_path_buf(),
        }),
        len if len < MIN_SECRET_BYTES => Err(SecretError::TooShort {
            key,
            path: path.to_path_buf(),
            len,
        }),
        _ => Ok(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_empty_short_and_readable_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let k = "server.bearer_token_file";
        let good = write("good", &format!("{}\n", "a".repeat(32)), 0o600);
        assert_eq!(
            read_secret_file(k, &good).unwrap(),
            "a".repeat(32).as_bytes()
        );
        let empty = write("empty", "\n", 0o600);
        assert!(matches!(
            read_secret_file(k, &empty),
            Err(SecretError::Empty { .. })
        ));
        let short = write("short", "hunter2", 0o600);
        let err = read_secret_file(k, &short).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
        assert!(matches!(err, SecretError::TooShort { len: 7, .. }));
        let open = write("open", &"a".repeat(40), 0o644);
        assert!(matches!(
            read_secret_file(k, &open),
            Err(SecretError::Permissions { .. })
        ));
    }
}
