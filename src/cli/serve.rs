//! `pkcv-proxy serve`: load and validate everything, bind, serve until SIGINT/SIGTERM; a
//! second signal during the drain exits at once.

use std::path::Path;
use std::process::ExitCode;

use pkcv_proxy::{shutdown, telemetry, App, Config};

pub(crate) async fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
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
