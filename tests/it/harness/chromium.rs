//! A real browser for the status page: Debian's `chromium`, headless, with a fresh profile
//! directory per run and nothing that reaches out (no background networking, component
//! updates, sync or QUIC). `dump_dom` returns the DOM after the page loaded (what a person
//! would see, as text), `screenshot` writes a PNG. Each run is a child this test started:
//! bounded by a patience, and on timeout it and its own children are killed by pid, never
//! by name.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::process::{children_of, kill9};

/// Where Debian installs it (`make deps` does).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The DOM of `url` after it loaded.
pub fn dump_dom(url: &str) -> String {
    let out = run(&["--dump-dom", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of `url` at `width`x`height` into `png`.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) {
    let shot = format!("--screenshot={}", png.display());
    let size = format!("--window-size={width},{height}");
    run(&["--hide-scrollbars", &shot, &size, url]);
    assert!(
        std::fs::metadata(png).is_ok_and(|m| m.len() > 0),
        "chromium wrote no screenshot to {}",
        png.display()
    );
}

fn run(args: &[&str]) -> Output {
    super::require_binary(CHROMIUM, "chromium");
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
    let pid = child.id();
    // Its output is read on a thread of its own, so a large DOM cannot block it while the
    // test waits with a bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let patience = Duration::from_secs(90);
    match rx.recv_timeout(patience) {
        Ok(Ok(out)) => {
            assert!(
                out.status.success(),
                "chromium {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Ok(Err(e)) => panic!("waiting for chromium: {e}"),
        Err(_) => {
            kill_tree(pid);
            panic!("chromium {args:?} did not finish within {patience:?}; killed (pid {pid})")
        }
    }
}

/// SIGKILL to `pid` and its descendants, found by parent pid in `/proc`.
fn kill_tree(pid: u32) {
    let mut pids = vec![pid];
    let mut i = 0;
    // Bounded: a browser has a few dozen processes.
    while i < pids.len() && pids.len() < 256 {
        pids.extend(children_of(pids[i]));
        i += 1;
    }
    for p in pids.into_iter().rev() {
        let _ = kill9(p);
    }
}
