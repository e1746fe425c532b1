//! `pkcv-proxy sign`: resolve, normalize and sign one request exactly as the proxy would,
//! and print each step. The `Authorization` value is redacted from the printed canonical
//! string unless `--show-secrets` is given (the hash is always over the real value).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Method, Request};
use pkcv_proxy::canonical::{body_hash, SIGNED_HEADERS};
use pkcv_proxy::keys::{Accounts, KeyStore};
use pkcv_proxy::sign::RequestSigner;
use pkcv_proxy::token::unix_now;
use pkcv_proxy::Config;

use super::Outcome;

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// Full URL (https://api.twilio.com/…) or a path as a proxy client would send it.
    #[arg(long)]
    url: String,
    /// A header, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Basic auth credentials 'SK…:secret' (instead of an Authorization header).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// The request body, hashed as is (nothing is sent).
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// Print the Authorization value in the canonical string.
    #[arg(long)]
    show_secrets: bool,
}

pub(crate) fn run(config_path: Option<&Path>, args: SignArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    let accounts = Accounts::load(&config.accounts, &config.signing, &config.pkcs11)?;
    let signer = RequestSigner::new(&config, Arc::new(KeyStore::new(accounts)));

    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .context("invalid method")?;
    let mut request = Request::builder()
        .method(method.clone())
        .uri(&args.url)
        .body(())?;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .context("a header must be 'Name: value'")?;
        request.headers_mut().append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    if let Some(user) = &args.user {
        let value = format!("Basic {}", STANDARD.encode(user));
        request
            .headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_str(&value)?);
    }
    let (parts, ()) = request.into_parts();
    let target = match signer.resolve(&parts, None) {
        Ok(target) => target,
        Err(err) => {
            eprintln!("refused ({} {}): {err}", err.status().as_u16(), err.code());
            return Ok(Outcome::Failed);
        }
    };
    let body = args.data.unwrap_or_default();
    let canonical = target.canonical(&method, body_hash(body.as_bytes()));
    let rqh = canonical.hash();
    let token = signer.mint(&target, &rqh, unix_now())?;

    let mut shown = canonical.to_canonical_string();
    if !args.show_secrets {
        shown = shown.replace(
            &target.auth.authorization,
            "Basic <redacted: --show-secrets>",
        );
    }
    out!(
        "signing account:   {} (credential {})",
        target.account.account_sid,
        target.account.credential_sid
    );
    out!("api key (iss):     {}", target.auth.api_key_sid);
    out!("forwarded request: {method} {}", target.uri()?);
    out!("host header:       {}", target.host);
    out!("canonical request:\n----\n{shown}\n----");
    out!("hrh: {SIGNED_HEADERS}");
    out!("rqh: {rqh}");
    out!("Twilio-Client-Validation: {token}");
    Ok(Outcome::Success)
}
