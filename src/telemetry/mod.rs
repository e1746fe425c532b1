//! Logging setup, and span export over OTLP/HTTP when built with the `otlp` feature and
//! `[telemetry] otlp_endpoint` is set (`otlp`). What is logged is decided where it is logged
//! (see `access_log`): no event carries a header, a query string, a token or key material;
//! and only the request span, never a log event, is exported.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, LogSettings};

#[cfg(feature = "otlp")]
pub mod otlp;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
}

/// What [`init`] started: span export, if configured, to be flushed on the way out.
#[derive(Debug, Default)]
#[must_use = "shut it down after the drain, so that the last spans are exported"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    export: Option<otlp::Export>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter, within a bounded time; a
    /// no-op without span export.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(export) = self.export {
            export.shutdown().await;
        }
    }
}

/// Installs the global subscriber: the log (`[log]`), and span export when
/// `[telemetry] otlp_endpoint` is set. Call it on the runtime that serves (the exporter posts
/// from it).
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    #[cfg(feature = "otlp")]
    if let Some(settings) = &config.telemetry.otlp {
        let export = otlp::install(&config.log, settings, &config.upstream)?;
        return Ok(Telemetry {
            export: Some(export),
        });
    }
    init_log(&config.log);
    Ok(Telemetry::default())
}

/// The log's filter: `RUST_LOG` over the configured level (both are validated first:
/// [`check_env_filter`]).
fn log_filter(log: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether log lines get colour: only when stderr is a terminal, so a log file or journal gets
/// plain text.
fn ansi() -> bool {
    std::io::stderr().is_terminal()
}

/// Installs the log alone. `RUST_LOG` overrides the configured level.
fn init_log(log: &LogSettings) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(log))
        .with_ansi(ansi())
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
