//! Finds the PostgreSQL server binaries (initdb, postgres, pg_basebackup, ...) installed by
//! the system packages, newest major first, and runs child processes as the `postgres` OS
//! user when pgvigil itself runs as root (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the server binaries live (`/usr/lib/postgresql/<major>/bin`).
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
    pub major: u32,
}

/// The binaries are missing or the postgres OS user is.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql-15` (or run `make deps`)")]
    NotFound,
    #[error("running as root, but there is no `postgres` OS user to run the server as; install the postgresql package or create the user")]
    NoPostgresUser,
}

impl PgBinaries {
    /// The newest major version installed under `/usr/lib/postgresql`.
    pub fn discover() -> Result<Self, BinariesError> {
        Self::discover_in(Path::new("/usr/lib/postgresql"))
    }

    fn discover_in(root: &Path) -> Result<Self, BinariesError> {
        let entries = std::fs::read_dir(root).map_err(|_| BinariesError::NotFound)?;
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let major: u32 = e.file_name().to_str()?.parse().ok()?;
                let bindir = e.path().join("bin");
                bindir
                    .join("initdb")
                    .exists()
                    .then_some(PgBinaries { bindir, major })
            })
            .max_by_key(|b| b.major)
            .ok_or(BinariesError::NotFound)
    }

    /// Path of one binary, e.g. `bin("pg_ctl")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A command for `name` that runs as the `postgres` user when we are root.
    pub fn command(&self, name: &str) -> Result<Command, BinariesError> {
        let mut cmd = Command::new(self.bin(name));
        if let Some((uid, gid)) = server_user()? {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        Ok(cmd)
    }
}

/// The uid/gid to run server processes as: `postgres` when root, else unchanged.
pub fn server_user() -> Result<Option<(u32, u32)>, BinariesError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        _ => Err(BinariesError::NoPostgresUser),
    }
}

/// Hands a directory to the server user (no-op when not root).
pub fn chown_to_server_user(path: &Path) -> Result<(), std::io::Error> {
    match server_user() {
        Ok(Some((uid, gid))) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        Ok(None) => Ok(()),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Hands a directory tree to the server user (no-op when not root).
pub fn chown_tree_to_server_user(root: &Path) -> Result<(), std::io::Error> {
    let Ok(Some((uid, gid))) = server_user() else {
        return Ok(());
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        if p.is_dir() && !p.is_symlink() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}
