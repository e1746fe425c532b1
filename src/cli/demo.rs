//! `pkcv-proxy demo`: the whole path on loopback, with no Twilio account and no network,
//! including the subaccount workflow under PKCV.
//!
//! It starts the verifying Twilio stand-in, makes a throwaway key pair and API key, registers
//! them with the stand-in as a user would with Twilio, starts the proxy pointed at the
//! stand-in (`connect_to` + `extra_ca_file`, exactly the settings a private link would use),
//! and sends plain API-key requests through it in each routing form, plus two the proxy must
//! refuse. Exits non-zero if any outcome differs from what is expected.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pkcv_proxy::config::{AccountConfig, RawConfig};
use pkcv_proxy::workflow::{CreateOptions, MainKey, Session};
use pkcv_proxy::{keygen, App, Config};
use pkcv_standin::{random_hex, random_sid};
use pkcv_standin::{Registry, StandIn};

struct Step {
    title: &'static str,
    method: Method,
    target: String,
    auth: String,
    /// A `Host` header, as a sidecar client that maps a Twilio host to loopback sends.
    host: Option<&'static str>,
    body: Option<(&'static str, String)>,
    expect: StatusCode,
}

pub(crate) async fn run() -> anyhow::Result<ExitCode> {
    let dir = tempfile_dir()?;
    println!("pkcv-proxy demo — everything runs on 127.0.0.1; nothing leaves this machine.\n");

    let account_sid = random_sid("AC");
    let api_key_sid = random_sid("SK");
    let credential_sid = random_sid("CR");
    let secret = random_hex::<16>();

    println!("1. generate a throwaway RSA-2048 key pair");
    let key = keygen::generate(2048)?;
    let key_file = dir.join("demo-private.pem");
    keygen::write_new_private(&key_file, &key.private_pem)?;
    println!("   private key {} (0600)", key_file.display());

    println!("2. start the Twilio stand-in and register the public key {credential_sid} and API key {api_key_sid} for {account_sid}");
    let mut registry = Registry::default();
    registry.add_public_key_pem(&credential_sid, &account_sid, key.public_pem.as_bytes())?;
    registry.add_api_key(&api_key_sid, &account_sid, &secret);
    let standin = StandIn::start(registry).await?;
    let mut raw = RawConfig::default();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.reload_interval_ms = 200;
    raw.server.shutdown_grace_secs = 5;
    raw.accounts_dir = Some(dir.join("accounts"));
    std::fs::create_dir_all(dir.join("accounts"))?;
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file)?;
    raw.upstream.route_all_to(standin.addr(), ca_file);
    println!(
        "   stand-in on https://{} (trusting its CA via extra_ca_file)",
        standin.addr()
    );

    println!("3. start pkcv-proxy");
    raw.accounts.push(AccountConfig {
        account_sid: account_sid.clone(),
        credential_sid: credential_sid.clone(),
        private_key_file: key_file,
        api_key_sids: vec![api_key_sid.clone()],
    });
    let config = Config::from_raw(raw)?;
    let proxy = App::build(config.clone(), None)?.bind().await?.spawn();
    let proxy_addr = proxy.addr();
    println!(
        "   proxy on http://{proxy_addr}, watching {}",
        dir.join("accounts").display()
    );

    println!("4. bring up a subaccount under PKCV with the Main API key (what `pkcv-proxy subaccount create` does)");
    let session = Session::new(
        &config,
        MainKey::new(&account_sid, &api_key_sid, &secret)?,
        |line| println!("   {line}"),
    )?;
    let subaccount = session
        .create_subaccount(&CreateOptions {
            friendly_name: "pkcv-proxy demo subaccount".into(),
            key_dir: dir.join("keys"),
            reuse_main_key: false,
            secret_file: None,
            // Kept in memory for the requests below; never printed.
            secret_to_stdout: true,
        })
        .await?;
    let sub_sid = subaccount.account_sid.clone();
    let sub_secret = subaccount.secret.clone().unwrap_or_default();
    println!(
        "   registered in {}; the running proxy picks it up",
        subaccount.account_file.display()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    println!();

    let api_key_auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{api_key_sid}:{secret}"))
    );
    let auth_token_auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{account_sid}:an-auth-token"))
    );
    let steps = [
        Step {
            title: "list messages (base URL = proxy, default host api.twilio.com)",
            method: Method::GET,
            target: format!(
                "/2010-04-01/Accounts/{account_sid}/Messages.json?PageSize=20&To=+14155550100"
            ),
            auth: api_key_auth.clone(),
            host: None,
            body: None,
            expect: StatusCode::OK,
        },
        Step {
            title: "send an SMS (form body)",
            method: Method::POST,
            target: format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
            auth: api_key_auth.clone(),
            host: None,
            body: Some((
                "application/x-www-form-urlencoded",
                "To=%2B14155550100&From=%2B14155550199&Body=Hello+from+pkcv-proxy".into(),
            )),
            expect: StatusCode::OK,
        },
        Step {
            title: "list public keys on accounts.twilio.com (host as first path segment)",
            method: Method::GET,
            target: "/accounts.twilio.com/v1/Credentials/PublicKeys?PageSize=20".into(),
            auth: api_key_auth.clone(),
            host: None,
            body: None,
            expect: StatusCode::OK,
        },
        Step {
            title:
                "fetch the account as a sidecar client (Host: api.twilio.com mapped to loopback)",
            method: Method::GET,
            target: format!("/2010-04-01/Accounts/{account_sid}.json"),
            auth: api_key_auth.clone(),
            host: Some("api.twilio.com"),
            body: None,
            expect: StatusCode::OK,
        },
        Step {
            title: "list accounts, absolute-form as an HTTP_PROXY client sends it",
            method: Method::GET,
            target: "http://api.twilio.com/2010-04-01/Accounts.json?FriendlyName=with%20space"
                .into(),
            auth: api_key_auth.clone(),
            host: None,
            body: None,
            expect: StatusCode::OK,
        },
        Step {
            title: "send an SMS as the new subaccount, with its own API key",
            method: Method::POST,
            target: format!("/2010-04-01/Accounts/{sub_sid}/Messages.json"),
            auth: format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{sub_secret}", subaccount.api_key_sid))
            ),
            host: None,
            body: Some((
                "application/x-www-form-urlencoded",
                "To=%2B14155550100&Body=Hello+from+a+subaccount".into(),
            )),
            expect: StatusCode::CREATED,
        },
        Step {
            title: "Auth Token credentials are refused by the proxy, never forwarded",
            method: Method::GET,
            target: format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
            auth: auth_token_auth,
            host: None,
            body: None,
            expect: StatusCode::UNAUTHORIZED,
        },
        Step {
            title: "a host that is not Twilio is refused: not an open proxy",
            method: Method::GET,
            target: "/example.com/index.html".into(),
            auth: api_key_auth,
            host: None,
            body: None,
            expect: StatusCode::FORBIDDEN,
        },
    ];

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut failures = 0;
    for (n, step) in steps.iter().enumerate() {
        let verified_before = standin.verified();
        let (status, body) = send(&client, proxy_addr, step).await?;
        let verified = standin.verified() > verified_before;
        let ok = if step.expect.is_success() {
            status.is_success() && verified
        } else {
            status == step.expect && !verified
        };
        failures += usize::from(!ok);
        println!(
            "{}. {}\n   {} {}",
            n + 5,
            step.title,
            step.method,
            step.target
        );
        println!(
            "   -> {status}  [{}]",
            if ok { "as expected" } else { "UNEXPECTED" }
        );
        if verified {
            if let Some(record) = standin.records().await.pop() {
                let query = if record.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", record.query)
                };
                println!(
                    "   stand-in verified the signature: {} https://{}{}{query}",
                    record.method, record.host, record.path
                );
            }
        }
        println!("   {}\n", summarize(status, &body));
    }

    println!(
        "{}. clean up the subaccount (what `pkcv-proxy subaccount cleanup` does)",
        steps.len() + 5
    );
    for line in session.cleanup_subaccount(&sub_sid, None).await? {
        println!("   {line}");
    }
    println!();
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "stand-in: {} request(s) verified, {} rejected. {}",
        standin.verified(),
        standin.rejected(),
        if failures == 0 {
            "Demo OK."
        } else {
            "Demo FAILED."
        }
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    step: &Step,
) -> anyhow::Result<(StatusCode, String)> {
    // Origin-form targets go to the proxy's address; absolute-form ones are sent as is over a
    // connection to the proxy, as an HTTP_PROXY client does.
    let uri = if step.target.starts_with("http://") {
        step.target.clone()
    } else {
        format!("http://{proxy}{}", step.target)
    };
    let mut builder = Request::builder()
        .method(step.method.clone())
        .uri(&uri)
        .header("authorization", &step.auth);
    if let Some(host) = step.host {
        builder = builder.header("host", host);
    }
    let body = match &step.body {
        Some((content_type, body)) => {
            builder = builder.header("content-type", *content_type);
            Full::new(Bytes::from(body.clone()))
        }
        None => Full::new(Bytes::new()),
    };
    let request = builder.body(body)?;
    let response = if step.target.starts_with("http://") {
        absolute_form(proxy, request).await?
    } else {
        let response = client
            .request(request)
            .await
            .context("request to the proxy")?;
        let status = response.status();
        (status, response.into_body().collect().await?.to_bytes())
    };
    Ok((
        response.0,
        String::from_utf8_lossy(&response.1).into_owned(),
    ))
}

/// Sends one absolute-form request over a fresh connection to the proxy.
async fn absolute_form(
    proxy: SocketAddr,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

fn summarize(status: StatusCode, body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) if json.get("verified").is_some() => "(echoed by the stand-in)".into(),
        Ok(json) if json.get("sid").is_some() => {
            let verb = if status == StatusCode::CREATED {
                "created"
            } else {
                "resource"
            };
            format!("{verb} {}", json["sid"].as_str().unwrap_or("?"))
        }
        Ok(json) if json.get("code").is_some() => format!(
            "error {}: {}",
            json["code"],
            json["message"].as_str().unwrap_or("?")
        ),
        Ok(json) => match json
            .as_object()
            .and_then(|o| o.values().find_map(|v| v.as_array()))
        {
            Some(records) => format!("a page of {} record(s)", records.len()),
            None => body.chars().take(200).collect(),
        },
        Err(_) => body.chars().take(200).collect(),
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pkcv-proxy-demo-{}", random_hex::<6>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
