//! Logging setup. What is logged is decided where it is logged (see `access_log`): no event
//! carries a header, a query string, a token or key material.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level (both are
/// validated first: `check_filter`). Colour only when stderr is a terminal, so a log file
/// or journal gets plain text.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Refuses an invalid `RUST_LOG` instead of silently logging at the configured level.
pub fn check_env_filter() -> Result<(), String> {
    match std::env::var("RUST_LOG") {
        Ok(value) => EnvFilter::try_new(&value)
            .map(drop)
            .map_err(|err| format!("RUST_LOG '{value}' is not a valid filter (such as info or pkcv_proxy=debug): {err}")),
        Err(_) => Ok(()),
    }
}
