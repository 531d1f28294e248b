//! Finds the PostgreSQL binaries (initdb, postgres, pg_basebackup, ...) that match a server,
//! and runs them as the `postgres` OS user when pgvigil itself runs as root (PostgreSQL
//! refuses to run as root).
//!
//! Why matching matters: a host that went through `pg_upgrade` has two majors installed, and
//! a drill of a 15 backup must start a 15 postmaster, not the newest one; `pg_basebackup`
//! refuses a server newer than itself. So the server's major picks the binaries:
//! [`PgBinaries::server`] wants exactly that major (restore, verify, amcheck, drills),
//! [`PgBinaries::client`] that major or a newer one (`pg_basebackup` reads older servers).
//! `[postgres] bindir` (a list of directories) replaces the search under
//! `/usr/lib/postgresql/*/bin`.
//!
//! A [`Runner`] says how a program is started: on the host, or inside a chroot whose own
//! libc the binaries need (the tests' PostgreSQL 17 and 18 come from Debian trixie and sid
//! chroots; see `scripts/pg-chroots.sh`). Paths handed to a chrooted program are translated
//! with [`PgBinaries::guest_path`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the standard packages install every major's binaries.
pub const PACKAGE_ROOT: &str = "/usr/lib/postgresql";

/// How a PostgreSQL program is started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Runner {
    /// Directly on this host.
    #[default]
    Host,
    /// Inside the chroot at this directory (as the chroot's own `postgres` user).
    Chroot(PathBuf),
}

/// Where one major's binaries live, and how they are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The bin directory as seen from the host (under the chroot for [`Runner::Chroot`]).
    pub bindir: PathBuf,
    /// The PostgreSQL major version these binaries belong to.
    pub major: u32,
    /// How the programs are started.
    pub runner: Runner,
}

/// Where to look for binaries: typed data built from `[postgres] bindir` (or by the tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// Bin directories to consider; empty = every `/usr/lib/postgresql/<major>/bin`.
    pub dirs: Vec<PathBuf>,
    /// How the found binaries are run.
    pub runner: Runner,
}

/// The binaries are missing, do not match the server, or the postgres OS user is missing.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// Nothing at all was found.
    #[error("no PostgreSQL server binaries found in {looked}; install them with `apt-get install postgresql-15` (or run `make deps`)")]
    NotFound {
        /// The directories searched, for the message.
        looked: String,
    },
    /// Binaries exist, but none of the needed major.
    #[error("PostgreSQL {need} binaries are needed ({why}) but only major(s) {found} were found in {looked}; install postgresql-{major} or list its bin directory in `[postgres] bindir`", major = .need_major)]
    NoMatch {
        /// What was needed, e.g. "17" or "17 or newer".
        need: String,
        /// The major itself, for the package name.
        need_major: u32,
        /// What needs them.
        why: String,
        /// The majors that were found.
        found: String,
        /// The directories searched.
        looked: String,
    },
    /// Running as root without a `postgres` user.
    #[error("running as root, but there is no `postgres` OS user to run the server as{context}; install the postgresql package or create the user")]
    NoPostgresUser {
        /// Where the user was looked up (empty for the host).
        context: String,
    },
    /// A path handed to a chrooted program lies outside the chroot.
    #[error("{path} is outside the chroot {root}: a program run there cannot see it")]
    OutsideChroot {
        /// The path.
        path: PathBuf,
        /// The chroot.
        root: PathBuf,
    },
}

impl Search {
    /// The search `[postgres]` describes: its `bindir` list, run inside `bin_chroot` if set.
    pub fn from_settings(pg: &crate::config::PostgresSettings) -> Self {
        Self {
            dirs: pg.bindir.clone(),
            runner: match &pg.bin_chroot {
                Some(root) => Runner::Chroot(root.clone()),
                None => Runner::Host,
            },
        }
    }

    /// The search `[postgres] bindir` describes (an empty list: the package directories).
    pub fn dirs(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            runner: Runner::Host,
        }
    }

    /// Every major this search finds, newest first.
    pub fn candidates(&self) -> Vec<PgBinaries> {
        let dirs = if self.dirs.is_empty() {
            let root = match &self.runner {
                Runner::Host => PathBuf::from(PACKAGE_ROOT),
                Runner::Chroot(r) => r.join(PACKAGE_ROOT.trim_start_matches('/')),
            };
            std::fs::read_dir(&root)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path().join("bin"))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.dirs.clone()
        };
        let mut found: Vec<PgBinaries> = dirs
            .into_iter()
            .filter_map(|bindir| {
                let major = major_of_dir(&bindir)?;
                Some(PgBinaries {
                    bindir,
                    major,
                    runner: self.runner.clone(),
                })
            })
            .collect();
        found.sort_by_key(|b| std::cmp::Reverse(b.major));
        found.dedup_by(|a, b| a.bindir == b.bindir);
        found
    }

    fn looked(&self) -> String {
        if self.dirs.is_empty() {
            match &self.runner {
                Runner::Host => format!("{PACKAGE_ROOT}/*/bin"),
                Runner::Chroot(r) => format!("{}{PACKAGE_ROOT}/*/bin", r.display()),
            }
        } else {
            let list: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            format!("[postgres] bindir = [{}]", list.join(", "))
        }
    }
}

/// The major of a bin directory that holds PostgreSQL programs: the packages' layout
/// `.../postgresql/<major>/bin`, or the first number in the parent's name (`/opt/pg17/bin`).
fn major_of_dir(bindir: &Path) -> Option<u32> {
    let has_any = ["initdb", "pg_basebackup", "postgres"]
        .iter()
        .any(|b| bindir.join(b).exists());
    if !has_any {
        return None;
    }
    let parent = bindir.parent()?.file_name()?.to_str()?;
    if let Ok(m) = parent.parse() {
        return Some(m);
    }
    // "pg17", "postgresql-17", "17.2": the first run of digits.
    let digits: String = parent
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The major of a `server_version_num` (150004 → 15, 170002 → 17; 90624 → 9).
pub fn major_of_version_num(num: i32) -> u32 {
    u32::try_from(num / 10000).unwrap_or(0)
}

impl PgBinaries {
    /// The newest major installed under `/usr/lib/postgresql` (the default cluster of
    /// `pgvigil dev` and the tests).
    pub fn discover() -> Result<Self, BinariesError> {
        Self::newest(&Search::default())
    }

    /// The newest major `search` finds.
    pub fn newest(search: &Search) -> Result<Self, BinariesError> {
        search
            .candidates()
            .into_iter()
            .find(|b| b.bindir.join("initdb").exists())
            .ok_or_else(|| BinariesError::NotFound {
                looked: search.looked(),
            })
    }

    /// The server binaries of exactly `major` (restore, pg_verifybackup, pg_amcheck, drills:
    /// a data directory is only readable by its own major). `why` names the caller for the
    /// error message.
    pub fn server(search: &Search, major: u32, why: &str) -> Result<Self, BinariesError> {
        let all = search.candidates();
        if let Some(b) = all.iter().find(|b| b.major == major) {
            return Ok(b.clone());
        }
        Err(no_match(search, &all, major.to_string(), major, why))
    }

    /// Client binaries for a server of `major`: that major, else the newest newer one
    /// (`pg_basebackup` reads servers older than itself, never newer).
    pub fn client(search: &Search, major: u32, why: &str) -> Result<Self, BinariesError> {
        let all = search.candidates();
        if let Some(b) = all.iter().find(|b| b.major == major) {
            return Ok(b.clone());
        }
        if let Some(b) = all.iter().find(|b| b.major > major) {
            return Ok(b.clone());
        }
        Err(no_match(
            search,
            &all,
            format!("{major} or newer"),
            major,
            why,
        ))
    }

    /// Path of one binary as seen from the host, e.g. `bin("pg_ctl")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A path as the programs see it: unchanged on the host, relative to the chroot's root
    /// inside one (the path must lie inside the chroot).
    pub fn guest_path(&self, host: &Path) -> Result<PathBuf, BinariesError> {
        match &self.runner {
            Runner::Host => Ok(host.to_path_buf()),
            Runner::Chroot(root) => host
                .strip_prefix(root)
                .map(|rel| Path::new("/").join(rel))
                .map_err(|_| BinariesError::OutsideChroot {
                    path: host.to_path_buf(),
                    root: root.clone(),
                }),
        }
    }

    /// Where to put a throwaway directory these programs can use (a chroot's `/tmp`).
    pub fn default_parent_dir(&self) -> Option<PathBuf> {
        match &self.runner {
            Runner::Host => None,
            Runner::Chroot(root) => Some(root.join("tmp")),
        }
    }

    /// The uid/gid server processes run as: the host's `postgres` when root, or the
    /// chroot's own `postgres` (uids differ between the two).
    pub fn server_user(&self) -> Result<Option<(u32, u32)>, BinariesError> {
        match &self.runner {
            Runner::Host => server_user(),
            Runner::Chroot(root) => chroot_postgres_user(root).map(Some),
        }
    }

    /// Hands a directory to the user the programs run as (no-op when not root on the host).
    pub fn chown_to_server_user(&self, path: &Path) -> Result<(), std::io::Error> {
        match self.server_user() {
            Ok(Some((uid, gid))) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            Ok(None) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Hands a directory tree to the user the programs run as.
    pub fn chown_tree_to_server_user(&self, root: &Path) -> Result<(), std::io::Error> {
        match self.server_user() {
            Ok(Some(ids)) => chown_tree(root, ids),
            Ok(None) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// A command for `name` that runs as the `postgres` user when we are root; inside the
    /// chroot through `chroot --userspec`, which execs the program (so the child's pid is the
    /// program's, and signals reach it directly).
    pub fn command(&self, name: &str) -> Result<Command, BinariesError> {
        match &self.runner {
            Runner::Host => {
                let mut cmd = Command::new(self.bin(name));
                if let Some((uid, gid)) = server_user()? {
                    use std::os::unix::process::CommandExt;
                    cmd.uid(uid).gid(gid);
                }
                Ok(cmd)
            }
            Runner::Chroot(root) => {
                let (uid, gid) = chroot_postgres_user(root)?;
                let mut cmd = Command::new("chroot");
                cmd.arg(format!("--userspec={uid}:{gid}"))
                    .arg(format!("--groups={gid}"))
                    .arg(root)
                    .arg(self.guest_path(&self.bin(name))?)
                    .env("HOME", "/var/lib/postgresql");
                Ok(cmd)
            }
        }
    }
}

fn no_match(
    search: &Search,
    all: &[PgBinaries],
    need: String,
    need_major: u32,
    why: &str,
) -> BinariesError {
    if all.is_empty() {
        return BinariesError::NotFound {
            looked: search.looked(),
        };
    }
    let found: Vec<String> = all.iter().map(|b| b.major.to_string()).collect();
    BinariesError::NoMatch {
        need,
        need_major,
        why: why.into(),
        found: found.join(", "),
        looked: search.looked(),
    }
}

/// The `postgres` user of a chroot, from its own `/etc/passwd` (numeric, so nothing is
/// looked up in the host's user database).
fn chroot_postgres_user(root: &Path) -> Result<(u32, u32), BinariesError> {
    let passwd = root.join("etc/passwd");
    let err = || BinariesError::NoPostgresUser {
        context: format!(" in {}", passwd.display()),
    };
    let text = std::fs::read_to_string(&passwd).map_err(|_| err())?;
    parse_passwd_user(&text, "postgres").ok_or_else(err)
}

fn parse_passwd_user(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _pw = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// The uid/gid to run server processes as: `postgres` when root, else unchanged.
pub fn server_user() -> Result<Option<(u32, u32)>, BinariesError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        _ => Err(BinariesError::NoPostgresUser {
            context: String::new(),
        }),
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
    match server_user() {
        Ok(Some(ids)) => chown_tree(root, ids),
        Ok(None) => Ok(()),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

fn chown_tree(root: &Path, (uid, gid): (u32, u32)) -> Result<(), std::io::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(majors: &[u32]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for m in majors {
            let bin = dir.path().join(m.to_string()).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for b in ["initdb", "pg_basebackup", "postgres"] {
                std::fs::write(bin.join(b), "").unwrap();
            }
        }
        dir
    }

    fn search(dir: &Path, majors: &[u32]) -> Search {
        Search::dirs(
            majors
                .iter()
                .map(|m| dir.join(m.to_string()).join("bin"))
                .collect(),
        )
    }

    #[test]
    fn server_binaries_are_of_exactly_the_major() {
        let tree = fake_tree(&[15, 17]);
        let s = search(tree.path(), &[15, 17]);
        assert_eq!(PgBinaries::server(&s, 15, "drill").unwrap().major, 15);
        assert_eq!(PgBinaries::server(&s, 17, "drill").unwrap().major, 17);
        let e = PgBinaries::server(&s, 18, "the drill of backup X")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL 18 binaries"), "{e}");
        assert!(e.contains("the drill of backup X"), "{e}");
        assert!(e.contains("17, 15"), "{e}");
        assert!(e.contains("[postgres] bindir"), "{e}");
        assert!(e.contains(&tree.path().display().to_string()), "{e}");
    }

    #[test]
    fn client_binaries_are_of_the_major_or_newer() {
        let tree = fake_tree(&[15, 17]);
        let s = search(tree.path(), &[15, 17]);
        assert_eq!(PgBinaries::client(&s, 15, "backup").unwrap().major, 15);
        assert_eq!(PgBinaries::client(&s, 16, "backup").unwrap().major, 17);
        let e = PgBinaries::client(&s, 18, "backup")
            .unwrap_err()
            .to_string();
        assert!(e.contains("18 or newer"), "{e}");
        assert!(e.contains("postgresql-18"), "{e}");
    }

    #[test]
    fn nothing_found_names_where_it_looked() {
        let e = PgBinaries::server(&Search::dirs(vec!["/nonexistent/17/bin".into()]), 17, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/17/bin"), "{e}");
    }

    #[test]
    fn majors_from_directory_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["17", "pg18", "postgresql-16"] {
            let bin = dir.path().join(name).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_basebackup"), "").unwrap();
        }
        let bin = |n: &str| dir.path().join(n).join("bin");
        assert_eq!(major_of_dir(&bin("17")), Some(17));
        assert_eq!(major_of_dir(&bin("pg18")), Some(18));
        assert_eq!(major_of_dir(&bin("postgresql-16")), Some(16));
        assert_eq!(major_of_dir(&dir.path().join("nope/bin")), None);
        assert_eq!(major_of_version_num(170002), 17);
        assert_eq!(major_of_version_num(150004), 15);
    }

    #[test]
    fn chroot_paths_and_users() {
        let b = PgBinaries {
            bindir: "/c/17/usr/lib/postgresql/17/bin".into(),
            major: 17,
            runner: Runner::Chroot("/c/17".into()),
        };
        assert_eq!(
            b.guest_path(Path::new("/c/17/tmp/x")).unwrap(),
            PathBuf::from("/tmp/x")
        );
        assert!(b.guest_path(Path::new("/tmp/x")).is_err());
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:100:102::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(parse_passwd_user(passwd, "postgres"), Some((100, 102)));
        assert_eq!(parse_passwd_user(passwd, "nobody"), None);
    }
}
