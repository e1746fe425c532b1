//! More of Vault's transit engine against OpenBao (the helpers of [`crate::vault`]):
//! Kubernetes auth for real, OpenBao calling a fake Kubernetes API's TokenReview on
//! loopback, its token renewed by logging in again before its lease ends; the
//! least-privilege policy (`update` on `transit/sign/NAME`, `read` on `transit/keys/NAME`)
//! proven enough, and less refused at load; `subaccount create --vault-transit` and
//! `keys rotate --vault-transit` picked up by a running proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use pkcv_proxy::config::RawConfig;
use pkcv_standin::StandIn;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::hsm::{private_key_files, succeeded};
use crate::support::{registry, run_pkcv, text, wait_until, ProxyProcess, TestAccount};
use crate::vault::{get, proxy_config, public_key, standin_with, write_token, OpenBao, ROOT};

/// The policy the docs recommend, for the transit key `name`: nothing more.
fn sign_policy(name: &str) -> String {
    format!(
        "path \"transit/sign/{name}\" {{\n  capabilities = [\"update\"]\n}}\n\
         path \"transit/keys/{name}\" {{\n  capabilities = [\"read\"]\n}}\n"
    )
}

/// Writes the ACL policy `name` as root.
async fn put_policy(bao: &OpenBao, name: &str, policy: &str) {
    let path = format!("/v1/sys/policies/acl/{name}");
    let (status, body) = bao
        .call(Method::PUT, &path, Some(json!({ "policy": policy })))
        .await;
    assert!(status < 300, "policy {name}: {status} {body}");
}

/// A token with these policies only (not even `default`).
async fn token_with(bao: &OpenBao, policies: &[&str]) -> String {
    let (status, body) = bao
        .call(
            Method::POST,
            "/v1/auth/token/create",
            Some(json!({ "policies": policies, "no_default_policy": true, "ttl": "1h" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

const NAMESPACE: &str = "pkcv";
const SERVICE_ACCOUNT: &str = "pkcv-proxy";
const SERVICE_ACCOUNT_UID: &str = "6f1c2a3e-0d4b-4e59-9a57-pkcv-proxy-sa";
/// The bearer OpenBao shows the Kubernetes API (`token_reviewer_jwt`).
const REVIEWER: &str = "reviewer-jwt";
const ROLE: &str = "pkcv-proxy";

/// A service-account JWT as Kubernetes issues them (legacy claims). Its signature is not a
/// signature: with no `pem_keys` configured OpenBao does not verify it, the TokenReview
/// does.
fn service_account_jwt() -> String {
    let part = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        "kubernetes.io/serviceaccount/namespace": NAMESPACE,
        "kubernetes.io/serviceaccount/service-account.name": SERVICE_ACCOUNT,
        "kubernetes.io/serviceaccount/service-account.uid": SERVICE_ACCOUNT_UID,
    });
    format!(
        "{}.{}.{}",
        part(json!({ "alg": "RS256", "typ": "JWT" })),
        part(claims),
        URL_SAFE_NO_PAD.encode(b"not checked by OpenBao without pem_keys")
    )
}

/// The Kubernetes API as OpenBao's kubernetes auth uses it: `POST
/// /apis/authentication.k8s.io/v1/tokenreviews`, authenticated when the bearer is the
/// reviewer's and the token under review is `jwt`. Counts the reviews it authenticated.
struct FakeKubernetes {
    addr: SocketAddr,
    reviews: Arc<AtomicUsize>,
}

impl FakeKubernetes {
    async fn start(jwt: String) -> FakeKubernetes {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reviews = Arc::new(AtomicUsize::new(0));
        let counted = reviews.clone();
        let jwt = Arc::new(jwt);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve_reviews(client, jwt.clone(), counted.clone()));
            }
        });
        FakeKubernetes { addr, reviews }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }
}

/// One connection's requests (kept alive), each answered as the Kubernetes API would.
async fn serve_reviews(mut client: TcpStream, jwt: Arc<String>, reviews: Arc<AtomicUsize>) {
    while let Some((head, body)) = read_request(&mut client).await {
        let lower = head.to_ascii_lowercase();
        let bearer_ok = lower.contains(&format!("authorization: bearer {REVIEWER}\r\n"));
        let (status, answer) =
            if head.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews ") && bearer_ok {
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let authenticated = review["spec"]["token"] == jwt.as_str();
                if authenticated {
                    reviews.fetch_add(1, Ordering::SeqCst);
                }
                ("201 Created", token_review(authenticated))
            } else {
                let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Unauthorized", "code": 401 });
                ("401 Unauthorized", status)
            };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A TokenReview's answer for the service account.
fn token_review(authenticated: bool) -> serde_json::Value {
    let mut status = json!({ "authenticated": authenticated });
    if authenticated {
        status["user"] = json!({
            "username": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
            "uid": SERVICE_ACCOUNT_UID,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NAMESPACE}"),
                "system:authenticated"],
        });
    } else {
        status["error"] = json!("invalid bearer token");
    }
    json!({ "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status })
}

/// One HTTP/1.1 request: its head and its body (by `content-length`); `None` at the end of
/// the connection.
async fn read_request(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || client.read(&mut byte).await.ok()? != 1 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0u8; length.min(1 << 20)];
    client.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

/// Kubernetes auth at `auth/kubernetes`, reviewing tokens with `kubernetes`.
async fn enable_kubernetes_auth(bao: &OpenBao, kubernetes: &FakeKubernetes, ca_pem: &str) {
    let (status, body) = bao
        .call(
            Method::POST,
            "/v1/sys/auth/kubernetes",
            Some(json!({ "type": "kubernetes" })),
        )
        .await;
    assert!(status < 300, "enabling kubernetes auth: {status} {body}");
    // Not in a pod: no local CA or JWT; a CA is still required, the host being plain HTTP.
    let config = json!({
        "kubernetes_host": kubernetes.url(),
        "kubernetes_ca_cert": ca_pem,
        "disable_local_ca_jwt": true,
        "token_reviewer_jwt": REVIEWER,
    });
    let (status, body) = bao
        .call(Method::POST, "/v1/auth/kubernetes/config", Some(config))
        .await;
    assert!(status < 300, "configuring kubernetes auth: {status} {body}");
}

/// How long the role's tokens last: short, so the test outlives a few, and shorter than
/// 10 s, which the proxy once waited at least before logging in again.
const TOKEN_TTL: Duration = Duration::from_secs(6);

/// The role [`ROLE`]: the service account in its namespace, `policy` only, tokens of
/// [`TOKEN_TTL`].
async fn kubernetes_role(bao: &OpenBao, policy: &str) {
    let role = json!({
        "bound_service_account_names": [SERVICE_ACCOUNT],
        "bound_service_account_namespaces": [NAMESPACE],
        "token_policies": [policy],
        "token_no_default_policy": true,
        "token_ttl": format!("{}s", TOKEN_TTL.as_secs()),
        "token_max_ttl": "60s",
    });
    let path = format!("/v1/auth/kubernetes/role/{ROLE}");
    let (status, body) = bao.call(Method::POST, &path, Some(role)).await;
    assert!(status < 300, "role: {status} {body}");
}

/// Whether `log` holds anything shaped like an OpenBao token (`s.` and 24 characters).
fn has_vault_token(log: &str) -> bool {
    log.match_indices("s.").any(|(at, _)| {
        let rest = &log[at + 2..];
        rest.len() >= 24 && rest[..24].bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn kubernetes_auth_logs_in_again_before_the_lease_ends_and_a_deleted_role_refuses() {
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    put_policy(&bao, "pkcv-sign", &sign_policy("orders")).await;
    let jwt = service_account_jwt();
    let kubernetes = FakeKubernetes::start(jwt.clone()).await;
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let dir = tempfile::tempdir().unwrap();
    standin.write_ca(&dir.path().join("k8s-ca.pem")).unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("k8s-ca.pem")).unwrap();
    enable_kubernetes_auth(&bao, &kubernetes, &ca_pem).await;
    kubernetes_role(&bao, "pkcv-sign").await;

    let mut raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
    raw.vault.token_file = None;
    raw.vault.kubernetes_role = Some(ROLE.into());
    raw.vault.kubernetes_token_file = dir.path().join("sa-token");
    // As Kubernetes mounts it: mode 0644, a newline at the end.
    std::fs::write(&raw.vault.kubernetes_token_file, format!("{jwt}\n")).unwrap();
    let proxy = ProxyProcess::start_with_env(&raw, dir.path(), &[("RUST_LOG", "debug")]).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);
    }
    assert!(kubernetes.reviews() >= 1, "OpenBao never asked Kubernetes");

    // Past two of the tokens' TTLs, a request every half second: none fails, the proxy
    // having logged in again before each lease ended (at two thirds of it).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20)
        && (started.elapsed() < TOKEN_TTL * 2 + Duration::from_secs(1) || kubernetes.reviews() < 3)
    {
        let (status, code, _) = get(&proxy, &TestAccount::a()).await;
        assert_eq!((status, code), (200, 0), "at {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(kubernetes.reviews() >= 3, "{} logins", kubernetes.reviews());
    assert_eq!(standin.rejected(), 0);

    deleted_role_refuses(&bao, &proxy).await;
    let log = proxy.log();
    assert!(!log.contains(&jwt), "the service-account token was logged");
    assert!(!log.contains(REVIEWER));
    assert!(!has_vault_token(&log), "a Vault token was logged:\n{log}");
}

/// The role deleted: at its next login (within two thirds of a TTL) the account gets 503
/// 79056, naming the login, the other account unaffected.
async fn deleted_role_refuses(bao: &OpenBao, proxy: &ProxyProcess) {
    let path = format!("/v1/auth/kubernetes/role/{ROLE}");
    let (status, body) = bao.call(Method::DELETE, &path, None).await;
    assert!(status < 300, "{status} {body}");
    let refused = wait_until(Duration::from_secs(15), || async {
        get(proxy, &TestAccount::a()).await.0 != 200
    })
    .await;
    assert!(refused, "the proxy kept signing after its role was deleted");
    let (status, code, _) = get(proxy, &TestAccount::a()).await;
    assert_eq!((status, code), (503, 79056));
    assert_eq!(
        get(proxy, &TestAccount::b()).await.0,
        200,
        "B is unaffected"
    );
    let (_, readyz) = proxy.admin_get("/readyz").await;
    assert!(
        readyz.contains("Kubernetes login") && readyz.contains("invalid role name"),
        "{readyz}"
    );
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn the_least_privilege_policy_is_enough_and_less_is_refused_at_load() {
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    put_policy(&bao, "pkcv-sign", &sign_policy("orders")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_with(&bao, &["pkcv-sign"]).await;
    write_token(dir.path(), &token);
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    for algorithm in [
        pkcv_proxy::signing_key::Algorithm::Rs256,
        pkcv_proxy::signing_key::Algorithm::Ps256,
    ] {
        let mut raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
        raw.signing.algorithm = algorithm;
        let proxy = ProxyProcess::start(&raw, dir.path()).await;
        assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200, "{algorithm:?}");
        assert!(!proxy.log().contains(&token));
    }
    assert_eq!((standin.verified(), standin.rejected()), (2, 0));

    // Without `read` on the key, or without `update` on its signing: refused at load,
    // naming the key and why.
    let no_read = "path \"transit/sign/orders\" {\n  capabilities = [\"update\"]\n}\n";
    let no_sign = "path \"transit/keys/orders\" {\n  capabilities = [\"read\"]\n}\n";
    for (name, policy) in [("no-read", no_read), ("no-sign", no_sign)] {
        put_policy(&bao, name, policy).await;
        let token = token_with(&bao, &[name]).await;
        write_token(dir.path(), &token);
        let raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
        let config = crate::support::write_config(dir.path(), &toml::to_string(&raw).unwrap());
        let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
        let shown = text(&output);
        assert!(!output.status.success(), "{name}: {shown}");
        assert!(
            shown.contains("vault-transit:orders") && shown.contains("permission denied"),
            "{name}: {shown}"
        );
        assert!(!shown.contains(&token), "{shown}");
    }
}

/// A proxy config in front of `standin` with the main account A in its PEM file, `[vault]`
/// at `bao` as root, and `accounts_dir` watched.
fn workflow_config(standin: &StandIn, dir: &Path, bao: &OpenBao) -> RawConfig {
    let mut raw = proxy_config(standin, dir, &bao.url(), "unused");
    raw.accounts = vec![TestAccount::a().config()];
    raw.accounts_dir = Some(dir.join("accounts"));
    raw.server.reload_interval_ms = 200;
    write_token(dir, ROOT);
    raw
}

#[tokio::test]
#[ignore = "needs OpenBao (bash tests/keyservices/setup.sh)"]
async fn the_subaccount_workflow_keeps_its_keys_in_vault_transit() {
    let bao = OpenBao::start().await;
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    let raw = workflow_config(&standin, dir.path(), &bao);
    let proxy = ProxyProcess::start(&raw, dir.path()).await;
    let config = dir.path().join("pkcv-proxy.toml");
    let main = TestAccount::a();
    let env = [
        ("TWILIO_ACCOUNT_SID", main.account_sid.as_str()),
        ("TWILIO_MAIN_KEY", main.api_key_sid.as_str()),
        ("TWILIO_MAIN_SECRET", main.secret.as_str()),
    ];
    let args = [
        "subaccount",
        "create",
        "--friendly-name",
        "vault",
        "--vault-transit",
        "sub-1",
        "--json",
    ];
    let json = succeeded(&run_pkcv(&args, Some(&config), &env).await);
    assert_eq!(json["private_key"], "vault-transit:sub-1?version=1");
    let account = json["account_sid"].as_str().unwrap();
    let api_key = json["api_key_sid"].as_str().unwrap();
    let secret = std::fs::read_to_string(json["secret_file"].as_str().unwrap()).unwrap();
    let account_file = std::fs::read_to_string(accounts.join(format!("{account}.toml"))).unwrap();
    assert!(
        account_file.contains(r#"private_key = "vault-transit:sub-1?version=1""#),
        "{account_file}"
    );
    assert!(!account_file.contains("private_key_file"));
    assert_eq!(
        private_key_files(dir.path()),
        0,
        "a private key was written"
    );
    let (status, key) = bao.call(Method::GET, "/v1/transit/keys/sub-1", None).await;
    assert_eq!((status, &key["data"]["exportable"]), (200, &json!(false)));

    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let as_sub = crate::support::basic(api_key, &secret);
    let signed = wait_until(Duration::from_secs(10), || async {
        proxy.get(&path, &as_sub).await == 200
    })
    .await;
    assert!(
        signed,
        "the running proxy never signed with the transit key"
    );

    let old = json["credential_sid"].as_str().unwrap();
    rotated_in_vault(&proxy, &standin, (&config, &env), (account, old), &as_sub).await;
    let account_file = std::fs::read_to_string(accounts.join(format!("{account}.toml"))).unwrap();
    assert!(
        account_file.contains("vault-transit:sub-2?version=1"),
        "{account_file}"
    );
    assert_eq!(
        private_key_files(dir.path()),
        0,
        "a private key was written"
    );
}

/// `keys rotate --vault-transit sub-2`: the old credential deleted, the proxy signing with
/// the new transit key (the stand-in knows no other).
async fn rotated_in_vault(
    proxy: &ProxyProcess,
    standin: &StandIn,
    (config, env): (&Path, &[(&str, &str)]),
    (account, old): (&str, &str),
    as_sub: &str,
) {
    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let args = [
        "keys",
        "rotate",
        "--account",
        account,
        "--vault-transit",
        "sub-2",
        "--grace-secs",
        "0",
    ];
    let rotation = succeeded(&run_pkcv(&args, Some(config), env).await);
    assert_eq!(rotation["private_key"], "vault-transit:sub-2?version=1");
    let registry = standin.registry().await;
    assert!(
        !registry.credentials.contains_key(old),
        "the old credential was not deleted"
    );
    let verified = standin.verified();
    assert_eq!(proxy.get(&path, as_sub).await, 200);
    assert_eq!(standin.verified(), verified + 1, "the stand-in verified it");
    assert_eq!(standin.rejected(), 0);
}
