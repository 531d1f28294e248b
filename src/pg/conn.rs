//! The one connection helper. Every session pgvigil opens gets `application_name`,
//! server-side `statement_timeout` and `lock_timeout` (as startup options, so no extra
//! round trip), a connect timeout, and a password re-read from `password_file` when one is
//! configured. TLS is not supported yet: `sslmode=require` fails with a clear message.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

/// What every pgvigil session is opened with.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub config: Config,
    pub password_file: Option<PathBuf>,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub connect_timeout: Duration,
    /// Shown in `pg_stat_activity.application_name`.
    pub application_name: String,
}

impl ConnectOptions {
    /// Options from the validated `[postgres]` settings.
    pub fn from_settings(pg: &crate::config::PostgresSettings) -> Self {
        Self {
            config: pg.dsn.clone(),
            password_file: pg.password_file.clone(),
            statement_timeout: pg.statement_timeout,
            lock_timeout: pg.lock_timeout,
            connect_timeout: pg.connect_timeout,
            application_name: "pgvigil".into(),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {target} timed out after {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("connecting to {target}: {message}")]
    Postgres {
        target: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A live session: the client, the task driving its socket, and the server version.
pub struct Connected {
    pub client: Client,
    /// Ends when the connection closes; collectors watch it to reconnect.
    pub driver: JoinHandle<()>,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: i32,
}

/// Formats a tokio-postgres error with its SQLSTATE, message and detail, instead of the
/// bare "db error" its Display gives.
pub fn db_error_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(": ");
                m.push_str(d);
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            m
        }
    }
}

/// Opens a session to a PgBouncer admin console: simple query protocol only, and no
/// startup `options` (PgBouncer rejects unknown startup parameters with FATAL 08P01), so
/// only user, database, application_name and client_encoding are sent.
pub async fn connect_admin_console(
    config: &Config,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let mut config = config.clone();
    let target = crate::config::display_dsn(&config);
    if config.get_application_name().is_none() {
        config.application_name("pgvigil");
    }
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| ConnectError::Timeout {
            target: target.clone(),
            timeout,
        })?
        .map_err(|source| ConnectError::Postgres {
            target: target.clone(),
            message: db_error_message(&source),
            source,
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Opens a session to `dbname` (or the DSN's database) with pgvigil's standard settings.
pub async fn connect(
    opts: &ConnectOptions,
    dbname: Option<&str>,
) -> Result<Connected, ConnectError> {
    open(opts, dbname, None).await
}

/// Like [`connect`], and every `NOTIFY` the session receives (after it runs `LISTEN`) is
/// sent to `notifications` as its channel name. The audit tailer uses it to wake up.
pub async fn connect_listening(
    opts: &ConnectOptions,
    dbname: Option<&str>,
    notifications: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Connected, ConnectError> {
    open(opts, dbname, Some(notifications)).await
}

async fn open(
    opts: &ConnectOptions,
    dbname: Option<&str>,
    notifications: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<Connected, ConnectError> {
    let mut config = opts.config.clone();
    if let Some(db) = dbname {
        config.dbname(db);
    }
    let target = crate::config::display_dsn(&config);
    if let Some(path) = &opts.password_file {
        let pw =
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ConnectError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
        config.password(pw.trim_end_matches(['\n', '\r']));
    }
    if config.get_application_name().is_none() {
        config.application_name(&opts.application_name);
    }
    let mut options = config.get_options().map(str::to_string).unwrap_or_default();
    for (name, value) in [
        ("statement_timeout", opts.statement_timeout),
        ("lock_timeout", opts.lock_timeout),
    ] {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={}", value.as_millis()));
    }
    config.options(&options);
    config.connect_timeout(opts.connect_timeout);

    let pg_err = |source: tokio_postgres::Error| ConnectError::Postgres {
        target: target.clone(),
        message: db_error_message(&source),
        source,
    };
    let (client, connection) = tokio::time::timeout(opts.connect_timeout, config.connect(NoTls))
        .await
        .map_err(|_| ConnectError::Timeout {
            target: target.clone(),
            timeout: opts.connect_timeout,
        })?
        .map_err(pg_err)?;
    let driver = tokio::spawn(async move {
        let result = match notifications {
            None => connection.await,
            Some(tx) => {
                // Polling the connection as a stream is what surfaces notifications.
                let mut connection = connection;
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let mut result = Ok(());
                while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                    match m {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            let _ = tx.send(n.channel().to_string());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                result
            }
        };
        if let Err(e) = result {
            tracing::debug!(event = "postgres.connection.closed", error = %db_error_message(&e), "connection closed");
        }
    });
    let row = tokio::time::timeout(
        opts.connect_timeout.max(opts.statement_timeout),
        client.query_one("SELECT current_setting('server_version_num')::int", &[]),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        target: target.clone(),
        timeout: opts.connect_timeout,
    })?
    .map_err(pg_err)?;
    Ok(Connected {
        server_version_num: row.get(0),
        client,
        driver,
    })
}
