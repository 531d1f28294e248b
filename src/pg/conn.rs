//! The one connection helper. Every session pgvigil opens gets `application_name`,
//! server-side `statement_timeout` and `lock_timeout` (as startup options, so no extra
//! round trip), a connect timeout, and a password re-read from `password_file` when one is
//! configured, and TLS as libpq's `sslmode` and friends say (see [`super::tls`]); every
//! connection to PostgreSQL or PgBouncer is opened by [`establish`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

use super::tls::{self, Handshake};
use crate::config::{PgTls, SslMode};

/// What every pgvigil session is opened with.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub config: Config,
    /// libpq's TLS parameters for this server.
    pub tls: PgTls,
    pub password_file: Option<PathBuf>,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    /// Send `statement_timeout` and `lock_timeout` as startup options (true but for the
    /// session that reads the server's own settings: with them, `pg_settings` shows
    /// pgvigil's values instead of what every other session gets).
    pub session_limits: bool,
    pub connect_timeout: Duration,
    /// Shown in `pg_stat_activity.application_name`.
    pub application_name: String,
}

impl ConnectOptions {
    /// Options from the validated `[postgres]` settings.
    pub fn from_settings(pg: &crate::config::PostgresSettings) -> Self {
        Self {
            config: pg.dsn.clone(),
            tls: pg.tls.clone(),
            password_file: pg.password_file.clone(),
            statement_timeout: pg.statement_timeout,
            lock_timeout: pg.lock_timeout,
            session_limits: true,
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
    #[error("connecting to {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: tls::TlsError,
    },
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
    /// The TLS handshake, if the session is encrypted.
    pub tls: Handshake,
}

type Stream = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// The socket task of a session, plain or TLS.
pub type Connection = tokio_postgres::Connection<Socket, Stream>;

/// Opens a socket with `config` and `tls` within `timeout`: the one place a connection to
/// PostgreSQL or PgBouncer is made. `sslmode=allow` tries plaintext first and TLS when the
/// server refuses it, as libpq does.
pub async fn establish(
    config: &Config,
    tls: &PgTls,
    timeout: Duration,
) -> Result<(Client, Connection, Handshake), ConnectError> {
    let target = crate::config::display_dsn(config);
    match attempt(config, tls, timeout, &target).await {
        Err(ConnectError::Postgres { source, .. })
            if tls.mode == SslMode::Allow
                && source.code()
                    == Some(
                        &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    ) =>
        {
            let mut config = config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = PgTls {
                mode: SslMode::Require,
                ..tls.clone()
            };
            attempt(&config, &tls, timeout, &target).await
        }
        other => other,
    }
}

async fn attempt(
    config: &Config,
    tls: &PgTls,
    timeout: Duration,
    target: &str,
) -> Result<(Client, Connection, Handshake), ConnectError> {
    let connector = tls::connector(tls).map_err(|source| ConnectError::Tls {
        target: target.to_string(),
        source,
    })?;
    let connected = tokio::time::timeout(timeout, config.connect(connector.make))
        .await
        .map_err(|_| ConnectError::Timeout {
            target: target.to_string(),
            timeout,
        })?;
    let handshake = connector
        .handshake
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    match connected {
        Ok((client, connection)) => Ok((client, connection, handshake)),
        Err(source) => Err(ConnectError::Postgres {
            target: target.to_string(),
            message: match &handshake.refused {
                Some(why) => format!("TLS handshake failed: {why}"),
                None => tls_message(&db_error_message(&source), tls),
            },
            source,
        }),
    }
}

/// tokio-postgres' words for "the server said no to TLS", in libpq's terms.
fn tls_message(message: &str, tls: &PgTls) -> String {
    if message.contains("server does not support TLS") {
        format!(
            "the server does not support TLS, and sslmode={} requires it",
            tls.mode.as_str()
        )
    } else {
        message.to_string()
    }
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
    tls: &PgTls,
    timeout: Duration,
) -> Result<(Client, Handshake), ConnectError> {
    let mut config = config.clone();
    if config.get_application_name().is_none() {
        config.application_name("pgvigil");
    }
    config.connect_timeout(timeout);
    let (client, connection, handshake) = establish(&config, tls, timeout).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, handshake))
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
    let limits = [
        ("statement_timeout", opts.statement_timeout),
        ("lock_timeout", opts.lock_timeout),
    ];
    let limits = if opts.session_limits {
        &limits[..]
    } else {
        &[]
    };
    for (name, value) in limits {
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
    let (client, connection, handshake) =
        establish(&config, &opts.tls, opts.connect_timeout).await?;
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
        tls: handshake,
    })
}
