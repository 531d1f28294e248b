//! A throwaway PostgreSQL cluster: initdb into a temp dir, a free loopback port (or unix
//! socket only), a private socket dir, the server run as a child process (as the
//! `postgres` user when we are root) and stopped on drop. Restore drills start their
//! private postmaster with it, `pgvigil dev` runs on it, and the tests build primaries and
//! streaming replicas from it.
//!
//! The server may be of any major: [`TempClusterOptions::binaries`] picks them, and binaries
//! run inside a chroot (the tests' PostgreSQL 17 and 18) get every directory inside that
//! chroot, paths translated, owned by the chroot's own `postgres` user, and System V
//! dynamic shared memory (a chroot's `/dev/shm` is root-owned). The postmaster is always a
//! direct child, stopped by its pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::binaries::{BinariesError, PgBinaries, Runner};
use super::process::{free_port, io, run_blocking, run_checked, stop_child, tail};
use nix::sys::signal::Signal;

/// How to build the cluster.
#[derive(Debug, Clone, Default)]
pub struct TempClusterOptions {
    /// Extra `postgresql.conf` lines, e.g. `("shared_preload_libraries", "'pg_stat_statements'")`.
    pub settings: Vec<(String, String)>,
    /// Listen only on the unix socket (restore drills): no TCP port at all.
    pub unix_socket_only: bool,
    /// Where to create the cluster's directory; default: the system temp dir.
    pub parent_dir: Option<PathBuf>,
    /// Extra environment for the postmaster (inherited by archive_command and
    /// restore_command), e.g. AWS credentials for an S3 repository.
    pub env: Vec<(String, String)>,
    /// The server binaries (and so the major) to run; default: the newest on the host.
    pub binaries: Option<PgBinaries>,
    /// Start the postmaster with none of this process's environment but [`KEPT_ENV`] and
    /// `env` (restore drills: a restored cluster must not see pgvigil's credentials).
    pub clear_env: bool,
}

/// What a postmaster started with `clear_env` keeps of this process's environment.
pub const KEPT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
];

/// Errors while creating or running a temp cluster; each names the step and, for a child
/// process, its exit status and the tail of its output.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed ({status}): {output}")]
    Child {
        step: String,
        status: String,
        output: String,
    },
    #[error("the server did not become ready within {0:?}; log tail: {1}")]
    NotReady(Duration, String),
}

/// A running (or stopped) throwaway cluster; stopped and deleted on drop.
pub struct TempCluster {
    bins: PgBinaries,
    /// The temp directory holding everything; None for an adopted data directory.
    _dir: Option<tempfile::TempDir>,
    /// A short socket directory of its own, when the one under `_dir` would be too long.
    _socket_dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    unix_socket_only: bool,
    env: Vec<(String, String)>,
    clear_env: bool,
    child: Option<Child>,
}

impl TempCluster {
    /// Runs initdb and starts the server; returns once it accepts connections.
    pub async fn start(opts: TempClusterOptions) -> Result<Self, Error> {
        let bins = binaries(&opts)?;
        let dir = temp_dir(&bins, opts.parent_dir.as_deref(), "pgvigil-pg-")?;
        let data_dir = dir.path().join("data");
        let mut cmd = bins.command("initdb")?;
        cmd.arg("-D").arg(bins.guest_path(&data_dir)?).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth=trust",
            "--no-sync",
        ]);
        run_blocking(move || run_checked(cmd, "initdb")).await?;
        let mut cluster = Self::prepare(bins, dir, data_dir, &opts)?;
        cluster.write_conf(&opts.settings)?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    fn prepare(
        bins: PgBinaries,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        opts: &TempClusterOptions,
    ) -> Result<Self, Error> {
        let mut socket_dir = dir.path().join("sock");
        let mut short_socket_dir = None;
        // A unix socket path has at most 107 bytes (`<dir>/.s.PGSQL.<port>`): a cluster deep
        // in a chroot or a drill's work directory gets a short socket dir of its own.
        if socket_dir.as_os_str().len() + "/.s.PGSQL.65535".len() > MAX_SOCKET_PATH {
            let short = temp_dir(&bins, None, "pgvigil-s-")?;
            socket_dir = short.path().to_path_buf();
            short_socket_dir = Some(short);
        } else {
            std::fs::create_dir_all(&socket_dir).map_err(io("creating socket dir"))?;
            bins.chown_to_server_user(&socket_dir)
                .map_err(io("chown socket dir"))?;
        }
        Ok(Self {
            _socket_dir: short_socket_dir,
            log_file: dir.path().join("postgres.log"),
            port: free_port()?,
            unix_socket_only: opts.unix_socket_only,
            env: opts.env.clone(),
            clear_env: opts.clear_env,
            bins,
            _dir: Some(dir),
            data_dir,
            socket_dir,
            child: None,
        })
    }

    fn write_conf(&self, settings: &[(String, String)]) -> Result<(), Error> {
        use std::io::Write;
        let path = self.data_dir.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("writing postgresql.auto.conf"))?;
        let listen = if self.unix_socket_only {
            "''"
        } else {
            "'127.0.0.1'"
        };
        let mut text = format!(
            "listen_addresses = {listen}\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nmax_wal_senders = 10\nwal_level = replica\n",
            self.port,
            self.bins.guest_path(&self.socket_dir)?.display()
        );
        if matches!(self.bins.runner, Runner::Chroot(_)) {
            // The chroot's /dev/shm is root-owned: POSIX shared memory would fail there.
            text.push_str("dynamic_shared_memory_type = sysv\n");
        }
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        f.write_all(text.as_bytes())
            .map_err(io("writing postgresql.auto.conf"))?;
        Ok(())
    }

    /// Starts the postmaster (again) and waits until it accepts connections.
    pub async fn start_server(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(io("opening server log"))?;
        let log2 = log.try_clone().map_err(io("opening server log"))?;
        let mut cmd = self.bins.command("postgres")?;
        if self.clear_env {
            let set: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect();
            cmd.env_clear();
            for name in KEPT_ENV {
                if let Some(v) = std::env::var_os(name) {
                    cmd.env(name, v);
                }
            }
            cmd.envs(set);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("-D")
            .arg(self.bins.guest_path(&self.data_dir)?)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().map_err(io("starting postgres"))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&mut self, patience: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + patience;
        let pidfile = self.data_dir.join("postmaster.pid");
        loop {
            // Line 8 of postmaster.pid is the postmaster status: "ready" once it accepts
            // connections (also for a hot standby).
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                if text.lines().nth(7).map(str::trim) == Some("ready") {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::Child {
                        step: "postgres".into(),
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

    /// Fast shutdown (SIGINT), bounded; SIGKILL if it does not stop in time.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            run_blocking(move || {
                stop_child(child, Signal::SIGINT);
                Ok(())
            })
            .await
            .ok();
        }
    }

    /// Crash the server (SIGKILL to the postmaster), for failure tests.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a postmaster on an existing data directory (a restored backup), with a
    /// private socket dir and port and the given extra settings; the data directory is
    /// left in place on drop (its owner decides), the socket dir and log are removed.
    pub async fn adopt(data_dir: &Path, opts: TempClusterOptions) -> Result<Self, Error> {
        let bins = binaries(&opts)?;
        let dir = temp_dir(&bins, opts.parent_dir.as_deref(), "pgvigil-adopt-")?;
        let mut cluster = Self::prepare(bins, dir, data_dir.to_path_buf(), &opts)?;
        cluster.write_conf(&opts.settings)?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// Makes a streaming replica of this (running) cluster with `pg_basebackup -R`.
    pub async fn replica(&self) -> Result<TempCluster, Error> {
        let bins = self.bins.clone();
        let dir = temp_dir(&bins, None, "pgvigil-replica-")?;
        let data_dir = dir.path().join("data");
        let mut cmd = bins.command("pg_basebackup")?;
        cmd.arg("-D")
            .arg(bins.guest_path(&data_dir)?)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--checkpoint=fast",
                "-p",
            ])
            .arg(self.port.to_string());
        run_blocking(move || run_checked(cmd, "pg_basebackup for replica")).await?;
        let opts = TempClusterOptions {
            unix_socket_only: self.unix_socket_only,
            env: self.env.clone(),
            clear_env: self.clear_env,
            binaries: Some(bins.clone()),
            ..Default::default()
        };
        let mut replica = Self::prepare(bins, dir, data_dir, &opts)?;
        // The copied auto.conf names the primary's port and socket dir: override them.
        replica.write_conf(&[])?;
        replica.start_server().await?;
        Ok(replica)
    }

    /// TCP port (meaningless when unix-socket-only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The binaries this server runs (its major, and how its programs are started).
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// libpq URL for `db` over loopback TCP as the `postgres` superuser.
    pub fn dsn(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Connection config over the unix socket (works also when unix-socket-only).
    pub fn socket_config(&self, db: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(db);
        c
    }

    /// Whether the postmaster child is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last part of the server log.
    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log_file)
            .map(|s| tail(&s, 2000))
            .unwrap_or_default()
    }
}

/// The longest unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The binaries the options name, or the newest on the host.
fn binaries(opts: &TempClusterOptions) -> Result<PgBinaries, Error> {
    match &opts.binaries {
        Some(b) => Ok(b.clone()),
        None => Ok(PgBinaries::discover()?),
    }
}

/// A temp directory the server's programs can reach (inside their chroot), owned by the
/// user they run as.
fn temp_dir(
    bins: &PgBinaries,
    parent: Option<&Path>,
    prefix: &str,
) -> Result<tempfile::TempDir, Error> {
    let parent = parent
        .map(Path::to_path_buf)
        .or_else(|| bins.default_parent_dir());
    let dir = match &parent {
        Some(p) => tempfile::Builder::new().prefix(prefix).tempdir_in(p),
        None => tempfile::Builder::new().prefix(prefix).tempdir(),
    }
    .map_err(io("creating temp dir"))?;
    bins.chown_to_server_user(dir.path())
        .map_err(io("chown temp dir"))?;
    Ok(dir)
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, Signal::SIGINT);
        }
    }
}
