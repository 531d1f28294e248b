//! PostgreSQL plumbing shared by collectors, backups and tests: one way to connect
//! (`conn`, with TLS from `tls`), one way to find the server binaries (`binaries`), and a throwaway postmaster
//! (`temp_cluster`) used by restore drills, `pgvigil dev` and the test suite.

pub mod binaries;
pub mod conn;
pub(crate) mod process;
pub mod temp_cluster;
pub mod temp_pgbouncer;
pub mod tls;

pub use conn::{
    connect, connect_admin_console, connect_listening, db_error_message, establish, ConnectOptions,
    Connected, Connection,
};
pub use temp_cluster::{TempCluster, TempClusterOptions};
pub use temp_pgbouncer::TempPgbouncer;
pub use tls::{Handshake, Verified};

/// The last `n` bytes of a child's output, for error messages.
pub fn process_tail(s: &str, n: usize) -> String {
    process::tail(s, n)
}
