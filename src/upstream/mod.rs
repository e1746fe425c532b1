//! The client that carries signed requests to Twilio: pooled, HTTPS only, always verified.
//!
//! - TLS is rustls with the public web roots (webpki-roots, so no system store is needed in a
//!   minimal container) plus an optional `extra_ca_file`. There is no way to turn
//!   certificate verification off.
//! - HTTP/1.1 by default, as the official SDKs speak it; with `upstream.http2`, ALPN offers
//!   `h2` too, and the host then travels as `:authority` alone. Connections are pooled and
//!   kept alive.
//! - `connect_to` dials another address for a host while SNI, certificate checks and `Host`
//!   still use the real name, for tests and private links.
//! - With `[upstream] proxy`, the dialer opens each connection as a `CONNECT` tunnel through
//!   a corporate HTTP proxy ([`crate::egress`]); TLS to Twilio runs end to end inside it.
//! - A connect that takes too long and a response that takes too long are distinct errors
//!   (`504`), apart from connection failures (`502`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use crate::body::BufferedBody;
use crate::config::UpstreamSettings;
use crate::egress::{DialError, Dialer, EgressLoadError};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::sign::{SignedRequest, Unsent};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The extra CA file is unusable.
    #[error("upstream.extra_ca_file {path}: {reason}")]
    ExtraCa {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The egress proxy's credentials could not be read.
    #[error(transparent)]
    Egress(#[from] EgressLoadError),
}

/// The pooled HTTPS client to Twilio.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<HttpsConnector<ConnectTo>, BufferedBody>,
    dialer: Dialer,
    request_timeout: Duration,
    connect_timeout: Duration,
    per_host: PerHost,
}

/// `max_connections_per_host`: a permit per request in progress to a host, held until its
/// response body is done. Over HTTP/1.1 a connection carries one request at a time, so the
/// permits bound the busy connections too (plus the spares kept idle, see `Upstream::new`);
/// the pool keeps and reuses them, so under steady load no new TLS handshakes are made.
#[derive(Clone)]
struct PerHost {
    max: usize,
    hosts: Arc<arc_swap::ArcSwap<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

impl PerHost {
    fn new(max: usize) -> PerHost {
        PerHost {
            max,
            hosts: Arc::new(arc_swap::ArcSwap::from_pointee(Default::default())),
        }
    }

    /// The host's semaphore; made on first use. Making one drops those of other hosts with
    /// no request in progress, so the map holds the hosts in use, not every name ever asked
    /// for (a wildcard `connect_to` or DNS admits any number). Requests to a new host at once
    /// all get the one semaphore the first of them stored (the host's own entry is never
    /// pruned while it is being asked for; pruning it did split the cap, measured with the
    /// stand-in's peak in flight), nor is one a request holds. Only a request caught between
    /// reading the map and cloning its host's semaphore, as a request to another host prunes
    /// it, may wait on a dropped one: one more request than the cap, for a moment. (No lock:
    /// a tokio `Mutex` here, fair and taken by every request, convoyed the runtime's workers:
    /// 1.1 of 2 cores busy at 16 clients.)
    fn semaphore(&self, host: &str) -> Arc<tokio::sync::Semaphore> {
        if let Some(semaphore) = self.hosts.load().get(host) {
            return semaphore.clone();
        }
        let fresh = Arc::new(tokio::sync::Semaphore::new(self.max));
        let mut chosen = fresh.clone();
        self.hosts.rcu(|hosts| {
            let mut hosts = std::collections::HashMap::clone(hosts);
            // Kept: the host asked for, a host with a request in progress, and a semaphore a
            // request holds (beyond this copy of the map and the one being replaced).
            hosts.retain(|name, semaphore| {
                name == host
                    || semaphore.available_permits() < self.max
                    || Arc::strong_count(semaphore) > 2
            });
            chosen = hosts
                .entry(host.to_owned())
                .or_insert_with(|| fresh.clone())
                .clone();
            hosts
        });
        chosen
    }
}

/// `max_connections_total`: every upstream connection holds a slot until it closes. When
/// none is free, an idle connection to another host is closed to make room; when none is
/// idle either, the request is refused (79054) rather than the process running out of file
/// descriptors.
#[derive(Clone)]
struct Budget {
    max: usize,
    slots: Arc<tokio::sync::Semaphore>,
    /// How to close each open connection, by host.
    open: Arc<tokio::sync::Mutex<HashMap<String, Vec<CancellationToken>>>>,
    per_host: PerHost,
}

impl Budget {
    fn new(max: usize, per_host: PerHost) -> Budget {
        // 0: no cap (a client built outside `App`, such as the workflow commands').
        let max = match max {
            0 => tokio::sync::Semaphore::MAX_PERMITS,
            max => max.min(tokio::sync::Semaphore::MAX_PERMITS),
        };
        Budget {
            max,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            open: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
            per_host,
        }
    }

    /// A slot for a new connection to `host`, closing an idle connection to another host
    /// when none is free.
    async fn slot(
        &self,
        host: &str,
    ) -> Result<(OwnedSemaphorePermit, CancellationToken), Exhausted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => self.evict_for(host).await?,
        };
        let closer = CancellationToken::new();
        let mut open = self.open.lock().await;
        prune(&mut open);
        open.entry(host.to_owned())
            .or_default()
            .push(closer.clone());
        Ok((slot, closer))
    }

    /// Closes one connection of a host other than `host` that has no request in progress
    /// (all its permits are held meanwhile, so none can start on it), and takes the slot it
    /// frees.
    async fn evict_for(&self, host: &str) -> Result<OwnedSemaphorePermit, Exhausted> {
        let exhausted = || Exhausted(self.max);
        let permits = u32::try_from(self.per_host.max).map_err(|_| exhausted())?;
        let mut open = self.open.lock().await;
        prune(&mut open);
        let victim = open
            .iter()
            .filter(|(other, _)| other.as_str() != host)
            .find_map(|(other, conns)| {
                let quiet = self
                    .per_host
                    .semaphore(other)
                    .try_acquire_many_owned(permits)
                    .ok()?;
                Some((quiet, conns.first().cloned()))
            });
        drop(open);
        let Some((quiet, Some(closer))) = victim else {
            return Err(exhausted());
        };
        closer.cancel();
        // The closed connection's task sees its end of stream and drops it, freeing its slot.
        let freed =
            tokio::time::timeout(Duration::from_secs(1), self.slots.clone().acquire_owned());
        let slot = freed.await;
        drop(quiet);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(exhausted()),
        }
    }
}

/// Forgets closed connections, and hosts with none open: the registry holds the open
/// connections, never every host name seen (O(open connections), once per new connection).
fn prune(open: &mut HashMap<String, Vec<CancellationToken>>) {
    open.retain(|_, conns| {
        conns.retain(|closer| !closer.is_cancelled());
        !conns.is_empty()
    });
}

/// `max_connections_total` connections are open and none is idle.
#[derive(Debug, thiserror::Error)]
#[error("{0} upstream connections are open, none idle")]
pub(crate) struct Exhausted(usize);

/// An upstream connection's stream, holding its slot among `max_connections_total`; it
/// reads as ended (and refuses writes) once [`Budget`] closes it to make room.
pub(crate) struct Budgeted<T> {
    io: T,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    closer: CancellationToken,
    _slot: OwnedSemaphorePermit,
}

impl<T> Drop for Budgeted<T> {
    fn drop(&mut self) {
        // Marks it closed for the registry's pruning.
        self.closer.cancel();
    }
}

impl<T> Budgeted<T> {
    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.closing.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Budgeted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Budgeted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closed(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Budgeted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

/// A request's place among `max_connections_per_host`, carried with its response body.
pub(crate) type HostPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client. Reads the extra CA file; connects nowhere yet. Every connection
    /// it opens is counted in `metrics`.
    pub(crate) fn new(
        settings: &UpstreamSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, UpstreamError> {
        let tls = tls_config(settings)?;

        let dialer = settings.dialer()?;
        let per_host = PerHost::new(settings.max_connections_per_host);
        let budget = Budget::new(settings.max_connections_total, per_host.clone());
        let connect_to = ConnectTo(dialer.clone(), metrics, budget);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1();
        // HTTP/1.1 by default: what the official SDKs speak, and what Twilio's PKCV checks
        // are proven against. HTTP/2 (offered by ALPN) only when asked for.
        let connector = if settings.http2 {
            builder.enable_http2().wrap_connector(connect_to)
        } else {
            builder.wrap_connector(connect_to)
        };
        // Idle room above the per-host cap: a request that finds no idle connection at the
        // instant its permit frees dials one while the previous connection is on its way back
        // to the pool. With room for both, that spare stays pooled and later requests reuse
        // it; with room for exactly the cap, one of them is closed and the dance repeats as a
        // TLS handshake per race (measured: 126 new connections per 6 s at 1,024 clients).
        // The timer is what makes idle connections expire: without one the pool never
        // closes them.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.max_connections_per_host.saturating_mul(2))
            .build(connector);
        Ok(Upstream {
            client,
            dialer,
            request_timeout: settings.request_timeout,
            connect_timeout: settings.connect_timeout,
            per_host,
        })
    }

    /// How this client opens TCP connections (through the egress proxy, if any): passthrough
    /// tunnels dial with it too.
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Waits (up to the connect timeout) for a place among `max_connections_per_host`;
    /// 503 when none frees up.
    pub(crate) async fn permit(&self, host: &str) -> Result<HostPermit, ProxyError> {
        let semaphore = self.per_host.semaphore(host);
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Ok(Arc::new(permit));
        }
        let waiting = semaphore.acquire_owned();
        match tokio::time::timeout(self.connect_timeout, waiting).await {
            Ok(Ok(permit)) => Ok(Arc::new(permit)),
            _ => Err(ProxyError::UpstreamBusy {
                host: host.to_owned(),
            }),
        }
    }

    /// Sends a signed request and waits for the response headers (the body streams
    /// afterwards). Nothing else can be sent: a [`SignedRequest`] is made only by the signing
    /// step. A request whose connection failed before a byte was written comes back in the
    /// failure, to be signed again if it may be retried.
    pub(crate) async fn send(&self, signed: SignedRequest) -> Result<Response<Incoming>, Failure> {
        let host = signed.target().host.clone();
        let (request, unsent) = signed.into_request();
        match tokio::time::timeout(self.request_timeout, self.client.request(request)).await {
            Err(_) => Err(Failure {
                error: ProxyError::UpstreamTimeout {
                    host,
                    timeout: self.request_timeout,
                },
                unsent: None,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(Failure {
                error: self.classify(&err, &host),
                unsent: unsent.filter(|_| err.is_connect()),
            }),
        }
    }

    fn classify(&self, err: &hyper_util::client::legacy::Error, host: &str) -> ProxyError {
        // The legacy client's own message ("client error (Connect)") only says which step
        // failed, which the error code already says: start at its cause when it has one.
        let outer: &(dyn std::error::Error + 'static) = err;
        let mut source = Some(outer.source().unwrap_or(outer));
        let mut reason = String::new();
        while let Some(current) = source {
            if let Some(dial @ (DialError::Timeout | DialError::Egress(_))) =
                current.downcast_ref::<DialError>()
            {
                return dial.to_proxy_error(host, self.connect_timeout);
            }
            if let Some(Exhausted(max)) = current.downcast_ref::<Exhausted>() {
                return ProxyError::UpstreamConnectionsExhausted {
                    host: host.to_owned(),
                    max: *max,
                };
            }
            let text = current.to_string();
            // hyper's errors repeat their cause in their own message; say each part once.
            if !reason.contains(&text) {
                if !reason.is_empty() {
                    reason.push_str(": ");
                }
                reason.push_str(&text);
            }
            source = current.source();
        }
        if err.is_connect() {
            ProxyError::UpstreamConnect {
                host: host.to_owned(),
                reason,
            }
        } else {
            ProxyError::Upstream {
                host: host.to_owned(),
                reason,
            }
        }
    }
}

/// A request that did not get a response.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What the client is told.
    pub(crate) error: ProxyError,
    /// The request, when its connection failed before any byte of it was written and its
    /// method may be retried: it can be signed afresh and sent once more.
    pub(crate) unsent: Option<Unsent>,
}

/// The TLS client settings for Twilio: the public web roots plus `extra_ca_file` (`doctor`
/// handshakes with exactly these).
pub(crate) fn tls_config(
    settings: &UpstreamSettings,
) -> Result<rustls::ClientConfig, UpstreamError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(root_store(settings)?)
    .with_no_client_auth())
}

fn root_store(settings: &UpstreamSettings) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &settings.extra_ca_file {
        let error = |reason: String| UpstreamError::ExtraCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = crate::files::read_bounded(path).map_err(|err| error(err.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| error(err.to_string()))?;
        if certs.is_empty() {
            return Err(error("no PEM certificates found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| error(err.to_string()))?;
        }
    }
    Ok(roots)
}

/// The [`Dialer`] as the TCP connector under hyper's HTTPS client, counting connections and
/// keeping them within `max_connections_total`.
#[derive(Clone)]
pub(crate) struct ConnectTo(Dialer, Arc<Metrics>, Budget);

impl Service<Uri> for ConnectTo {
    type Response = TokioIo<Budgeted<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (dialer, metrics, budget) = (self.0.clone(), self.1.clone(), self.2.clone());
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_ascii_lowercase();
            let port = uri.port_u16().unwrap_or(443);
            let (slot, closer) = budget.slot(&host).await?;
            let stream = Budgeted {
                io: dialer.connect(&host, port).await?,
                closing: Box::pin(closer.clone().cancelled_owned()),
                closer,
                _slot: slot,
            };
            metrics.upstream_connection_opened();
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests;
