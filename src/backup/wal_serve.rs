//! WAL for a drill's postmaster over a unix socket in the drill's own directory, so that the
//! postmaster runs without pgvigil's environment: its `restore_command` is
//! `pgvigil wal-fetch --socket <dir>/wal.sock %f %p`, which needs no configuration and no
//! credentials; the drill process, which has both, fetches each file from the repository,
//! checks its SHA-256 ([`super::wal::fetch_bytes`]) and sends it back. A restored cluster
//! runs whatever its backup holds (functions, extensions, `archive_command`s): none of it
//! can read the repository's keys, tokens or passwords from its environment.
//!
//! The protocol is one request per connection: the client writes the WAL file name and a
//! newline; the server answers `O` with an 8-byte little-endian length and the bytes, `M`
//! when the repository does not have the file, or `E` with a message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::wal::{classify, fetch_bytes, WalKind};
use super::wal_prefetch::{run as prefetch, Spool};
use super::{io, Error};
use crate::store::Repo;

/// The longest a client waits for one file (a 16 MiB segment from a slow bucket).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Serves WAL from `repo` on a socket until dropped.
pub struct WalServer {
    /// The socket's path.
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    prefetcher: Prefetcher,
}

impl WalServer {
    /// Stops serving and waits (at most 30 s) until the read-ahead has stopped, so that
    /// nothing is written into its spool afterwards.
    pub async fn stop(self) {
        self.prefetcher.stop.cancel();
        let running = self.prefetcher.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = running {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for WalServer {
    fn drop(&mut self) {
        self.task.abort();
        self.prefetcher.stop.cancel();
        if let Ok(mut running) = self.prefetcher.task.lock() {
            if let Some(t) = running.take() {
                t.abort();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read-ahead for the server (see [`super::wal_prefetch`]): a spool in the drill's
/// directory, filled by a task of the drill process.
#[derive(Clone)]
pub struct ReadAhead {
    pub spool: Spool,
    /// Segments kept ahead of the one asked for.
    pub depth: usize,
    /// Parallel downloads.
    pub workers: usize,
}

/// The read-ahead and its running task, if any.
#[derive(Clone, Default)]
struct Prefetcher {
    read_ahead: Option<ReadAhead>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    stop: CancellationToken,
}

impl Prefetcher {
    /// The spooled file if the read-ahead has it.
    async fn take(&self, name: &str) -> Option<Vec<u8>> {
        let ra = self.read_ahead.as_ref()?;
        if classify(name) != Some(WalKind::Segment) {
            return None;
        }
        ra.spool.take_bytes(name).await.ok().flatten()
    }

    /// Moves the read-ahead's window past `name` and starts its task if none runs.
    fn asked(&self, repo: &Repo, name: &str, seg_size: usize) {
        let Some(ra) = &self.read_ahead else {
            return;
        };
        // The spool is recreated if a finished prefetcher removed it.
        let spool = match Spool::open(ra.spool.dir()) {
            Ok(spool) if classify(name) == Some(WalKind::Segment) => spool,
            _ => return,
        };
        if spool.want(name, seg_size as u64).is_err() {
            return;
        }
        let Ok(mut running) = self.task.lock() else {
            return;
        };
        if self.stop.is_cancelled() || running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (repo, ra, stop) = (repo.clone(), ra.clone(), self.stop.clone());
        *running = Some(tokio::spawn(async move {
            if let Err(e) = prefetch(
                &repo,
                &spool,
                ra.depth,
                ra.workers,
                super::wal_prefetch::IDLE,
                &stop,
            )
            .await
            {
                tracing::debug!(event = "wal.prefetch.failed", error = %e, "drill WAL read-ahead");
            }
        }));
    }
}

/// Binds `path` (mode 0600, owned by the PostgreSQL server user) and serves `repo` on it,
/// reading ahead into `read_ahead`'s spool when given.
pub fn start(repo: Repo, path: &Path, read_ahead: Option<ReadAhead>) -> Result<WalServer, Error> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io(format!("binding {}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    crate::pg::binaries::chown_to_server_user(path)
        .map_err(io(format!("chown {}", path.display())))?;
    let prefetcher = Prefetcher {
        read_ahead,
        task: Arc::default(),
        stop: CancellationToken::new(),
    };
    let serving = prefetcher.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (repo, prefetcher) = (repo.clone(), serving.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(&repo, &prefetcher, stream).await {
                    tracing::debug!(event = "drill.wal.failed", error = %e, "serving WAL to the drill");
                }
            });
        }
    });
    Ok(WalServer {
        path: path.to_path_buf(),
        task,
        prefetcher,
    })
}

async fn answer(repo: &Repo, prefetcher: &Prefetcher, stream: UnixStream) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    // A name is 40 bytes at most; a client that sends more is not ours.
    (&mut stream).take(128).read_line(&mut line).await?;
    let name = line.trim_end();
    let stream = stream.get_mut();
    if classify(name).is_none() {
        let reply = format!("E{name:?} is not a WAL file name");
        return stream.write_all(reply.as_bytes()).await;
    }
    let fetched = match prefetcher.take(name).await {
        Some(raw) => Ok(Some(raw)),
        None => fetch_bytes(repo, name).await,
    };
    if let Ok(Some(raw)) = &fetched {
        prefetcher.asked(repo, name, raw.len());
    }
    match fetched {
        Ok(Some(raw)) => {
            stream.write_all(b"O").await?;
            stream.write_all(&(raw.len() as u64).to_le_bytes()).await?;
            stream.write_all(&raw).await
        }
        Ok(None) => stream.write_all(b"M").await,
        Err(e) => stream.write_all(format!("E{e}").as_bytes()).await,
    }
}

/// The client (`wal-fetch --socket`): asks for `name` and writes it to `dest` (through a
/// temporary file and a rename). Ok(false) when the repository does not have it.
pub async fn fetch_via(socket: &Path, name: &str, dest: &Path) -> Result<bool, Error> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await.map_err(io(format!(
            "connecting to the drill's WAL socket {}",
            socket.display()
        )))?;
        stream
            .write_all(format!("{name}\n").as_bytes())
            .await
            .map_err(io("asking for WAL"))?;
        let mut status = [0u8; 1];
        stream
            .read_exact(&mut status)
            .await
            .map_err(io("reading the WAL reply"))?;
        match status[0] {
            b'O' => {
                let mut len = [0u8; 8];
                stream
                    .read_exact(&mut len)
                    .await
                    .map_err(io("reading the WAL reply"))?;
                let len = u64::from_le_bytes(len);
                if len > 1 << 30 {
                    return Err(Error::Invalid(format!("a WAL reply of {len} bytes")));
                }
                let mut raw = vec![0u8; len as usize];
                stream
                    .read_exact(&mut raw)
                    .await
                    .map_err(io("reading WAL from the drill"))?;
                Ok(Some(raw))
            }
            b'M' => Ok(None),
            _ => {
                let mut message = String::new();
                let _ = stream.read_to_string(&mut message).await;
                Err(Error::Invalid(message))
            }
        }
    };
    let reply = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| Error::Invalid(format!("no WAL for {name} within {CLIENT_TIMEOUT:?}")))??;
    match reply {
        Some(raw) => {
            super::wal::write_atomically(dest, &raw).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}
