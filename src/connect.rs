//! `CONNECT host:443`, as `HTTPS_PROXY` clients send it. Three outcomes, decided before any
//! connection is made:
//!
//! 1. a host named in `intercept.passthrough_hosts` gets a blind TCP tunnel (nothing signed;
//!    off unless configured);
//! 2. an allowed Twilio host, with interception enabled, gets `200`, then the proxy terminates
//!    TLS inside the tunnel with a leaf from the local CA ([`crate::intercept`]) and serves
//!    HTTP/1.1 or HTTP/2 on it: every request is signed and forwarded to that host exactly as
//!    a plain proxied request would be, for as many requests as the client keeps it open;
//! 3. anything else is refused (403, or 405 when interception is off) and nothing is dialled.
//!
//! Tunnels run on the server's task tracker and watch its shutdown signal, so a drain waits
//! for them and closes them gracefully.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::ProxyError;
use crate::intercept::{InterceptError, Interceptor};
use crate::proxy::{Proxy, ProxyBody, RequestLog};
use crate::route::{canonical_host, HostPattern};
use crate::server::{ConnectionContext, HEADER_READ_TIMEOUT};
use crate::shutdown::Shutdown;

/// How long a client gets to finish the TLS handshake inside a tunnel.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `CONNECT` may lead to.
#[derive(Debug)]
pub(crate) struct Tunnels {
    interceptor: Option<Arc<Interceptor>>,
    passthrough: Vec<HostPattern>,
    connect_to: Vec<(HostPattern, String)>,
    connect_timeout: Duration,
}

impl Tunnels {
    pub(crate) fn new(config: &Config) -> Result<Tunnels, InterceptError> {
        let interceptor = match &config.intercept {
            Some(settings) => Some(Arc::new(Interceptor::load(
                &settings.ca_cert_file,
                &settings.ca_key_file,
            )?)),
            None => None,
        };
        Ok(Tunnels {
            interceptor,
            passthrough: config.passthrough_hosts.clone(),
            connect_to: config.upstream.connect_to.clone(),
            connect_timeout: config.upstream.connect_timeout,
        })
    }
}

impl Proxy {
    /// Answers a `CONNECT` and, on success, starts the tunnel once the client's connection
    /// is handed over.
    pub(crate) async fn connect<B>(
        self: &Arc<Self>,
        request: Request<B>,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let authority = request
            .uri()
            .authority()
            .ok_or(ProxyError::BadTarget("CONNECT needs host:port"))?;
        let port = authority
            .port_u16()
            .ok_or(ProxyError::BadTarget("CONNECT needs host:port"))?;
        let host = canonical_host(authority.host()).ok_or_else(|| {
            ProxyError::HostNotAllowed(authority.host().chars().take(100).collect())
        })?;
        log.host = Some(host.clone());
        if port != 443 {
            return Err(ProxyError::PortNotAllowed(port));
        }
        // Present when the request came through `server::serve`; tunnels then join its drain.
        let context = request.extensions().get::<ConnectionContext>().cloned();

        if self
            .tunnels
            .passthrough
            .iter()
            .any(|pattern| pattern.matches(&host))
        {
            // Dial before answering, so a host that cannot be reached is a 502, not a 200
            // followed by a closed connection.
            let dial = self.dial_address(&host);
            let timeout = self.tunnels.connect_timeout;
            let server = tokio::time::timeout(timeout, TcpStream::connect(&dial))
                .await
                .map_err(|_| ProxyError::UpstreamTimeout {
                    host: host.clone(),
                    millis: timeout.as_millis() as u64,
                })?
                .map_err(|err| ProxyError::UpstreamConnect {
                    host: host.clone(),
                    reason: err.to_string(),
                })?;
            let upgrade = hyper::upgrade::on(request);
            let shutdown = context.as_ref().map(|context| context.shutdown.clone());
            spawn(context.as_ref(), async move {
                if let Err(err) = pass_through(upgrade, server, shutdown).await {
                    tracing::debug!(host = %dial, error = %err, "passthrough tunnel ended");
                }
            });
            log.path = Some("(passthrough)".into());
            return Ok(empty(StatusCode::OK));
        }

        if !self.signer().hosts().is_allowed(&host) {
            return Err(ProxyError::HostNotAllowed(host));
        }
        let Some(interceptor) = &self.tunnels.interceptor else {
            return Err(ProxyError::MethodNotSupported(
                "CONNECT (HTTPS_PROXY interception is disabled: see [intercept] in the config)"
                    .into(),
            ));
        };
        let tls = interceptor.server_config(&host).map_err(|err| {
            tracing::error!(host, error = %err, "cannot issue an interception certificate");
            ProxyError::Interception(host.clone())
        })?;
        let upgrade = hyper::upgrade::on(request);
        let shutdown = context.as_ref().map(|context| context.shutdown.clone());
        let tunnel = intercept(
            self.clone(),
            upgrade,
            TlsAcceptor::from(tls),
            host,
            shutdown,
        );
        spawn(context.as_ref(), tunnel);
        log.path = Some("(tunnel)".into());
        Ok(empty(StatusCode::OK))
    }

    fn dial_address(&self, host: &str) -> String {
        self.tunnels
            .connect_to
            .iter()
            .find(|(pattern, _)| pattern.matches(host))
            .map(|(_, address)| address.clone())
            .unwrap_or_else(|| format!("{host}:443"))
    }
}

/// Terminates TLS on the upgraded connection and serves signed requests until the client
/// closes it or the server shuts down.
async fn intercept(
    proxy: Arc<Proxy>,
    upgrade: hyper::upgrade::OnUpgrade,
    acceptor: TlsAcceptor,
    host: String,
    shutdown: Option<Shutdown>,
) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => return tracing::debug!(host, error = %err, "CONNECT upgrade failed"),
    };
    let tls = match tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        acceptor.accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            // Most often: the client does not trust the interception CA.
            return tracing::warn!(host, error = %err, "TLS handshake inside the tunnel failed");
        }
        Err(_) => return tracing::debug!(host, "TLS handshake inside the tunnel timed out"),
    };
    let host: Arc<str> = host.into();
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let host = host.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle_in(request, Some(&host)).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The same patience with a silent client as outside the tunnel, and dead HTTP/2 peers
    // are found by keep-alive pings.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = match shutdown {
        Some(mut shutdown) => tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.recv() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        },
        None => connection.await,
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "tunnel connection ended with an error");
    }
}

/// Copies bytes both ways between the client and `dial`, untouched.
async fn pass_through(
    upgrade: hyper::upgrade::OnUpgrade,
    mut server: TcpStream,
    shutdown: Option<Shutdown>,
) -> std::io::Result<()> {
    let upgraded = upgrade.await.map_err(std::io::Error::other)?;
    let mut client = TokioIo::new(upgraded);
    let copying = tokio::io::copy_bidirectional(&mut client, &mut server);
    match shutdown {
        // Opaque bytes cannot be drained gracefully: on shutdown the tunnel is closed.
        Some(mut shutdown) => tokio::select! {
            result = copying => result.map(drop),
            _ = shutdown.recv() => Ok(()),
        },
        None => copying.await.map(drop),
    }
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// Runs a tunnel on the server's tracker, or on its own when there is no server.
fn spawn(
    context: Option<&ConnectionContext>,
    tunnel: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match context {
        Some(context) => drop(context.tracker.spawn(tunnel)),
        None => drop(tokio::spawn(tunnel)),
    }
}
