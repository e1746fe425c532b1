//! One assembly path: the running proxy is built here and nowhere else, for `serve`, the
//! demo and the tests alike.
//!
//! [`App::build`] does everything that can fail before a port is bound (keys read, the
//! upstream client and the interception CA built), so `check-config` runs exactly it;
//! [`App::bind`] takes the port; [`Bound::run`] serves until a shutdown future resolves, with
//! the reload watcher beside it, then drains for `shutdown_grace_secs`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::connect::Tunnels;
use crate::intercept::InterceptError;
use crate::keys::{reload, Accounts, KeyStore, KeyStoreError};
use crate::proxy::Proxy;
use crate::server::Server;
use crate::shutdown::{self, Drain};
use crate::upstream::UpstreamError;

/// Why the proxy could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// An account or its key could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// Nothing to sign for, and nowhere accounts could appear later.
    #[error("no [[accounts]] are configured and no accounts_dir is set, so every request would be refused (see config/pkcv-proxy.example.toml)")]
    NoAccounts,
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The interception CA could not be loaded.
    #[error(transparent)]
    Intercept(#[from] InterceptError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The proxy, built and not yet listening.
#[derive(Debug)]
pub struct App {
    config: Config,
    config_path: Option<PathBuf>,
    keys: Arc<KeyStore>,
    server: Server,
}

impl App {
    /// Loads the accounts (`[[accounts]]` and `accounts_dir`) and builds everything the
    /// proxy needs. `config_path` is the file `config` came from, watched for account
    /// changes. Binds nothing and contacts nobody.
    pub fn build(config: Config, config_path: Option<PathBuf>) -> Result<App, AppError> {
        let accounts = Accounts::from_config(&config)?;
        if accounts.is_empty() && config.accounts_dir.is_none() {
            return Err(AppError::NoAccounts);
        }
        let keys = Arc::new(KeyStore::new(accounts));
        let proxy = Arc::new(Proxy::new(&config, keys.clone())?);
        let tunnels = Arc::new(Tunnels::new(&config, proxy.clone())?);
        let server = Server {
            proxy,
            tunnels,
            header_read_timeout: config.server.header_read_timeout,
        };
        Ok(App {
            config,
            config_path,
            keys,
            server,
        })
    }

    /// The accounts it signs for now.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Binds `server.listen`.
    pub async fn bind(self) -> Result<Bound, AppError> {
        let address = self.config.server.listen;
        let listen_error = |source| AppError::Listen { address, source };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        Ok(Bound {
            app: self,
            listener,
            local_addr,
        })
    }
}

/// The proxy with its port bound, ready to serve.
#[derive(Debug)]
pub struct Bound {
    app: App,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Bound {
    /// Where it listens (the real port when `listen` named port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives requests and tunnels
    /// in flight up to `shutdown_grace_secs` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Bound {
            app,
            listener,
            local_addr,
        } = self;
        let accounts = app.keys.snapshot().len();
        tracing::info!(listen = %local_addr, accounts, "pkcv-proxy listening");
        if accounts == 0 {
            tracing::warn!(
                "no accounts yet: requests are refused until one is added to accounts_dir"
            );
        }
        let (trigger, signal) = shutdown::channel();
        tokio::spawn(reload::watch(
            app.config.clone(),
            app.config_path.clone(),
            app.keys.clone(),
            signal.clone(),
        ));
        let drain = Drain::new(signal);
        {
            let serving = app.server.serve(listener, &drain);
            tokio::pin!(serving);
            tokio::select! {
                () = &mut serving => {}
                () = shutdown => {
                    tracing::info!("shutting down");
                    trigger.trigger();
                    serving.await;
                }
            }
        }
        if drain.wait(app.config.server.shutdown_grace).await {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }

    /// Serves on a task of its own until [`Running::stop`]: for the demo, tests and
    /// embedding.
    pub fn spawn(self) -> Running {
        let addr = self.local_addr;
        let (stop, mut signal) = shutdown::channel();
        let task = tokio::spawn(self.run(async move { signal.recv().await }));
        Running { addr, stop, task }
    }
}

/// A proxy serving on its own task.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
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
