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

/// Whether the server user (`postgres` when root; else this process's user, which can) can
/// reach `path`: every directory on the way searchable, and the file itself readable and,
/// when `execute`, executable — by owner, group (primary or supplementary) or other bits.
pub fn server_user_can_reach(path: &Path, execute: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(Some((uid, gid))) = server_user() else {
        return true;
    };
    let groups: Vec<u32> = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| {
            let name = std::ffi::CString::new(u.name).ok()?;
            nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok()
        })
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid]);
    // `bits` is an rwx triple (4 read, 2 write, 1 execute) that must all be granted.
    let allows = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        let granted = if m.uid() == uid {
            mode >> 6
        } else if groups.contains(&m.gid()) {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
    };
    let Ok(full) = std::fs::canonicalize(path) else {
        return false;
    };
    for dir in full.ancestors().skip(1) {
        match std::fs::metadata(dir) {
            Ok(m) if allows(&m, 1) => {}
            _ => return false,
        }
    }
    match std::fs::metadata(&full) {
        Ok(m) => allows(&m, if execute { 5 } else { 4 }),
        Err(_) => false,
    }
}
