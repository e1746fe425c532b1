//! `pkcv-proxy keys list|rotate`: an account's keys, and rotation of its signing key with no
//! moment in which the proxy signs with a key Twilio does not know.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// The account's API keys and the credential the proxy signs with.
    #[command(
        after_help = "Example:\n  pkcv-proxy keys list -c config/pkcv-proxy.toml --account AC..."
    )]
    List(ListArgs),
    /// Generate a new key pair, upload it, verify it, switch signing to it, delete the old one.
    #[command(
        after_help = "Example, with TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY and TWILIO_MAIN_SECRET in the environment:\n  pkcv-proxy keys rotate -c config/pkcv-proxy.toml --account AC..."
    )]
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The account.
    #[arg(long)]
    account: String,
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The account.
    #[arg(long)]
    account: String,
    /// Where to write the new key pair (default: next to the current key).
    #[arg(long, conflicts_with = "custody")]
    key_dir: Option<PathBuf>,
    /// Or make the new key in an HSM or a key service.
    #[command(flatten)]
    custody: super::CustodyArgs,
    /// The secret of the account's API key, to verify the new key with (default: AC….secret
    /// next to the current key; not needed for the main account).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Once the running proxy reports the new key, seconds to wait before deleting the old
    /// credential, so requests it already signed with the old key reach Twilio first.
    #[arg(long, default_value_t = 2.0, value_parser = parse_grace)]
    grace_secs: f64,
}

pub(crate) async fn run(
    config_path: Option<&Path>,
    command: KeysCommand,
) -> anyhow::Result<Outcome> {
    let (config, session) = super::workflow_session(config_path)?;
    match command {
        KeysCommand::List(args) => {
            out!(
                "{}",
                serde_json::to_string_pretty(&session.list_keys(&args.account).await?)?
            );
        }
        KeysCommand::Rotate(args) => {
            let accounts = pkcv_proxy::keys::dir::configured_accounts(&config)?;
            let current = accounts.iter().find(|a| a.account_sid == args.account);
            let key_dir = args
                .key_dir
                .clone()
                .or_else(|| {
                    current.and_then(|a| a.private_key.file()?.parent().map(Path::to_path_buf))
                })
                .unwrap_or_else(|| PathBuf::from("keys"));
            let grace = Duration::from_secs_f64(args.grace_secs);
            let rotation = session
                .rotate(
                    &args.account,
                    (&key_dir, args.custody.custody().as_ref()),
                    args.secret_file.as_deref(),
                    grace,
                )
                .await?;
            eprintln!(
                "{} now signs with {} ({}); {} is deleted",
                rotation.account_sid,
                rotation.new_credential_sid,
                rotation.private_key,
                rotation.old_credential_sid
            );
            out!("{}", serde_json::to_string(&rotation)?);
        }
    }
    Ok(Outcome::Success)
}

fn parse_grace(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err("a number of seconds from 0 to 3600".into()),
    }
}
