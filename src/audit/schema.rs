//! Installs the database change audit shipped in `deploy/sql/audit.sql` (compiled into the
//! binary, so `pgvigil audit install` needs no file next to it). The script is idempotent;
//! it runs in one transaction, so a failure leaves the database as it was.

use crate::pg::{self, ConnectOptions};

/// `deploy/sql/audit.sql`.
pub const INSTALL_SQL: &str = include_str!("../../deploy/sql/audit.sql");
/// `deploy/sql/audit_down.sql`.
pub const REMOVE_SQL: &str = include_str!("../../deploy/sql/audit_down.sql");

/// Why the install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Connect(#[from] pg::conn::ConnectError),
    #[error("installing deploy/sql/audit.sql into {target}: {message}")]
    Sql {
        target: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("audit.audit_table({table}) in {target}: {message}")]
    AttachTable {
        target: String,
        table: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What `install` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    /// The database (DSN without password).
    pub target: String,
    /// Tables the audit trigger was attached to.
    pub tables: Vec<String>,
}

/// Runs the install script (in one transaction) and attaches the trigger to each of
/// `tables` (names as `regclass` accepts them, e.g. `app.orders`).
pub async fn install(opts: &ConnectOptions, tables: &[String]) -> Result<Installed, InstallError> {
    // DDL may wait on locks held by the application: give it more than a collector query.
    let mut opts = opts.clone();
    opts.statement_timeout = opts
        .statement_timeout
        .max(std::time::Duration::from_secs(60));
    opts.lock_timeout = opts.lock_timeout.max(std::time::Duration::from_secs(10));
    let conn = pg::connect(&opts, None).await?;
    let target = crate::config::display_dsn(&opts.config);
    let sql_err = |source: tokio_postgres::Error| InstallError::Sql {
        target: target.clone(),
        message: pg::db_error_message(&source),
        source,
    };
    conn.client
        .batch_execute(&format!("BEGIN;\n{INSTALL_SQL}\nCOMMIT;"))
        .await
        .map_err(sql_err)?;
    for t in tables {
        conn.client
            .execute("SELECT audit.audit_table($1::text::regclass)", &[t])
            .await
            .map_err(|source| InstallError::AttachTable {
                target: target.clone(),
                table: t.clone(),
                message: pg::db_error_message(&source),
                source,
            })?;
    }
    Ok(Installed {
        target,
        tables: tables.to_vec(),
    })
}
