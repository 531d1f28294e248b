//! Child processes the tests start: found and signalled by pid, never by name (a lookup by
//! name would also hit the processes of tests running in parallel, or a real backup on the
//! machine), and killed when their handle drops, also when the test panics.

use std::process::{Child, Command, Output};

/// The pids whose parent is `pid`, read from `/proc/*/stat` (field 4, after the command
/// name in parentheses, which may itself contain spaces and parentheses).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// Every descendant of `pid` (children, their children, ...), in no particular order.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    // Bounded: a process tree of a test is small.
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            if out.len() < 10_000 && !out.contains(&c) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The pid of the postmaster running `data_dir` (line 1 of its `postmaster.pid`).
pub fn postmaster_pid(data_dir: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The command line of `pid`, arguments joined by spaces ("" once it has exited).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Sends SIGKILL to `pid` (a process this test started, or a child of one).
pub fn kill9(pid: u32) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("kill -9 {pid}: {e}"))
}

/// Sends `signal` (SIGSTOP, SIGCONT, ...) to `pid`, a process this test started.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
        .map_err(|e| format!("kill -{signal} {pid}: {e}"))
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd`, panicking with the command on failure.
    pub fn spawn(cmd: &mut Command) -> Self {
        match cmd.spawn() {
            Ok(c) => Self(Some(c)),
            Err(e) => panic!("starting {cmd:?}: {e}"),
        }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL now, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its piped stdout, to read while it runs.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.0
            .as_mut()
            .and_then(|c| c.stdout.take())
            .unwrap_or_else(|| panic!("the child's stdout is not piped"))
    }

    /// Waits at most `patience` for the child to exit on its own (polling, bounded);
    /// None if it is still running (it is killed when this handle drops).
    pub fn wait_timeout(
        &mut self,
        patience: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Waits for the child to exit on its own and returns its output.
    pub fn wait_with_output(mut self) -> Output {
        match self.0.take() {
            Some(c) => c
                .wait_with_output()
                .unwrap_or_else(|e| panic!("waiting for the child: {e}")),
            None => panic!("the child was already killed"),
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `pgvigil <args>` as a child process with `env` (AWS credentials), stdout discarded and
/// stderr kept for `wait_with_output`; killed on drop.
pub fn spawn_pgvigil(args: &[&str], env: &[(String, String)]) -> KillOnDrop {
    KillOnDrop::spawn(
        super::pgvigil_command(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
}

/// `pgvigil run` as a child process whose JSON log lines (stdout) go to a file, so a test
/// can read the events it logged; killed on drop.
pub struct DaemonProcess {
    pub child: KillOnDrop,
    log: std::path::PathBuf,
}

impl DaemonProcess {
    /// Spawns `cmd` (a `pgvigil run` command) with its log at info level into `log`.
    pub fn spawn(cmd: &mut Command, log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = KillOnDrop::spawn(
            cmd.env("RUST_LOG", "info")
                .arg("--log-format")
                .arg("json")
                .stdout(file)
                .stderr(std::process::Stdio::null()),
        );
        Self { child, log }
    }

    /// Every log line so far that parses as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The log lines whose `event` is `event`.
    pub fn events_named(&self, event: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }
}
