//! The command line: one file per subcommand. Errors surface as `anyhow` here, at the edge;
//! `main` turns them into an exit code.

/// `println!` that returns a write error instead of panicking, so `check-config | head`
/// ends quietly when the reader goes away (`main` maps a broken pipe to success).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod ca;
mod check_config;
#[cfg(feature = "demo")]
mod demo;
mod explain;
mod healthcheck;
mod keygen;
mod keys;
mod serve;
mod sign;
mod subaccount;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A signing forward proxy for Twilio Public Key Client Validation.
#[derive(Debug, Parser)]
#[command(name = "pkcv-proxy", version, about)]
pub struct Cli {
    /// Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN.
    #[arg(long, short, global = true, env = "PKCV_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate the config and keys, and print the effective config.
    CheckConfig,
    /// Exit 0 when the running proxy's /readyz answers 200 (for Docker's HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// What an error code (790xx) means and what to do about it.
    Explain(explain::ExplainArgs),
    /// Sign one request and print every step, to debug error 70156.
    Sign(sign::SignArgs),
    /// Generate an RSA key pair for PKCV.
    Keygen(keygen::KeygenArgs),
    /// Twilio's subaccount workflow under PKCV, with the Main API key from the environment
    /// (TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET).
    #[command(subcommand)]
    Subaccount(subaccount::SubaccountCommand),
    /// List an account's keys, or rotate its signing key (Main API key from the environment).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The local CA for HTTPS_PROXY interception.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Run everything on loopback with no Twilio account: a verifying Twilio stand-in,
    /// throwaway keys, the proxy, and requests through it.
    #[cfg(feature = "demo")]
    Demo,
}

/// A workflow session with the user's config and the Main API key from the environment
/// (`TWILIO_ACCOUNT_SID`, `TWILIO_MAIN_KEY`, `TWILIO_MAIN_SECRET`), reporting progress on
/// stderr. The environment is read here, at the edge, and nowhere in the library.
fn workflow_session(
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<(pkcv_proxy::Config, pkcv_proxy::workflow::Session)> {
    use anyhow::Context;
    let var = |name: &str| {
        std::env::var(name).with_context(|| {
            format!("{name} is not set (the Main API key comes from the environment)")
        })
    };
    let main = pkcv_proxy::workflow::MainKey::new(
        &var("TWILIO_ACCOUNT_SID")?,
        &var("TWILIO_MAIN_KEY")?,
        &var("TWILIO_MAIN_SECRET")?,
    )?;
    let config = pkcv_proxy::Config::load(config_path)?;
    let session = pkcv_proxy::workflow::Session::new(&config, main, |line| eprintln!("{line}"))?;
    Ok((config, session))
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve::run(config)),
        Command::CheckConfig => check_config::run(config),
        Command::Healthcheck(args) => runtime.block_on(healthcheck::run(config, args)),
        Command::Explain(args) => explain::run(args),
        Command::Sign(args) => sign::run(config, args),
        Command::Ca(command) => ca::run(config, command),
        Command::Keygen(args) => keygen::run(args),
        Command::Subaccount(command) => runtime.block_on(subaccount::run(config, command)),
        Command::Keys(command) => runtime.block_on(keys::run(config, command)),
        #[cfg(feature = "demo")]
        Command::Demo => runtime.block_on(demo::run()),
    }
}
