//! One shutdown signal, threaded through every long-running task, and the drain that waits
//! for them.
//!
//! The server loop, each connection and each tunnel watch the same [`Shutdown`]; tests pass
//! their own trigger, the binary triggers it on SIGINT/SIGTERM. Everything that must finish
//! before the process may exit runs on the drain's tracker.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Sends the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    /// Signals shutdown to every [`Shutdown`].
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.trigger();
    }
}

impl Shutdown {
    /// Resolves once shutdown has been signalled (or the trigger is gone).
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped, which also means shut down.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The tasks a shutdown waits for (connections, tunnels), and the signal they watch.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    signal: Shutdown,
    tracker: TaskTracker,
}

impl Drain {
    pub(crate) fn new(signal: Shutdown) -> Drain {
        Drain {
            signal,
            tracker: TaskTracker::new(),
        }
    }

    /// The signal the drained tasks watch.
    pub(crate) fn signal(&self) -> Shutdown {
        self.signal.clone()
    }

    /// Runs `task` as one the drain waits for.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.tracker.spawn(task));
    }

    /// Waits up to `grace` for every task; `false` if some were still running.
    pub(crate) async fn wait(self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// A hyper connection that can be asked to finish its request in flight and close.
///
/// hyper-util's own `GracefulConnection` does not cover HTTP/1 connections that allow
/// upgrades (`CONNECT`), so the kinds the proxy serves are named here.
pub(crate) trait GracefulConnection: Future {
    /// Starts a graceful shutdown.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    I: Read + Write + Unpin + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, E, B> GracefulConnection for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: Read + Write + Unpin + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn os_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
