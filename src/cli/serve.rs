//! `pkcv-proxy serve`: load and validate everything, bind, serve until SIGINT/SIGTERM; a
//! second signal during the drain exits at once.

use std::path::Path;
use std::process::ExitCode;

use pkcv_proxy::{shutdown, telemetry, App, Config};

/// Loads the config, then serves it on a runtime of `server.worker_threads` threads.
pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_threads)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    telemetry::check_env_filter().map_err(anyhow::Error::msg)?;
    telemetry::init(&config.log);
    let app = App::build(config, config_path.map(Path::to_path_buf))?;
    let first_signal = async {
        shutdown::os_signal().await;
        tokio::spawn(async {
            shutdown::os_signal().await;
            tracing::warn!("second signal: exiting without waiting for the drain");
            std::process::exit(130);
        });
    };
    app.bind().await?.run(first_signal).await;
    Ok(ExitCode::SUCCESS)
}
