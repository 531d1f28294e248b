//! `pgvigil dev`: a disposable PostgreSQL (TempCluster with pg_stat_statements) and the
//! daemon running against it, torn down together.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{PostgresSettings, ServerSettings, Settings};
use crate::pg::{TempCluster, TempClusterOptions, TempPgbouncer};
use crate::{App, Running};

/// Why dev mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("starting the throwaway PostgreSQL: {0}")]
    Cluster(#[from] crate::pg::temp_cluster::Error),
    #[error("preparing the throwaway PostgreSQL: {0}")]
    Setup(String),
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// A running dev environment.
pub struct DevEnvironment {
    pub cluster: TempCluster,
    /// PgBouncer in front of the cluster, when it is installed.
    pub pgbouncer: Option<TempPgbouncer>,
    pub running: Running,
}

impl DevEnvironment {
    /// Starts the cluster and the daemon; listens on `listen`, or a free port if taken.
    pub async fn start(listen: SocketAddr) -> Result<Self, DevError> {
        let cluster = TempCluster::start(TempClusterOptions {
            settings: vec![
                (
                    "shared_preload_libraries".into(),
                    "'pg_stat_statements'".into(),
                ),
                ("track_io_timing".into(), "on".into()),
            ],
            ..Default::default()
        })
        .await?;
        let dsn = cluster.dsn("postgres");
        let setup = async {
            let conn = crate::pg::connect(
                &crate::pg::ConnectOptions {
                    config: dsn
                        .parse()
                        .map_err(|e: tokio_postgres::Error| e.to_string())?,
                    password_file: None,
                    statement_timeout: Duration::from_secs(30),
                    lock_timeout: Duration::from_secs(5),
                    connect_timeout: Duration::from_secs(5),
                    application_name: "pgvigil-dev".into(),
                },
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
            conn.client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .map_err(|e| crate::pg::db_error_message(&e))
        };
        setup.await.map_err(DevError::Setup)?;
        let postgres =
            PostgresSettings::for_dsn(&dsn).map_err(|e| DevError::Setup(e.to_string()))?;
        let pgbouncer = if TempPgbouncer::available() {
            let dbs = [format!(
                "postgres = host=127.0.0.1 port={} dbname=postgres pool_size=5",
                cluster.port()
            )];
            Some(TempPgbouncer::start(&dbs, "transaction", &["postgres"]).await?)
        } else {
            None
        };
        let pgbouncer_settings = match &pgbouncer {
            Some(b) => crate::config::PgbouncerSettings {
                targets: vec![crate::config::PgbouncerTarget {
                    dsn: b
                        .admin_dsn("postgres")
                        .parse()
                        .map_err(|e: tokio_postgres::Error| DevError::Setup(e.to_string()))?,
                    instance: format!("127.0.0.1:{}", b.port()),
                }],
                timeout: Duration::from_secs(1),
            },
            None => Default::default(),
        };
        let mut settings = Settings {
            file: "(pgvigil dev)".into(),
            server: ServerSettings {
                listen,
                bearer_token_file: None,
            },
            postgres,
            pgbouncer: pgbouncer_settings,
            postgrest: None,
            api_proxy: None,
            audit: Default::default(),
            storage: Default::default(),
            backup: Default::default(),
        };
        let running = match App::start(settings.clone()).await {
            Ok(r) => r,
            Err(crate::StartError::Bind { .. }) => {
                settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
                App::start(settings).await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            cluster,
            pgbouncer,
            running,
        })
    }

    /// Stops the daemon, PgBouncer, then the cluster (deleting their directories).
    pub async fn stop(self) {
        self.running.shutdown(Duration::from_secs(10)).await;
        if let Some(mut b) = self.pgbouncer {
            b.stop().await;
        }
        let mut cluster = self.cluster;
        cluster.stop().await;
    }
}
