//! One shutdown signal, threaded through every long-running task.
//!
//! The server loop and each connection watch the same [`Shutdown`]; tests pass their own
//! trigger, the binary triggers it on SIGINT/SIGTERM.

use tokio::sync::watch;

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

    /// True once shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
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
