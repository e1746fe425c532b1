//! `pkcv-proxy doctor` against the stand-in: a setup that works passes; each injected fault
//! (an unregistered credential, on the signed call and on the Main key's lookup (404), a key
//! that differs from the registered one, a wrong API key, a clock beyond the token window, an
//! unreachable host, a TLS trust failure) is named with its cause and fix, in human and
//! `--json` output, with exit codes 0 / 2 / 1.

use std::process::Output;

use serde_json::Value;

use crate::support::{run_pkcv, text, Harness, TestAccount};

/// Runs `doctor` on the harness's config, with the Main key of account A unless `main` is
/// `None`.
async fn doctor(h: &Harness, main: Option<&TestAccount>, args: &[&str]) -> Output {
    let config = h.write_config();
    let mut command = vec!["doctor"];
    command.extend_from_slice(args);
    let env: Vec<(&str, &str)> = main
        .map(|main| {
            vec![
                ("TWILIO_ACCOUNT_SID", main.account_sid.as_str()),
                ("TWILIO_MAIN_KEY", main.api_key_sid.as_str()),
                ("TWILIO_MAIN_SECRET", main.secret.as_str()),
            ]
        })
        .unwrap_or_default();
    let output = run_pkcv(&command, Some(&config), &env).await;
    if let Some(main) = main {
        assert!(
            !text(&output).contains(&main.secret),
            "doctor printed the secret: {}",
            text(&output)
        );
    }
    output
}

/// `--json`'s checks, one object a line.
fn checks(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

/// The check named `name` (the first one).
fn check<'c>(checks: &'c [Value], name: &str) -> &'c Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[tokio::test]
async fn a_working_setup_passes_every_check() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let human = doctor(&h, Some(&a), &[]).await;
    let printed = text(&human);
    assert_eq!(human.status.code(), Some(0), "{printed}");
    for line in [
        "✓ config",
        "✓ accounts",
        "✓ upstream api.twilio.com: DNS",
        "✓ upstream accounts.twilio.com",
        "✓ clock",
        &format!("✓ signed call {}", a.account_sid),
        &format!("✓ credential {}", a.account_sid),
        "0 failed, 0 not run",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    let json = doctor(&h, Some(&a), &["--json"]).await;
    assert_eq!(json.status.code(), Some(0));
    let checks = checks(&json);
    assert!(checks.len() >= 7, "{checks:?}");
    assert!(checks.iter().all(|c| c["result"] == "passed"), "{checks:?}");
    h.stop().await;
}

#[tokio::test]
async fn without_credentials_the_signed_checks_are_not_run_and_a_secret_file_is_used() {
    let a = TestAccount::a();
    let dir = tempfile::tempdir().unwrap();
    let accounts_dir = dir.path().join("accounts");
    std::fs::create_dir_all(&accounts_dir).unwrap();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.accounts_dir = Some(accounts_dir.clone());
    })
    .await;
    let output = doctor(&h, None, &[]).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains(&format!("- signed call {}: not run", a.account_sid))
            && printed.contains("TWILIO_MAIN_KEY")
            && printed.contains(&format!("{}.secret", a.account_sid)),
        "{printed}"
    );
    // The secret file `subaccount create` writes makes the signed call run.
    let keys = accounts_dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join(format!("{}.secret", a.account_sid)), &a.secret).unwrap();
    let output = doctor(&h, None, &["--json"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let checks = checks(&output);
    assert_eq!(
        check(&checks, "signed call")["result"],
        "passed",
        "{checks:?}"
    );
    assert_eq!(check(&checks, "credential")["result"], "not_run");
    assert!(!text(&output).contains(&a.secret));
    h.stop().await;
}

#[tokio::test]
async fn twilio_refusals_are_named_with_their_cause_and_fix() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let registered = h.standin.registry().await;

    // A wrong API key secret: 20003.
    let mut wrong = a.clone();
    wrong.secret = "not-the-secret".into();
    let output = doctor(&h, Some(&wrong), &["--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let signed = check(&checks(&output), "signed call").clone();
    assert_eq!(signed["twilio_code"], 20003, "{signed}");
    assert!(signed["advice"].as_str().unwrap().contains("keys list"));

    // A key that differs from the registered one: 20151.
    h.standin
        .update_registry(|r| {
            r.add_public_key_pem(
                &a.credential_sid,
                &a.account_sid,
                &TestAccount::b().public_key_pem(),
            )
            .unwrap();
        })
        .await;
    let output = doctor(&h, Some(&a), &[]).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&format!(
            "✗ signed call {}: Twilio answered 401 with code 20151",
            a.account_sid
        )) && printed.contains(&format!(
            "is not the public key registered as {}",
            a.credential_sid
        )) && printed.contains("→ run `pkcv-proxy doctor`; re-register the public key"),
        "{printed}"
    );

    // An unregistered credential: 20151 as well, with the same cause named.
    h.standin
        .update_registry(|r| {
            r.credentials.remove(&a.credential_sid);
        })
        .await;
    let output = doctor(&h, Some(&a), &["--json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let signed = check(&checks(&output), "signed call").clone();
    assert_eq!(signed["twilio_code"], 20151, "{signed}");
    assert!(signed["detail"]
        .as_str()
        .unwrap()
        .contains("is not registered in"));

    // A clock beyond the window: the clock check and the signed call (20156) say so.
    h.standin.update_registry(|r| *r = registered).await;
    h.standin.shift_clock(600);
    let output = doctor(&h, Some(&a), &["--json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let checks = checks(&output);
    let clock = check(&checks, "clock");
    assert_eq!(clock["result"], "failed", "{clock}");
    assert!(
        clock["advice"].as_str().unwrap().contains("behind"),
        "{clock}"
    );
    assert_eq!(check(&checks, "signed call")["twilio_code"], 20156);
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_host_and_an_untrusted_certificate_fail_the_upstream_check() {
    let a = TestAccount::a();
    // Nothing listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let mut unreachable = h.raw.clone();
    for address in unreachable.upstream.connect_to.values_mut() {
        *address = closed.to_string();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), &toml::to_string(&unreachable).unwrap());
    let output = run_pkcv(&["doctor", "--json"], Some(&config), &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let upstream = check(&checks(&output), "upstream api.twilio.com").clone();
    assert_eq!(upstream["result"], "failed");
    assert!(
        upstream["detail"].as_str().unwrap().starts_with("TCP: "),
        "{upstream}"
    );

    let mut untrusted = h.raw.clone();
    untrusted.upstream.extra_ca_file = None;
    let config = crate::support::write_config(dir.path(), &toml::to_string(&untrusted).unwrap());
    let output = run_pkcv(&["doctor"], Some(&config), &[]).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("✗ upstream api.twilio.com: TLS: ") && printed.contains("extra_ca_file"),
        "{printed}"
    );
    // An account that is not configured is a failed check too.
    let output = run_pkcv(
        &["doctor", "--account", "AC00000000000000000000000000000000"],
        Some(&h.write_config()),
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("is not configured on this proxy"));
    h.stop().await;
}

/// The credential check's 404: the Main key's lookup of an account's `credential_sid` finds
/// nothing (never uploaded, deleted, or a typo). The check fails with that cause and what to
/// do, human and `--json`, and `doctor` exits 1.
#[tokio::test]
async fn a_credential_twilio_does_not_know_fails_the_credential_check() {
    let (a, b) = (TestAccount::a(), TestAccount::b());
    let h = Harness::start_with(&[a.clone(), b.clone()], |_| {}).await;
    // B's public key is gone from Twilio; A (the Main account) is intact, so the lookup
    // itself is signed and authenticated, and answered 404.
    h.standin
        .update_registry(|r| {
            r.credentials.remove(&b.credential_sid);
        })
        .await;
    let cause = format!(
        "{} is not a public key of {}: credential_sid is wrong, or the public key was never uploaded or was deleted",
        b.credential_sid, b.account_sid
    );
    let advice = "upload the public key (`pkcv-proxy keygen` prints it) and put the CR… Twilio returns in credential_sid";

    let human = doctor(&h, Some(&a), &["--account", &b.account_sid]).await;
    let printed = text(&human);
    assert_eq!(human.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&format!("✗ credential {}: {cause}", b.account_sid)),
        "{printed}"
    );
    assert!(printed.contains(&format!("→ {advice}")), "{printed}");

    let json = doctor(&h, Some(&a), &["--account", &b.account_sid, "--json"]).await;
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let checks = checks(&json);
    let credential = check(&checks, "credential");
    assert_eq!(credential["result"], "failed", "{credential}");
    assert_eq!(
        credential["account"],
        b.account_sid.as_str(),
        "{credential}"
    );
    assert_eq!(credential["detail"], cause.as_str(), "{credential}");
    assert_eq!(credential["advice"], advice, "{credential}");
    // B's own signed call has no API key to run with: the credential check alone fails.
    assert_eq!(check(&checks, "signed call")["result"], "not_run");
    let failed: Vec<&Value> = checks.iter().filter(|c| c["result"] == "failed").collect();
    assert_eq!(failed, [credential], "{checks:?}");
    // The Main account's own credential is found: the 404 is B's alone.
    let json = doctor(&h, Some(&a), &["--account", &a.account_sid, "--json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    h.stop().await;
}
