//! Thread-per-core: the proxy's connections are served by `server.worker_threads` threads,
//! each running a single-threaded runtime of its own that accepts on the shared listeners
//! and serves every connection it accepts start to finish: the request, its signature (PEM
//! keys sign inline) and its upstream connection (each core has its own pool) stay on one
//! thread, so no request wakes another thread on its way through. Measured against one
//! work-stealing runtime: see BENCHMARKS.md, "Forwarding at nginx's cost".
//!
//! What must hold across cores is shared, never split per core: admission
//! (`max_connections`, `max_in_flight`), the per-host upstream caps and
//! `max_connections_total`, the body budget, the signing pool, the key store (each request
//! still takes one snapshot) and the metrics. The control plane (signals, reloads, the admin
//! port, span export) stays on the runtime that called [`Cores::serve`].
//!
//! The cores share each listening socket (one descriptor, duplicated), not `SO_REUSEPORT`
//! listeners of their own: with `SO_REUSEPORT` any other process of the same user could bind
//! the port too and be handed a share of the connections, with the API-key secrets in them.
//! On a shared socket the kernel gives each connection to whichever core asks first, so a
//! busy core takes fewer.
//!
//! Everything that can fail (a runtime, a thread, a duplicated descriptor) fails in
//! [`Cores::start`], before the proxy reports itself ready.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::mtls::MtlsAcceptor;
use crate::server::Server;
use crate::shutdown::Drain;

/// Started cores, parked until [`Cores::serve`] hands them their work; dropped unserved,
/// their threads end.
pub(crate) struct Cores {
    parked: Vec<Parked>,
}

impl std::fmt::Debug for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cores")
            .field("threads", &self.parked.len())
            .finish()
    }
}

/// One core's thread, waiting for its work.
struct Parked {
    work: oneshot::Sender<Work>,
    finished: oneshot::Receiver<bool>,
}

/// What a core runs: it accepts and serves until the drain's signal, then waits up to the
/// grace period for the connections in flight (its own and the others'), and says whether
/// they all finished.
type Work = Box<dyn FnOnce(Listeners) -> Pin<Box<dyn Future<Output = bool>>> + Send>;

/// A core's copies of the listening sockets.
#[derive(Debug)]
pub(crate) struct Listeners {
    plain: std::net::TcpListener,
    tls: Option<std::net::TcpListener>,
}

impl Cores {
    /// Starts `threads` cores, each with its own runtime and its own copy of `plain` and
    /// `tls`.
    pub(crate) fn start(
        threads: usize,
        plain: TcpListener,
        tls: Option<TcpListener>,
    ) -> std::io::Result<Cores> {
        let plain = plain.into_std()?;
        let tls = tls.map(TcpListener::into_std).transpose()?;
        let mut parked = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let listeners = Listeners {
                plain: plain.try_clone()?,
                tls: tls.as_ref().map(|tls| tls.try_clone()).transpose()?,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (work, waiting) = oneshot::channel::<Work>();
            let (finish, finished) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("pkcv-core-{index}"))
                .spawn(move || {
                    let Ok(work) = waiting.blocking_recv() else {
                        return;
                    };
                    let drained = runtime.block_on(work(listeners));
                    // Whatever is still running after the grace period ends with the runtime.
                    drop(runtime);
                    let _ = finish.send(drained);
                })?;
            parked.push(Parked { work, finished });
        }
        Ok(Cores { parked })
    }

    /// How many cores serve.
    pub(crate) fn len(&self) -> usize {
        self.parked.len()
    }

    /// Serves `server` on every core (the first one as it is, every other with a proxy and
    /// upstream pool of its own) until the drain's signal; resolves once every core has
    /// drained or given up after `grace`, with `true` if every connection finished.
    pub(crate) async fn serve(
        self,
        server: &Server,
        mtls: Option<Arc<MtlsAcceptor>>,
        drain: &Drain,
        grace: Duration,
    ) -> bool {
        let mut finishing = Vec::with_capacity(self.parked.len());
        for (index, core) in self.parked.into_iter().enumerate() {
            let server = match index {
                0 => server.clone(),
                _ => server.for_core(),
            };
            let (mtls, drain) = (mtls.clone(), drain.clone());
            let work: Work = Box::new(move |listeners| {
                Box::pin(async move {
                    serve_core(server, listeners, mtls, &drain).await;
                    drain.wait(grace).await
                })
            });
            if core.work.send(work).is_ok() {
                finishing.push(core.finished);
            }
        }
        let mut drained = true;
        for finished in finishing {
            // A core whose thread died has nothing left to drain.
            drained &= finished.await.unwrap_or(true);
        }
        drained
    }
}

/// One core's accept loops, on its runtime, until the drain's signal.
async fn serve_core(
    server: Server,
    listeners: Listeners,
    mtls: Option<Arc<MtlsAcceptor>>,
    drain: &Drain,
) {
    let plain = async {
        match TcpListener::from_std(listeners.plain) {
            Ok(listener) => server.clone().serve(listener, None, drain).await,
            Err(err) => tracing::error!(error = %err, "a core cannot listen: it serves nothing"),
        }
    };
    let mutual = async {
        let (Some(listener), Some(acceptor)) = (listeners.tls, mtls) else {
            return;
        };
        match TcpListener::from_std(listener) {
            Ok(listener) => server.clone().serve(listener, Some(acceptor), drain).await,
            Err(err) => {
                tracing::error!(error = %err, "a core cannot listen on tls_listen: it serves nothing there")
            }
        }
    };
    tokio::join!(plain, mutual);
}
