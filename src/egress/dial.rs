//! How the proxy opens TCP connections: to Twilio hosts, passthrough tunnels and key
//! services alike, each through the egress proxy unless `no_proxy` matches.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{EgressError, EgressLoadError, EgressProxy, EgressSettings};
use crate::error::ProxyError;
use crate::route::HostPattern;

/// Why a TCP connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The connect timeout expired.
    #[error("connect timed out")]
    Timeout,

    /// The name did not resolve or the connection was refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No tunnel through the egress proxy (`upstream.proxy`).
    #[error(transparent)]
    Egress(#[from] EgressError),
}

impl DialError {
    /// What the client is told for a connection to `host` that failed so.
    pub(crate) fn to_proxy_error(&self, host: &str, timeout: Duration) -> ProxyError {
        match self {
            DialError::Timeout => ProxyError::UpstreamTimeout {
                host: host.to_owned(),
                timeout,
            },
            DialError::Io(err) => ProxyError::UpstreamConnect {
                host: host.to_owned(),
                reason: err.to_string(),
            },
            DialError::Egress(err) => err.to_proxy_error(host, timeout),
        }
    }
}

/// How the proxy opens TCP connections upstream: `connect_to` overrides (exact names before
/// patterns), through the egress proxy unless `no_proxy` matches, a connect timeout, no
/// Nagle delay. Used for signed traffic and for passthrough tunnels alike.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    overrides: Arc<Vec<(HostPattern, String)>>,
    timeout: Duration,
    egress: Option<Arc<EgressProxy>>,
}

impl Dialer {
    /// Reads the egress proxy's credentials, if any; connects nowhere. `overrides` are
    /// `[upstream] connect_to`, `timeout` its `connect_timeout_ms`, `egress` its `proxy`.
    pub(crate) fn new(
        overrides: &[(HostPattern, String)],
        timeout: Duration,
        egress: Option<&EgressSettings>,
    ) -> Result<Dialer, EgressLoadError> {
        let egress = egress.map(EgressProxy::load).transpose()?;
        Ok(Dialer {
            overrides: Arc::new(overrides.to_vec()),
            timeout,
            egress: egress.map(Arc::new),
        })
    }

    /// The connect timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where `host` is dialled: its `connect_to` override, or itself on `port`.
    pub(crate) fn address(&self, host: &str, port: u16) -> String {
        self.overrides
            .iter()
            .find(|(pattern, _)| pattern.matches(host))
            .map(|(_, address)| address.clone())
            .unwrap_or_else(|| format!("{host}:{port}"))
    }

    /// Opens a TCP connection to `host` (or its override) within the connect timeout: a
    /// tunnel through the egress proxy (the `CONNECT` naming that address), or a direct one.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let address = self.address(host, port);
        if let Some(egress) = self
            .egress
            .as_ref()
            .filter(|egress| egress.applies_to(host))
        {
            return Ok(egress.open(&address, self.timeout).await?);
        }
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| DialError::Timeout)??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
