//! Every client recipe of docs/clients.md, run for real: a small program per language
//! (`tests/sdk/{java,go,ruby,php,python}`), configured exactly as the docs tell a user (system
//! properties and a `keytool` truststore for Java; environment variables and the CA file for
//! the rest), makes a form `POST …/Messages.json` and a `GET` whose query the proxy must
//! normalize, through the intercepting proxy to the verifying stand-in. Each again with client
//! authentication on: without the proxy credentials the program must fail with the 407, with
//! them (given the way the recipe says) it must pass.
//!
//! The toolchains come from Debian (and aiohttp from PyPI, with twilio-python), installed by
//! `tests/sdk/clients-setup.sh`, so the tests are `#[ignore]`d in a plain `cargo test`; under
//! `--include-ignored` a missing toolchain fails with what to install.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::support::{client_config, enable_interception, text, Harness, TestAccount};

const SETUP: &str = "bash tests/sdk/clients-setup.sh";
const MESSAGES: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json";
/// The proxy credentials of the one `[[clients]]` entry, when client authentication is on.
const CLIENT: (&str, &str) = ("app", "app-secret");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The proxy, intercepting with a fresh CA, in front of the stand-in; with `clients`, one
/// `[[clients]]` entry ([`CLIENT`]). Returns the CA certificate too.
async fn proxy(clients: bool) -> (Harness, tempfile::TempDir, PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut ca = None;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        ca = Some(enable_interception(raw, ca_dir.path()));
        if clients {
            raw.clients = vec![client_config(CLIENT.0, CLIENT.1, &[])];
        }
    })
    .await;
    (h, ca_dir, ca.unwrap())
}

/// `http://[user:secret@]127.0.0.1:port`, the proxy URL a recipe puts in its environment.
fn proxy_url(h: &Harness, credentials: bool) -> String {
    match credentials {
        true => format!("http://{}:{}@{}", CLIENT.0, CLIENT.1, h.proxy),
        false => h.url(""),
    }
}

/// Runs `program args` with only `env` (plus PATH, HOME and the account's API key), bounded
/// in time. A program that cannot be started fails the test with what to install.
async fn run(program: &Path, args: &[OsString], env: &[(&str, String)], needs: &str) -> Output {
    let mut command = crate::support::client_command(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(repo(""));
    tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran for more than 90 s", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e} ({needs}: {SETUP})", program.display()))
}

/// Runs a build step (javac, go build, keytool) to completion, bounded in time; failing it
/// fails the test.
async fn build(program: &str, args: &[&std::ffi::OsStr], needs: &str) {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(repo("")).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} ran for more than 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} ({needs}: {SETUP})"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({needs}: {SETUP}):\n{}",
        text(&output)
    );
}

/// The program printed `POST 2xx` and `GET 200` and exited 0.
fn assert_both_calls_succeeded(what: &str, output: &Output) {
    let out = text(output);
    assert!(output.status.success(), "{what} failed:\n{out}");
    let status = |method: &str| {
        out.lines()
            .find_map(|line| line.strip_prefix(method)?.strip_prefix(' '))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|code| code.parse::<u16>().ok())
    };
    assert!(
        matches!(status("POST"), Some(200..=299)),
        "{what}: no successful POST:\n{out}"
    );
    assert_eq!(
        status("GET"),
        Some(200),
        "{what}: no successful GET:\n{out}"
    );
}

/// Without the proxy credentials the program fails at the proxy's 407.
fn assert_refused_by_the_proxy(what: &str, output: &Output) {
    let out = text(output);
    assert!(
        !output.status.success(),
        "{what} passed without credentials:\n{out}"
    );
    assert!(
        out.contains("407") || out.contains("Proxy Authentication Required"),
        "{what} did not fail at the 407:\n{out}"
    );
}

/// The stand-in verified exactly `runs` successful runs' worth of calls: per run, one signed
/// `POST …/Messages.json` with the form body and one signed `GET` whose query decodes to
/// `PageSize=20&To=+14155550100`; and nothing else reached it.
async fn assert_verified(h: &Harness, runs: usize) {
    let records = h.standin.records().await;
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
        assert_eq!(record.host, "api.twilio.com");
        assert_eq!(record.path, MESSAGES);
    }
    let form = |bytes: &[u8]| -> Vec<(String, String)> {
        form_urlencoded::parse(bytes).into_owned().collect()
    };
    let posts = records.iter().filter(|r| r.method == "POST").count();
    let gets = records.iter().filter(|r| r.method == "GET").count();
    assert_eq!((posts, gets, records.len()), (runs, runs, 2 * runs));
    for record in &records {
        if record.method == "POST" {
            let body = form(&record.body);
            for (name, value) in [("To", "+14155550100"), ("From", "+14155550199")] {
                assert!(
                    body.contains(&(name.into(), value.into())),
                    "POST body {:?}",
                    String::from_utf8_lossy(&record.body)
                );
            }
            assert!(body.iter().any(|(name, _)| name == "Body"));
        } else {
            assert_eq!(
                form(record.query.as_bytes()),
                [
                    ("PageSize".to_string(), "20".to_string()),
                    ("To".to_string(), "+14155550100".to_string())
                ],
                "GET query {:?}",
                record.query
            );
        }
    }
    assert_eq!(h.standin.rejected(), 0);
}

// ---- Java -----------------------------------------------------------------------------------

const JAVA: &str = "needs default-jdk-headless and libhttpclient-java";
/// Apache HttpClient 4.5 as Debian's libhttpclient-java installs it.
const APACHE_CLASSPATH: &str = "/usr/share/java/httpclient.jar:/usr/share/java/httpcore.jar:/usr/share/java/commons-logging.jar:/usr/share/java/commons-codec.jar";

/// `tests/sdk/java/Recipes.java`, compiled once per test process.
async fn java_classes() -> &'static Path {
    static CLASSES: OnceCell<tempfile::TempDir> = OnceCell::const_new();
    let compile = || async {
        let dir = tempfile::tempdir().unwrap();
        let source = repo("tests/sdk/java/Recipes.java");
        let args = ["-d".as_ref(), dir.path().as_os_str(), "-cp".as_ref()];
        let args = [&args[..], &[APACHE_CLASSPATH.as_ref(), source.as_os_str()]].concat();
        build("javac", &args, JAVA).await;
        dir
    };
    CLASSES.get_or_init(compile).await.path()
}

/// The docs' truststore: the CA imported with `keytool`.
async fn truststore(ca: &Path, dir: &Path) -> PathBuf {
    let store = dir.join("pkcv-truststore.jks");
    build(
        "keytool",
        &[
            "-importcert".as_ref(),
            "-alias".as_ref(),
            "pkcv-proxy".as_ref(),
            "-file".as_ref(),
            ca.as_os_str(),
            "-keystore".as_ref(),
            store.as_os_str(),
            "-storepass".as_ref(),
            "changeit".as_ref(),
            "-noprompt".as_ref(),
        ],
        JAVA,
    )
    .await;
    store
}

/// The docs' three properties for client authentication: Basic allowed for tunnels, and the
/// proxy credentials.
fn java_credentials() -> [String; 3] {
    [
        "-Djdk.http.auth.tunneling.disabledSchemes=".into(),
        format!("-Dhttps.proxyUser={}", CLIENT.0),
        format!("-Dhttps.proxyPassword={}", CLIENT.1),
    ]
}

/// `java -D… Recipes CLIENT` with the docs' system properties (the proxy and the truststore)
/// and `extra` ones.
async fn java(h: &Harness, store: &Path, client: &str, extra: &[String]) -> Output {
    let port = h.proxy.port();
    let mut args: Vec<OsString> = vec![
        "-cp".into(),
        format!("{}:{APACHE_CLASSPATH}", java_classes().await.display()).into(),
        "-Dhttps.proxyHost=127.0.0.1".into(),
        format!("-Dhttps.proxyPort={port}").into(),
        format!("-Djavax.net.ssl.trustStore={}", store.display()).into(),
        "-Djavax.net.ssl.trustStorePassword=changeit".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args.extend(["Recipes".into(), client.into()]);
    run(Path::new("java"), &args, &[], JAVA).await
}

const JAVA_CLIENTS: [&str; 3] = ["jdk", "urlconnection", "apache"];

#[tokio::test]
#[ignore = "needs default-jdk-headless libhttpclient-java (bash tests/sdk/clients-setup.sh)"]
async fn java_clients_through_https_proxy() {
    java_classes().await;
    let (h, ca_dir, ca) = proxy(false).await;
    let store = truststore(&ca, ca_dir.path()).await;
    for client in JAVA_CLIENTS {
        let output = java(&h, &store, client, &[]).await;
        assert_both_calls_succeeded(&format!("java {client}"), &output);
    }
    assert_verified(&h, JAVA_CLIENTS.len()).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs default-jdk-headless libhttpclient-java (bash tests/sdk/clients-setup.sh)"]
async fn java_clients_with_client_authentication() {
    java_classes().await;
    let (h, ca_dir, ca) = proxy(true).await;
    let store = truststore(&ca, ca_dir.path()).await;
    let credentials = java_credentials();
    for client in JAVA_CLIENTS {
        let refused = java(&h, &store, client, &[]).await;
        assert_refused_by_the_proxy(&format!("java {client}"), &refused);
        // What the recipe says: without clearing the JDK's disabled tunnelling schemes the
        // JDK's own clients never send the credentials; Apache HttpClient, which tunnels by
        // itself, does not need it.
        let still_disabled = java(&h, &store, client, &credentials[1..]).await;
        let what = format!("java {client} without disabledSchemes=");
        if client == "apache" {
            assert_both_calls_succeeded(&what, &still_disabled);
        } else {
            assert_refused_by_the_proxy(&what, &still_disabled);
        }
        let output = java(&h, &store, client, &credentials).await;
        assert_both_calls_succeeded(&format!("java {client} with credentials"), &output);
    }
    // Apache HttpClient passed twice.
    assert_verified(&h, JAVA_CLIENTS.len() + 1).await;
    // java.net.http sent the API key only once challenged by the proxy's 401.
    let challenged = h.metric(r#"pkcv_proxy_rejected_total{code="79001"}"#).await;
    assert!(challenged >= Some(1.0), "{challenged:?}");
    h.stop().await;
}

// ---- Go -------------------------------------------------------------------------------------

const GO: &str = "needs golang-go";

/// `tests/sdk/go/recipe.go`, built once per test process.
async fn go_recipe() -> PathBuf {
    static BUILT: OnceCell<tempfile::TempDir> = OnceCell::const_new();
    let compile = || async {
        let dir = tempfile::tempdir().unwrap();
        let (out, source) = (dir.path().join("recipe"), repo("tests/sdk/go/recipe.go"));
        let args = [
            "build".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            source.as_os_str(),
        ];
        build("go", &args, GO).await;
        dir
    };
    BUILT.get_or_init(compile).await.path().join("recipe")
}

async fn go(h: &Harness, ca: &Path, credentials: bool) -> Output {
    let env = [
        ("HTTPS_PROXY", proxy_url(h, credentials)),
        ("SSL_CERT_FILE", ca.display().to_string()),
    ];
    run(&go_recipe().await, &[], &env, GO).await
}

#[tokio::test]
#[ignore = "needs golang-go (bash tests/sdk/clients-setup.sh)"]
async fn go_net_http_through_https_proxy() {
    go_recipe().await;
    let (h, _ca_dir, ca) = proxy(false).await;
    let output = go(&h, &ca, false).await;
    assert_both_calls_succeeded("go", &output);
    // As the recipe says: net/http speaks HTTP/2 inside the tunnel.
    assert!(
        text(&output).contains("POST 201 HTTP/2.0"),
        "{}",
        text(&output)
    );
    assert_verified(&h, 1).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs golang-go (bash tests/sdk/clients-setup.sh)"]
async fn go_net_http_with_client_authentication() {
    go_recipe().await;
    let (h, _ca_dir, ca) = proxy(true).await;
    assert_refused_by_the_proxy("go", &go(&h, &ca, false).await);
    assert_both_calls_succeeded("go with credentials", &go(&h, &ca, true).await);
    assert_verified(&h, 1).await;
    h.stop().await;
}

// ---- Ruby -----------------------------------------------------------------------------------

const RUBY: &str = "needs ruby";

async fn ruby(env: &[(&str, String)]) -> Output {
    let script = vec![repo("tests/sdk/ruby/recipe.rb").into_os_string()];
    run(Path::new("ruby"), &script, env, RUBY).await
}

#[tokio::test]
#[ignore = "needs ruby (bash tests/sdk/clients-setup.sh)"]
async fn ruby_net_http_through_http_proxy() {
    let (h, _ca_dir, ca) = proxy(false).await;
    let ca = ("SSL_CERT_FILE", ca.display().to_string());
    // What the recipe warns about: with https_proxy alone, Net::HTTP would go straight to
    // api.twilio.com, unsigned (asked without connecting anywhere).
    let probe = "require 'net/http'; puts Net::HTTP.new('api.twilio.com', 443).proxy?";
    for (variable, uses_proxy) in [("https_proxy", "false"), ("http_proxy", "true")] {
        let args = ["-e".into(), probe.into()];
        let env = [(variable, proxy_url(&h, false))];
        let output = run(Path::new("ruby"), &args, &env, RUBY).await;
        assert_eq!(
            text(&output).trim(),
            uses_proxy,
            "Net::HTTP with {variable}"
        );
    }
    let output = ruby(&[("http_proxy", proxy_url(&h, false)), ca]).await;
    assert_both_calls_succeeded("ruby", &output);
    assert_verified(&h, 1).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs ruby (bash tests/sdk/clients-setup.sh)"]
async fn ruby_net_http_with_client_authentication() {
    let (h, _ca_dir, ca) = proxy(true).await;
    let ca = ("SSL_CERT_FILE", ca.display().to_string());
    let refused = ruby(&[("http_proxy", proxy_url(&h, false)), ca.clone()]).await;
    assert_refused_by_the_proxy("ruby", &refused);
    let output = ruby(&[("http_proxy", proxy_url(&h, true)), ca]).await;
    assert_both_calls_succeeded("ruby with credentials", &output);
    assert_verified(&h, 1).await;
    h.stop().await;
}

// ---- PHP ------------------------------------------------------------------------------------

const PHP: &str = "needs php-cli and php-curl";

/// `php -d curl.cainfo=CA recipe.php` (the php.ini setting, on the command line) with
/// `https_proxy`.
async fn php(h: &Harness, ca: &Path, credentials: bool) -> Output {
    let args = [
        OsString::from(format!("-dcurl.cainfo={}", ca.display())),
        repo("tests/sdk/php/recipe.php").into_os_string(),
    ];
    let env = [("https_proxy", proxy_url(h, credentials))];
    run(Path::new("php"), &args, &env, PHP).await
}

#[tokio::test]
#[ignore = "needs php-cli php-curl (bash tests/sdk/clients-setup.sh)"]
async fn php_curl_through_https_proxy() {
    let (h, _ca_dir, ca) = proxy(false).await;
    assert_both_calls_succeeded("php", &php(&h, &ca, false).await);
    assert_verified(&h, 1).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs php-cli php-curl (bash tests/sdk/clients-setup.sh)"]
async fn php_curl_with_client_authentication() {
    let (h, _ca_dir, ca) = proxy(true).await;
    assert_refused_by_the_proxy("php", &php(&h, &ca, false).await);
    assert_both_calls_succeeded("php with credentials", &php(&h, &ca, true).await);
    assert_verified(&h, 1).await;
    h.stop().await;
}

// ---- Python async ---------------------------------------------------------------------------

const PYTHON: &str = "needs twilio-python with aiohttp in target/sdk-venv";

fn python() -> PathBuf {
    std::env::var_os("PKCV_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/sdk-venv/bin/python"))
}

async fn python_async(h: &Harness, ca: &Path, credentials: bool) -> Output {
    let script = vec![repo("tests/sdk/python/async_recipe.py").into_os_string()];
    let env = [
        ("HTTPS_PROXY", proxy_url(h, credentials)),
        ("SSL_CERT_FILE", ca.display().to_string()),
    ];
    run(&python(), &script, &env, PYTHON).await
}

#[tokio::test]
#[ignore = "needs twilio-python and aiohttp (bash tests/sdk/setup.sh; bash tests/sdk/clients-setup.sh)"]
async fn python_async_client_through_https_proxy() {
    let (h, _ca_dir, ca) = proxy(false).await;
    assert_both_calls_succeeded("python async", &python_async(&h, &ca, false).await);
    assert_verified(&h, 1).await;
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs twilio-python and aiohttp (bash tests/sdk/setup.sh; bash tests/sdk/clients-setup.sh)"]
async fn python_async_client_with_client_authentication() {
    let (h, _ca_dir, ca) = proxy(true).await;
    assert_refused_by_the_proxy("python async", &python_async(&h, &ca, false).await);
    let output = python_async(&h, &ca, true).await;
    assert_both_calls_succeeded("python async with credentials", &output);
    assert_verified(&h, 1).await;
    h.stop().await;
}
