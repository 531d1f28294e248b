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
