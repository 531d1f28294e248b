//! PostgreSQL of every supported major for the version-sensitive tests: 15 from the host's
//! packages, 17 and 18 from Debian trixie and sid chroots built by `scripts/pg-chroots.sh`
//! (`make deps` / `make pg-majors`) under `${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}/pg/<major>`.
//! A missing chroot is a hard failure naming the command that builds it, as a missing
//! binary is; `PGVIGIL_MAJORS=15` (a list) narrows the matrix explicitly, never silently.

use std::path::PathBuf;

use pgvigil::pg::binaries::{PgBinaries, Runner, Search};
use pgvigil::pg::{TempCluster, TempClusterOptions};

/// The majors the matrix covers (the host's own first).
pub const ALL: &[u32] = &[15, 17, 18];

/// The host's packaged major.
pub const HOST: u32 = 15;

/// The majors to test: every one of [`ALL`], or the ones `PGVIGIL_MAJORS` lists.
pub fn majors() -> Vec<u32> {
    match std::env::var("PGVIGIL_MAJORS") {
        Ok(list) if !list.trim().is_empty() => list
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("PGVIGIL_MAJORS: {s:?} is not a major"))
            })
            .collect(),
        _ => ALL.to_vec(),
    }
}

/// Whether `major` is in this run's matrix.
pub fn wanted(major: u32) -> bool {
    majors().contains(&major)
}

/// The chroot of `major` (it may not exist yet).
pub fn chroot_root(major: u32) -> PathBuf {
    let cache = std::env::var_os("PGVIGIL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pgvigil")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/pgvigil"));
    cache.join("pg").join(major.to_string())
}

/// How to find the binaries of `major`: the host's packages or its chroot.
pub fn search(major: u32) -> Search {
    if major == HOST {
        return Search::default();
    }
    let root = chroot_root(major);
    if !root.join(".pgvigil-complete").exists() {
        panic!(
            "PostgreSQL {major} is needed but its chroot {} is missing or incomplete: build it with `scripts/pg-chroots.sh {major}` (or `make pg-majors`); \
             to run without it, set PGVIGIL_MAJORS to the majors you have",
            root.display()
        );
    }
    Search {
        dirs: Vec::new(),
        runner: Runner::Chroot(root),
    }
}

/// The server binaries of `major` (a hard failure when they are missing).
pub fn binaries(major: u32) -> PgBinaries {
    PgBinaries::server(&search(major), major, "the test matrix").unwrap_or_else(|e| panic!("{e}"))
}

/// A cluster of `major` with pg_stat_statements preloaded and `extra` settings.
pub async fn cluster_major_with(major: u32, extra: Vec<(&str, &str)>) -> TempCluster {
    let mut settings = vec![
        (
            "shared_preload_libraries".to_string(),
            "'pg_stat_statements'".to_string(),
        ),
        ("pg_stat_statements.track".to_string(), "'all'".to_string()),
    ];
    settings.extend(
        extra
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    match TempCluster::start(TempClusterOptions {
        settings,
        binaries: Some(binaries(major)),
        ..Default::default()
    })
    .await
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start a PostgreSQL {major} test cluster: {e}"),
    }
}

/// A cluster of `major` with pg_stat_statements preloaded.
pub async fn cluster_major(major: u32) -> TempCluster {
    cluster_major_with(major, Vec::new()).await
}

/// A working directory the binaries of a major can reach (inside its chroot for 17 and
/// 18), owned by the user they run as, holding a copy of the pgvigil binary, a local
/// repository and a config file for the programs the server starts (archive_command,
/// restore_command), which see the directory under another path than the host does.
pub struct MajorRepo {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The binaries of the major.
    pub bins: PgBinaries,
    /// The repository, as the host sees it.
    pub repo_dir: PathBuf,
    /// The config file, as the host sees it.
    pub config: PathBuf,
}

impl MajorRepo {
    /// An empty working directory for `major`.
    pub fn new(major: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let bins = binaries(major);
        let dir = match bins.default_parent_dir() {
            Some(p) => tempfile::Builder::new()
                .prefix("pgvigil-test-")
                .tempdir_in(p),
            None => tempfile::Builder::new().prefix("pgvigil-test-").tempdir(),
        }
        .unwrap_or_else(|e| panic!("{e}"));
        let repo_dir = dir.path().join("repo");
        std::fs::create_dir_all(&repo_dir).unwrap_or_else(|e| panic!("{e}"));
        // The pgvigil binary links the host's glibc (2.36); trixie and sid have newer ones.
        let bin = dir.path().join("pgvigil");
        std::fs::copy(super::pgvigil_bin(), &bin).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        for p in [dir.path(), repo_dir.as_path()] {
            bins.chown_to_server_user(p)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let config = dir.path().join("pgvigil.toml");
        Self {
            dir,
            bins,
            repo_dir,
            config,
        }
    }

    /// `host` as the server's programs see it.
    pub fn guest(&self, host: &std::path::Path) -> PathBuf {
        self.bins.guest_path(host).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The `archive_command` that pushes into this repository.
    pub fn archive_command(&self) -> String {
        format!(
            "'{} wal-push -c {} %p'",
            self.guest(&self.dir.path().join("pgvigil")).display(),
            self.guest(&self.config).display()
        )
    }

    /// The pgvigil binary as the server's programs see it (a copy inside the chroot).
    pub fn pgvigil(&self) -> PathBuf {
        self.guest(&self.dir.path().join("pgvigil"))
    }

    /// Writes the config the server's programs read (paths as they see them), once the
    /// cluster's DSN is known.
    pub fn write_config(&self, dsn: &str) {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[postgres]\ndsn = \"{dsn}\"\n[storage]\nurl = \"file://{}\"\nresidency = \"any\"\n",
            self.guest(&self.repo_dir).display()
        );
        std::fs::write(&self.config, text).unwrap_or_else(|e| panic!("{e}"));
        self.bins
            .chown_to_server_user(&self.config)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Settings for in-process operations on the host: the same repository by its host
    /// path, `extra_toml` after `[storage]`, and the major's binaries (its chroot).
    pub fn settings(&self, dsn: &str, extra_toml: &str) -> pgvigil::config::Settings {
        let mut s = super::settings(
            dsn,
            &format!(
                "[storage]\nurl = \"file://{}\"\nresidency = \"any\"\n{extra_toml}",
                self.repo_dir.display()
            ),
        );
        if let Runner::Chroot(root) = &self.bins.runner {
            s.postgres.bin_chroot = Some(root.clone());
        }
        s
    }

    /// An archiving primary of this major into this repository, config written.
    pub async fn archiving_primary(&self, major: u32) -> TempCluster {
        let cmd = self.archive_command();
        let pg = cluster_major_with(
            major,
            vec![("archive_mode", "on"), ("archive_command", cmd.as_str())],
        )
        .await;
        self.write_config(&pg.dsn("postgres"));
        pg
    }
}
