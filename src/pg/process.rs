//! The one way pgvigil runs child processes (initdb, postgres, pg_basebackup, pgbouncer):
//! a free loopback port, a checked run that reports the exit status and the tail of the
//! output, a bounded stop (signal, wait, then SIGKILL), and blocking work off the runtime.

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::temp_cluster::Error;

pub(crate) fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let step = step.into();
    move |source| Error::Io { step, source }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

/// Runs a command to completion; a failure carries its status and output tail.
pub(crate) fn run_checked(mut cmd: std::process::Command, step: &str) -> Result<(), Error> {
    let out = cmd.stdin(Stdio::null()).output().map_err(io(step))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(Error::Child {
        step: step.into(),
        status: out.status.to_string(),
        output: tail(&text, 1500),
    })
}

/// The last `n` bytes of `s` (on a char boundary), trimmed.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Sends `signal`, waits up to 10 s, then SIGKILLs.
pub(crate) fn stop_child(mut child: Child, signal: nix::sys::signal::Signal) {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let _ = kill(Pid::from_raw(raw), signal);
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs blocking work (child processes, waits) off the async runtime.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            step: "background task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}
