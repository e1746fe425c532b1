//! The listener loop: accept, serve each connection on its own task, stop on shutdown.
//!
//! Clients speak HTTP/1.1 to a forward proxy: it is the only version in which absolute-form
//! (`HTTP_PROXY`) and origin-form targets are told apart, and the one `CONNECT` upgrades
//! from. A client gets `header_read_timeout` to send each request head. Each request goes to
//! the [`Proxy`], or for `CONNECT` to the [`Tunnels`]; both answer every refusal themselves.
//! On shutdown the loop stops accepting and every connection is asked to finish its request
//! in flight and close; the caller waits on the [`Drain`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::connect::Tunnels;
use crate::proxy::Proxy;
use crate::shutdown::{self, Drain};

/// What the loop serves, and how.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) header_read_timeout: Duration,
}

impl Server {
    /// Accepts connections on `listener` until the drain's signal fires. Every connection
    /// runs on `drain`.
    pub(crate) async fn serve(self, listener: TcpListener, drain: &Drain) {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let mut stop = drain.signal();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.recv() => break,
            };
            let _ = stream.set_nodelay(true);
            let connection = builder
                .serve_connection(TokioIo::new(stream), self.service(drain))
                .with_upgrades();
            let shutdown = drain.signal();
            drain.spawn(async move {
                if let Err(err) = shutdown::serve_connection(connection, shutdown).await {
                    log_connection_error(peer, &err);
                }
            });
        }
    }

    /// One connection's service: `CONNECT` to the tunnels, everything else to the proxy.
    fn service(
        &self,
        drain: &Drain,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::access_log::ProxyBody>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone {
        let (server, drain) = (self.clone(), drain.clone());
        service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (server, drain) = (server.clone(), drain.clone());
            async move {
                let response = if request.method() == Method::CONNECT {
                    server.tunnels.handle(request, &drain).await
                } else {
                    server.proxy.handle(request, None).await
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    }
}

fn log_connection_error(peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
    tracing::debug!(%peer, error = %err, "connection ended with an error");
}
