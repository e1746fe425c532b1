//! Keys in AWS KMS, against moto's KMS (PyPI `moto[server]`; `.ci/run` installs it in
//! `target/keyservices-venv`, `MOTO_SERVER` names another): each test starts its own moto on a free
//! loopback port and runs the real binary with test credentials and instance metadata off,
//! so the test process never reads AWS settings of its own.
//!
//! The proxy reaches moto through a small HTTP front of the test's that forwards, drops
//! connections (KMS unreachable) or answers `ThrottlingException`, switched at will: moto
//! keeps its keys in memory, so an outage is made in front of it, not by stopping it.
//! moto's own `Verify` accepts anything: signatures are checked by the stand-in only.
//! (moto's PSS salt is the longest possible, not the hash's length as KMS's and RFC 7518's:
//! PS256 is covered by the unit tests of the request, `src/aws_kms/tests.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use pkcv_proxy::config::{PrivateKey, RawConfig};
use pkcv_standin::StandIn;
use serde_json::{json, Value};

use crate::support::{
    registry, run_pkcv, text, wait_until, write_config, ProxyProcess, TestAccount,
};

const NEEDS: &str = "needs moto_server: bash tests/keyservices/setup.sh (.ci/run runs it), or MOTO_SERVER=/path/to/moto_server";

/// moto's server: `MOTO_SERVER`, else `target/keyservices-venv/bin/moto_server`, else on `PATH`.
fn moto_program() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/keyservices-venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("moto_server"))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| panic!("{NEEDS}"))
}

/// A moto server of the test's own, killed when dropped.
struct Moto {
    child: std::process::Child,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    async fn start() -> Moto {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new(moto_program())
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("moto_server: {err} ({NEEDS})"));
        let moto = Moto {
            child,
            addr,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let up = wait_until(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "moto_server did not listen on {addr} within 30 s");
        moto
    }

    /// One KMS call with moto's JSON protocol (moto checks no signature).
    async fn kms(&self, operation: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("http://{}/", self.addr))
            .header("x-amz-target", format!("TrentService.{operation}"))
            .header("content-type", "application/x-amz-json-1.1")
            // moto reads the region from the credential scope; it checks no signature.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/kms/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let json: Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "{operation}: {status} {json}");
        json
    }

    /// Creates a signing key of `spec` named `alias`; its public key as PEM.
    async fn create_key(&self, spec: &str, alias: &str) -> Vec<u8> {
        let created = self
            .kms(
                "CreateKey",
                json!({ "KeySpec": spec, "KeyUsage": "SIGN_VERIFY" }),
            )
            .await;
        let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
        self.kms(
            "CreateAlias",
            json!({ "AliasName": alias, "TargetKeyId": key_id }),
        )
        .await;
        let public = self.kms("GetPublicKey", json!({ "KeyId": key_id })).await;
        let der = STANDARD
            .decode(public["PublicKey"].as_str().unwrap())
            .unwrap();
        pem::encode(&pem::Pem::new("PUBLIC KEY", der)).into_bytes()
    }
}

const FORWARD: u8 = 0;
const DOWN: u8 = 1;
const THROTTLE: u8 = 2;
const DENY: u8 = 3;

/// The HTTP front between the proxy and moto: forwards, drops every connection, or answers
/// `Sign` with a `ThrottlingException` or an `AccessDeniedException` (moto enforces no IAM).
struct Front {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    async fn start(moto: SocketAddr) -> Front {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let switch = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, mode) = (client.clone(), switch.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(client.clone(), moto, mode.load(Ordering::SeqCst), request)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Front { addr, mode, task }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn forward(
    client: reqwest::Client,
    moto: SocketAddr,
    mode: u8,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    if mode == DOWN {
        // An error closes the connection unanswered: KMS unreachable.
        return Err(std::io::Error::other("down"));
    }
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if matches!(mode, THROTTLE | DENY) && target == "TrentService.Sign" {
        let body = if mode == THROTTLE {
            json!({ "__type": "ThrottlingException", "message": "Rate exceeded" })
        } else {
            json!({ "__type": "AccessDeniedException", "message": "not authorized to perform kms:Sign" })
        };
        return Ok(hyper::Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap());
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut upstream = client.post(format!("http://{moto}{}", parts.uri.path()));
    for (name, value) in &parts.headers {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut response = hyper::Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    Ok(response.body(Full::new(bytes)).unwrap())
}

/// The proxy's environment: test credentials, a region, and no instance metadata, shared
/// config or profile of the machine's.
const AWS_ENV: [(&str, &str); 6] = [
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
];

/// Account A with its key in KMS as `key`, account B with its PEM file, both in front of
/// `standin`; KMS reached at `endpoint`.
fn proxy_config(standin: &StandIn, dir: &std::path::Path, endpoint: &str, key: &str) -> RawConfig {
    let mut raw = RawConfig::default();
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file).unwrap();
    raw.upstream.route_all_to(standin.addr(), ca_file);
    raw.server.shutdown_grace_secs = 1;
    raw.aws_kms.endpoint_url = Some(endpoint.to_owned());
    raw.aws_kms.sign_timeout_ms = 1_500;
    let mut a = TestAccount::a().config();
    a.private_key = PrivateKey::AwsKms(key.to_owned());
    raw.accounts = vec![a, TestAccount::b().config()];
    raw
}

/// A stand-in that knows account A by the KMS key's public half, and account B.
async fn standin_for(kms_public_pem: &[u8]) -> StandIn {
    let a = TestAccount::a();
    let mut registry = registry(&[TestAccount::b()]);
    registry
        .add_public_key_pem(&a.credential_sid, &a.account_sid, kms_public_pem)
        .unwrap();
    registry.add_api_key(&a.api_key_sid, &a.account_sid, &a.secret);
    StandIn::start(registry).await.unwrap()
}

fn messages(account: &TestAccount) -> String {
    format!("/2010-04-01/Accounts/{}/Messages.json", account.account_sid)
}

/// Status, Twilio-style error code and `Retry-After` of one request through the proxy.
async fn send(proxy: &ProxyProcess, account: &TestAccount) -> (u16, Option<u64>, Option<String>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}{}", proxy.listen, messages(account)))
        .header("authorization", account.basic_auth())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_u64(), retry_after)
}

#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn rs256_tokens_signed_in_kms_verify_at_the_stand_in() {
    let moto = Moto::start().await;
    let public = moto.create_key("RSA_2048", "alias/pkcv-a").await;
    let front = Front::start(moto.addr).await;
    let standin = standin_for(&public).await;
    let dir = tempfile::tempdir().unwrap();
    let raw = proxy_config(&standin, dir.path(), &front.url(), "alias/pkcv-a");

    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &AWS_ENV).await;
    for _ in 0..3 {
        assert_eq!(send(&proxy, &TestAccount::a()).await.0, 200);
    }
    assert_eq!(send(&proxy, &TestAccount::b()).await.0, 200);
    assert_eq!(standin.verified(), 4, "the stand-in verified every token");
    assert_eq!(standin.rejected(), 0);
    let metric = r#"pkcv_proxy_sign_duration_seconds_count{backend="aws-kms"}"#;
    assert_eq!(proxy.metric(metric).await, Some(3.0));
    let log = proxy.log();
    assert!(
        !log.contains("AWS_SECRET") && !log.contains("test:test"),
        "{log}"
    );
}

#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn keys_twilio_refuses_are_clear_load_errors_naming_the_key() {
    let moto = Moto::start().await;
    let public = moto.create_key("RSA_2048", "alias/good").await;
    moto.create_key("RSA_4096", "alias/big").await;
    moto.create_key("ECC_NIST_P256", "alias/ec").await;
    let standin = standin_for(&public).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", moto.addr);

    let check = |key: &str| {
        let raw = proxy_config(&standin, dir.path(), &endpoint, key);
        let config = write_config(dir.path(), &toml::to_string(&raw).unwrap());
        async move {
            let output = run_pkcv(&["check-config"], Some(&config), &AWS_ENV).await;
            (output.status.success(), text(&output))
        }
    };
    let (ok, shown) = check("alias/good").await;
    assert!(ok, "{shown}");
    assert!(shown.contains(r#""backend": "aws-kms""#), "{shown}");
    let cases = [
        (
            "alias/big",
            "aws-kms:alias/big",
            "is a RSA_4096 key; Twilio takes RSA-2048 keys only",
        ),
        (
            "alias/ec",
            "aws-kms:alias/ec",
            "is a ECC_NIST_P256 key; Twilio takes RSA-2048 keys only",
        ),
        ("alias/absent", "aws-kms:alias/absent", "NotFoundException"),
    ];
    for (key, named, expected) in cases {
        let (ok, shown) = check(key).await;
        assert!(
            !ok && shown.contains(named) && shown.contains(expected),
            "{key}: expected {expected:?}, got: {shown}"
        );
    }
}

#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn kms_out_of_reach_fails_its_account_only_and_recovers_without_a_restart() {
    let moto = Moto::start().await;
    let public = moto.create_key("RSA_2048", "alias/pkcv-a").await;
    let front = Front::start(moto.addr).await;
    let standin = standin_for(&public).await;
    let dir = tempfile::tempdir().unwrap();
    let raw = proxy_config(&standin, dir.path(), &front.url(), "alias/pkcv-a");
    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &AWS_ENV).await;
    let (a, b) = (TestAccount::a(), TestAccount::b());
    assert_eq!(send(&proxy, &a).await.0, 200);

    front.set(DOWN);
    for _ in 0..2 {
        let (status, code, retry_after) = send(&proxy, &a).await;
        assert_eq!((status, code), (503, Some(79053)));
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    assert_eq!(
        send(&proxy, &b).await.0,
        200,
        "the PEM account keeps signing"
    );
    let (_, ready) = proxy.admin_get("/readyz").await;
    assert!(ready.contains(&a.account_sid), "{ready}");

    front.set(FORWARD);
    let back = wait_until(Duration::from_secs(10), || async {
        send(&proxy, &a).await.0 == 200
    })
    .await;
    assert!(
        back,
        "the KMS account did not sign again after KMS came back"
    );
}

#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn throttling_past_the_deadline_is_503_79055_with_retry_after() {
    let moto = Moto::start().await;
    let public = moto.create_key("RSA_2048", "alias/pkcv-a").await;
    let front = Front::start(moto.addr).await;
    let standin = standin_for(&public).await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = proxy_config(&standin, dir.path(), &front.url(), "alias/pkcv-a");
    raw.aws_kms.sign_timeout_ms = 300;
    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &AWS_ENV).await;
    let a = TestAccount::a();
    assert_eq!(send(&proxy, &a).await.0, 200);

    front.set(THROTTLE);
    let (status, code, retry_after) = send(&proxy, &a).await;
    assert_eq!((status, code), (503, Some(79055)));
    assert_eq!(retry_after.as_deref(), Some("1"));

    front.set(FORWARD);
    assert_eq!(send(&proxy, &a).await.0, 200, "signs again once KMS allows");

    // Access denied (the role lost kms:Sign): 503 79056 for that account only, no
    // Retry-After, the reason in /readyz and not in the client's answer.
    front.set(DENY);
    let (status, code, retry_after) = send(&proxy, &a).await;
    assert_eq!((status, code, retry_after), (503, Some(79056), None));
    assert_eq!(send(&proxy, &TestAccount::b()).await.0, 200);
    let (_, readyz) = proxy.admin_get("/readyz").await;
    assert!(readyz.contains("AccessDeniedException"), "{readyz}");
    front.set(FORWARD);
    assert_eq!(
        send(&proxy, &a).await.0,
        200,
        "signs again once access is back"
    );
}

#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn keygen_makes_the_kms_key_once_and_the_proxy_signs_with_it() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let probe = StandIn::start(registry(&[])).await.unwrap();
    let endpoint = format!("http://{}", moto.addr);
    let raw = proxy_config(&probe, dir.path(), &endpoint, "alias/made");
    let config = crate::support::write_config(dir.path(), &toml::to_string(&raw).unwrap());
    let keygen = |out: &'static str| {
        let out = dir.path().join(out);
        let config = config.clone();
        async move {
            let args = [
                "keygen",
                "--aws-kms",
                "alias/made",
                "--out-dir",
                out.to_str().unwrap(),
            ];
            let output = crate::support::run_pkcv(&args, Some(&config), &AWS_ENV).await;
            let shown = crate::support::text(&output);
            assert!(output.status.success(), "{shown}");
            (std::fs::read(out.join("made-public.pem")).unwrap(), shown)
        }
    };
    let (public, shown) = keygen("one").await;
    assert!(shown.contains("created now"), "{shown}");
    assert!(
        shown.contains("private_key = \"aws-kms:alias/made\""),
        "{shown}"
    );
    // Again: the alias's key is used, never replaced.
    let (again, shown) = keygen("two").await;
    assert_eq!(again, public);
    assert!(shown.contains("existed"), "{shown}");
    let listed = moto.kms("ListKeys", json!({})).await;
    assert_eq!(listed["Keys"].as_array().unwrap().len(), 1, "{listed}");

    let standin = standin_for(&public).await;
    let raw = proxy_config(&standin, dir.path(), &endpoint, "alias/made");
    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &AWS_ENV).await;
    assert_eq!(send(&proxy, &TestAccount::a()).await.0, 200);
    assert_eq!(standin.verified(), 1);
}

/// `subaccount create --aws-kms` and `keys rotate --aws-kms` with a running proxy: the keys
/// are made in KMS (no private key file anywhere) and the proxy picks both up.
#[tokio::test]
#[ignore = "needs moto (bash tests/keyservices/setup.sh)"]
async fn the_subaccount_workflow_keeps_its_keys_in_kms_and_a_key_gone_is_refused() {
    use crate::hsm::{private_key_files, succeeded};
    let moto = Moto::start().await;
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    let mut raw = proxy_config(
        &standin,
        dir.path(),
        &format!("http://{}", moto.addr),
        "unused",
    );
    raw.accounts = vec![TestAccount::a().config()];
    raw.accounts_dir = Some(accounts.clone());
    raw.server.reload_interval_ms = 200;
    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &AWS_ENV).await;
    let config = dir.path().join("pkcv-proxy.toml");
    let main = TestAccount::a();
    let mut env = AWS_ENV.to_vec();
    env.extend([
        ("TWILIO_ACCOUNT_SID", main.account_sid.as_str()),
        ("TWILIO_MAIN_KEY", main.api_key_sid.as_str()),
        ("TWILIO_MAIN_SECRET", main.secret.as_str()),
    ]);
    let args = [
        "subaccount",
        "create",
        "--friendly-name",
        "kms",
        "--aws-kms",
        "alias/sub-1",
        "--json",
    ];
    let json = succeeded(&crate::support::run_pkcv(&args, Some(&config), &env).await);
    assert_eq!(json["private_key"], "aws-kms:alias/sub-1");
    let account = json["account_sid"].as_str().unwrap().to_owned();
    let api_key = json["api_key_sid"].as_str().unwrap();
    let secret = std::fs::read_to_string(json["secret_file"].as_str().unwrap()).unwrap();
    assert_eq!(
        private_key_files(dir.path()),
        0,
        "a private key was written"
    );
    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let as_sub = crate::support::basic(api_key, &secret);
    let signed = wait_until(Duration::from_secs(15), || async {
        proxy.get(&path, &as_sub).await == 200
    })
    .await;
    assert!(signed, "the running proxy never signed with the KMS key");

    let args = [
        "keys",
        "rotate",
        "--account",
        &account,
        "--aws-kms",
        "alias/sub-2",
        "--grace-secs",
        "0",
    ];
    let rotation = succeeded(&crate::support::run_pkcv(&args, Some(&config), &env).await);
    assert_eq!(rotation["private_key"], "aws-kms:alias/sub-2");
    let verified = standin.verified();
    assert_eq!(proxy.get(&path, &as_sub).await, 200);
    assert_eq!(standin.verified(), verified + 1);
    assert_eq!(
        private_key_files(dir.path()),
        0,
        "a private key was written"
    );

    assert_eq!(standin.rejected(), 0);
}
