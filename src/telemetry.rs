//! Logging setup. What is logged is decided where it is logged (see `proxy::RequestLog`):
//! no event carries a header, a query string, a token or key material.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RawLog};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(log: &RawLog) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
