//! `pkcv-proxy healthcheck`: asks the running proxy's admin port whether it is ready, for
//! Docker's `HEALTHCHECK` and anything else without curl (the distroless image has none).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use pkcv_proxy::Config;

use super::Outcome;

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The admin listener (default: server.admin_listen from the config, else 127.0.0.1:9090).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    timeout: u64,
}

pub(crate) async fn run(
    config_path: Option<&Path>,
    args: HealthcheckArgs,
) -> anyhow::Result<Outcome> {
    let address = match args.admin {
        Some(address) => address,
        None => admin_address(config_path)?,
    };
    match pkcv_proxy::admin::check_ready(address, Duration::from_secs(args.timeout)).await {
        Ok(()) => Ok(Outcome::Success),
        Err(reason) => {
            eprintln!("pkcv-proxy healthcheck: {reason}");
            Ok(Outcome::Failed)
        }
    }
}

/// The configured admin address; a wildcard one is probed on loopback.
fn admin_address(config_path: Option<&Path>) -> anyhow::Result<SocketAddr> {
    let config = Config::load(config_path)?;
    let Some(mut address) = config.server.admin_listen else {
        anyhow::bail!("server.admin_listen is disabled in the config: there is nothing to ask");
    };
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(address)
}
