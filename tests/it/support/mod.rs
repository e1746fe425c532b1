//! Shared test support: the SDK vectors, test accounts, and a harness that runs the proxy in
//! front of the verifying Twilio stand-in on loopback. Every integration test uses this one
//! copy.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pkcv_proxy::app::Running;
use pkcv_proxy::config::{AccountConfig, RawConfig};
use pkcv_proxy::token::{Algorithm, Signer};
use pkcv_proxy::{App, Config};
use pkcv_standin::{Registry, StandIn};
use serde::Deserialize;

/// `../shared/vectors`, what the official SDKs computed.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors")
}

#[derive(Debug, Deserialize)]
pub struct CanonicalVectors {
    pub account_sid: String,
    pub api_key_sid: String,
    pub credential_sid: String,
    pub signed_headers: Vec<String>,
    pub cases: Vec<CanonicalCase>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CanonicalCase {
    pub description: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body_base64: String,
    pub canonical_request: String,
    pub hrh: String,
    pub rqh: String,
    pub computed_by: Vec<String>,
}

impl CanonicalCase {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("case {:?} has no {name} header", self.description))
    }

    pub fn body(&self) -> Vec<u8> {
        STANDARD.decode(&self.body_base64).unwrap()
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenVectors {
    pub tokens: Vec<TokenCase>,
}

#[derive(Debug, Deserialize)]
pub struct TokenCase {
    pub description: String,
    pub token: String,
    pub rqh: String,
    pub minted_at: u64,
}

pub fn canonical_vectors() -> CanonicalVectors {
    let path = vectors_dir().join("canonical-requests.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn token_vectors() -> TokenVectors {
    let path = vectors_dir().join("sdk-tokens.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn test_private_key() -> PathBuf {
    vectors_dir().join("test-keys/pkcv-test-private.pem")
}

pub fn test_public_key_pem() -> Vec<u8> {
    std::fs::read(vectors_dir().join("test-keys/pkcv-test-public.pem")).unwrap()
}

/// An account known to both the stand-in and the proxy.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub account_sid: String,
    pub credential_sid: String,
    pub api_key_sid: String,
    pub secret: String,
    pub private_key_file: PathBuf,
    /// Whether the proxy config lists the API key under `api_key_sids`.
    pub listed: bool,
}

impl TestAccount {
    /// Account A: the vectors' SIDs and the shared throwaway key.
    pub fn a() -> Self {
        TestAccount {
            account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4".into(),
            credential_sid: "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d".into(),
            api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c".into(),
            secret: "not-a-real-secret".into(),
            private_key_file: test_private_key(),
            listed: true,
        }
    }

    /// Account B: a second key (PKCS#1 fixture), its API key not listed in the config.
    pub fn b() -> Self {
        TestAccount {
            account_sid: "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            credential_sid: "CRbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            api_key_sid: "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            secret: "b-secret".into(),
            private_key_file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/rsa-2048-pkcs1.pem"),
            listed: false,
        }
    }

    pub fn basic_auth(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.api_key_sid, self.secret))
        )
    }

    pub fn public_key_pem(&self) -> Vec<u8> {
        let signer = Signer::from_pem_file(
            &self.private_key_file,
            &self.credential_sid,
            Algorithm::Rs256,
        )
        .unwrap();
        let der = signer.public_key_spki_der().unwrap();
        pem::encode(&pem::Pem::new("PUBLIC KEY", der)).into_bytes()
    }

    pub fn config(&self) -> AccountConfig {
        AccountConfig {
            account_sid: self.account_sid.clone(),
            credential_sid: self.credential_sid.clone(),
            private_key_file: self.private_key_file.clone(),
            api_key_sids: if self.listed {
                vec![self.api_key_sid.clone()]
            } else {
                vec![]
            },
        }
    }
}

/// The SPKI PEM of a test account's key.
pub fn public_key_pem(account: &TestAccount) -> Vec<u8> {
    account.public_key_pem()
}

pub fn registry(accounts: &[TestAccount]) -> Registry {
    let mut registry = Registry::default();
    for account in accounts {
        registry
            .add_public_key_pem(
                &account.credential_sid,
                &account.account_sid,
                &account.public_key_pem(),
            )
            .unwrap();
        registry.add_api_key(&account.api_key_sid, &account.account_sid, &account.secret);
    }
    registry
}

/// Turns on `HTTPS_PROXY` interception with a fresh CA in `dir`; returns the CA certificate.
pub fn enable_interception(raw: &mut RawConfig, dir: &std::path::Path) -> PathBuf {
    let files = pkcv_proxy::intercept::init_ca(dir, &["twilio.com".into()], 30).unwrap();
    raw.intercept.enabled = true;
    raw.intercept.ca_cert_file = Some(files.cert_file.clone());
    raw.intercept.ca_key_file = Some(files.key_file);
    files.cert_file
}

/// The proxy in front of the stand-in, both on loopback.
pub struct Harness {
    pub standin: StandIn,
    pub proxy: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The configuration the proxy runs with (write it out for CLI subprocesses).
    pub raw: RawConfig,
    server: Running,
}

impl Harness {
    /// Accounts A and B, default settings.
    pub async fn start() -> Harness {
        Self::start_with(&[TestAccount::a(), TestAccount::b()], |_| {}).await
    }

    /// The stand-in knows `accounts`; the proxy is configured for them, then `tweak`ed.
    pub async fn start_with(
        accounts: &[TestAccount],
        tweak: impl FnOnce(&mut RawConfig),
    ) -> Harness {
        let standin = StandIn::start(registry(accounts)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.server.listen = "127.0.0.1:0".into();
        raw.upstream.connect_timeout_ms = 2_000;
        raw.upstream.request_timeout_ms = 5_000;
        raw.server.shutdown_grace_secs = 2;
        let ca_file = dir.path().join("standin-ca.pem");
        standin.write_ca(&ca_file).unwrap();
        raw.upstream.route_all_to(standin.addr(), ca_file);
        raw.accounts = accounts.iter().map(TestAccount::config).collect();
        tweak(&mut raw);

        let config = Config::from_raw(raw.clone()).unwrap();
        let proxy = App::build(config, None)
            .unwrap()
            .bind()
            .await
            .unwrap()
            .spawn();
        Harness {
            standin,
            proxy: proxy.addr(),
            dir,
            raw,
            server: proxy,
        }
    }

    /// Writes the proxy's configuration to a TOML file, as a user's config.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("pkcv-proxy.toml");
        std::fs::write(&path, toml::to_string(&self.raw).unwrap()).unwrap();
        path
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `GET` through the proxy (origin-form) with an `Authorization` value.
    pub async fn get(&self, url: impl reqwest::IntoUrl, authorization: &str) -> reqwest::Response {
        self.client()
            .get(url)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap()
    }

    /// A client that talks to the proxy directly (origin-form).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// A client that uses the proxy as its `HTTP_PROXY` (absolute-form).
    pub fn proxied_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.url("")).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.stop())
            .await
            .unwrap();
    }
}

/// HTTP Basic credentials.
pub fn basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// A finished command's stdout and stderr, for assertions and failure messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A file's permission bits.
#[cfg(unix)]
pub fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A response as JSON, with its status.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}
