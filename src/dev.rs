//! `pgvigil dev`: a disposable PostgreSQL (TempCluster with pg_stat_statements, archiving
//! WAL through `pgvigil wal-push` into a local repository), PgBouncer in front of it when
//! installed, the daemon, and a first backup; torn down together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backup::catalog::{BackupInfo, BackupKind};
use crate::config::Settings;
use crate::pg::binaries::{chown_to_server_user, server_user};
use crate::pg::{TempCluster, TempClusterOptions, TempPgbouncer};
use crate::store::Repo;
use crate::{App, Running};

/// Why dev mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("starting the throwaway PostgreSQL: {0}")]
    Cluster(#[from] crate::pg::temp_cluster::Error),
    #[error("preparing the dev environment: {0}")]
    Setup(String),
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DevError + '_ {
    move |e| DevError::Setup(format!("{what}: {e}"))
}

/// A running dev environment.
pub struct DevEnvironment {
    /// Holds the repository, the config file and (as root) a copy of the binary.
    pub work: tempfile::TempDir,
    pub cluster: TempCluster,
    /// PgBouncer in front of the cluster, when it is installed.
    pub pgbouncer: Option<TempPgbouncer>,
    pub running: Running,
    /// The config file `wal-push` uses (and that works with every CLI command).
    pub config_file: PathBuf,
    /// The binary `archive_command` runs, which the server user can execute: the one to
    /// suggest, so that commands whose `restore_command` runs as that user (`restore`,
    /// `drill`) work as typed too.
    pub binary: PathBuf,
    pub repo_url: String,
    /// The first backup, or why it failed.
    pub first_backup: Result<BackupInfo, String>,
}

/// The binary archive_command runs: as root, a copy the postgres user can execute.
fn archive_binary(exe: &Path, work: &Path) -> Result<PathBuf, DevError> {
    if !matches!(server_user(), Ok(Some(_))) {
        return Ok(exe.to_path_buf());
    }
    use std::os::unix::fs::PermissionsExt;
    let dest = work.join("pgvigil");
    std::fs::copy(exe, &dest).map_err(setup("copying the pgvigil binary for archive_command"))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(setup("chmod"))?;
    Ok(dest)
}

impl DevEnvironment {
    /// Starts everything; listens on `listen`, or a free port if taken. `exe` is this
    /// binary (for archive_command).
    pub async fn start(listen: SocketAddr, exe: &Path) -> Result<Self, DevError> {
        let work = tempfile::Builder::new()
            .prefix("pgvigil-dev-")
            .tempdir()
            .map_err(setup("temp dir"))?;
        chown_to_server_user(work.path()).map_err(setup("chown temp dir"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(setup("chmod"))?;
        }
        let bin = archive_binary(exe, work.path())?;
        let repo_dir = work.path().join("repo");
        // The repository's directories belong to the user archive_command runs as. The
        // dev configuration keeps the default `storage.cluster`.
        let cluster_dir = repo_dir.join("default");
        for sub in crate::store::layout::DIRECTORIES {
            std::fs::create_dir_all(cluster_dir.join(sub))
                .map_err(setup("creating the repository"))?;
        }
        let dirs = crate::store::layout::DIRECTORIES
            .iter()
            .map(|sub| cluster_dir.join(sub));
        for p in [repo_dir.clone(), cluster_dir.clone()]
            .into_iter()
            .chain(dirs)
        {
            chown_to_server_user(&p).map_err(setup("chown repository"))?;
        }
        let config_file = work.path().join("pgvigil.toml");
        let archive_command = format!(
            "'{} wal-push -c {} %p'",
            bin.display(),
            config_file.display()
        );
        let cluster = TempCluster::start(TempClusterOptions {
            settings: vec![
                (
                    "shared_preload_libraries".into(),
                    "'pg_stat_statements'".into(),
                ),
                ("track_io_timing".into(), "on".into()),
                ("archive_mode".into(), "on".into()),
                ("archive_command".into(), archive_command),
                // A segment closes at least every minute (the heartbeat writes to it), so
                // WAL reaches the repository and a recovery window opens for `pgvigil drill`
                // and `pgvigil status` within a minute, as in the Kubernetes base.
                ("archive_timeout".into(), "60".into()),
            ],
            ..Default::default()
        })
        .await?;
        let dsn = cluster.dsn("postgres");
        let config: tokio_postgres::Config = dsn.parse().map_err(setup("connecting"))?;
        let (client, conn, _) = crate::pg::establish(
            &config,
            &crate::config::PgTls::disabled(),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|e| DevError::Setup(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .map_err(|e| DevError::Setup(crate::pg::db_error_message(&e)))?;

        let pgbouncer = if TempPgbouncer::available() {
            let dbs = [format!(
                "postgres = host=127.0.0.1 port={} dbname=postgres pool_size=5",
                cluster.port()
            )];
            Some(TempPgbouncer::start(&dbs, "transaction", &["postgres"]).await?)
        } else {
            None
        };
        let repo_url = format!("file://{}", repo_dir.display());
        let text = |listen: SocketAddr| {
            let bouncer = pgbouncer
                .as_ref()
                .map(|b| format!("[pgbouncer]\ndsns = [\"{}\"]\n", b.admin_dsn("postgres")))
                .unwrap_or_default();
            format!(
                "# written by pgvigil dev\n[server]\nlisten = \"{listen}\"\n[postgres]\ndsn = \"{dsn}\"\n{bouncer}[storage]\nurl = \"{repo_url}\"\n"
            )
        };
        let parse = |t: &str| {
            let env = |_: &str| None;
            crate::config::parse(t, &config_file, &env).map_err(|e| DevError::Setup(e.to_string()))
        };
        let mut settings: Settings = parse(&text(listen))?;
        let running = match App::start(settings.clone()).await {
            Ok(r) => r,
            Err(crate::StartError::Bind { .. }) => {
                settings = parse(&text(SocketAddr::from(([127, 0, 0, 1], 0))))?;
                App::start(settings.clone()).await?
            }
            Err(e) => return Err(e.into()),
        };
        // The file the CLI and archive_command use names the daemon's real address, so
        // wal-push reports reach it.
        std::fs::write(&config_file, text(running.addr)).map_err(setup("writing the config"))?;
        chown_to_server_user(&config_file).map_err(setup("chown config"))?;

        let repo = Repo::open(&settings, crate::store::Which::Primary)
            .await
            .map_err(setup("opening the repository"))?;
        let ops = crate::backup::ops::Ops::for_cli(settings, repo, None, "dev")
            .map_err(|e| DevError::Setup(e.to_string()))?;
        let first_backup = ops
            .backup(Arc::new(Default::default()), BackupKind::Full)
            .await
            .map_err(|e| e.to_string());
        ops.close().await;
        running.status_changed();
        Ok(Self {
            work,
            cluster,
            pgbouncer,
            running,
            config_file,
            binary: bin,
            repo_url,
            first_backup,
        })
    }

    /// Stops the daemon, PgBouncer, then the cluster, and deletes everything.
    pub async fn stop(self) {
        self.running.shutdown(Duration::from_secs(10)).await;
        if let Some(mut b) = self.pgbouncer {
            b.stop().await;
        }
        let mut cluster = self.cluster;
        cluster.stop().await;
        drop(self.work);
    }
}
