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
//! Tunnels outlive the `CONNECT` request that opened them, so they run on the server's
//! [`Drain`]: a shutdown waits for them and closes them gracefully.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::access_log::{ProxyBody, RequestLog};
use crate::admission::ConnectionSlot;
use crate::config::Config;
use crate::egress::Dialer;
use crate::error::ProxyError;
use crate::head::{self, HeadCheck};
use crate::intercept::{InterceptError, Interceptor};
use crate::keepalive::{Activity, Deadlines, Guarded, Tracked};
use crate::proxy::{Origin, Proxy};
use crate::route::{canonical_host, HostPattern};
use crate::shutdown::{Drain, Shutdown};

/// What `CONNECT` may lead to, and the proxy that signs inside intercepted tunnels.
#[derive(Debug)]
pub(crate) struct Tunnels {
    proxy: Arc<Proxy>,
    interceptor: Option<Interceptor>,
    passthrough: Vec<HostPattern>,
    dialer: Dialer,
    tls_handshake_timeout: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// What an open tunnel holds: its connection's place among `max_connections`, and its
/// count in `pkcv_proxy_tunnels_open`.
struct TunnelOpen {
    _slot: Arc<ConnectionSlot>,
    _gauge: crate::metrics::GaugeGuard,
}

/// An accepted `CONNECT`: what to run once the client's connection is handed over.
enum Tunnel {
    Passthrough(TcpStream),
    Intercept(TlsAcceptor),
}

impl Tunnels {
    /// Loads the interception CA, if enabled. Connects nowhere.
    pub(crate) fn new(config: &Config, proxy: Arc<Proxy>) -> Result<Tunnels, InterceptError> {
        let interceptor = match &config.intercept {
            Some(settings) => Some(Interceptor::load(
                &settings.ca_cert_file,
                &settings.ca_key_file,
            )?),
            None => None,
        };
        let dialer = proxy.dialer().clone();
        Ok(Tunnels {
            proxy,
            interceptor,
            passthrough: config.passthrough_hosts.clone(),
            dialer,
            tls_handshake_timeout: config.server.tls_handshake_timeout,
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
        })
    }

    /// Answers a `CONNECT` and, on success, runs the tunnel on `drain` once the client's
    /// connection is handed over. The tunnel keeps the connection's `slot` among
    /// `max_connections` for as long as it is open.
    pub(crate) async fn handle<B>(
        self: &Arc<Self>,
        request: Request<B>,
        drain: &Drain,
        slot: Arc<ConnectionSlot>,
        origin: &Origin,
    ) -> Response<ProxyBody> {
        let metrics = self.proxy.metrics();
        let mut log = RequestLog::start(&request, metrics);
        let outcome = match self.open(&request, origin, &mut log).await {
            Ok(tunnel) => {
                let upgrade = hyper::upgrade::on(request);
                // Requests inside go to the tunnel's host, from the client that opened it.
                let inside = Origin {
                    tunnel_host: log.host.as_deref().map(Arc::from),
                    client: log.client.as_deref().map(Arc::from),
                };
                let open = TunnelOpen {
                    _slot: slot,
                    _gauge: metrics.tunnel_open(),
                };
                self.spawn(tunnel, upgrade, inside, drain, open);
                Ok(empty(StatusCode::OK))
            }
            Err(err) => Err(err),
        };
        let refused = outcome.is_err();
        let mut response = log.finish(outcome);
        if refused {
            // hyper would go on reading requests after a refused `CONNECT`, from a stream
            // `HeadCheck` already handed on as a tunnel's: close it after the answer instead.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }

    /// Decides what the `CONNECT` leads to; for a passthrough host, dials it first so that
    /// an unreachable host is a 502, not a 200 followed by a closed connection.
    async fn open<B>(
        &self,
        request: &Request<B>,
        origin: &Origin,
        log: &mut RequestLog,
    ) -> Result<Tunnel, ProxyError> {
        // An unknown client learns nothing, not even which hosts are allowed.
        let client = self
            .proxy
            .client(&self.proxy.keys().snapshot(), request.headers(), origin)?;
        log.client = client.map(|client| client.name.clone());
        let (host, port) = connect_target(request)?;
        log.host = Some(host.clone());
        log.host_pattern = self
            .proxy
            .signer()
            .hosts()
            .matching(&host)
            .map(|pattern| pattern.to_string());
        if port != 443 {
            return Err(ProxyError::PortNotAllowed(port.to_string()));
        }
        if self
            .passthrough
            .iter()
            .any(|pattern| pattern.matches(&host))
        {
            log.path = Some("(passthrough)".into());
            let server = self
                .dialer
                .connect(&host, port)
                .await
                .map_err(|err| err.to_proxy_error(&host, self.dialer.timeout()))?;
            return Ok(Tunnel::Passthrough(server));
        }
        if !self.proxy.signer().hosts().is_allowed(&host) {
            return Err(ProxyError::HostNotAllowed(host));
        }
        let Some(interceptor) = &self.interceptor else {
            return Err(ProxyError::MethodNotSupported(
                "CONNECT (HTTPS_PROXY interception is disabled: see [intercept] in the config)"
                    .into(),
            ));
        };
        let tls = interceptor.server_config(&host).map_err(|err| {
            tracing::error!(host, error = %err, "cannot issue an interception certificate");
            ProxyError::Interception(host.clone())
        })?;
        log.path = Some("(tunnel)".into());
        Ok(Tunnel::Intercept(TlsAcceptor::from(tls)))
    }

    fn spawn(
        self: &Arc<Self>,
        tunnel: Tunnel,
        upgrade: OnUpgrade,
        origin: Origin,
        drain: &Drain,
        open: TunnelOpen,
    ) {
        let shutdown = drain.signal();
        let host = origin.tunnel_host.as_deref().unwrap_or_default().to_owned();
        match tunnel {
            Tunnel::Passthrough(server) => drain.spawn(async move {
                if let Err(err) = pass_through(upgrade, server, shutdown).await {
                    tracing::debug!(host, error = %err, "passthrough tunnel ended");
                }
                drop(open);
            }),
            Tunnel::Intercept(acceptor) => {
                let tunnels = self.clone();
                drain.spawn(async move {
                    tunnels.intercept(upgrade, acceptor, origin, shutdown).await;
                    drop(open);
                });
            }
        }
    }

    /// Terminates TLS on the upgraded connection and serves signed requests until the
    /// client closes it or the server shuts down.
    async fn intercept(
        self: Arc<Self>,
        upgrade: OnUpgrade,
        acceptor: TlsAcceptor,
        origin: Origin,
        shutdown: Shutdown,
    ) {
        let host = origin.tunnel_host.as_deref().unwrap_or_default().to_owned();
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return tracing::debug!(host, error = %err, "CONNECT upgrade failed"),
        };
        let handshake = acceptor.accept(TokioIo::new(upgraded));
        let tls = match tokio::time::timeout(self.tls_handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                // Most often: the client does not trust the interception CA.
                return tracing::warn!(host, error = %err, "TLS handshake inside the tunnel failed");
            }
            Err(_) => return tracing::debug!(host, "TLS handshake inside the tunnel timed out"),
        };
        // The head deadline starts now that the handshake is done: a client that then sends
        // nothing (no request head, no HTTP/2 preface) is closed like any other.
        let activity = Activity::new();
        let origin = Arc::new(origin);
        let proxy = self.proxy.clone();
        let requests = activity.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let (proxy, origin) = (proxy.clone(), origin.clone());
            let guard = requests.request();
            async move {
                // The same head rules as outside: HTTP/1.1 heads were checked (and a refused
                // one replaced by its marker) by `HeadCheck`; HTTP/2 ones arrive parsed.
                let refusal = head::refusal(request.headers()).or_else(|| {
                    (request.version() == http::Version::HTTP_2)
                        .then(|| head::check_fields(request.headers()).err())
                        .flatten()
                });
                let response = match refusal {
                    Some(refusal) => proxy.refuse(&request, refusal),
                    None => proxy.handle(request, &origin).await,
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| Guarded::new(body, guard)))
            }
        });
        let builder = self.tunnel_server();
        let io = TokioIo::new(HeadCheck::new(Tracked::new(tls, activity.clone()), true));
        let connection = builder.serve_connection(io, service);
        let deadlines = Deadlines::new(
            connection,
            activity,
            self.header_read_timeout,
            self.idle_timeout,
        );
        if let Err(err) = deadlines.run(shutdown).await {
            tracing::debug!(error = %err, "tunnel connection ended with an error");
        }
    }

    /// HTTP/1.1 or HTTP/2 inside a tunnel, with the same deadlines as outside it
    /// ([`Deadlines`]), and dead HTTP/2 peers found by keep-alive pings.
    fn tunnel_server(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            // The documented head limit (h2 counts 32 bytes more per field, as RFC 9113
            // does); beyond it h2 itself answers 431 and resets the stream.
            .max_header_list_size(head::MAX_HEAD_BYTES as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        builder
    }
}

/// The host (canonical, lower-case) and port a `CONNECT` names.
fn connect_target<B>(request: &Request<B>) -> Result<(String, u16), ProxyError> {
    let authority = request
        .uri()
        .authority()
        .ok_or(ProxyError::BadTarget("CONNECT needs host:port"))?;
    let port = crate::route::authority_port(authority)?
        .ok_or(ProxyError::BadTarget("CONNECT needs host:port"))?;
    let host = canonical_host(authority.host())
        .ok_or_else(|| ProxyError::HostNotAllowed(authority.host().chars().take(100).collect()))?;
    Ok((host, port))
}

/// Copies bytes both ways between the client and the server, untouched.
async fn pass_through(
    upgrade: OnUpgrade,
    mut server: TcpStream,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let upgraded = upgrade.await.map_err(std::io::Error::other)?;
    let mut client = TokioIo::new(upgraded);
    // Opaque bytes cannot be drained gracefully: on shutdown the tunnel is closed.
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut server) => result.map(drop),
        _ = shutdown.recv() => Ok(()),
    }
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}
