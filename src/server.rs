//! The listener loop: accept, serve each connection on its own task, drain on shutdown.
//!
//! Clients speak HTTP/1.1 to a forward proxy (absolute-form and origin-form alike); HTTP/2
//! with prior knowledge is accepted too. On shutdown the loop stops accepting, every
//! connection is asked to finish its in-flight request and close, and the loop waits up to
//! `grace` for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::shutdown::Shutdown;

/// How long in-flight requests get to finish after shutdown is signalled.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Serves `proxy` on `listener` until `shutdown` fires, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: Shutdown,
    grace: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
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
            _ = shutdown.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(request).await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log_connection_error(peer, &*err);
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

fn log_connection_error(peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
    tracing::debug!(%peer, error = %err, "connection ended with an error");
}
