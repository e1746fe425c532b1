//! `pkcv-proxy check-config`: everything `serve` checks before binding, then the effective
//! configuration. The config holds no secrets (keys are file paths or PKCS#11 URIs, never a PIN;
//! the egress proxy's credentials are a file or a variable's name, shown as `<redacted>`),
//! and key material is summarized, never printed.

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
                "backend": account.signer.key().backend().as_str(),
                "bits": account.signer.key().modulus_len() * 8,
            })
        })
        .collect();
    summary.sort_by(|a, b| a["account_sid"].as_str().cmp(&b["account_sid"].as_str()));
    // A client's secret digest is not for a terminal or a support ticket.
    let mut raw = config.raw.clone();
    for client in &mut raw.clients {
        if client.secret_sha256.is_some() {
            client.secret_sha256 = Some("<redacted>".into());
        }
    }
    let warnings = app.warnings();
    // The egress proxy as it will be used (`proxy_from_env` resolved); its credentials were
    // read by the build above and are never shown.
    let egress = config.upstream.proxy.as_ref().map(|egress| {
        let credentials = egress.auth_file.is_some() || egress.auth_env.is_some();
        json!({
            "address": egress.address,
            "credentials": credentials.then_some("<redacted>"),
            "no_proxy": egress.no_proxy.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    });
    let effective = json!({
        "config": raw,
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
    Ok(ExitCode::SUCCESS)
}
