//! `pkcv-proxy check-config`: everything `serve` checks before binding, then the effective
//! configuration. The config holds no secrets (keys are file paths), and key material is
//! summarized, never printed.

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use pkcv_proxy::keys::{Accounts, KeyStore};
use pkcv_proxy::{Config, Proxy};
use serde_json::json;

pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let accounts = Accounts::load(&config.accounts, &config.signing)?;
    if accounts.is_empty() && config.accounts_dir.is_none() {
        anyhow::bail!("no [[accounts]] are configured: `serve` would refuse to start");
    }
    // Everything `serve` builds before binding: the upstream client and the interception CA.
    let accounts = Arc::new(KeyStore::new(accounts));
    Proxy::new(&config, accounts.clone())?;
    let accounts = accounts.snapshot();
    let summary: Vec<_> = config
        .accounts
        .iter()
        .filter_map(|account| accounts.get(&account.account_sid))
        .map(|account| {
            json!({
                "account_sid": account.account_sid,
                "credential_sid": account.credential_sid,
                "key": format!("{:?}", account.signer),
            })
        })
        .collect();
    let effective = json!({ "config": config.raw, "loaded_accounts": summary });
    println!("{}", serde_json::to_string_pretty(&effective)?);
    eprintln!("config OK: {} account(s)", accounts.len());
    Ok(ExitCode::SUCCESS)
}
