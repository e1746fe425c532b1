//! `pkcv-proxy serve`: load and validate everything, bind, serve until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use pkcv_proxy::keys::{reload, Accounts, KeyStore};
use pkcv_proxy::server::{serve, DEFAULT_GRACE};
use pkcv_proxy::{shutdown, telemetry, Config, Proxy};
use tokio::net::TcpListener;

pub(crate) async fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    telemetry::init(&config.log);
    let accounts = Accounts::load(&config.accounts, &config.signing)?;
    if accounts.is_empty() && config.accounts_dir.is_none() {
        bail!("no [[accounts]] are configured: the proxy would refuse every request (see config/pkcv-proxy.example.toml)");
    }
    let account_count = accounts.len();
    let proxy = Arc::new(Proxy::new(&config, Arc::new(KeyStore::new(accounts)))?);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, accounts = account_count, "pkcv-proxy listening");
    if account_count == 0 {
        tracing::warn!("no accounts yet: requests are refused until one is added to accounts_dir");
    }

    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(reload::watch(
        config.clone(),
        config_path.map(Path::to_path_buf),
        proxy.signer().keys().clone(),
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        shutdown::os_signal().await;
        tracing::info!("shutting down");
        trigger.trigger();
    });
    serve(listener, proxy, shutdown, DEFAULT_GRACE).await;
    Ok(ExitCode::SUCCESS)
}
