//! The pgvigil binary: parse the command line, set up logging, run, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pgvigil::cli::Cli::parse();
    if reports_only(&cli.command) {
        default_sigpipe();
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    let (target, terminal) = match cli.command {
        pgvigil::cli::Command::Run(_) | pgvigil::cli::Command::Dev(_) => (
            pgvigil::logging::Target::Stdout,
            std::io::stdout().is_terminal(),
        ),
        _ => (
            pgvigil::logging::Target::Stderr,
            std::io::stderr().is_terminal(),
        ),
    };
    // Progress bars draw on stderr (hidden when it is not a terminal); logs go around them.
    let bars = indicatif::MultiProgress::new();
    pgvigil::logging::init(cli.log_format, rust_log.as_deref(), terminal, target, &bars);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgvigil: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    match runtime.block_on(pgvigil::commands::execute(cli, &env, bars)) {
        Ok(code) => code,
        Err(e) => {
            // The whole chain on one line: what failed, on what, and why.
            eprintln!("pgvigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Commands that only read and print: a reader that closes the pipe early (`| head`) ends
/// them quietly, as it ends any Unix filter. Not the ones that write to the repository or
/// run servers: a closed stdout must never stop those half-way.
fn reports_only(command: &pgvigil::cli::Command) -> bool {
    use pgvigil::cli::Command;
    matches!(
        command,
        Command::CheckConfig
            | Command::Backups(_)
            | Command::Verify(_)
            | Command::Status(_)
            | Command::Catalog(_)
    )
}

/// SIGPIPE back to its default action (Rust ignores it, so printing to a closed pipe
/// panics instead).
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists; SigDfl installs no
    // handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
