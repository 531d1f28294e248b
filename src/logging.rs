//! Log setup: JSON lines on stdout (what Loki and SIEM collectors read), or human-readable
//! text on a terminal, filtered by a `RUST_LOG`-style directive. A one-shot command's
//! progress bars (`commands::progress`) live in the [`MultiProgress`] given to [`init`]:
//! every log line is written with the bars suspended, so the two never interleave.

use std::io::Write;

use indicatif::MultiProgress;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Where log lines go. The daemon logs to stdout (what collectors read); one-shot commands
/// log to stderr, so their stdout carries only their output (`--json` stays parseable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. `filter` is the RUST_LOG value, if any; `is_terminal`
/// tells whether the target is a terminal; `bars` are suspended around each line written
/// to stderr.
pub fn init(
    format: LogFormat,
    filter: Option<&str>,
    is_terminal: bool,
    target: Target,
    bars: &MultiProgress,
) {
    let stdout_is_terminal = is_terminal;
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !stdout_is_terminal,
    };
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(match target {
        Target::Stdout => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
        Target::Stderr => {
            let bars = bars.clone();
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || AroundBars(bars.clone()))
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(stdout_is_terminal)
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// stderr, written with the progress bars out of the way.
struct AroundBars(MultiProgress);

impl Write for AroundBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
