//! One assembly path: the running proxy is built here and nowhere else, for `serve`, the
//! demo and the tests alike.
//!
//! [`App::build`] does everything that can fail before a port is bound (keys read, the
//! upstream client and the interception CA built), so `check-config` runs exactly it;
//! [`App::bind`] takes the ports (the proxy's and the admin listener's); [`Bound::run`] serves
//! until a shutdown future resolves, with the reload watcher beside it, then turns
//! `/readyz` to 503, stops accepting and drains for `shutdown_grace_secs`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::{Admin, Readiness};
use crate::admission::Admission;
use crate::config::Config;
use crate::connect::Tunnels;
use crate::intercept::InterceptError;
use crate::keys::reload::{ReloadHandle, Reloader};
use crate::keys::{Accounts, KeyStore, KeyStoreError};
use crate::metrics::Metrics;
use crate::mtls::{MtlsAcceptor, MtlsError};
use crate::proxy::{Proxy, ProxyBuildError};
use crate::server::Server;
use crate::shutdown::{self, Drain};
use crate::token::unix_now;

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
    /// The upstream client or the signing threads could not be set up.
    #[error(transparent)]
    Proxy(#[from] ProxyBuildError),
    /// The interception CA could not be loaded.
    #[error(transparent)]
    Intercept(#[from] InterceptError),
    /// The mutual-TLS listener could not be set up.
    #[error(transparent)]
    Mtls(#[from] MtlsError),
    /// A listener's address could not be bound. The message names the setting and how to
    /// change it; the OS error is in it (not a `source`, so a caller printing the chain does
    /// not say "in use" twice).
    #[error(
        "server.{setting} {address} {}: set [server] {setting} or PKCV_SERVER__{}",
        bind_problem(.error),
        .setting.to_ascii_uppercase()
    )]
    Listen {
        /// The setting under `[server]`: `listen`, `admin_listen` or `tls_listen`.
        setting: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// The proxy, built and not yet listening.
#[derive(Debug)]
pub struct App {
    config: Config,
    config_path: Option<PathBuf>,
    keys: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    server: Server,
    readiness: Arc<Readiness>,
    mtls: Option<Arc<MtlsAcceptor>>,
}

impl App {
    /// Loads the accounts (`[[accounts]]` and `accounts_dir`) and builds everything the
    /// proxy needs. `config_path` is the file `config` came from, watched for account
    /// changes. Binds nothing and contacts nobody.
    pub fn build(mut config: Config, config_path: Option<PathBuf>) -> Result<App, AppError> {
        let accounts = Accounts::from_config(&config)?;
        if accounts.is_empty() && config.accounts_dir.is_none() {
            return Err(AppError::NoAccounts);
        }
        let metrics = Arc::new(Metrics::new());
        metrics.loaded(accounts.len(), unix_now());
        for load in accounts.outcomes() {
            metrics.account_loaded(load.backend.as_str(), "loaded");
        }
        let (max_connections, upstream_total) = fit_open_files(
            config.server.max_connections,
            config.upstream.max_connections_total,
        );
        config.upstream.max_connections_total = upstream_total;
        let keys = Arc::new(KeyStore::new(accounts));
        let admission = Arc::new(Admission::new(
            max_connections,
            config.server.max_in_flight,
            metrics.clone(),
        ));
        let proxy = Arc::new(Proxy::new(
            &config,
            keys.clone(),
            admission.clone(),
            metrics.clone(),
        )?);
        let tunnels = Arc::new(Tunnels::new(&config, proxy.clone())?);
        let server = Server {
            proxy,
            tunnels,
            metrics: metrics.clone(),
            admission,
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            response_write_timeout: config.server.response_write_timeout,
        };
        let readiness = Arc::new(Readiness::new(keys.clone(), warnings(&config)));
        let mtls = match &config.server.tls {
            Some(settings) => Some(Arc::new(MtlsAcceptor::new(
                settings,
                config.server.tls_handshake_timeout,
            )?)),
            None => None,
        };
        Ok(App {
            config,
            config_path,
            keys,
            metrics,
            server,
            readiness,
            mtls,
        })
    }

    /// The accounts it signs for now.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// What a person running it should know (also on `/readyz`): settings that are legal but
    /// probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        warnings(&self.config)
    }

    /// Binds `server.listen` and, if enabled, `server.admin_listen` and `server.tls_listen`.
    pub async fn bind(self) -> Result<Bound, AppError> {
        let server = &self.config.server;
        let (listener, local_addr) = bind("listen", server.listen).await?;
        let admin = match server.admin_listen {
            Some(address) => Some(bind("admin_listen", address).await?),
            None => None,
        };
        let tls = match &server.tls {
            Some(tls) => Some(bind("tls_listen", tls.listen).await?),
            None => None,
        };
        Ok(Bound {
            app: self,
            listener,
            local_addr,
            admin,
            tls,
        })
    }
}

/// File descriptors kept free beyond client and upstream connections: listeners, key,
/// account and config files, the descriptor `accept` takes before a connection over
/// `max_connections` is closed.
const SPARE_FILES: u64 = 64;

/// File descriptors reserved for the admin listener's connections.
const ADMIN_FILES: u64 = crate::admin::ADMIN_CONNECTIONS as u64;

/// Fits client connections (`max_connections`), upstream connections
/// (`upstream.max_connections_total`, 0: derived) and the reserves into the open-files limit,
/// raising the soft limit as far as the hard one allows, so neither side (nor the admin port)
/// can run the process out of descriptors: `accept` never fails for lack of them. Returns
/// the client and upstream caps. With the limit high enough, a derived upstream cap is the
/// limit less the others (at least `max_connections`); where it is not, both caps are
/// lowered, with a warning.
#[cfg(unix)]
fn fit_open_files(max_connections: usize, upstream_total: usize) -> (usize, usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let reserved = SPARE_FILES + ADMIN_FILES;
    let clients = max_connections as u64;
    let upstream = match upstream_total {
        0 => clients,
        total => total as u64,
    };
    let wanted = clients + upstream + reserved;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let now = if soft >= wanted {
        soft
    } else {
        let raised = Rlimit {
            current: Some(wanted.min(hard)),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => wanted.min(hard),
            Err(_) => soft,
        }
    };
    let size = |n: u64| usize::try_from(n.max(1)).unwrap_or(usize::MAX);
    if now >= wanted {
        let upstream = match upstream_total {
            0 => now.saturating_sub(clients + reserved),
            _ => upstream,
        };
        return (max_connections, size(upstream));
    }
    // Half of what is left each, or less where less was asked for.
    let room = now.saturating_sub(reserved);
    let fitted_clients = clients.min(room / 2).max(room.saturating_sub(upstream));
    let fitted_upstream = room.saturating_sub(fitted_clients);
    tracing::warn!(
        max_connections,
        max_connections_total = upstream,
        open_files_limit = now,
        lowered_to = fitted_clients,
        upstream_lowered_to = fitted_upstream,
        "the open-files limit cannot fit server.max_connections and upstream.max_connections_total: raise it (ulimit -n, LimitNOFILE=) or lower them"
    );
    (size(fitted_clients), size(fitted_upstream))
}

#[cfg(not(unix))]
fn fit_open_files(max_connections: usize, upstream_total: usize) -> (usize, usize) {
    (max_connections, upstream_total)
}

/// Legal settings a person most likely did not mean.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if !config.server.listen.ip().is_loopback() && config.clients.is_empty() {
        warnings.push(format!(
            "server.listen {} is reachable from other machines and no [[clients]] are configured: anyone who can connect can have requests signed with these keys",
            config.server.listen
        ));
    }
    warnings
}

/// Why an address could not be bound, in the words a person acts on.
fn bind_problem(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "is in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "is not an address of this machine".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "may not be bound by this user (ports below 1024 need CAP_NET_BIND_SERVICE)".to_owned()
        }
        _ => format!("cannot be bound ({error})"),
    }
}

/// A listener on `address` (the value of `server.{setting}`), and the address it really got
/// (the port, when `address` named 0).
async fn bind(
    setting: &'static str,
    address: SocketAddr,
) -> Result<(TcpListener, SocketAddr), AppError> {
    let listen_error = |error| AppError::Listen {
        setting,
        address,
        error,
    };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local))
}

/// The proxy with its ports bound, ready to serve.
#[derive(Debug)]
pub struct Bound {
    app: App,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin: Option<(TcpListener, SocketAddr)>,
    tls: Option<(TcpListener, SocketAddr)>,
}

impl Bound {
    /// Where the proxy listens (the real port when `listen` named port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the admin listener listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Where the mutual-TLS listener listens, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` resolves, then turns not-ready, stops accepting and gives
    /// requests and tunnels in flight up to `shutdown_grace_secs` to finish. The admin
    /// listener answers throughout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (reloader, _) = self.reloader();
        self.run_with(reloader, shutdown).await;
    }

    fn reloader(&self) -> (Reloader, ReloadHandle) {
        let app = &self.app;
        let reloader = Reloader::new(
            app.config.clone(),
            app.config_path.clone(),
            app.keys.clone(),
            app.metrics.clone(),
        )
        .reporting_restart_needed(app.readiness.restart_needed());
        let handle = reloader.handle();
        (reloader, handle)
    }

    async fn run_with(self, reloader: Reloader, shutdown: impl Future<Output = ()>) {
        let admin_addr = self.admin_addr();
        let Bound {
            app,
            listener,
            local_addr,
            admin,
            tls,
        } = self;
        let accounts = app.keys.snapshot().len();
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        app.metrics.serving_on(workers);
        let admin_listen = admin_addr.map(|addr| addr.to_string());
        tracing::info!(listen = %local_addr, admin = admin_listen.as_deref().unwrap_or("off"), accounts, "pkcv-proxy listening");
        for warning in &app.readiness.report().1["warnings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            tracing::warn!("{}", warning.as_str().unwrap_or_default());
        }
        let (threads, pem_on_pool) = app.server.proxy.signer().signing_threads();
        tracing::info!(
            threads,
            pem_on_pool,
            "signing pool started (HSM keys always sign on it; PEM keys inline unless signing.pem_on_pool)"
        );
        if accounts == 0 {
            tracing::warn!(
                "no accounts yet: requests are refused until one is added to accounts_dir"
            );
        }
        let (trigger, signal) = shutdown::channel();
        tokio::spawn(reloader.run(signal.clone()));
        // The admin listener outlives the drain, so probes see not-ready until the end.
        let (admin_stop, admin_signal) = shutdown::channel();
        if let Some((listener, _)) = admin {
            let admin = Admin {
                readiness: app.readiness.clone(),
                metrics: app.metrics.clone(),
            };
            tokio::spawn(admin.serve(listener, admin_signal));
        }
        let drain = Drain::new(signal);
        crate::notify::ready(accounts);
        {
            let serving = async {
                let plain = app.server.clone().serve(listener, None, &drain);
                let mutual = async {
                    if let (Some((listener, _)), Some(acceptor)) = (tls, app.mtls.clone()) {
                        app.server
                            .clone()
                            .serve(listener, Some(acceptor), &drain)
                            .await;
                    }
                };
                tokio::join!(plain, mutual);
            };
            tokio::pin!(serving);
            tokio::select! {
                () = &mut serving => {}
                () = shutdown => {
                    tracing::info!(grace_secs = app.config.server.shutdown_grace.as_secs(), "shutting down: draining");
                    app.readiness.start_draining();
                    crate::notify::stopping();
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
        admin_stop.trigger();
    }

    /// Serves on a task of its own until [`Running::stop`]: for the demo, tests and
    /// embedding.
    pub fn spawn(self) -> Running {
        let addr = self.local_addr;
        let admin_addr = self.admin_addr();
        let tls_addr = self.tls_addr();
        let (reloader, reload) = self.reloader();
        let (stop, mut signal) = shutdown::channel();
        let task = tokio::spawn(self.run_with(reloader, async move { signal.recv().await }));
        Running {
            addr,
            admin_addr,
            tls_addr,
            reload,
            stop,
            task,
        }
    }
}

/// A proxy serving on its own task.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    reload: ReloadHandle,
    stop: shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its admin listener listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where its mutual-TLS listener listens, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Reloads accounts at once, as `SIGHUP` does.
    pub fn reload_now(&self) {
        self.reload.reload_now();
    }

    /// Signals shutdown without waiting (the drain runs on).
    pub fn begin_shutdown(&self) {
        self.stop.trigger();
    }

    /// Signals shutdown and waits for the drain.
    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}
