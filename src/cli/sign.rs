//! `pkcv-proxy sign`: resolve, normalize and sign one request exactly as the proxy would,
//! and print each step. The `Authorization` value is redacted from the printed canonical
//! string unless `--show-secrets` is given (the hash is always over the real value).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use clap::Args;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Method, Request};
use pkcv_proxy::body;
use pkcv_proxy::canonical::SIGNED_HEADERS;
use pkcv_proxy::keys::Accounts;
use pkcv_proxy::metrics::Metrics;
use pkcv_proxy::sign::RequestSigner;
use pkcv_proxy::{Config, ProxyError};

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

pub(crate) async fn run(config_path: Option<&Path>, args: SignArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    // The accounts `serve` signs for: `[[accounts]]` with `accounts_dir` merged over them.
    let accounts = Accounts::from_config(&config)?;
    let signer = RequestSigner::new(&config, Arc::new(Metrics::new()))?;

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
    let refused = |err: ProxyError| {
        eprintln!("refused ({} {}): {err}", err.status().as_u16(), err.code());
        Ok(Outcome::Failed)
    };
    let target = match signer.resolve(&accounts, &parts, None) {
        Ok(target) => Arc::new(target),
        Err(err) => return refused(err),
    };
    let body = body::hashed(Bytes::from(args.data.unwrap_or_default()));
    // The same step the proxy signs with: what it prints is what `serve` would forward.
    let signed = match signer.sign(parts, target.clone(), body).await {
        Ok(signed) => signed,
        Err(failure) => return refused(failure.into()),
    };

    let mut shown = signed.canonical_string();
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
    out!("forwarded request: {method} {}", signed.uri());
    out!("host header:       {}", target.host);
    out!("canonical request:\n----\n{shown}\n----");
    out!("hrh: {SIGNED_HEADERS}");
    out!("rqh: {}", signed.rqh());
    out!("Twilio-Client-Validation: {}", signed.token());
    Ok(Outcome::Success)
}
