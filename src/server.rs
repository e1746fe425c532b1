//! The listener loop: accept, serve each connection on its own task, drain on shutdown.
//!
//! Clients speak HTTP/1.1 to a forward proxy: it is the only version in which absolute-form
//! (`HTTP_PROXY`) and origin-form targets are told apart, and the one `CONNECT` upgrades
//! from. (Upstream, HTTP/2 is used where Twilio offers it.) A client gets
//! `HEADER_READ_TIMEOUT` to send its request head. On shutdown the loop stops accepting,
//! every connection is asked to finish its in-flight request and close, and the loop waits
//! up to `grace` for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::proxy::Proxy;
use crate::shutdown::Shutdown;

/// How long in-flight requests get to finish after shutdown is signalled.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How long a client may take to send a request head, so idle sockets cannot pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection's requests carry to the handlers that outlive the request itself
/// (`CONNECT` tunnels): the shutdown signal and the tracker the drain waits on.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    /// The server's shutdown signal.
    pub shutdown: Shutdown,
    /// Every task that must finish before the server is drained.
    pub tracker: TaskTracker,
}

/// Serves `proxy` on `listener` until `shutdown` fires, then drains for up to `grace`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: Shutdown, grace: Duration) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let tracker = TaskTracker::new();
    let context = ConnectionContext {
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    let mut stop = shutdown;
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
        let service = {
            let proxy = proxy.clone();
            let context = context.clone();
            service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(context.clone());
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(request).await) }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut shutdown = context.shutdown.clone();
        tracker.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.recv() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                log_connection_error(peer, &err);
            }
        });
    }
    drop(listener);
    tracker.close();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

fn log_connection_error(peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
    tracing::debug!(%peer, error = %err, "connection ended with an error");
}

/// Why a background proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A key could not be loaded.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyStoreError),
    /// The accounts directory could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The proxy (upstream client, interception CA) could not be built.
    #[error(transparent)]
    Build(#[from] crate::proxy::BuildError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// A proxy serving on its own task: for the demo, tests and embedding.
#[derive(Debug)]
pub struct Background {
    addr: SocketAddr,
    stop: crate::shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Loads the keys, builds the proxy and serves it on `config.server.listen`; with an
    /// `accounts_dir`, also watches it for account changes.
    pub async fn start(config: &crate::Config, grace: Duration) -> Result<Background, StartError> {
        let config = config.clone().with_accounts_dir()?;
        let accounts = crate::keys::Accounts::load(&config.accounts, &config.signing)?;
        let keys = Arc::new(crate::keys::KeyStore::new(accounts));
        let proxy = Arc::new(Proxy::new(&config, keys.clone())?);
        let listener = TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = crate::shutdown::channel();
        if config.accounts_dir.is_some() {
            tokio::spawn(crate::keys::reload::watch(
                config,
                None,
                keys,
                shutdown.clone(),
            ));
        }
        let task = tokio::spawn(serve(listener, proxy, shutdown, grace));
        Ok(Background { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signals shutdown and waits for the drain.
    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}
