//! A throwaway PgBouncer (the Debian package's `/usr/sbin/pgbouncer`) in front of a
//! cluster: a config in a temp dir, a free loopback port, trust auth for the given users,
//! run as the `postgres` OS user when we are root (PgBouncer refuses to run as root), and
//! stopped on drop. Used by `pgvigil dev` and the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::binaries::{chown_to_server_user, server_user};
use super::process::{free_port, io, run_blocking, stop_child, tail};
use super::temp_cluster::Error;

/// Where Debian installs PgBouncer.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

/// A running PgBouncer.
pub struct TempPgbouncer {
    _dir: tempfile::TempDir,
    config_file: PathBuf,
    log_file: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TempPgbouncer {
    /// Whether PgBouncer is installed.
    pub fn available() -> bool {
        Path::new(PGBOUNCER_BIN).exists()
    }

    /// Starts PgBouncer with `databases` lines (e.g. `app = host=127.0.0.1 port=5432
    /// dbname=postgres pool_size=2`) and `pool_mode`; `users` may log in (trust), and
    /// `postgres` is an admin user.
    pub async fn start(
        databases: &[String],
        pool_mode: &str,
        users: &[&str],
    ) -> Result<Self, Error> {
        Self::start_with(databases, pool_mode, users, &[]).await
    }

    /// Like [`start`](Self::start), with extra `[pgbouncer]` lines (e.g. `client_tls_*`).
    pub async fn start_with(
        databases: &[String],
        pool_mode: &str,
        users: &[&str],
        extra: &[String],
    ) -> Result<Self, Error> {
        if !Self::available() {
            return Err(Error::Io {
                step: "starting pgbouncer".into(),
                source: std::io::Error::other(format!(
                    "{PGBOUNCER_BIN} not found: install it with `apt-get install pgbouncer` (or run `make deps`)"
                )),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("pgvigil-pgbouncer-")
            .tempdir()
            .map_err(io("creating temp dir"))?;
        chown_to_server_user(dir.path()).map_err(io("chown temp dir"))?;
        let port = free_port()?;
        let userlist = dir.path().join("userlist.txt");
        let users_text: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(&userlist, users_text).map_err(io("writing userlist"))?;
        let log_file = dir.path().join("pgbouncer.log");
        let config_file = dir.path().join("pgbouncer.ini");
        let config = format!(
            "[databases]\n{}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {}\n\
             auth_type = trust\nauth_file = {}\nadmin_users = postgres\nstats_users = {}\npool_mode = {pool_mode}\n\
             max_client_conn = 200\ndefault_pool_size = 10\nmax_user_connections = 50\nstats_period = 1\nlogfile = {}\n{}\n",
            databases.join("\n"),
            dir.path().display(),
            userlist.display(),
            users.join(", "),
            log_file.display(),
            extra.join("\n"),
        );
        std::fs::write(&config_file, config).map_err(io("writing pgbouncer.ini"))?;
        for p in [&userlist, &config_file] {
            chown_to_server_user(p).map_err(io("chown pgbouncer files"))?;
        }
        let mut cmd = std::process::Command::new(PGBOUNCER_BIN);
        cmd.arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = server_user()? {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let mut this = Self {
            _dir: dir,
            config_file,
            log_file,
            port,
            child: Some(cmd.spawn().map_err(io("starting pgbouncer"))?),
        };
        this.wait_listening(Duration::from_secs(20)).await?;
        Ok(this)
    }

    async fn wait_listening(&mut self, patience: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::Child {
                        step: "pgbouncer".into(),
                        status: status.to_string(),
                        output: self.log_tail(),
                    });
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady(patience, self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin console DSN for `user`.
    pub fn admin_dsn(&self, user: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/pgbouncer", self.port)
    }

    /// A client DSN for database `db` as `user`.
    pub fn dsn(&self, user: &str, db: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The config file (for messages).
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// Kills PgBouncer at once (SIGKILL), for failure tests.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops PgBouncer (SIGTERM: immediate shutdown).
    pub async fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = run_blocking(move || {
                stop_child(c, Signal::SIGTERM);
                Ok(())
            })
            .await;
        }
    }

    /// The last part of PgBouncer's log.
    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log_file)
            .map(|s| tail(&s, 2000))
            .unwrap_or_default()
    }
}

impl Drop for TempPgbouncer {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c, Signal::SIGTERM);
        }
    }
}
