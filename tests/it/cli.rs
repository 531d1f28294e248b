//! The binary as a user meets it: help, config errors with file:line, check-config against
//! a live server, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::cluster;

const BIN: &str = env!("CARGO_BIN_EXE_pgvigil");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("pgvigil.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("PGVIGIL_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_subcommand_and_version_prints() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok);
    for sub in [
        "run",
        "dev",
        "check-config",
        "catalog",
        "status",
        "--config",
    ] {
        assert!(out.contains(sub), "--help lacks {sub}:\n{out}");
    }
    for sub in ["run", "dev", "check-config", "catalog", "status"] {
        let (ok, out, _) = run(&[sub, "--help"]);
        assert!(ok && out.len() > 200, "{sub} --help is too thin:\n{out}");
    }
    let (_, out, _) = run(&["status", "--help"]);
    for said in [
        "0 = healthy",
        "1 = degraded",
        "2 = broken",
        "--json",
        "--web.config.file",
        "/status.json",
    ] {
        assert!(out.contains(said), "status --help lacks {said:?}:\n{out}");
    }
    let (ok, out, _) = run(&["--version"]);
    assert!(ok && out.starts_with("pgvigil "), "{out}");
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(&dir, "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"postgresql://u@127.0.0.1:1/db\"\nstatment_timeout = \"5s\"\n");
    let p = path.display().to_string();
    let (ok, out, _) = run(&["check-config", "-c", &p]);
    assert!(!ok);
    assert!(
        out.contains(&format!("{p}:5: postgres.statment_timeout")),
        "{out}"
    );

    let path = write_config(&dir, "[postgres]\ndsn = \"postgresql://u@127.0.0.1:1/db\"\nslow_collectors_interval = \"often\"\n");
    let (ok, out, _) = run(&["check-config", "-c", &path.display().to_string()]);
    assert!(!ok);
    assert!(
        out.contains(":3: postgres.slow_collectors_interval: \"often\" is not a duration"),
        "{out}"
    );

    // -c after the subcommand works too, and a missing file is named.
    let (ok, _, err) = run(&["run", "-c", "/nonexistent/pgvigil.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/pgvigil.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_probes_a_live_server_and_a_dead_one() {
    let pg = cluster().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(
        &dir,
        &format!("[postgres]\ndsn = \"{}\"\n", pg.dsn("postgres")),
    );
    let (ok, out, _) = run(&["check-config", "-c", &path.display().to_string()]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("postgres") && l.contains("PostgreSQL 15")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("storage") && l.contains("0 backup(s)")),
        "{out}"
    );

    let path = write_config(
        &dir,
        "[postgres]\ndsn = \"postgresql://postgres@127.0.0.1:1/postgres\"\n",
    );
    let (ok, out, _) = run(&["check-config", "-c", &path.display().to_string()]);
    assert!(!ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("127.0.0.1:1")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let pg = cluster().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[postgres]\ndsn = \"{}\"\n[backup]\ninitial_backup = false\n",
            pg.dsn("postgres")
        ),
    );
    let mut child = Command::new(BIN)
        .args(["run", "-c", &path.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    // JSON logs on stdout (not a terminal): wait for the start event.
    let started = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .find(|l| l.contains("\"event\":\"daemon.started\""));
    let line = started.unwrap_or_else(|| panic!("no daemon.started log line"));
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_ok(),
        "not JSON: {line}"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("daemon.stopped")),
        "{rest:?}"
    );
}

/// Runs the binary with `args` and a stdout whose reader is already gone; returns its
/// exit status and stderr.
fn run_with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = nix::unistd::pipe().unwrap_or_else(|e| panic!("{e}"));
    drop(reader);
    let out = Command::new(BIN)
        .args(args)
        .env_remove("PGVIGIL_CONFIG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A reader that closed the pipe early (`pgvigil catalog | head -c0`) ends a command that
/// only reports quietly, by SIGPIPE like any Unix filter: no panic message, no exit 101.
#[test]
fn a_closed_stdout_ends_a_report_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (status, err) = run_with_closed_stdout(&["catalog"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.signal(), Some(13), "{status:?}: {err}");
}

/// A command that writes (here retention, on an empty local repository) keeps SIGPIPE
/// ignored, so a signal never stops it half-way; its report to a closed stdout is dropped,
/// and it exits 0 because the work was done.
#[test]
fn a_closed_stdout_does_not_fail_a_command_that_did_its_work() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(
        &dir,
        &format!(
            "[postgres]\ndsn = \"postgresql://postgres@127.0.0.1:1/postgres?sslmode=disable\"\n\
             [storage]\nurl = \"file://{}\"\n",
            dir.path().join("repo").display()
        ),
    );
    let (status, err) = run_with_closed_stdout(&["retention", "-c", &config.display().to_string()]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success(), "{status:?}: {err}");
}
