//! `pkcv-proxy check-config`: everything `serve` checks before binding, then the effective
//! configuration. The config holds no secrets (keys are file paths), and key material is
//! summarized, never printed.

use std::path::Path;
use std::process::ExitCode;

use pkcv_proxy::{App, Config};
use serde_json::json;

pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    // Everything `serve` does before binding: accounts and keys loaded, the upstream client
    // and the interception CA built.
    let app = App::build(config.clone(), None)?;
    let accounts = app.keys().snapshot();
    let mut summary: Vec<_> = accounts
        .iter()
        .map(|account| {
            json!({
                "account_sid": account.account_sid,
                "credential_sid": account.credential_sid,
                "key": account.signer.to_string(),
            })
        })
        .collect();
    summary.sort_by(|a, b| a["account_sid"].as_str().cmp(&b["account_sid"].as_str()));
    let effective = json!({ "config": config.raw, "loaded_accounts": summary });
    out!("{}", serde_json::to_string_pretty(&effective)?);
    eprintln!("config OK: {} account(s)", accounts.len());
    Ok(ExitCode::SUCCESS)
}
