//! `pkcv-proxy subaccount create|cleanup`: Twilio's subaccount workflow under PKCV with the
//! Main API key from the environment (see `pkcv_proxy::workflow`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pkcv_proxy::workflow::{CreateFailure, CreateOptions, Subaccount};

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum SubaccountCommand {
    /// Create a subaccount, seed it with an API key and a public key, prove a signed request
    /// works, and register it with the proxy (accounts_dir).
    #[command(
        after_help = "Example, with TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY and TWILIO_MAIN_SECRET in the environment:\n  pkcv-proxy subaccount create -c config/pkcv-proxy.toml --friendly-name billing"
    )]
    Create(CreateArgs),
    /// Delete a subaccount's API keys and public key, close it, and unregister it.
    #[command(
        after_help = "Example:\n  pkcv-proxy subaccount cleanup -c config/pkcv-proxy.toml --account AC..."
    )]
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The subaccount's friendly name.
    #[arg(long)]
    friendly_name: String,
    /// Where to write its key pair and secret (default: accounts_dir/keys).
    #[arg(long)]
    key_dir: Option<PathBuf>,
    /// Seed the main account's public key instead of a fresh one (as Twilio's guide does).
    #[arg(long, conflicts_with = "custody")]
    reuse_main_key: bool,
    /// Or make the new key in an HSM or a key service.
    #[command(flatten)]
    custody: super::CustodyArgs,
    /// Where to write the new API key secret (0600; default KEY_DIR/AC….secret).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Print the secret on stdout instead of writing a file.
    #[arg(long)]
    show_secret: bool,
    /// End with one JSON object on stdout's last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CleanupArgs {
    /// The subaccount.
    #[arg(long)]
    account: String,
    /// Its public-key credential, if not registered in accounts_dir.
    #[arg(long)]
    credential: Option<String>,
}

pub(crate) async fn run(
    config_path: Option<&Path>,
    command: SubaccountCommand,
) -> anyhow::Result<Outcome> {
    let (config, session) = super::workflow_session(config_path)?;
    match command {
        SubaccountCommand::Create(args) => {
            let key_dir = args
                .key_dir
                .clone()
                .or_else(|| config.accounts_dir.as_ref().map(|d| d.join("keys")))
                .unwrap_or_else(|| PathBuf::from("keys"));
            let options = CreateOptions {
                friendly_name: args.friendly_name.clone(),
                key_dir,
                reuse_main_key: args.reuse_main_key,
                custody: args.custody.custody(),
                secret_file: args.secret_file.clone(),
                secret_to_stdout: args.show_secret,
            };
            match session.create_subaccount(&options).await {
                Ok(subaccount) => report_created(&subaccount, args.json),
                Err(failure) => report_failure(&failure, config_path, args.json),
            }
        }
        SubaccountCommand::Cleanup(args) => {
            for line in session
                .cleanup_subaccount(&args.account, args.credential.as_deref())
                .await?
            {
                eprintln!("{line}");
            }
            eprintln!("{} is cleaned up", args.account);
            Ok(Outcome::Success)
        }
    }
}

fn report_created(subaccount: &Subaccount, json: bool) -> anyhow::Result<Outcome> {
    eprintln!(
        "subaccount {} is ready; the proxy signs for it with {}",
        subaccount.account_sid, subaccount.credential_sid
    );
    eprintln!("  API key:      {}", subaccount.api_key_sid);
    match &subaccount.secret_file {
        Some(file) => eprintln!("  secret:       written to {} (0600)", file.display()),
        None => eprintln!("  secret:       printed below"),
    }
    eprintln!("  private key:  {}", subaccount.private_key);
    eprintln!("  account file: {}", subaccount.account_file.display());
    if let Some(secret) = &subaccount.secret {
        out!("{secret}");
    }
    if json {
        out!("{}", serde_json::to_string(subaccount)?);
    }
    Ok(Outcome::Success)
}

/// Says what failed, what already exists, and the command that undoes it.
fn report_failure(
    failure: &CreateFailure,
    config_path: Option<&Path>,
    json: bool,
) -> anyhow::Result<Outcome> {
    eprintln!("FAILED at {}", failure.error);
    let created = &failure.created;
    let made: Vec<String> = [
        created
            .account_sid
            .as_ref()
            .map(|s| format!("subaccount {s}")),
        created.api_key_sid.as_ref().map(|s| format!("API key {s}")),
        created
            .credential_sid
            .as_ref()
            .map(|s| format!("public key {s}")),
        created
            .secret_file
            .as_ref()
            .map(|p| format!("secret file {}", p.display())),
        created
            .private_key
            .as_ref()
            .map(|key| format!("private key {key}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if made.is_empty() {
        eprintln!("nothing was created");
    } else {
        eprintln!("already created: {}", made.join(", "));
    }
    if let Some(account) = &created.account_sid {
        let config_flag = config_path
            .map(|p| format!(" --config {}", p.display()))
            .unwrap_or_default();
        let credential = created
            .credential_sid
            .as_ref()
            .map(|c| format!(" --credential {c}"))
            .unwrap_or_default();
        eprintln!("to undo it: pkcv-proxy subaccount cleanup{config_flag} --account {account}{credential}");
    }
    if json {
        out!(
            "{}",
            serde_json::json!({"error": failure.error.to_string(), "created": created})
        );
    }
    Ok(Outcome::Failed)
}
