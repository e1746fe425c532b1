//! The listener loop: accept, admit, serve each connection on its own task, stop on
//! shutdown.
//!
//! Clients speak HTTP/1.1 to a forward proxy: it is the only version in which absolute-form
//! (`HTTP_PROXY`) and origin-form targets are told apart, and the one `CONNECT` upgrades
//! from. Each request goes to the [`Proxy`], or for `CONNECT` to the [`Tunnels`]; both
//! answer every refusal themselves.
//!
//! Limits: at most `max_connections` connections (tunnels included) are held; beyond that a
//! new one is accepted and closed at once, never queued. A connection gets
//! `header_read_timeout` to send a head once it has begun one (or has just connected), and
//! is closed after `idle_timeout` with no request in progress ([`crate::keepalive`]), or
//! after `response_write_timeout` in which nothing could be written to it
//! ([`crate::response::WriteDeadline`]: a client that does not read).
//!
//! On shutdown the loop stops accepting and every connection is asked to finish its request
//! in flight and close; the caller waits on the [`Drain`].

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::admission::{Admission, ConnectionSlot};
use crate::connect::Tunnels;
use crate::head::{self, HeadCheck};
use crate::keepalive::{Activity, Deadlines, Guarded, Tracked};
use crate::metrics::Metrics;
use crate::mtls::MtlsAcceptor;
use crate::proxy::{Origin, Proxy};
use crate::response::WriteDeadline;
use crate::shutdown::{Drain, GracefulConnection};

/// The error code counted when a connection is closed at `max_connections`.
pub(crate) const CONNECTION_CAP_CODE: u32 = 79051;

/// What the loop serves, and how.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) response_write_timeout: Duration,
}

impl Server {
    /// Accepts connections on `listener` until the drain's signal fires. Every connection
    /// runs on `drain`. With `tls`, each connection first completes a mutual-TLS handshake
    /// and its client certificate names its client.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<MtlsAcceptor>>,
        drain: &Drain,
    ) {
        let mut builder = http1::Builder::new();
        // The deadlines are kept by `keepalive`, which tells idle from slow.
        builder.header_read_timeout(None);
        let mut stop = drain.signal();
        let mut accept_errors = StateLog::default();
        let mut at_cap = StateLog::default();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        if accept_errors.enter() {
                            tracing::warn!(error = %err, "accept failed; backing off");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.recv() => break,
            };
            if accept_errors.leave() {
                tracing::info!("accepting connections again");
            }
            let Some(slot) = self.admission.connection() else {
                self.metrics.rejected(CONNECTION_CAP_CODE);
                if at_cap.enter() {
                    tracing::warn!(%peer, "max_connections reached: closing new connections until some end");
                }
                drop(stream);
                continue;
            };
            if at_cap.leave() {
                tracing::info!("below max_connections again");
            }
            let _ = stream.set_nodelay(true);
            let shutdown = drain.signal();
            let Some(tls) = tls.clone() else {
                let connection =
                    self.connection(&builder, stream, peer, slot, drain, Origin::default());
                drain.spawn(async move {
                    if let Err(err) = connection.run(shutdown).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
                continue;
            };
            let (server, builder, drain_for_task) = (self.clone(), builder.clone(), drain.clone());
            drain.spawn(async move {
                let Some((stream, origin)) = server.handshake(&tls, stream, peer).await else {
                    return;
                };
                let connection =
                    server.connection(&builder, stream, peer, slot, &drain_for_task, origin);
                if let Err(err) = connection.run(shutdown).await {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
            });
        }
    }

    /// The mutual-TLS handshake, and the client its certificate names (the first SAN that is
    /// a configured client's name); `None` when the handshake fails or times out.
    async fn handshake(
        &self,
        tls: &MtlsAcceptor,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Origin)> {
        let (stream, names) = match tls.accept(stream).await {
            Ok(accepted) => accepted,
            Err(err) => {
                match head::TLS_HANDSHAKES.allow() {
                    Some(suppressed) => {
                        let suppressed = Some(suppressed).filter(|&n| n > 0);
                        tracing::warn!(%peer, error = %err, suppressed, "TLS listener: handshake failed");
                    }
                    None => tracing::debug!(%peer, error = %err, "TLS listener: handshake failed"),
                }
                return None;
            }
        };
        let accounts = self.proxy.keys().snapshot();
        let client = names
            .iter()
            .find(|name| accounts.clients().get(name).is_some())
            .map(|name| Arc::from(name.as_str()));
        if client.is_none() {
            tracing::warn!(%peer, names = ?names, "TLS listener: the client certificate names no configured client");
        }
        Some((
            stream,
            Origin {
                tunnel_host: None,
                client,
            },
        ))
    }

    /// One connection: `CONNECT` to the tunnels (which keep its slot), everything else to
    /// the proxy.
    fn connection<I>(
        &self,
        builder: &http1::Builder,
        stream: I,
        peer: std::net::SocketAddr,
        slot: Arc<ConnectionSlot>,
        drain: &Drain,
        origin: Origin,
    ) -> Deadlines<impl GracefulConnection<Output = hyper::Result<()>>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let origin = Arc::new(origin);
        let (server, drain_for_tunnels) = (self.clone(), drain.clone());
        let requests = activity.clone();
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (server, drain, slot) = (server.clone(), drain_for_tunnels.clone(), slot.clone());
            let origin = origin.clone();
            let guard = requests.request();
            async move {
                let response = if let Some(refusal) = head::refusal(request.headers()) {
                    server.proxy.refuse(&request, refusal)
                } else if request.method() == Method::CONNECT {
                    server.tunnels.handle(request, &drain, slot, &origin).await
                } else {
                    server.proxy.handle(request, &origin).await
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| Guarded::new(body, guard)))
            }
        });
        let stream = WriteDeadline::new(
            stream,
            self.response_write_timeout,
            self.metrics.clone(),
            peer,
        );
        let tracked = Tracked::new(stream, activity.clone());
        let io = TokioIo::new(HeadCheck::new(tracked, false));
        Deadlines::new(
            builder.serve_connection(io, service).with_upgrades(),
            activity,
            self.header_read_timeout,
            self.idle_timeout,
        )
    }
}

/// A condition logged once when it begins and once when it ends, not on every occurrence.
#[derive(Debug, Default)]
struct StateLog {
    active: bool,
}

impl StateLog {
    /// Marks the condition present; `true` when it was not before.
    fn enter(&mut self) -> bool {
        !std::mem::replace(&mut self.active, true)
    }

    /// Marks the condition gone; `true` when it was present.
    fn leave(&mut self) -> bool {
        std::mem::replace(&mut self.active, false)
    }
}
