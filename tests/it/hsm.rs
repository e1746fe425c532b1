//! Key custody in an HSM, against SoftHSM2 (from Debian; `.ci/run` installs `softhsm2` and
//! `opensc`): each test initializes its own token in a temp dir (`SOFTHSM2_CONF` pointing at
//! a config it writes) and runs the real binary with it, so the test process itself never
//! loads a PKCS#11 module or touches its environment.
//!
//! Keys are generated inside the token (`pkcv-proxy keygen --pkcs11`) or imported from the
//! SDK vectors' test key; requests go through the proxy to the verifying stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pkcv_proxy::config::{PrivateKey, RawConfig};
use pkcv_proxy::pkcs11::Digest;
use pkcv_proxy::signing_key::Algorithm;
use pkcv_standin::StandIn;

use crate::support::{
    registry, run_pkcv, test_private_key, text, wait_until, write_config, ProxyProcess, TestAccount,
};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321";

/// A SoftHSM2 token store of the test's own.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    /// A store with one initialized token labelled `pkcv`.
    fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "needs SoftHSM2: apt-get install softhsm2 opensc (.ci/run installs them)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { dir };
        hsm.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                "pkcv",
                "--pin",
                PIN,
                "--so-pin",
                "56781234",
            ],
        );
        let pin = hsm.pin_file();
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        set_mode(&pin, 0o600);
        hsm
    }

    fn conf(&self) -> String {
        self.dir.path().join("softhsm2.conf").display().to_string()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("SOFTHSM2_CONF", self.conf())]
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (.ci/run installs softhsm2 and opensc)"));
        let shown = text(&output);
        assert!(output.status.success(), "{program} {args:?}: {shown}");
        shown
    }

    /// `pkcs11-tool` (OpenSC) logged in to the token.
    fn pkcs11_tool(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--module",
            MODULE,
            "--token-label",
            "pkcv",
            "--login",
            "--pin",
            PIN,
        ];
        all.extend_from_slice(args);
        self.run("pkcs11-tool", &all)
    }

    /// Imports a PKCS#8 PEM private key (and its public half) under `label`.
    fn import(&self, pem: &Path, label: &str, id: &str) {
        self.run(
            "softhsm2-util",
            &[
                "--import",
                &pem.display().to_string(),
                "--token",
                "pkcv",
                "--label",
                label,
                "--id",
                id,
                "--pin",
                PIN,
            ],
        );
    }

    /// `[pkcs11]` with the module and the PIN file.
    fn configure(&self, raw: &mut RawConfig) {
        raw.pkcs11.module = Some(MODULE.into());
        raw.pkcs11.pin_file = Some(self.pin_file());
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn uri(object: &str) -> PrivateKey {
    PrivateKey::Pkcs11(Box::new(
        format!("pkcs11:token=pkcv;object={object};type=private")
            .parse()
            .unwrap(),
    ))
}

/// A proxy config in front of `standin`, account A's key set to `key`.
fn proxy_config(standin: &StandIn, dir: &Path, hsm: &SoftHsm, key: PrivateKey) -> RawConfig {
    let mut raw = RawConfig::default();
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file).unwrap();
    raw.upstream.route_all_to(standin.addr(), ca_file);
    raw.server.shutdown_grace_secs = 1;
    hsm.configure(&mut raw);
    let mut account = TestAccount::a().config();
    account.private_key = key;
    raw.accounts = vec![account];
    raw
}

async fn start_proxy(raw: &RawConfig, dir: &Path, hsm: &SoftHsm) -> ProxyProcess {
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ProxyProcess::start_with_env(raw, dir, &env).await
}

const MESSAGES: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json";

#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn an_imported_key_signs_byte_for_byte_as_the_pem_key() {
    let hsm = SoftHsm::new();
    hsm.import(&test_private_key(), "imported", "01");
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = proxy_config(&standin, dir.path(), &hsm, uri("imported"));

    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    assert_eq!(
        proxy.get(MESSAGES, &TestAccount::a().basic_auth()).await,
        200
    );
    assert_eq!(
        standin.verified(),
        1,
        "the stand-in verified the HSM's token"
    );
    assert_eq!(standin.rejected(), 0);
    let metric = r#"pkcv_proxy_sign_duration_seconds_count{backend="pkcs11"}"#;
    assert_eq!(proxy.metric(metric).await, Some(1.0));
    drop(proxy);

    // `pkcv-proxy sign` with the HSM (hashing in the token, then in the proxy) and with the
    // PEM file: the same token, RS256 being deterministic.
    let pem_dir = tempfile::tempdir().unwrap();
    let mut pem_raw = raw.clone();
    pem_raw.accounts[0].private_key = PrivateKey::File(test_private_key());
    let pem_config = write_config(pem_dir.path(), &toml::to_string(&pem_raw).unwrap());
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for digest in [Digest::Token, Digest::Proxy] {
        let mut hsm_raw = raw.clone();
        hsm_raw.pkcs11.digest = digest;
        let hsm_dir = tempfile::tempdir().unwrap();
        let hsm_config = write_config(hsm_dir.path(), &toml::to_string(&hsm_raw).unwrap());
        assert_same_tokens(&hsm_config, &pem_config, &env).await;
    }
}

/// The token `pkcv-proxy sign` prints for a fixed request with `config`.
async fn signed_token(config: &Path, env: &[(&str, &str)]) -> String {
    let a = TestAccount::a();
    let user = format!("{}:{}", a.api_key_sid, a.secret);
    let args = [
        "sign",
        "-X",
        "POST",
        "--url",
        MESSAGES,
        "-u",
        &user,
        "-d",
        "To=%2B1&Body=hi",
    ];
    let output = run_pkcv(&args, Some(config), env).await;
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&output);
    shown
        .lines()
        .find_map(|line| line.strip_prefix("Twilio-Client-Validation: "))
        .unwrap()
        .to_owned()
}

/// Both configs sign the same request into the same token (retried if the two fall into
/// different seconds, when the claims differ).
async fn assert_same_tokens(one: &Path, other: &Path, env: &[(&str, &str)]) {
    for _ in 0..3 {
        let (first, second) = (signed_token(one, env).await, signed_token(other, env).await);
        if first == second {
            return;
        }
        assert_ne!(
            first.split('.').nth(1),
            second.split('.').nth(1),
            "same claims, different signatures"
        );
    }
    panic!("the HSM's RS256 token never equalled the PEM backend's");
}

#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn keygen_makes_a_non_extractable_key_that_signs_ps256() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let key_uri = format!(
        "pkcs11:token=pkcv;object=main-account?module-path={MODULE}&pin-source=file:{}",
        hsm.pin_file().display()
    );
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "keygen",
        "--pkcs11",
        key_uri.as_str(),
        "--out-dir",
        out.to_str().unwrap(),
    ];
    let made = run_pkcv(&args, None, &env).await;
    assert!(made.status.success(), "{}", text(&made));
    // Only the public half comes out.
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["main-account-public.pem"]);
    let public_pem = std::fs::read(out.join("main-account-public.pem")).unwrap();
    assert!(String::from_utf8_lossy(&made.stdout).contains("BEGIN PUBLIC KEY"));

    // CKA_SENSITIVE = true, CKA_EXTRACTABLE = false, as OpenSC reads them from the token.
    let objects = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    let access = objects
        .lines()
        .find(|line| line.trim_start().starts_with("Access:"))
        .unwrap_or_else(|| panic!("no Access line in {objects}"));
    let flags: Vec<&str> = access
        .trim()
        .trim_start_matches("Access:")
        .split(',')
        .map(str::trim)
        .collect();
    assert!(flags.contains(&"sensitive"), "{access}");
    assert!(flags.contains(&"never extractable"), "{access}");
    assert!(!flags.contains(&"extractable"), "{access}");
    // The label is taken now: a second keygen is refused, and nothing is written.
    let again = run_pkcv(
        &[
            &args[..3],
            &["--out-dir", dir.path().join("again").to_str().unwrap()],
        ]
        .concat(),
        None,
        &env,
    )
    .await;
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds an object labelled main-account"),
        "{}",
        text(&again)
    );
    assert!(!dir.path().join("again/main-account-public.pem").exists());
    keygen_with_the_example_config(&hsm, &env).await;

    // Upload the public key to the stand-in; the proxy signs PS256 with the HSM key.
    let mut registry = registry(&[]);
    let a = TestAccount::a();
    registry
        .add_public_key_pem(&a.credential_sid, &a.account_sid, &public_pem)
        .unwrap();
    registry.add_api_key(&a.api_key_sid, &a.account_sid, &a.secret);
    let standin = StandIn::start(registry).await.unwrap();
    let mut raw = proxy_config(&standin, dir.path(), &hsm, uri("main-account"));
    raw.signing.algorithm = Algorithm::Ps256;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    assert_eq!(proxy.get(MESSAGES, &a.basic_auth()).await, 200);
    assert_eq!((standin.verified(), standin.rejected()), (1, 0));
    drop(proxy);
    // And with the hash computed in the proxy (CKM_RSA_PKCS_PSS).
    raw.pkcs11.digest = Digest::Proxy;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    assert_eq!(proxy.get(MESSAGES, &a.basic_auth()).await, 200);
    assert_eq!((standin.verified(), standin.rejected()), (2, 0));
}

#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn unusable_keys_and_tokens_are_clear_start_up_errors() {
    let hsm = SoftHsm::new();
    hsm.import(&test_private_key(), "good", "01");
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--label",
        "small",
        "--id",
        "02",
    ]);
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "ec",
        "--id",
        "03",
    ]);
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let check = |raw: RawConfig| {
        let config = write_config(dir.path(), &toml::to_string(&raw).unwrap());
        let env = env.clone();
        async move {
            let output = run_pkcv(&["check-config"], Some(&config), &env).await;
            (output.status.success(), text(&output))
        }
    };
    let base = proxy_config(&standin, dir.path(), &hsm, uri("good"));
    let (ok, shown) = check(base.clone()).await;
    assert!(ok, "{shown}");
    assert!(shown.contains(r#""backend": "pkcs11""#), "{shown}");
    assert!(
        shown.contains(
            "PKCS#11 token pkcv, object good (CKM_SHA256_RSA_PKCS), RSA-2048, signing RS256"
        ),
        "{shown}"
    );

    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    set_mode(&wrong_pin, 0o600);
    let mut raw = base.clone();
    raw.pkcs11.pin_file = Some(wrong_pin);
    let with = |key| proxy_config(&standin, dir.path(), &hsm, key);
    let absent = PrivateKey::Pkcs11(Box::new("pkcs11:token=absent;object=good".parse().unwrap()));
    let cases = [
        (raw, "the PIN is wrong"),
        (
            with(absent),
            "no token matches pkcs11:token=absent;object=good (tokens present: pkcv)",
        ),
        (with(uri("missing")), "no private key in token pkcv matches"),
        (
            with(uri("small")),
            "RSA key of 1024 bits; at least 2048 bits are required",
        ),
        (with(uri("ec")), "is not an RSA key (CKA_KEY_TYPE CKK_EC)"),
    ];
    for (raw, expected) in cases {
        let (ok, shown) = check(raw).await;
        assert!(
            !ok && shown.contains(expected),
            "expected {expected:?}, got: {shown}"
        );
        assert!(!shown.contains(PIN), "the PIN was shown: {shown}");
    }

    let mut no_module = base.clone();
    no_module.pkcs11.module = Some("/nonexistent/libpkcs11.so".into());
    let (ok, shown) = check(no_module).await;
    assert!(
        !ok && shown.contains("cannot load the PKCS#11 module /nonexistent/libpkcs11.so"),
        "{shown}"
    );
}

#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn sixty_four_clients_sign_through_the_hsm_at_once() {
    let hsm = SoftHsm::new();
    hsm.import(&test_private_key(), "imported", "01");
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    standin.set_recording(false);
    let dir = tempfile::tempdir().unwrap();
    let mut raw = proxy_config(&standin, dir.path(), &hsm, uri("imported"));
    raw.signing.pool_threads = 2;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    let url = format!("http://{}{MESSAGES}", proxy.listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let authorization = TestAccount::a().basic_auth();
    let clients = (0..64).map(|_| {
        let (client, url, authorization) = (client.clone(), url.clone(), authorization.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..8 {
                let response = client
                    .get(&url)
                    .header("authorization", &authorization)
                    .send();
                let response = tokio::time::timeout(Duration::from_secs(30), response).await;
                statuses.push(response.unwrap().unwrap().status().as_u16());
            }
            statuses
        })
    });
    let mut answered = 0;
    for client in clients.collect::<Vec<_>>() {
        for status in client.await.unwrap() {
            assert_eq!(status, 200);
            answered += 1;
        }
    }
    assert_eq!(answered, 64 * 8);
    assert_eq!((standin.verified(), standin.rejected()), (64 * 8, 0));
    let errors = proxy.metric(r#"pkcv_proxy_sign_errors_total{account="ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",reason="failed"}"#).await;
    assert_eq!(errors, None, "no signing errors");
}

/// A reload that leaves an HSM account as it was keeps its live key (no new session, no new
/// login: the `pkcs11` account is never loaded again while a PEM account is added); a PIN
/// file changed to a wrong PIN fails that account's reload alone, and its old session keeps
/// signing.
#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn a_reload_keeps_an_unchanged_hsm_key_and_isolates_a_wrong_pin() {
    let hsm = SoftHsm::new();
    hsm.import(&test_private_key(), "imported", "01");
    let (a, b) = (TestAccount::a(), TestAccount::b());
    let standin = StandIn::start(registry(&[a.clone(), b.clone()]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    let mut raw = proxy_config(&standin, dir.path(), &hsm, uri("imported"));
    raw.accounts_dir = Some(accounts.clone());
    raw.server.reload_interval_ms = 100;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    assert_eq!(proxy.get(MESSAGES, &a.basic_auth()).await, 200);
    let loads = |backend: &str, result: &str| {
        format!(r#"pkcv_proxy_account_loads_total{{backend="{backend}",result="{result}"}}"#)
    };
    assert_eq!(proxy.metric(&loads("pkcs11", "loaded")).await, Some(1.0));

    // A PEM account arrives: applied, while the HSM account keeps its session.
    pkcv_proxy::keys::dir::write_account(&accounts, &b.config()).unwrap();
    let b_messages = format!("/2010-04-01/Accounts/{}/Messages.json", b.account_sid);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            proxy.get(&b_messages, &b.basic_auth()).await == 200
        })
        .await,
        "the new PEM account was not applied"
    );
    assert_eq!(proxy.metric(&loads("pem", "loaded")).await, Some(1.0));
    assert_eq!(
        proxy.metric(&loads("pkcs11", "loaded")).await,
        Some(1.0),
        "the unchanged HSM account was loaded (logged in) again"
    );
    assert!(proxy.metric(&loads("pkcs11", "unchanged")).await >= Some(1.0));

    // A wrong PIN: that account's reload fails, its old session keeps signing.
    std::fs::write(hsm.pin_file(), "0000\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            proxy.metric(&loads("pkcs11", "failed")).await >= Some(1.0)
        })
        .await,
        "a wrong PIN was not reported"
    );
    assert_eq!(proxy.get(MESSAGES, &a.basic_auth()).await, 200);
    let (status, ready) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["not_loaded"][0]["account"], a.account_sid.as_str());
    assert_eq!(ready["not_loaded"][0]["kept_previous"], true);
    assert!(!ready.to_string().contains("0000"), "{ready}");
    assert_eq!(standin.rejected(), 0);
}

/// `subaccount create --pkcs11` and `keys rotate --pkcs11`: the subaccount's keys are made in
/// the token, the running proxy (watching `accounts_dir`) signs for it with the HSM, and after
/// the rotation with the new HSM key, the old credential gone.
#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn the_subaccount_workflow_keeps_its_keys_in_the_hsm() {
    let hsm = SoftHsm::new();
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    let main = TestAccount::a();
    let mut raw = proxy_config(
        &standin,
        dir.path(),
        &hsm,
        PrivateKey::File(main.private_key_file.clone()),
    );
    raw.accounts_dir = Some(accounts.clone());
    raw.server.reload_interval_ms = 200;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    let config = dir.path().join("pkcv-proxy.toml");
    let conf = hsm.conf();
    let env = [
        ("TWILIO_ACCOUNT_SID", main.account_sid.as_str()),
        ("TWILIO_MAIN_KEY", main.api_key_sid.as_str()),
        ("TWILIO_MAIN_SECRET", main.secret.as_str()),
        ("SOFTHSM2_CONF", conf.as_str()),
    ];

    let created = run_pkcv(
        &[
            "subaccount",
            "create",
            "--friendly-name",
            "hsm",
            "--pkcs11",
            "pkcs11:token=pkcv;object=sub-1",
            "--json",
        ],
        Some(&config),
        &env,
    )
    .await;
    let json = succeeded(&created);
    assert_eq!(json["private_key"], "pkcs11:token=pkcv;object=sub-1");
    let (account, api_key) = (
        json["account_sid"].as_str().unwrap(),
        json["api_key_sid"].as_str().unwrap(),
    );
    let secret = std::fs::read_to_string(json["secret_file"].as_str().unwrap()).unwrap();
    let account_file = std::fs::read_to_string(accounts.join(format!("{account}.toml"))).unwrap();
    assert!(
        account_file.contains(r#"private_key = "pkcs11:token=pkcv;object=sub-1""#),
        "{account_file}"
    );
    assert!(!account_file.contains("private_key_file"));
    assert_eq!(
        private_key_files(dir.path()),
        0,
        "a private key was written"
    );

    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let as_sub = crate::support::basic(api_key, &secret);
    let signed = crate::support::wait_until(Duration::from_secs(10), || async {
        proxy.get(&path, &as_sub).await == 200
    })
    .await;
    assert!(
        signed,
        "the running proxy never signed for the subaccount with its HSM key"
    );

    let old = json["credential_sid"].as_str().unwrap();
    rotated_in_hsm(&proxy, &standin, (&config, &env), (account, old), &as_sub).await;
}

/// `keys rotate --pkcs11` onto a new label: the old credential deleted, the proxy signing
/// with the new key.
async fn rotated_in_hsm(
    proxy: &ProxyProcess,
    standin: &StandIn,
    (config, env): (&Path, &[(&str, &str)]),
    (account, old): (&str, &str),
    as_sub: &str,
) {
    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let rotated = run_pkcv(
        &[
            "keys",
            "rotate",
            "--account",
            account,
            "--pkcs11",
            "pkcs11:token=pkcv;object=sub-2",
            "--grace-secs",
            "0",
        ],
        Some(config),
        env,
    )
    .await;
    let rotation = succeeded(&rotated);
    assert_eq!(rotation["private_key"], "pkcs11:token=pkcv;object=sub-2");
    let registry = standin.registry().await;
    assert!(
        !registry.credentials.contains_key(old),
        "the old credential was not deleted"
    );
    assert_eq!(proxy.get(&path, as_sub).await, 200);
    assert_eq!(standin.rejected(), 0);
}

/// `keygen --pkcs11 -c` with the example config, `[pkcs11]` filled in and the account still
/// the placeholder (its `credential_sid` comes from uploading this very key): only
/// `[pkcs11]` is read, so it works.
async fn keygen_with_the_example_config(hsm: &SoftHsm, env: &[(&str, &str)]) {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pkcv-proxy.example.toml"),
    )
    .unwrap();
    let pin_line = format!("pin_file = {:?}", hsm.pin_file().display().to_string());
    let filled = example
        .replace(
            &format!("# module = {MODULE:?}"),
            &format!("module = {MODULE:?}"),
        )
        .replace("# pin_file = \"/run/secrets/hsm-pin\"", &pin_line);
    assert_ne!(
        filled, example,
        "the example config's [pkcs11] lines changed"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &filled);
    let out = dir.path().join("keys");
    let args = [
        "keygen",
        "--pkcs11",
        "pkcs11:token=pkcv;object=from-config",
        "--out-dir",
    ];
    let made = run_pkcv(
        &[&args[..], &[out.to_str().unwrap()]].concat(),
        Some(&config),
        env,
    )
    .await;
    assert!(made.status.success(), "{}", text(&made));
    assert!(out.join("from-config-public.pem").is_file());
}

/// The JSON object on the last line of a command that must have succeeded.
pub(crate) fn succeeded(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// How many files under `dir` hold a PEM private key.
pub(crate) fn private_key_files(dir: &Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("PRIVATE KEY")))
        .count()
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Starting and reloading ask the token only about the mechanisms the proxy signs with:
/// listing all of them made cryptoki log an `ERROR cryptoki::mechanism` line for each one it
/// does not know (about 30 with SoftHSM2), burying real errors.
#[tokio::test]
#[ignore = "needs SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)"]
async fn start_and_reload_log_no_spurious_mechanism_errors() {
    let hsm = SoftHsm::new();
    hsm.import(&test_private_key(), "imported", "01");
    let standin = StandIn::start(registry(&[TestAccount::a()])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut raw = proxy_config(&standin, dir.path(), &hsm, uri("imported"));
    raw.server.reload_interval_ms = 100;
    let proxy = start_proxy(&raw, dir.path(), &hsm).await;
    assert_eq!(
        proxy.get(MESSAGES, &TestAccount::a().basic_auth()).await,
        200
    );
    proxy.signal("HUP");
    let reloaded = r#"pkcv_proxy_key_reloads_total{result="success"}"#;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            proxy.metric(reloaded).await >= Some(1.0)
        })
        .await,
        "no reload happened"
    );
    let log = proxy.log();
    assert!(!log.contains("cryptoki::mechanism"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
