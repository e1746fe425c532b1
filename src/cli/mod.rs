//! The command line: one file per subcommand. Errors surface as `anyhow` here, at the edge;
//! a subcommand returns an [`Outcome`], and `main` alone turns it (or an error) into an exit
//! code.

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
mod completions;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod explain;
mod healthcheck;
mod keygen;
mod keys;
mod serve;
mod sign;
mod subaccount;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A signing forward proxy for Twilio Public Key Client Validation.
#[derive(Debug, Parser)]
#[command(
    name = "pkcv-proxy",
    version,
    about,
    after_help = "Examples:\n  pkcv-proxy demo\n  pkcv-proxy serve -c config/pkcv-proxy.toml\n  pkcv-proxy explain 79006"
)]
pub struct Cli {
    /// Config file (TOML) for `serve` when no subcommand is given.
    #[arg(long, short, env = "PKCV_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// `-c/--config`, offered only by the subcommands that read a config.
#[derive(Debug, Args)]
struct ConfigArg {
    /// Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN.
    #[arg(long, short, global = true, env = "PKCV_CONFIG")]
    config: Option<PathBuf>,
}

/// A subcommand's own arguments, plus `--config`.
#[derive(Debug, Args)]
struct Configured<T: Args> {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    args: T,
}

/// A group of subcommands that read the config.
#[derive(Debug, Args)]
struct ConfiguredGroup<T: Subcommand> {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: T,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    #[command(after_help = "Example:\n  pkcv-proxy serve -c config/pkcv-proxy.toml")]
    Serve(ConfigArg),
    /// Validate the config and keys, and print the effective config.
    #[command(after_help = "Example:\n  pkcv-proxy check-config -c config/pkcv-proxy.toml")]
    CheckConfig(ConfigArg),
    /// Exit 0 when the running proxy's /readyz answers 200 (for Docker's HEALTHCHECK).
    #[command(
        after_help = "Examples:\n  pkcv-proxy healthcheck\n  pkcv-proxy healthcheck --admin 127.0.0.1:9090"
    )]
    Healthcheck(Configured<healthcheck::HealthcheckArgs>),
    /// Check the whole setup against Twilio: config, keys, network, clock, and per account a
    /// signed call; ✓ or what to do, for each (exit 0 all passed, 2 some not run, 1 failed).
    #[command(
        after_help = "Examples:\n  pkcv-proxy doctor -c config/pkcv-proxy.toml\n  TWILIO_ACCOUNT_SID=AC... TWILIO_MAIN_KEY=SK... TWILIO_MAIN_SECRET=... pkcv-proxy doctor -c config/pkcv-proxy.toml --json"
    )]
    Doctor(Configured<doctor::DoctorArgs>),
    /// What an error code (790xx, or Twilio's) means and what to do about it.
    Explain(explain::ExplainArgs),
    /// Print shell completions for pkcv-proxy.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff).
    #[command(after_help = "Example:\n  pkcv-proxy man | man -l -")]
    Man,
    /// Sign one request and print every step, to debug error 70156.
    #[command(
        after_help = "Example:\n  pkcv-proxy sign -c config/pkcv-proxy.toml -X POST \\\n    --url https://api.twilio.com/2010-04-01/Accounts/AC.../Messages.json \\\n    -u \"SK...:$API_KEY_SECRET\" -d 'To=%2B14155550100&Body=Hello'"
    )]
    Sign(Configured<sign::SignArgs>),
    /// Generate an RSA key pair for PKCV: as PEM files, or inside an HSM (--pkcs11).
    #[command(
        after_help = "Examples:\n  pkcv-proxy keygen --out-dir keys    # then upload keys/pkcv-public.pem to Twilio\n  pkcv-proxy keygen -c config/pkcv-proxy.toml --pkcs11 'pkcs11:token=pkcv;object=main' --out-dir keys"
    )]
    Keygen(Configured<keygen::KeygenArgs>),
    /// Twilio's subaccount workflow under PKCV, with the Main API key from the environment
    /// (TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET).
    #[command(
        after_help = "Examples:\n  pkcv-proxy subaccount create -c config/pkcv-proxy.toml --friendly-name billing\n  pkcv-proxy subaccount cleanup -c config/pkcv-proxy.toml --account AC..."
    )]
    Subaccount(ConfiguredGroup<subaccount::SubaccountCommand>),
    /// List an account's keys, or rotate its signing key (Main API key from the environment).
    #[command(
        after_help = "Examples:\n  pkcv-proxy keys list -c config/pkcv-proxy.toml --account AC...\n  pkcv-proxy keys rotate -c config/pkcv-proxy.toml --account AC..."
    )]
    Keys(ConfiguredGroup<keys::KeysCommand>),
    /// The local CA for HTTPS_PROXY interception.
    #[command(
        after_help = "Example:\n  pkcv-proxy ca init --out-dir /etc/pkcv-proxy/ca -c config/pkcv-proxy.toml"
    )]
    Ca(ConfiguredGroup<ca::CaCommand>),
    /// Run everything on loopback with no Twilio account: a verifying Twilio stand-in,
    /// throwaway keys, the proxy, and requests through it.
    #[cfg(feature = "demo")]
    #[command(after_help = "Example:\n  pkcv-proxy demo")]
    Demo,
}

/// A workflow session with the user's config and the Main API key from the environment
/// (`TWILIO_ACCOUNT_SID`, `TWILIO_MAIN_KEY`, `TWILIO_MAIN_SECRET`), reporting progress on
/// stderr. The environment is read here, at the edge, and nowhere in the library.
fn workflow_session(
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<(pkcv_proxy::Config, pkcv_proxy::workflow::Session)> {
    let [account_sid, key, secret] = main_key_variables([
        "TWILIO_ACCOUNT_SID",
        "TWILIO_MAIN_KEY",
        "TWILIO_MAIN_SECRET",
    ])?;
    let main = pkcv_proxy::workflow::MainKey::new(&account_sid, &key, &secret)?;
    let config = pkcv_proxy::Config::load(config_path)?;
    let session = pkcv_proxy::workflow::Session::new(&config, main, |line| eprintln!("{line}"))?;
    Ok((config, session))
}

/// How a subcommand ended. `main` maps each to an exit code; an `Err` is a failure too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Success,
    /// It did not, and has already said why: a refused request (`sign`), an unknown code
    /// (`explain`), a proxy that is not ready (`healthcheck`), a failed demo or workflow step.
    Failed,
    /// A second SIGINT/SIGTERM cut `serve`'s drain short.
    Interrupted,
    /// The command line was wrong; clap has said how.
    Usage,
    /// Nothing failed, but some of what was asked could not be checked (`doctor` without
    /// API key credentials).
    Incomplete,
}

/// The variables `names`, or one error naming every one that is missing (a user fixing
/// them one run at a time would otherwise need three runs), said once: not also as
/// `std::env::VarError`'s "environment variable not found".
fn main_key_variables<const N: usize>(names: [&str; N]) -> anyhow::Result<[String; N]> {
    let values = names.map(|name| std::env::var(name).ok());
    let missing: Vec<&str> = names
        .iter()
        .zip(&values)
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| *name)
        .collect();
    match missing.as_slice() {
        [] => Ok(values.map(Option::unwrap_or_default)),
        [one] => anyhow::bail!("{one} is not set (the Main API key comes from the environment)"),
        [first @ .., last] => anyhow::bail!(
            "{} and {last} are not set (the Main API key comes from the environment)",
            first.join(", ")
        ),
    }
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<Outcome> {
    // Not `Cli::parse()`, which would exit by itself: the exit code is main's to choose.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            err.print()?;
            // `--help` and `--version` end here too, successfully.
            return Ok(if err.use_stderr() {
                Outcome::Usage
            } else {
                Outcome::Success
            });
        }
    };
    let command = cli
        .command
        .unwrap_or(Command::Serve(ConfigArg { config: cli.config }));
    // Only the commands that do I/O get a runtime; `serve` builds its own, sized by its config.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match command {
        Command::Serve(c) => serve::run(c.config.as_deref()),
        Command::CheckConfig(c) => check_config::run(c.config.as_deref()),
        Command::Healthcheck(c) => {
            runtime()?.block_on(healthcheck::run(c.config.config.as_deref(), c.args))
        }
        Command::Doctor(c) => runtime()?.block_on(doctor::run(c.config.config.as_deref(), c.args)),
        Command::Explain(args) => explain::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
        Command::Sign(c) => runtime()?.block_on(sign::run(c.config.config.as_deref(), c.args)),
        Command::Ca(c) => ca::run(c.config.config.as_deref(), c.command),
        Command::Keygen(c) => keygen::run(c.config.config.as_deref(), c.args),
        Command::Subaccount(c) => {
            runtime()?.block_on(subaccount::run(c.config.config.as_deref(), c.command))
        }
        Command::Keys(c) => runtime()?.block_on(keys::run(c.config.config.as_deref(), c.command)),
        #[cfg(feature = "demo")]
        Command::Demo => runtime()?.block_on(demo::run()),
    }
}

/// `--pkcs11 URI`, parsed by clap but refused in the proxy's own words: clap's usual message
/// repeats the value, and a refused URI may hold a `pin-value`.
#[derive(Debug, Clone, Copy)]
struct Pkcs11UriArg;

impl clap::builder::TypedValueParser for Pkcs11UriArg {
    type Value = Box<pkcv_proxy::pkcs11::Pkcs11Uri>;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let refused = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--pkcs11: the URI {reason}\n"),
            )
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("is not UTF-8".to_owned()))?;
        // Boxed: the URI is large beside the other arguments.
        pkcv_proxy::pkcs11::Pkcs11Uri::parse(text)
            .map(Box::new)
            .map_err(|err| refused(err.to_string()))
    }
}

/// Where a new key is made instead of PEM files: an HSM or a key service. One of the three
/// at most (`keygen`, `subaccount create`, `keys rotate`).
#[derive(Debug, clap::Args)]
#[group(id = "custody", multiple = false)]
pub(crate) struct CustodyArgs {
    /// Generate the key inside the HSM this PKCS#11 URI names (object= is the label; the
    /// private key is created sensitive and non-extractable). Module and PIN come from the
    /// URI's module-path and pin-source, or from --config's [pkcs11].
    #[arg(long, value_name = "URI", value_parser = Pkcs11UriArg)]
    pkcs11: Option<Box<pkcv_proxy::pkcs11::Pkcs11Uri>>,
    /// Make the key in Vault's (or OpenBao's) transit engine under this name (rsa-2048, not
    /// exportable; [vault] in --config). An existing key of that name is used, never
    /// overwritten.
    #[arg(long, value_name = "NAME", value_parser = service_key_name("vault-transit:"))]
    vault_transit: Option<String>,
    /// Make the key in AWS KMS under this alias (alias/NAME; RSA_2048, SIGN_VERIFY;
    /// [aws_kms] in --config). An existing alias's key is used, never overwritten.
    #[arg(long, value_name = "alias/NAME", value_parser = service_key_name("aws-kms:"))]
    aws_kms: Option<String>,
}

impl CustodyArgs {
    /// The custody asked for, if any.
    pub(crate) fn custody(&self) -> Option<pkcv_proxy::keygen::KeyCustody> {
        use pkcv_proxy::keygen::KeyCustody;
        if let Some(uri) = &self.pkcs11 {
            return Some(KeyCustody::Pkcs11(uri.clone()));
        }
        if let Some(name) = &self.vault_transit {
            return Some(KeyCustody::VaultTransit(name.clone()));
        }
        self.aws_kms.clone().map(KeyCustody::AwsKms)
    }
}

/// A `--vault-transit` name or `--aws-kms` alias, checked as the config would check it.
fn service_key_name(scheme: &'static str) -> impl clap::builder::TypedValueParser<Value = String> {
    move |value: &str| -> Result<String, String> {
        if scheme == "aws-kms:" && !value.starts_with("alias/") {
            return Err("name the key by its alias: alias/NAME".into());
        }
        match pkcv_proxy::config::PrivateKey::parse_service_key(&format!("{scheme}{value}")) {
            Some(Ok(_)) if !value.contains('?') => Ok(value.to_owned()),
            Some(Err(problem)) => Err(problem),
            _ => Err("is not a key name".into()),
        }
    }
}

/// Builds the proxy as `serve` does, for `serve` and `check-config`. With no config file at
/// all, "no accounts" is only the consequence: the cause is said first.
fn build_app(
    config: pkcv_proxy::Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<pkcv_proxy::App> {
    match pkcv_proxy::App::build(config, config_path.map(std::path::Path::to_path_buf)) {
        Err(pkcv_proxy::app::AppError::NoAccounts) if config_path.is_none() => anyhow::bail!(
            "no config file given: use -c or PKCV_CONFIG (e.g. pkcv-proxy -c config/pkcv-proxy.toml), or run `pkcv-proxy demo` to try it without one"
        ),
        built => Ok(built?),
    }
}
