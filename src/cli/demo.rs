//! `pkcv-proxy demo`: the whole path on loopback, with no Twilio account and no network,
//! including the subaccount workflow under PKCV.
//!
//! It starts the verifying Twilio stand-in, makes a throwaway key pair and API key, registers
//! them with the stand-in as a user would with Twilio, starts the proxy pointed at the
//! stand-in (`connect_to` + `extra_ca_file`, exactly the settings a private link would use),
//! and sends plain API-key requests through it in each routing form, plus two the proxy must
//! refuse. Exits non-zero if any outcome differs from what is expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pkcv_proxy::app::Running;
use pkcv_proxy::config::{AccountConfig, PrivateKey, RawConfig};
use pkcv_proxy::keys::reload::LoadedStatus;
use pkcv_proxy::workflow::{CreateOptions, MainKey, Session};
use pkcv_proxy::{keygen, App, Config};
use pkcv_standin::{random_hex, random_sid};
use pkcv_standin::{Registry, StandIn};

use super::Outcome;

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

/// The main account the demo plays: what a user registers with Twilio by hand.
struct MainAccount {
    account_sid: String,
    api_key_sid: String,
    credential_sid: String,
    secret: String,
}

/// Everything the demo runs, on loopback.
struct Demo {
    dir: PathBuf,
    main: MainAccount,
    standin: StandIn,
    config: Config,
    proxy: Running,
}

/// A subaccount the demo brought up, and the secret of its API key (kept in memory).
struct DemoSubaccount {
    account_sid: String,
    api_key_sid: String,
    secret: String,
}

pub(crate) async fn run() -> anyhow::Result<Outcome> {
    out!("pkcv-proxy demo — everything runs on 127.0.0.1; nothing leaves this machine.\n");
    let demo = Demo::start().await?;
    let session = Session::new(
        &demo.config,
        MainKey::new(
            &demo.main.account_sid,
            &demo.main.api_key_sid,
            &demo.main.secret,
        )?,
        // Progress lines: a reader that went away is noticed at the next `out!`.
        |line| {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout().lock(), "   {line}");
        },
    )?;
    let subaccount = demo.create_subaccount(&session).await?;
    let steps = demo.steps(&subaccount);
    let failures = demo.run_steps(&steps).await?;
    out!(
        "{}. clean up the subaccount (what `pkcv-proxy subaccount cleanup` does)",
        steps.len() + 5
    );
    for line in session
        .cleanup_subaccount(&subaccount.account_sid, None)
        .await?
    {
        out!("   {line}");
    }
    out!();
    let doctored = demo.doctor(steps.len() + 6).await?;
    demo.finish(failures + usize::from(!doctored)).await
}

impl Demo {
    /// Steps 1–3: a key pair, the stand-in that knows it, and the proxy in front of it.
    async fn start() -> anyhow::Result<Demo> {
        let dir = tempfile_dir()?;
        let main = MainAccount {
            account_sid: random_sid("AC"),
            api_key_sid: random_sid("SK"),
            credential_sid: random_sid("CR"),
            secret: random_hex::<16>(),
        };
        out!("1. generate a throwaway RSA-2048 key pair");
        let key = keygen::generate(2048)?;
        let key_file = dir.join("demo-private.pem");
        keygen::write_new_private(&key_file, &key.private_pem)?;
        out!("   private key {} (0600)", key_file.display());

        out!(
            "2. start the Twilio stand-in and register the public key {} and API key {} for {}",
            main.credential_sid,
            main.api_key_sid,
            main.account_sid
        );
        let mut registry = Registry::default();
        registry.add_public_key_pem(
            &main.credential_sid,
            &main.account_sid,
            key.public_pem.as_bytes(),
        )?;
        registry.add_api_key(&main.api_key_sid, &main.account_sid, &main.secret);
        let standin = StandIn::start(registry).await?;
        out!(
            "   stand-in on https://{} (trusting its CA via extra_ca_file)",
            standin.addr()
        );

        out!("3. start pkcv-proxy");
        let config = proxy_config(&dir, &main, key_file, &standin)?;
        let proxy = App::build(config.clone(), None)?.bind().await?.spawn();
        out!(
            "   proxy on http://{}, watching {}",
            proxy.addr(),
            dir.join("accounts").display()
        );
        Ok(Demo {
            dir,
            main,
            standin,
            config,
            proxy,
        })
    }

    /// Step 4: the subaccount workflow, then waits until the running proxy signs for it.
    async fn create_subaccount(&self, session: &Session) -> anyhow::Result<DemoSubaccount> {
        out!("4. bring up a subaccount under PKCV with the Main API key (what `pkcv-proxy subaccount create` does)");
        let subaccount = session
            .create_subaccount(&CreateOptions {
                friendly_name: "pkcv-proxy demo subaccount".into(),
                key_dir: self.dir.join("keys"),
                reuse_main_key: false,
                custody: None,
                secret_file: None,
                // Kept in memory for the requests below; never printed.
                secret_to_stdout: true,
            })
            .await?;
        out!(
            "   registered in {}; the running proxy picks it up",
            subaccount.account_file.display()
        );
        self.wait_until_signing_for(&subaccount.account_sid).await?;
        out!();
        Ok(DemoSubaccount {
            account_sid: subaccount.account_sid,
            api_key_sid: subaccount.api_key_sid,
            secret: subaccount.secret.unwrap_or_default(),
        })
    }

    /// Waits (at most 10 s) until the running proxy reports signing for `account_sid`.
    async fn wait_until_signing_for(&self, account_sid: &str) -> anyhow::Result<()> {
        let accounts_dir = self.dir.join("accounts");
        for _ in 0..200 {
            if LoadedStatus::read(&accounts_dir)
                .is_some_and(|s| s.accounts.contains_key(account_sid))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the proxy did not pick up {account_sid} within 10 s")
    }

    /// The requests of steps 5 on: each routing form, the subaccount, and two refusals.
    fn steps(&self, subaccount: &DemoSubaccount) -> Vec<Step> {
        let account_sid = &self.main.account_sid;
        let api_key_auth = basic(&self.main.api_key_sid, &self.main.secret);
        let form = |body: &str| Some(("application/x-www-form-urlencoded", body.to_owned()));
        let get = |title, target: String, auth: &str, host, expect| Step {
            title,
            method: Method::GET,
            target,
            auth: auth.to_owned(),
            host,
            body: None,
            expect,
        };
        vec![
            // `%2B`, as real clients send a `+`: a bare `+` in a query is a space.
            get("list messages (base URL = proxy, default host api.twilio.com)",
                format!("/2010-04-01/Accounts/{account_sid}/Messages.json?PageSize=20&To=%2B14155550100"),
                &api_key_auth, None, StatusCode::OK),
            Step {
                title: "send an SMS (form body)",
                method: Method::POST,
                target: format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
                auth: api_key_auth.clone(),
                host: None,
                body: form("To=%2B14155550100&From=%2B14155550199&Body=Hello+from+pkcv-proxy"),
                expect: StatusCode::OK,
            },
            get("list public keys on accounts.twilio.com (host as first path segment)",
                "/accounts.twilio.com/v1/Credentials/PublicKeys?PageSize=20".into(),
                &api_key_auth, None, StatusCode::OK),
            get("fetch the account as a sidecar client (Host: api.twilio.com mapped to loopback)",
                format!("/2010-04-01/Accounts/{account_sid}.json"),
                &api_key_auth, Some("api.twilio.com"), StatusCode::OK),
            get("list accounts, absolute-form as an HTTP_PROXY client sends it",
                "http://api.twilio.com/2010-04-01/Accounts.json?FriendlyName=with%20space".into(),
                &api_key_auth, None, StatusCode::OK),
            Step {
                title: "send an SMS as the new subaccount, with its own API key",
                method: Method::POST,
                target: format!("/2010-04-01/Accounts/{}/Messages.json", subaccount.account_sid),
                auth: basic(&subaccount.api_key_sid, &subaccount.secret),
                host: None,
                body: form("To=%2B14155550100&Body=Hello+from+a+subaccount"),
                expect: StatusCode::CREATED,
            },
            get("Auth Token credentials are refused by the proxy, never forwarded",
                format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
                &basic(account_sid, "an-auth-token"), None, StatusCode::UNAUTHORIZED),
            get("a host that is not Twilio is refused: not an open proxy",
                "/example.com/index.html".into(),
                &api_key_auth, None, StatusCode::FORBIDDEN),
        ]
    }

    /// Sends each step through the proxy and reports what the stand-in verified; returns
    /// how many turned out other than expected.
    async fn run_steps(&self, steps: &[Step]) -> anyhow::Result<usize> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut failures = 0;
        for (n, step) in steps.iter().enumerate() {
            let verified_before = self.standin.verified();
            let (status, body) = send(&client, self.proxy.addr(), step).await?;
            let verified = self.standin.verified() > verified_before;
            let ok = if step.expect.is_success() {
                status.is_success() && verified
            } else {
                status == step.expect && !verified
            };
            failures += usize::from(!ok);
            out!(
                "{}. {}\n   {} {}",
                n + 5,
                step.title,
                step.method,
                step.target
            );
            let outcome = if ok { "as expected" } else { "UNEXPECTED" };
            out!("   -> {status}  [{outcome}]");
            if verified {
                self.print_verified().await?;
            }
            out!("   {}\n", summarize(status, &body));
        }
        Ok(failures)
    }

    /// What the stand-in received for the last request, as Twilio would see it.
    async fn print_verified(&self) -> anyhow::Result<()> {
        if let Some(record) = self.standin.records().await.pop() {
            let query = if record.query.is_empty() {
                String::new()
            } else {
                format!("?{}", record.query)
            };
            out!(
                "   stand-in verified the signature: {} https://{}{}{query}",
                record.method,
                record.host,
                record.path
            );
        }
        Ok(())
    }

    /// The last step: `pkcv-proxy doctor` on the demo's setup, as after any real install.
    /// True when every check passed.
    async fn doctor(&self, number: usize) -> anyhow::Result<bool> {
        out!(
            "{number}. check the whole setup against the stand-in (what `pkcv-proxy doctor` does)"
        );
        let doctor = pkcv_proxy::doctor::Doctor {
            config: &self.config,
            main: Some(pkcv_proxy::doctor::MainCredentials::new(
                &self.main.account_sid,
                &self.main.api_key_sid,
                &self.main.secret,
            )),
            only: None,
        };
        let checks = doctor.run().await;
        for check in &checks {
            super::doctor::print_human(check, "   ")?;
        }
        out!();
        Ok(pkcv_proxy::doctor::verdict(&checks) == pkcv_proxy::doctor::Verdict::AllPassed)
    }

    /// Stops everything, removes the throwaway files and says what to do next.
    async fn finish(self, failures: usize) -> anyhow::Result<Outcome> {
        self.proxy.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        let verdict = if failures == 0 {
            "Demo OK."
        } else {
            "Demo FAILED."
        };
        out!(
            "stand-in: {} request(s) verified, {} rejected. {verdict}",
            self.standin.verified(),
            self.standin.rejected(),
        );
        if failures != 0 {
            return Ok(Outcome::Failed);
        }
        // Every path here is one .gitignore covers: what these steps write includes secrets.
        out!(
            "\nNext, with your own Twilio account (README, \"Running it for real\"):\n\
             1. pkcv-proxy keygen --out-dir keys    # upload keys/pkcv-public.pem to Twilio\n\
             2. cp config/pkcv-proxy.example.toml config/pkcv-proxy.toml\n   \
                # set account_sid, credential_sid and private_key_file\n\
             3. pkcv-proxy ca init -c config/pkcv-proxy.toml --out-dir ca\n   \
                # for HTTPS_PROXY clients (the SDKs): then enable [intercept] with these files\n\
             4. pkcv-proxy check-config -c config/pkcv-proxy.toml\n\
             5. pkcv-proxy doctor -c config/pkcv-proxy.toml\n   \
                # with TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET set\n\
             6. pkcv-proxy serve -c config/pkcv-proxy.toml\n\
             7. point an SDK at it: HTTPS_PROXY=http://127.0.0.1:8080 (with [intercept]),\n   \
                or the proxy as its base URL: http://127.0.0.1:8080/api.twilio.com/..."
        );
        Ok(Outcome::Success)
    }
}

/// The proxy's configuration for the demo: the main account, an `accounts_dir` the
/// workflow registers the subaccount in, and every Twilio host dialled at the stand-in.
fn proxy_config(
    dir: &Path,
    main: &MainAccount,
    key_file: PathBuf,
    standin: &StandIn,
) -> anyhow::Result<Config> {
    let mut raw = RawConfig::default();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.reload_interval_ms = 200;
    raw.server.shutdown_grace_secs = 5;
    raw.server.admin_listen = "127.0.0.1:0".into();
    raw.accounts_dir = Some(dir.join("accounts"));
    std::fs::create_dir_all(dir.join("accounts"))?;
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file)?;
    raw.upstream.route_all_to(standin.addr(), ca_file);
    raw.accounts.push(AccountConfig {
        account_sid: main.account_sid.clone(),
        credential_sid: main.credential_sid.clone(),
        private_key: PrivateKey::File(key_file),
        api_key_sids: vec![main.api_key_sid.clone()],
    });
    Ok(Config::from_raw(raw)?)
}

/// HTTP Basic credentials.
fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{secret}")))
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

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pkcv-proxy-demo-{}", random_hex::<6>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
