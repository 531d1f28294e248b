//! Fixtures for the backup, PITR, drill and retention tests: a primary archiving through
//! `pgvigil wal-push`, the config file the CLI and archive_command read, WAL switches that
//! wait for the archiver, restored data directories started as clusters, and the listing of
//! a local repository's WAL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgvigil::pg::{TempCluster, TempClusterOptions};

use super::{eventually, pgvigil_bin, query_value};

/// A primary archiving through `pgvigil wal-push` into the repository of `config`.
pub async fn archiving_cluster(config: &Path) -> TempCluster {
    archiving_cluster_env(config, Vec::new()).await
}

/// An archiving primary whose postmaster (and so archive_command) has `env`.
pub async fn archiving_cluster_env(config: &Path, env: Vec<(String, String)>) -> TempCluster {
    let cmd = format!(
        "'{} wal-push -c {} %p'",
        pgvigil_bin().display(),
        config.display()
    );
    let settings = vec![
        (
            "shared_preload_libraries".to_string(),
            "'pg_stat_statements'".to_string(),
        ),
        ("archive_mode".to_string(), "on".to_string()),
        ("archive_command".to_string(), cmd),
    ];
    match TempCluster::start(TempClusterOptions {
        settings,
        env,
        ..Default::default()
    })
    .await
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start a test PostgreSQL (install it with `make deps`): {e}"),
    }
}

/// Writes the config (repository `store_url`) once the cluster's port is known.
pub fn write_config(path: &Path, dsn: &str, storage: &str) {
    write_config_listening(path, "127.0.0.1:1", dsn, storage);
}

/// Like [`write_config`], naming where the daemon listens (the address of one the test
/// started), so the CLI finds it.
pub fn write_config_listening(path: &Path, listen: &str, dsn: &str, storage: &str) {
    let text = format!("[server]\nlisten = \"{listen}\"\n[postgres]\ndsn = \"{dsn}\"\n{storage}\n");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(path).unwrap_or_else(|e| panic!("{e}"));
}

/// Writes a config for a `pgvigil run` daemon at `path`: a free port, `dsn`, `storage`, no
/// heartbeat, PITR checks hourly, no drill, no initial backup, then `extra`.
pub fn write_daemon_config(path: &Path, dsn: &str, storage: &str, extra: &str) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{dsn}\"\n{storage}\n\
         [pitr]\nheartbeat_interval = \"0s\"\ncheck_interval = \"1h\"\n{extra}\n"
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    pgvigil::pg::binaries::chown_to_server_user(path).unwrap_or_else(|e| panic!("{e}"));
}

/// About 100 MB that compresses poorly, so a backup stream lasts long enough to be cut,
/// stopped or raced.
pub async fn make_big_table(db: &tokio_postgres::Client) {
    super::exec(db, "CREATE TABLE big AS SELECT g, (SELECT string_agg(md5(random()::text || s.i || g), '') FROM generate_series(1, 16) AS s(i)) AS pad FROM generate_series(1, 150000) g").await;
}

/// Waits until the newest backup listed by `cfg` ended more than `age` ago, so that a
/// retention with a recovery window of `age` has the older backups outside its window.
pub async fn wait_newest_backup_older_than(cfg: &str, env: &[(String, String)], age: Duration) {
    eventually(Duration::from_secs(30), || async {
        let (ok, out, err) = super::run_pgvigil_env(&["backups", "-c", cfg, "--json"], env);
        if !ok {
            return Err(err);
        }
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let newest = list
            .iter()
            .filter_map(|b| {
                b["stop_time"]
                    .as_str()?
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .ok()
            })
            .max()
            .ok_or_else(|| format!("no backup: {out}"))?;
        let elapsed = chrono::Utc::now() - newest;
        if elapsed.to_std().is_ok_and(|e| e > age) {
            Ok(())
        } else {
            Err(format!("the newest backup ended {elapsed} ago"))
        }
    })
    .await;
}

/// Switches WAL and waits until the segment it closed is archived.
pub async fn switch_and_archive(c: &tokio_postgres::Client) {
    let seg: String = query_value(c, "SELECT pg_walfile_name(pg_switch_wal())").await;
    eventually(Duration::from_secs(30), || async {
        let row = c
            .query_one(
                "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (last, failed): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        match last {
            Some(l) if l >= seg => Ok(()),
            other => Err(format!(
                "waiting for {seg} to be archived, last {other:?}, last failed {failed:?}"
            )),
        }
    })
    .await;
}

/// Starts a restored data directory; `env` reaches its restore_command.
pub async fn start_restored_env(dir: &Path, env: Vec<(String, String)>) -> TempCluster {
    let opts = TempClusterOptions {
        settings: vec![("archive_mode".into(), "off".into())],
        env,
        ..Default::default()
    };
    match TempCluster::adopt(dir, opts).await {
        Ok(c) => c,
        Err(e) => panic!("starting the restored cluster: {e}"),
    }
}

/// A directory and its config file `pgvigil.toml`, owned by the `postgres` OS user, with a
/// local repository at `<dir>/repo`: what most backup tests start from.
pub struct LocalRepo {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// `config` as the `-c` argument.
    pub cfg: String,
    pub repo_dir: PathBuf,
    /// The `[storage]` section for the repository.
    pub storage: String,
}

impl LocalRepo {
    pub fn new() -> Self {
        Self::with("")
    }

    /// With `extra_toml` after the `[storage]` section (e.g. a `[backup]` schedule).
    pub fn with(extra_toml: &str) -> Self {
        let dir = super::postgres_dir();
        let config = dir.path().join("pgvigil.toml");
        let repo_dir = dir.path().join("repo");
        let storage = format!(
            "[storage]\nurl = \"file://{}\"\n{extra_toml}",
            repo_dir.display()
        );
        Self {
            cfg: config.display().to_string(),
            config,
            repo_dir,
            storage,
            dir,
        }
    }

    /// An archiving primary into this repository, with the config written for it.
    pub async fn archiving_primary(&self) -> TempCluster {
        let pg = archiving_cluster(&self.config).await;
        write_config(&self.config, &pg.dsn("postgres"), &self.storage);
        pg
    }

    /// An archiving primary with one WAL switch archived and one backup taken, and a
    /// session to it.
    pub async fn primary_with_backup(&self) -> (TempCluster, tokio_postgres::Client) {
        let pg = self.archiving_primary().await;
        let db = super::client(&pg, "postgres").await;
        switch_and_archive(&db).await;
        let (ok, _, err) = super::run_pgvigil(&["backup", "-c", &self.cfg]);
        assert!(ok, "backup failed: {err}");
        (pg, db)
    }
}

/// The WAL segment files (`<24 hex digits>.zst`) in `dir`, sorted.
pub fn wal_segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 28 && n.ends_with(".zst"))
        .collect();
    names.sort();
    names
}

/// Every file and directory below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
