//! The account-and-key workflow under PKCV, run as a user runs it (the CLI, the Main key in
//! the environment) against the stand-in, with a proxy running all along that must pick up
//! every change without a restart.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pkcv_proxy::keys::reload::{LoadedStatus, STATUS_FILE};

use crate::support::{basic, capture_logs, mode, run_pkcv, text, wait_until, Harness, TestAccount};

/// How long the running proxy (polling every 200 ms) may take to act on an account change.
const RELOAD: Duration = Duration::from_secs(10);

/// What the proxy logs when it refuses a reload and keeps the previous accounts.
const NOT_RELOADED: &str = "accounts not reloaded";

fn accounts_dir(h: &Harness) -> PathBuf {
    h.raw.accounts_dir.clone().unwrap()
}

/// What the running proxy reports it signs with, from its status file.
fn loaded(h: &Harness) -> LoadedStatus {
    LoadedStatus::read(&accounts_dir(h)).expect("no status file")
}

/// The proxy (watching `accounts_dir`) and the stand-in; the directory lives as long as the
/// returned guard.
async fn start() -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir_all(&accounts).unwrap();
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.accounts_dir = Some(accounts);
        raw.server.reload_interval_ms = 200;
    })
    .await;
    (h, dir)
}

/// Runs the CLI with the Main key of account A in the environment.
async fn pkcv(h: &Harness, args: &[&str]) -> Output {
    pkcv_as(h, &TestAccount::a(), args).await
}

async fn pkcv_as(h: &Harness, main: &TestAccount, args: &[&str]) -> Output {
    let config = h.write_config();
    run_pkcv(
        args,
        Some(&config),
        &[
            ("TWILIO_ACCOUNT_SID", &main.account_sid),
            ("TWILIO_MAIN_KEY", &main.api_key_sid),
            ("TWILIO_MAIN_SECRET", &main.secret),
        ],
    )
    .await
}

fn last_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{}", text(output)))
}

/// A request through the running proxy as the subaccount's own API key.
async fn as_subaccount(
    h: &Harness,
    account: &str,
    api_key: &str,
    secret: &str,
) -> reqwest::Response {
    let auth = basic(api_key, secret);
    h.client()
        .post(h.url(&format!("/2010-04-01/Accounts/{account}/Messages.json")))
        .header("authorization", auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("To=%2B14155550100&Body=hi")
        .send()
        .await
        .unwrap()
}

/// `subaccount create --friendly-name NAME EXTRA…`, which must succeed; its output and the
/// JSON object on its last line.
async fn create(h: &Harness, name: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec!["subaccount", "create", "--friendly-name", name];
    args.extend_from_slice(extra);
    let created = pkcv(h, &args).await;
    assert!(created.status.success(), "{}", text(&created));
    let json = last_json(&created);
    (created, json)
}

/// Makes account B (its key pair and a Standard API key) known to the stand-in, as if it
/// had been set up with Twilio by hand.
async fn register_b(h: &Harness) {
    let b = TestAccount::b();
    h.standin
        .update_registry(|r| {
            r.add_public_key_pem(&b.credential_sid, &b.account_sid, &b.public_key_pem())
                .unwrap();
            r.add_standard_api_key(&b.api_key_sid, &b.account_sid, &b.secret);
        })
        .await;
}

/// Returns once the running proxy has reloaded its accounts since the call, so its watcher
/// has seen the directory as it is and will notice any change made from now on. (A change
/// made before the watcher's first look counts as already seen and is never loaded.) The
/// watcher writes the status file when it starts and then only after a reload: remove it, and
/// rewrite a probe file, account A with the values of A's `[[accounts]]` entry it overrides,
/// until a reload writes the status file again.
async fn await_a_reload(h: &Harness) {
    let dir = accounts_dir(h);
    let status = dir.join(STATUS_FILE);
    assert!(
        wait_until(RELOAD, || async { status.is_file() }).await,
        "the reload watcher never started"
    );
    std::fs::remove_file(&status).unwrap();
    let (probe, temporary) = (dir.join("probe.toml"), dir.join("probe.tmp"));
    let account = toml::to_string(&TestAccount::a().config()).unwrap();
    let mut writes = 0;
    let reloaded = wait_until(RELOAD, || {
        writes += 1;
        std::fs::write(&temporary, format!("# probe {writes}\n{account}")).unwrap();
        std::fs::rename(&temporary, &probe).unwrap();
        std::future::ready(status.is_file())
    })
    .await;
    assert!(reloaded, "the running proxy never reloaded the probe");
    std::fs::remove_file(&probe).unwrap();
}

#[tokio::test]
async fn subaccount_lifecycle_with_a_running_proxy() {
    let (h, _dir) = start().await;
    let sub = created_and_picked_up(&h).await;
    let (account, api_key, secret) = (&sub.account, &sub.api_key, &sub.secret);

    // keys list.
    let listed = pkcv(&h, &["keys", "list", "--account", account]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains(api_key) && text(&listed).contains(&sub.credential));

    rotated_under_load(&h, &sub).await;

    // Cleanup: keys and public key deleted, subaccount closed, unregistered.
    let cleaned = pkcv(&h, &["subaccount", "cleanup", "--account", account]).await;
    assert!(cleaned.status.success(), "{}", text(&cleaned));
    let registry = h.standin.registry().await;
    assert_eq!(registry.accounts[account].status, "closed");
    assert!(registry
        .api_keys
        .values()
        .all(|k| &k.account_sid != account));
    assert!(registry
        .credentials
        .values()
        .all(|c| &c.account_sid != account));
    assert!(!accounts_dir(&h).join(format!("{account}.toml")).exists());
    assert!(!sub.secret_file.exists());
    let unregistered = wait_until(RELOAD, || async {
        as_subaccount(&h, account, api_key, secret).await.status() == 403
    })
    .await;
    assert!(
        unregistered,
        "the running proxy still signs for a cleaned-up subaccount"
    );
    h.stop().await;
}

/// A subaccount made by `subaccount create`.
struct Subaccount {
    account: String,
    api_key: String,
    credential: String,
    secret: String,
    secret_file: PathBuf,
}

/// `subaccount create`: steps 1–4 and registration, checked on both sides, and the running
/// proxy signing for the new account without a restart.
async fn created_and_picked_up(h: &Harness) -> Subaccount {
    let (created, json) = create(h, "pkcv test", &["--json"]).await;
    let account = json["account_sid"].as_str().unwrap().to_owned();
    let api_key = json["api_key_sid"].as_str().unwrap().to_owned();
    let credential = json["credential_sid"].as_str().unwrap().to_owned();
    let secret_file = PathBuf::from(json["secret_file"].as_str().unwrap());
    let private_key = PathBuf::from(json["private_key"].as_str().unwrap());
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert_eq!((mode(&secret_file), mode(&private_key)), (0o600, 0o600));
    assert!(!text(&created).contains(&secret), "the secret was printed");
    for step in ["step 1/4", "step 2/4", "step 3/4", "step 4/4"] {
        assert!(text(&created).contains(step), "{}", text(&created));
    }
    assert!(accounts_dir(h).join(format!("{account}.toml")).is_file());

    // Twilio's side: a subaccount of A, enforcing PKCV, with a Standard key and our public key.
    let registry = h.standin.registry().await;
    let sub = &registry.accounts[&account];
    assert_eq!(
        (sub.owner_account_sid.as_str(), sub.enforces_pkcv),
        (TestAccount::a().account_sid.as_str(), true)
    );
    assert!(!registry.api_keys[&api_key].main);
    assert_eq!(registry.credentials[&credential].account_sid, account);

    // The running proxy picked the account up without a restart.
    let signed_as_sub = wait_until(RELOAD, || async {
        as_subaccount(h, &account, &api_key, &secret).await.status() == 201
    })
    .await;
    assert!(
        signed_as_sub,
        "the running proxy never signed for the new subaccount"
    );
    let last = h.standin.records().await.pop().unwrap();
    assert_eq!(last.outcome.unwrap().account_sid, account);
    Subaccount {
        account,
        api_key,
        credential,
        secret,
        secret_file,
    }
}

/// `keys rotate` while requests flow: signed by the running proxy all along, none rejected;
/// the old credential deleted and the new one in use.
async fn rotated_under_load(h: &Harness, sub: &Subaccount) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let client = h.client();
        let url = h.url(&format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            sub.account
        ));
        let auth = basic(&sub.api_key, &sub.secret);
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < 5_000 {
                let response = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("To=%2B14155550100&Body=load")
                    .send()
                    .await
                    .unwrap();
                if response.status() != 201 {
                    failures.push(response.text().await.unwrap());
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            failures
        })
    };
    let rejected_before = h.standin.rejected();
    let rotated = pkcv(
        h,
        &[
            "keys",
            "rotate",
            "--account",
            &sub.account,
            "--grace-secs",
            "1",
        ],
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = load.await.unwrap();
    assert!(rotated.status.success(), "{}", text(&rotated));
    let rotation = last_json(&rotated);
    let new_credential = rotation["new_credential_sid"].as_str().unwrap().to_owned();
    assert_eq!(rotation["old_credential_sid"], sub.credential);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failures.len(),
        sent.load(Ordering::SeqCst),
        &failures[..failures.len().min(3)]
    );
    assert!(
        sent.load(Ordering::SeqCst) > 10,
        "too little load to mean anything"
    );
    assert_eq!(
        h.standin.rejected(),
        rejected_before,
        "the stand-in rejected a request during rotation"
    );
    let registry = h.standin.registry().await;
    assert!(
        !registry.credentials.contains_key(&sub.credential),
        "the old credential was not deleted"
    );
    assert!(registry.credentials.contains_key(&new_credential));
    // And the proxy signs with the new key now.
    assert_eq!(
        as_subaccount(h, &sub.account, &sub.api_key, &sub.secret)
            .await
            .status(),
        201
    );
    assert_sign_uses(h, sub, &new_credential).await;
}

/// `pkcv-proxy sign` sees what `serve` sees: after a rotation, the account's file in
/// accounts_dir with the new credential.
async fn assert_sign_uses(h: &Harness, sub: &Subaccount, credential: &str) {
    let url = format!(
        "https://api.twilio.com/2010-04-01/Accounts/{}.json",
        sub.account
    );
    let user = format!("{}:{}", sub.api_key, sub.secret);
    let signed = pkcv(h, &["sign", "--url", &url, "-u", &user]).await;
    assert!(
        text(&signed).contains(&format!("{} (credential {credential})", sub.account)),
        "{}",
        text(&signed)
    );
}

#[tokio::test]
async fn a_failure_in_step_three_is_reported_and_cleanable() {
    let (h, _dir) = start().await;
    h.standin
        .fail_next(
            "POST",
            "/v1/Credentials/PublicKeys",
            400,
            20001,
            "Invalid PublicKey",
        )
        .await;
    let created = pkcv(
        &h,
        &["subaccount", "create", "--friendly-name", "half made"],
    )
    .await;
    let out = text(&created);
    assert!(!created.status.success(), "{out}");
    assert!(
        out.contains("step 3/4") && out.contains("20001") && out.contains("Invalid PublicKey"),
        "{out}"
    );
    let registry = h.standin.registry().await;
    let (account, _) = registry
        .accounts
        .iter()
        .find(|(_, a)| a.friendly_name == "half made")
        .unwrap();
    let (api_key, _) = registry
        .api_keys
        .iter()
        .find(|(_, k)| &k.account_sid == account)
        .unwrap();
    assert!(
        out.contains(&format!("subaccount {account}"))
            && out.contains(&format!("API key {api_key}")),
        "{out}"
    );
    let undo = out
        .lines()
        .find_map(|l| l.strip_prefix("to undo it: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(undo.contains(&format!("--account {account}")), "{undo}");
    assert!(
        !accounts_dir(&h).join(format!("{account}.toml")).exists(),
        "a half-made account was registered"
    );

    let secret_file = accounts_dir(&h)
        .join("keys")
        .join(format!("{account}.secret"));
    assert!(secret_file.exists() && out.contains("secret file"), "{out}");
    let cleaned = pkcv(&h, &["subaccount", "cleanup", "--account", account]).await;
    assert!(cleaned.status.success(), "{}", text(&cleaned));
    assert!(
        !secret_file.exists(),
        "the half-made subaccount's secret was left behind"
    );
    let registry = h.standin.registry().await;
    assert_eq!(registry.accounts[account].status, "closed");
    assert!(!registry.api_keys.contains_key(api_key));
    h.stop().await;
}

#[tokio::test]
async fn reuse_main_key_seeds_the_main_public_key() {
    let (h, _dir) = start().await;
    let (created, json) = create(
        &h,
        "shared key",
        &["--reuse-main-key", "--show-secret", "--json"],
    )
    .await;
    assert_eq!(
        PathBuf::from(json["private_key"].as_str().unwrap()),
        std::path::absolute(TestAccount::a().private_key_file).unwrap()
    );
    assert!(json["secret_file"].is_null());
    let stdout = String::from_utf8_lossy(&created.stdout);
    let secret = stdout.lines().next().unwrap();
    let registry = h.standin.registry().await;
    assert_eq!(
        &registry.api_keys[json["api_key_sid"].as_str().unwrap()].secret,
        secret
    );
    let credential = &registry.credentials[json["credential_sid"].as_str().unwrap()];
    let main_public = String::from_utf8(crate::support::test_public_key_pem()).unwrap();
    let normalize = |pem: &str| pem.split_whitespace().collect::<String>();
    assert_eq!(
        normalize(&credential.public_key_pem),
        normalize(&main_public)
    );
    h.stop().await;
}

#[tokio::test]
async fn a_standard_key_cannot_manage_accounts() {
    let (h, _dir) = start().await;
    let standard = TestAccount {
        api_key_sid: "SKcccccccccccccccccccccccccccccccc".into(),
        secret: "standard".into(),
        ..TestAccount::a()
    };
    h.standin
        .update_registry(|r| {
            r.add_standard_api_key(
                &standard.api_key_sid,
                &standard.account_sid,
                &standard.secret,
            )
        })
        .await;
    let created = pkcv_as(
        &h,
        &standard,
        &["subaccount", "create", "--friendly-name", "nope"],
    )
    .await;
    let out = text(&created);
    assert!(!created.status.success(), "{out}");
    assert!(out.contains("step 1/4") && out.contains("20003"), "{out}");
    assert!(out.contains("nothing was created"), "{out}");
    h.stop().await;
}

#[tokio::test]
async fn a_bad_account_file_keeps_the_previous_accounts() {
    let logs = capture_logs();
    let (h, _dir) = start().await;
    let b = TestAccount::b();
    register_b(&h).await;
    await_a_reload(&h).await;
    let file = accounts_dir(&h).join(format!("{}.toml", b.account_sid));
    let as_b = || async {
        as_subaccount(&h, &b.account_sid, &b.api_key_sid, &b.secret)
            .await
            .status()
            .as_u16()
    };
    assert_eq!(as_b().await, 403, "B is not configured yet");

    pkcv_proxy::keys::dir::write_account(&accounts_dir(&h), &b.config()).unwrap();
    assert!(
        wait_until(RELOAD, || async { as_b().await == 201 }).await,
        "B was not picked up"
    );

    // A broken file anywhere in the directory: the whole reload is refused, B keeps working.
    std::fs::write(accounts_dir(&h).join("broken.toml"), "account_sid = [").unwrap();
    assert!(
        wait_until(RELOAD, || async {
            logs.has_line(&[NOT_RELOADED, "broken.toml"])
        })
        .await,
        "the running proxy never tried the broken file"
    );
    assert_eq!(
        as_b().await,
        201,
        "a bad file took the previous accounts down"
    );
    assert_eq!(
        loaded(&h).accounts.get(&b.account_sid),
        Some(&b.credential_sid),
        "the status file no longer reports B"
    );

    // Fixed and B removed: B is refused again.
    std::fs::remove_file(accounts_dir(&h).join("broken.toml")).unwrap();
    std::fs::remove_file(file).unwrap();
    assert!(
        wait_until(RELOAD, || async { as_b().await == 403 }).await,
        "B was not removed"
    );
    h.stop().await;
}

#[tokio::test]
async fn keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "keygen",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--bits",
        "3072",
    ];
    let first = run_pkcv(&args, None, &[]).await;
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.starts_with("-----BEGIN PUBLIC KEY-----"), "{stdout}");
    let private = dir.path().join("pkcv-private.pem");
    assert_eq!(mode(&private), 0o600);
    let signer = pkcv_proxy::token::TokenMinter::from_pem_file(
        &private,
        "CR00000000000000000000000000000001",
        pkcv_proxy::signing_key::Algorithm::Rs256,
    )
    .unwrap();
    assert!(format!("{signer:?}").contains("bits: 3072"));
    let second = run_pkcv(&args, None, &[]).await;
    assert!(!second.status.success(), "a key pair was overwritten");
}

#[tokio::test]
async fn cleanup_follows_next_page_links() {
    let (h, _dir) = start().await;
    h.standin.set_page_size(2);
    let (_, json) = create(&h, "many keys", &["--json"]).await;
    let account = json["account_sid"].as_str().unwrap().to_owned();
    // Four more keys: five in all, three pages of two.
    h.standin
        .update_registry(|r| {
            for n in 0..4 {
                r.add_standard_api_key(&format!("SK{n:032x}"), &account, "x");
            }
        })
        .await;
    let cleaned = pkcv(&h, &["subaccount", "cleanup", "--account", &account]).await;
    assert!(cleaned.status.success(), "{}", text(&cleaned));
    let registry = h.standin.registry().await;
    let left: Vec<_> = registry
        .api_keys
        .values()
        .filter(|k| k.account_sid == account)
        .collect();
    assert!(
        left.is_empty(),
        "{} keys were left on later pages",
        left.len()
    );
    h.stop().await;
}

#[tokio::test]
async fn rotation_switches_although_another_account_does_not_load() {
    let (h, _dir) = start().await;
    let (_, json) = create(&h, "rotate me", &["--json"]).await;
    let account = json["account_sid"].as_str().unwrap().to_owned();
    let credential = json["credential_sid"].as_str().unwrap().to_owned();
    let (api_key, secret) = (
        json["api_key_sid"].as_str().unwrap().to_owned(),
        std::fs::read_to_string(json["secret_file"].as_str().unwrap()).unwrap(),
    );
    assert!(
        wait_until(RELOAD, || async {
            as_subaccount(&h, &account, &api_key, &secret)
                .await
                .status()
                == 201
        })
        .await
    );

    // The running proxy reports what it signs with.
    assert_eq!(loaded(&h).accounts.get(&account), Some(&credential));

    // Another account whose key file is missing: a reload leaves only that account out (it
    // is isolated), so it neither blocks the switch nor keeps the rotated account on its old
    // key.
    let b = TestAccount {
        private_key_file: accounts_dir(&h).join("missing.pem"),
        ..TestAccount::b()
    };
    pkcv_proxy::keys::dir::write_account(&accounts_dir(&h), &b.config()).unwrap();
    let rotated = pkcv(
        &h,
        &["keys", "rotate", "--account", &account, "--grace-secs", "0"],
    )
    .await;
    let out = text(&rotated);
    assert!(rotated.status.success(), "{out}");
    let new_credential = loaded(&h).accounts.get(&account).cloned().unwrap();
    assert_ne!(
        new_credential, credential,
        "the proxy still signs with the old key"
    );
    let registry = h.standin.registry().await;
    assert!(
        !registry.credentials.contains_key(&credential),
        "the old credential was kept"
    );
    assert!(registry.credentials.contains_key(&new_credential));
    assert!(!loaded(&h).accounts.contains_key(&b.account_sid));
    assert_eq!(
        as_subaccount(&h, &account, &api_key, &secret)
            .await
            .status(),
        201
    );
    let (_, ready) = h.admin_get("/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["not_loaded"][0]["account"], b.account_sid.as_str());
    assert_eq!(ready["not_loaded"][0]["kept_previous"], false);
    h.stop().await;
}

#[tokio::test]
async fn an_account_file_that_arrives_before_its_key_is_picked_up_later() {
    let logs = capture_logs();
    let (h, dir) = start().await;
    let b = TestAccount {
        private_key_file: dir.path().join("late-key.pem"),
        ..TestAccount::b()
    };
    register_b(&h).await;
    await_a_reload(&h).await;
    pkcv_proxy::keys::dir::write_account(&accounts_dir(&h), &b.config()).unwrap();
    assert!(
        wait_until(RELOAD, || async {
            logs.has_line(&["new account not loaded", &b.account_sid, "late-key.pem"])
        })
        .await,
        "the running proxy never tried the account whose key is missing"
    );
    assert!(
        !loaded(&h).accounts.contains_key(&b.account_sid),
        "the status file reports B without its key"
    );
    let as_b = || async {
        as_subaccount(&h, &b.account_sid, &b.api_key_sid, &b.secret)
            .await
            .status()
            .as_u16()
    };
    assert_eq!(
        as_b().await,
        403,
        "B signed with a key that does not exist yet"
    );
    std::fs::copy(TestAccount::b().private_key_file, &b.private_key_file).unwrap();
    assert!(
        wait_until(RELOAD, || async { as_b().await == 201 }).await,
        "the key's arrival was never noticed"
    );
    assert_eq!(
        loaded(&h).accounts.get(&b.account_sid),
        Some(&b.credential_sid)
    );
    h.stop().await;
}
