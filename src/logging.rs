//! Log setup: JSON lines on stdout (what Loki and SIEM collectors read), or human-readable
//! text on a terminal, filtered by a `RUST_LOG`-style directive.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `filter` is the RUST_LOG value, if any.
pub fn init(format: LogFormat, filter: Option<&str>, stdout_is_terminal: bool) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !stdout_is_terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
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
