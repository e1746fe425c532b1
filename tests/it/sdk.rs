//! The official Twilio SDKs, unmodified and configured only through environment variables,
//! through the proxy to the verifying stand-in. They need the pinned SDKs that
//! `tests/sdk/setup.sh` installs, so they are `#[ignore]`d in a plain `cargo test`;
//! `.ci/run` installs the SDKs and runs them with the rest (`-- --include-ignored`).
//! A rejection by the stand-in is a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::{client_config, enable_interception, test_private_key, Harness, TestAccount};

const NEEDS_SDKS: &str =
    "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn python() -> PathBuf {
    std::env::var_os("PKCV_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/sdk-venv/bin/python"))
}

/// Runs an SDK script with only the given environment (plus PATH/HOME), bounded in time, and
/// asserts that all four calls succeeded.
async fn run_sdk(program: &Path, script: &str, env: &[(&str, String)]) -> Output {
    let output = spawn_sdk(program, script, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 4, "{stdout}");
    assert!(calls.iter().all(|c| c["ok"] == true), "{stdout}");
    output
}

/// Runs an SDK script with only the given environment (plus PATH/HOME), bounded in time.
async fn spawn_sdk(program: &Path, script: &str, env: &[(&str, String)]) -> Output {
    let mut command = crate::support::client_command(program);
    command.arg(repo(script));
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the SDK script timed out")
        .unwrap_or_else(|e| panic!("cannot run {}: {e} ({NEEDS_SDKS})", program.display()))
}

/// Every request reached the stand-in signed and verified, on both Twilio hosts.
async fn assert_all_verified(h: &Harness, at_least: usize) {
    let records = h.standin.records().await;
    assert!(
        records.len() >= at_least,
        "only {} requests reached the stand-in",
        records.len()
    );
    for record in &records {
        let outcome = record
            .outcome
            .as_ref()
            .unwrap_or_else(|r| panic!("stand-in rejected {} {}: {r}", record.method, record.path));
        assert!(
            outcome.signed,
            "{} {} arrived unsigned",
            record.method, record.path
        );
    }
    assert!(records.iter().any(|r| r.host == "accounts.twilio.com"));
    assert!(records.iter().any(|r| r.method == "DELETE"));
    assert_eq!(h.standin.rejected(), 0);
}

async fn intercepting() -> (Harness, tempfile::TempDir, PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut ca = None;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        ca = Some(enable_interception(raw, ca_dir.path()))
    })
    .await;
    (h, ca_dir, ca.unwrap())
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn twilio_python_through_https_proxy() {
    let (h, _ca_dir, ca) = intercepting().await;
    run_sdk(
        &python(),
        "tests/sdk/python/sdk_calls.py",
        &[
            ("HTTPS_PROXY", h.url("")),
            ("REQUESTS_CA_BUNDLE", ca.display().to_string()),
        ],
    )
    .await;
    assert_all_verified(&h, 4).await;
    h.stop().await;
}

/// Intercepting, with two `[[clients]]`: `app` (any account) and `other` (only account B).
async fn intercepting_with_clients() -> (Harness, tempfile::TempDir, PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut ca = None;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        ca = Some(enable_interception(raw, ca_dir.path()));
        raw.clients = vec![
            client_config("app", "app-secret", &[]),
            client_config(
                "other",
                "other-secret",
                &["ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"],
            ),
        ];
    })
    .await;
    (h, ca_dir, ca.unwrap())
}

/// `http://user:secret@proxy`, as an `HTTPS_PROXY` with credentials.
fn proxy_url_with(h: &Harness, user_secret: &str) -> String {
    format!("http://{user_secret}@{}", h.proxy)
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn sdks_authenticate_to_the_proxy_with_credentials_in_the_proxy_url() {
    let (h, _ca_dir, ca) = intercepting_with_clients().await;
    run_sdk(
        &python(),
        "tests/sdk/python/sdk_calls.py",
        &[
            ("HTTPS_PROXY", proxy_url_with(&h, "app:app-secret")),
            ("REQUESTS_CA_BUNDLE", ca.display().to_string()),
        ],
    )
    .await;
    run_sdk(
        Path::new("node"),
        "tests/sdk/node/sdk_calls.js",
        &[
            ("HTTP_PROXY", proxy_url_with(&h, "app:app-secret")),
            ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
        ],
    )
    .await;
    assert_all_verified(&h, 8).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn sdks_without_the_right_proxy_credentials_are_refused() {
    let (h, _ca_dir, ca) = intercepting_with_clients().await;
    for (proxy, refusal) in [
        (h.url(""), "407"),
        (proxy_url_with(&h, "app:wrong"), "407"),
        // `other` may sign only for account B: its CONNECT is fine, its requests are not.
        (proxy_url_with(&h, "other:other-secret"), "HTTP 403"),
    ] {
        let python = spawn_sdk(
            &python(),
            "tests/sdk/python/sdk_calls.py",
            &[
                ("HTTPS_PROXY", proxy.clone()),
                ("REQUESTS_CA_BUNDLE", ca.display().to_string()),
            ],
        )
        .await;
        let node = spawn_sdk(
            Path::new("node"),
            "tests/sdk/node/sdk_calls.js",
            &[
                ("HTTP_PROXY", proxy.clone()),
                ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
            ],
        )
        .await;
        for (sdk, output) in [("python", &python), ("node", &node)] {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!output.status.success(), "{sdk} via {proxy}: {text}");
            if sdk == "python" {
                assert!(text.contains(refusal), "{sdk} via {proxy}: {text}");
            }
        }
    }
    assert!(
        h.standin.records().await.is_empty(),
        "a refused client reached Twilio"
    );
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn twilio_node_through_http_proxy() {
    let (h, _ca_dir, ca) = intercepting().await;
    // twilio-node reads only HTTP_PROXY (for https URLs too) and trusts NODE_EXTRA_CA_CERTS.
    run_sdk(
        Path::new("node"),
        "tests/sdk/node/sdk_calls.js",
        &[
            ("HTTP_PROXY", h.url("")),
            ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
        ],
    )
    .await;
    assert_all_verified(&h, 4).await;
    h.stop().await;
}

/// The environment for twilio-python's own `ValidationClient`, straight to the stand-in.
fn validation_client_env(h: &Harness) -> Vec<(&'static str, String)> {
    let a = TestAccount::a();
    vec![
        ("PKCV_VALIDATION_CLIENT", "1".into()),
        ("TWILIO_CREDENTIAL_SID", a.credential_sid),
        (
            "TWILIO_PRIVATE_KEY_FILE",
            test_private_key().display().to_string(),
        ),
        ("PKCV_STANDIN_ADDR", h.standin.addr().to_string()),
        (
            "REQUESTS_CA_BUNDLE",
            h.dir.path().join("standin-ca.pem").display().to_string(),
        ),
    ]
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn twilio_pythons_own_validation_client_is_accepted_by_the_stand_in() {
    // No proxy: twilio-python signs by itself. This proves the stand-in accepts exactly what
    // Twilio's SDK produces, so its acceptance of the proxy's requests means something.
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let mut env = validation_client_env(&h);
    // twilio-python signs the query as sent, and requests encodes a space as `+`, which
    // twilio-java's canonicalizer (the stand-in's, and the reference Twilio points to) reads
    // as `%20`: such a request fails with 70156. That disagreement is why the proxy
    // normalizes; the test below pins it down. Here, a filter with no space.
    env.push(("PKCV_FRIENDLY_NAME", "pkcv".into()));
    run_sdk(&python(), "tests/sdk/python/sdk_calls.py", &env).await;
    assert_all_verified(&h, 4).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs the official SDKs (apt-get install nodejs npm python3-venv; bash tests/sdk/setup.sh)"]
async fn a_plus_in_a_validation_client_query_fails_without_the_proxy() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let output = spawn_sdk(
        &python(),
        "tests/sdk/python/sdk_calls.py",
        &validation_client_env(&h),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("70156"), "{stdout}");
    let rejected = h
        .standin
        .records()
        .await
        .into_iter()
        .find(|r| r.outcome.is_err())
        .unwrap();
    assert_eq!(rejected.query, "FriendlyName=with+space&PageSize=2");
    h.stop().await;
}
