//! `pkcv-proxy serve`: load and validate everything, bind, serve until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use pkcv_proxy::{shutdown, telemetry, App, Config};

pub(crate) async fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    telemetry::init(&config.log);
    let app = App::build(config, config_path.map(Path::to_path_buf))?;
    app.bind().await?.run(shutdown::os_signal()).await;
    Ok(ExitCode::SUCCESS)
}
