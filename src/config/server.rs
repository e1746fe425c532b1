//! `[server]`: the listeners, their limits and timeouts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawServer;
use super::{cores, in_range, millis, ConfigError, STATUS_FILE_NAME};

/// Where the proxy listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Account reload polling interval.
    pub reload_interval: Duration,
    /// Body read deadline.
    pub body_read_timeout: Duration,
    /// Request head read deadline.
    pub header_read_timeout: Duration,
    /// TLS handshake deadline inside tunnels.
    pub tls_handshake_timeout: Duration,
    /// Drain time after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The admin listener, if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Client connections held at once.
    pub max_connections: usize,
    /// Requests being signed or forwarded at once.
    pub max_in_flight: usize,
    /// Request body bytes held at once.
    pub max_buffered_bytes: u64,
    /// Idle keep-alive connection timeout.
    pub idle_timeout: Duration,
    /// How long writing to a client may make no progress.
    pub response_write_timeout: Duration,
    /// The async runtime's worker threads (resolved: never 0).
    pub worker_threads: usize,
    /// The status file, if any (explicit, or in `accounts_dir`).
    pub status_file: Option<PathBuf>,
    /// The mutual-TLS listener, if enabled.
    pub tls: Option<TlsListenerSettings>,
}

/// The mutual-TLS listener: clients prove who they are with a certificate.
#[derive(Debug, Clone)]
pub struct TlsListenerSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its certificate chain.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA client certificates must chain to.
    pub client_ca_file: PathBuf,
}

pub(super) fn server_settings(
    raw: &RawServer,
    accounts_dir: Option<&Path>,
) -> Result<ServerSettings, ConfigError> {
    let listen = parse_address("server.listen", &raw.listen)?;
    let admin_listen = match raw.admin_listen.trim() {
        "" => None,
        address => Some(parse_address("server.admin_listen", address)?),
    };
    if admin_listen.is_some_and(|admin| admin == listen && admin.port() != 0) {
        return Err(ConfigError::SameAddress(listen));
    }
    let max_body_bytes = in_range(
        "server.max_body_bytes",
        raw.max_body_bytes,
        1..=u64::MAX,
        "at least 1",
    )?;
    let max_buffered_bytes = in_range(
        "server.max_buffered_bytes",
        raw.max_buffered_bytes,
        max_body_bytes..=u64::MAX,
        "at least server.max_body_bytes",
    )?;
    let limits = |key, value| in_range(key, value, 1..=1_000_000, "1–1000000").map(|v| v as usize);
    let reload = in_range(
        "server.reload_interval_ms",
        raw.reload_interval_ms,
        100..=u64::MAX,
        "at least 100",
    )?;
    let header_read = in_range(
        "server.header_read_timeout_secs",
        raw.header_read_timeout_secs,
        1..=3600,
        "1–3600",
    )?;
    let tls_handshake = in_range(
        "server.tls_handshake_timeout_secs",
        raw.tls_handshake_timeout_secs,
        1..=300,
        "1–300",
    )?;
    let idle = in_range(
        "server.idle_timeout_secs",
        raw.idle_timeout_secs,
        1..=86_400,
        "1–86400",
    )?;
    let grace = in_range(
        "server.shutdown_grace_secs",
        raw.shutdown_grace_secs,
        0..=3600,
        "0–3600",
    )?;
    let status_file = raw
        .status_file
        .clone()
        .or_else(|| accounts_dir.map(|dir| dir.join(STATUS_FILE_NAME)));
    Ok(ServerSettings {
        listen,
        max_body_bytes,
        reload_interval: Duration::from_millis(reload),
        body_read_timeout: millis("server.body_read_timeout_ms", raw.body_read_timeout_ms)?,
        header_read_timeout: Duration::from_secs(header_read),
        tls_handshake_timeout: Duration::from_secs(tls_handshake),
        shutdown_grace: Duration::from_secs(grace),
        admin_listen,
        max_connections: limits("server.max_connections", raw.max_connections)?,
        max_in_flight: limits("server.max_in_flight", raw.max_in_flight)?,
        max_buffered_bytes,
        idle_timeout: Duration::from_secs(idle),
        response_write_timeout: millis(
            "server.response_write_timeout_ms",
            raw.response_write_timeout_ms,
        )?,
        worker_threads: worker_threads(raw.worker_threads)?,
        status_file,
        tls: tls_listener(raw, listen, admin_listen)?,
    })
}

/// `server.worker_threads`, 0 meaning one per core.
fn worker_threads(configured: u64) -> Result<usize, ConfigError> {
    match in_range("server.worker_threads", configured, 0..=1024, "0–1024")? {
        0 => Ok(cores()),
        threads => Ok(threads as usize),
    }
}

/// The mutual-TLS listener: all of its settings, or none.
fn tls_listener(
    raw: &RawServer,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<Option<TlsListenerSettings>, ConfigError> {
    let named = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
    let files = (
        named(&raw.tls_cert_file),
        named(&raw.tls_key_file),
        named(&raw.client_ca_file),
    );
    let address = raw.tls_listen.trim();
    if address.is_empty() {
        if files.0.is_some() || files.1.is_some() || files.2.is_some() {
            return Err(ConfigError::TlsListener("server.tls_cert_file, tls_key_file and client_ca_file are set but server.tls_listen is not"));
        }
        return Ok(None);
    }
    let tls_listen = parse_address("server.tls_listen", address)?;
    let taken = tls_listen == listen || Some(tls_listen) == admin;
    if taken && tls_listen.port() != 0 {
        return Err(ConfigError::TlsListener(
            "server.tls_listen must differ from listen and admin_listen",
        ));
    }
    match files {
        (Some(cert_file), Some(key_file), Some(client_ca_file)) => Ok(Some(TlsListenerSettings {
            listen: tls_listen,
            cert_file,
            key_file,
            client_ca_file,
        })),
        _ => Err(ConfigError::TlsListener(
            "server.tls_listen needs tls_cert_file, tls_key_file and client_ca_file",
        )),
    }
}

fn parse_address(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::NotAnAddress {
            key,
            value: value.to_owned(),
        })
}
