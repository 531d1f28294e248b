//! A new deployment's first hour (issue 17): a daemon started on an empty repository takes a
//! first backup soon after start instead of waiting for the night's schedule.

use std::time::Duration;

use crate::harness::backup::LocalRepo;
use crate::harness::{self, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_an_empty_repository_takes_a_first_backup_soon_after_start() {
    let repo = LocalRepo::new();
    let primary = repo.archiving_primary().await;
    // The nightly schedule is far away; drills and retention are off.
    let extra = format!(
        "{}[drill]\nschedule = \"off\"\n[retention]\nschedule = \"off\"\n[pitr]\ncheck_interval = \"2s\"\n",
        repo.storage
    );
    let running =
        harness::daemon_as_configured(harness::settings(&primary.dsn("postgres"), &extra)).await;
    let s = eventually(Duration::from_secs(150), || async {
        let s = harness::scrape(&running).await;
        match s.metric("pgvigil_backups").value() {
            Some(n) if n >= 1.0 => Ok(s),
            other => Err(format!("no backup yet ({other:?})")),
        }
    })
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(s.metric("pgvigil_backups").value(), Some(1.0));
    assert!(
        s.metric("pgvigil_backup_last_success_timestamp_seconds")
            .value()
            .unwrap_or(0.0)
            > 0.0
    );
    let backups: Vec<_> = std::fs::read_dir(repo.repo_dir.join("default/backups"))
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert_eq!(backups.len(), 1, "exactly one backup, taken once");
}

/// `pgvigil drill` run as root with the binary in a private path (as `make dev` builds it,
/// under root's home): the drill's restore_command used to point at a binary the server
/// user cannot execute ("command not executable"); now the drill runs a copy it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_run_as_root_from_a_private_path_restores_through_a_reachable_copy() {
    use crate::harness::backup::{archiving_cluster, switch_and_archive, write_config};
    use crate::harness::{client, exec, postgres_dir, query_value, run_pgvigil};
    let owner = postgres_dir();
    let config = owner.path().join("pgvigil.toml");
    let work = owner.path().join("drill");
    let section = format!(
        "[storage]\nurl = \"file://{}/repo\"\n[pitr]\nheartbeat_interval = \"0s\"\n[drill]\nwork_dir = \"{}\"\namcheck = false\n",
        owner.path().display(),
        work.display()
    );
    let pg = archiving_cluster(&config).await;
    write_config(&config, &pg.dsn("postgres"), &section);
    let db = client(&pg, "postgres").await;
    exec(&db, "CREATE TABLE markers AS SELECT 1 AS id").await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &config.display().to_string()]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target: String = query_value(
        &db,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    exec(&db, "INSERT INTO markers VALUES (2)").await;
    switch_and_archive(&db).await;

    // The cargo-built binary itself, run by this (root) process from the target directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvigil"))
        .args([
            "drill",
            "-c",
            &config.display().to_string(),
            "--target-time",
            &target,
        ])
        .args(["--timeout", "2m", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let ev: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success() && ev["success"] == true, "{ev:#}");
    if matches!(pgvigil::pg::binaries::server_user(), Ok(Some(_))) {
        assert!(
            pgvigil::pg::binaries::server_user_can_reach(&work.join("bin/pgvigil"), true),
            "the drill ran a copy in drill.work_dir/bin"
        );
    }
}

/// Every long operation says what it did, phase by phase, when its stderr is not a
/// terminal (a CI log, a journal): bytes of the expected total, time and rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_operations_print_a_line_per_phase_when_not_on_a_terminal() {
    use crate::harness::backup::LocalRepo;
    use crate::harness::run_pgvigil;
    let repo = LocalRepo::new();
    let (_pg, _db) = repo.primary_with_backup().await;
    let (ok, _, err) = run_pgvigil(&["backup", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("backup: "))
        .unwrap_or_else(|| panic!("no backup line in {err}"));
    // "backup: 38.60 MiB of 37.95 MiB expected in 0.6s (61.20 MiB/s)"
    assert!(
        line.contains(" MiB of ") && line.contains(" expected in ") && line.ends_with("/s)"),
        "{line}"
    );
    let target = repo.dir.path().join("restored");
    let (ok, _, err) = run_pgvigil(&[
        "restore",
        "-c",
        &repo.cfg,
        "--to",
        &target.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("restore of backup ") && l.contains(" expected in ")),
        "{err}"
    );
    let (ok, _, err) = run_pgvigil(&["retention", "-c", &repo.cfg]);
    assert!(ok, "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("retention deleting in file://") && l.contains(" objects in ")),
        "{err}"
    );
}

/// On a terminal the backup draws a bar, and the log line written while it runs
/// (`backup.completed`) appears whole on a line of its own, not glued to the bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_bar_is_drawn_and_log_lines_do_not_tear_it() {
    use crate::harness::backup::LocalRepo;
    use crate::harness::process::KillOnDrop;
    let repo = LocalRepo::new();
    let (_pg, _db) = repo.primary_with_backup().await;
    // script(1) gives the command a pseudo-terminal and copies what it draws.
    let command = format!(
        "{} backup -c {}",
        crate::harness::pgvigil_bin().display(),
        repo.cfg
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .env("COLUMNS", "160")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    crate::harness::as_server_user(&mut cmd);
    let out = KillOnDrop::spawn(&mut cmd).wait_with_output();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{raw}");
    let plain = strip_ansi(&raw);
    assert!(
        plain.contains("ETA") || plain.contains("expected in"),
        "no bar: {plain:?}"
    );
    let completed: Vec<&str> = plain
        .split(['\n', '\r'])
        .filter(|l| l.contains("completed"))
        .collect();
    assert!(
        !completed.is_empty(),
        "no backup.completed log line: {plain:?}"
    );
    for l in completed {
        assert!(
            !l.contains("ETA") && !l.contains("[=") && !l.contains("stored)"),
            "a log line glued to the bar: {l:?}"
        );
    }
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What `pgvigil dev` prints works when typed: the status page answers, the `try:` command
/// runs as printed (as root, with the binary where cargo built it), and psql connects with
/// the printed DSNs. Ctrl-C (SIGINT to its pid) stops it and removes what it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_pgvigil_dev_prints_works_as_typed() {
    use std::io::BufRead;

    use crate::harness::process::KillOnDrop;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgvigil"));
    cmd.args(["dev", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut dev = KillOnDrop::spawn(&mut cmd);
    let pid = dev.id();
    let stdout = dev.take_stdout();
    // Read the banner on a thread, bounded: it ends with the "pgbouncer:" line. The thread
    // goes on reading until the process exits, so its stdout never breaks.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut sent = false;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sent {
                continue;
            }
            let done = line.trim_start().starts_with("pgbouncer:");
            lines.push(line);
            if done {
                let _ = tx.send(std::mem::take(&mut lines));
                sent = true;
            }
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("pgvigil dev printed no banner within 2 minutes"));
    let field = |name: &str| {
        banner
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name}: line in {banner:#?}"))
    };
    assert!(field("backup").contains(" taken ("), "{banner:#?}");

    let status_url = field("status");
    let url = status_url.split_whitespace().next().unwrap_or_default();
    let page = crate::harness::get_text(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(page.contains("<h2>Recovery window</h2>"), "{page}");

    let typed = |line: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", line])
            .output()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let try_line = field("try");
    let (code, out, err) = typed(&try_line);
    assert!(
        (0..=2).contains(&code) && out.contains("recovery window  "),
        "{try_line}: exit {code}\n{out}\n{err}"
    );
    assert!(
        out.contains("daemon           http://127.0.0.1:") && !out.contains("not answering"),
        "{out}"
    );
    // The same binary restores as typed: its restore_command runs as the server user.
    let to = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let restore = try_line.replace(
        " status -c ",
        &format!(" restore --to {} -c ", to.path().join("data").display()),
    );
    let (code, out, err) = typed(&restore);
    assert!(code == 0, "{restore}: exit {code}\n{out}\n{err}");
    assert!(to.path().join("data/PG_VERSION").exists(), "{out}");
    for name in ["postgres", "pgbouncer"] {
        let dsn = field(name);
        if dsn.starts_with("not installed") {
            continue;
        }
        let psql = dsn.split("   ").next().unwrap_or_default();
        let (code, out, err) = typed(&format!("{psql} -Atc 'select 41 + 1'"));
        assert!(code == 0 && out.trim() == "42", "{psql}: {out} {err}");
    }

    // Ctrl-C: everything stops and the temporary directory goes.
    let config = field("config");
    let raw = i32::try_from(pid).unwrap_or_else(|e| panic!("{e}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap_or_else(|e| panic!("SIGINT {pid}: {e}"));
    let status = dev.wait_timeout(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "pgvigil dev did not stop on SIGINT: {status:?}"
    );
    assert!(
        !std::path::Path::new(&config).exists(),
        "{config} is still there"
    );
}
