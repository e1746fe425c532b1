//! `pkcv-proxy serve`: load and validate everything, bind, serve until SIGINT/SIGTERM; a
//! second signal during the drain ends it at once ([`Outcome::Interrupted`]).

use std::path::Path;

use pkcv_proxy::{shutdown, telemetry, Config};

use super::Outcome;

/// Loads the config, then serves it on a runtime of `server.worker_threads` threads.
pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_threads)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(serve(config, config_path));
    if let Ok(Outcome::Interrupted) = outcome {
        // Dropping the runtime would wait for its blocking work, which may be the very call
        // (a hung HSM, a stuck file system) the second signal is meant to cut short.
        runtime.shutdown_background();
    }
    outcome
}

async fn serve(config: Config, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    telemetry::check_env_filter().map_err(anyhow::Error::msg)?;
    let telemetry = telemetry::init(&config)?;
    let app = super::build_app(config, config_path)?;
    let (drain_began, draining) = tokio::sync::oneshot::channel::<()>();
    let first_signal = async move {
        shutdown::os_signal().await;
        let _ = drain_began.send(());
    };
    let second_signal = async move {
        match draining.await {
            Ok(()) => shutdown::os_signal().await,
            // The server stopped without a signal: that branch wins the select below.
            Err(_) => std::future::pending().await,
        }
    };
    let mut running = Box::pin(app.bind().await?.run(first_signal));
    let interrupted = tokio::select! {
        () = running.as_mut() => false,
        () = second_signal => true,
    };
    if !interrupted {
        // Drained: the last spans are exported (bounded) before the process ends.
        telemetry.shutdown().await;
        return Ok(Outcome::Success);
    }
    tracing::warn!("second signal: exiting without waiting for the drain");
    // Not dropped: dropping the server joins its signing threads, which may be stuck in the
    // call the signal is meant to cut short. The process ends next.
    std::mem::forget(running);
    Ok(Outcome::Interrupted)
}
