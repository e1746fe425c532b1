//! `pkcv-proxy check-config`: everything `serve` checks before binding, then the effective
//! configuration. The config holds no secrets (keys are file paths or PKCS#11 URIs, never a PIN;
//! the egress proxy's credentials are a file or a variable's name, shown as `<redacted>`),
//! and key material is summarized, never printed.

use std::path::Path;

use pkcv_proxy::config::Loaded;
use serde_json::json;

use super::Outcome;

pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let loaded = Loaded::load(config_path)?;
    // Everything `serve` does before binding: accounts and keys loaded, the upstream client
    // and the interception CA built.
    let app = super::build_app(loaded.config.clone(), config_path)?;
    let accounts = app.keys().snapshot();
    let mut summary: Vec<_> = accounts
        .iter()
        .map(|account| {
            json!({
                "account_sid": account.account_sid,
                "credential_sid": account.credential_sid,
                "key": account.minter.to_string(),
                "backend": account.minter.key().backend().as_str(),
                "bits": account.minter.key().modulus_len() * 8,
            })
        })
        .collect();
    summary.sort_by(|a, b| a["account_sid"].as_str().cmp(&b["account_sid"].as_str()));
    let warnings = app.warnings();
    // The egress proxy as it will be used (`proxy_from_env` resolved); its credentials were
    // read by the build above and are never shown.
    let egress = loaded.config.upstream.proxy.as_ref().map(|egress| {
        let credentials = egress.auth_file.is_some() || egress.auth_env.is_some();
        json!({
            "address": egress.address,
            "credentials": credentials.then_some("<redacted>"),
            "no_proxy": egress.no_proxy.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    });
    let effective = json!({
        "config": loaded.shown(),
        "egress_proxy": egress,
        "loaded_accounts": summary,
        "clients": accounts.clients().len(),
        "warnings": warnings,
    });
    out!("{}", serde_json::to_string_pretty(&effective)?);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "config OK: {} account(s), {} client(s)",
        accounts.len(),
        accounts.clients().len()
    );
    Ok(Outcome::Success)
}
