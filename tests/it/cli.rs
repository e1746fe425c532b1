//! The binary as a user runs it: `demo`, `check-config`, `sign`, and start-up refusals.

use std::path::{Path, PathBuf};

use crate::support::{
    canonical_vectors, fixture_key, run_pkcv, test_private_key, text, write_config, TestAccount,
};

/// A config with `extra` first and account A signing with `key`, written to `dir`.
fn config_for_a(dir: &Path, extra: &str, key: &Path) -> PathBuf {
    let a = TestAccount::a();
    write_config(
        dir,
        &format!(
            "{extra}\n[[accounts]]\naccount_sid = \"{}\"\ncredential_sid = \"{}\"\nprivate_key_file = \"{}\"\napi_key_sids = [\"{}\"]\n",
            a.account_sid,
            a.credential_sid,
            key.display(),
            a.api_key_sid
        ),
    )
}

#[tokio::test]
async fn demo_runs_offline_and_verifies() {
    let output = run_pkcv(&["demo"], None, &[]).await;
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("Demo OK."), "{out}");
    assert!(out.contains("request(s) verified, 0 rejected"), "{out}");
    for step in [
        "step 4/4",
        "verified",
        "send an SMS as the new subaccount",
        "closed AC",
        // It ends with a doctor run that passes.
        "check the whole setup against the stand-in",
        "✓ signed call AC",
        "✓ credential AC",
    ] {
        assert!(out.contains(step), "{step}: {out}");
    }
    assert!(!out.contains("UNEXPECTED"), "{out}");
}

#[tokio::test]
async fn check_config_prints_the_effective_config_without_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for_a(dir.path(), "[signing]\nttl_secs = 120", &test_private_key());
    let output = run_pkcv(
        &["check-config"],
        Some(&config),
        &[("PKCV_SERVER__LISTEN", "127.0.0.1:9999")],
    )
    .await;
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json["config"]["server"]["listen"], "127.0.0.1:9999",
        "env overrides the file"
    );
    assert_eq!(json["config"]["signing"]["ttl_secs"], 120);
    assert!(json["loaded_accounts"][0]["key"]
        .as_str()
        .unwrap()
        .contains("PEM file, RSA-2048, signing RS256"));
    assert!(
        !out.contains("PRIVATE KEY") && !out.contains("MII"),
        "{out}"
    );
}

/// A config addition, a key file, env overrides, and what the error must name.
type Refusal<'a> = (&'a str, &'a Path, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn start_up_refuses_unsafe_configs() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let world_readable = dir.path().join("world-readable.pem");
    std::fs::copy(test_private_key(), &world_readable).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        &world_readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let cases: [Refusal; 8] = [
        (
            "[signing]\nttl_secs = 301",
            &test_private_key(),
            &[],
            "ttl_secs",
        ),
        (
            "",
            &test_private_key(),
            &[("PKCV_SIGNING__TTL_SECS", "0")],
            "ttl_secs",
        ),
        (
            "",
            &fixture_key("rsa-1024-pkcs1.pem"),
            &[],
            "rsa-1024-pkcs1.pem",
        ),
        ("", &fixtures.join("missing.pem"), &[], "missing.pem"),
        // Read without bound, these would allocate gigabytes.
        (
            "",
            Path::new("/dev/zero"),
            &[],
            "/dev/zero is not a regular file (a device)",
        ),
        (
            "[upstream]\nextra_ca_file = \"/dev/zero\"",
            &test_private_key(),
            &[],
            "/dev/zero is not a regular file",
        ),
        (
            "",
            &test_private_key(),
            &[
                ("PKCV_INTERCEPT__ENABLED", "true"),
                ("PKCV_INTERCEPT__CA_CERT_FILE", "/dev/zero"),
                ("PKCV_INTERCEPT__CA_KEY_FILE", "/dev/zero"),
            ],
            "/dev/zero is not a regular file",
        ),
        (
            "",
            &world_readable,
            &[],
            "readable by others (mode 0644): run chmod 600",
        ),
    ];
    for (extra, key, envs, needle) in cases {
        let config = config_for_a(dir.path(), extra, key);
        for command in ["check-config", "serve"] {
            let output = run_pkcv(&[command], Some(&config), envs).await;
            assert!(
                !output.status.success(),
                "{command} accepted {extra:?} {envs:?}"
            );
            assert!(text(&output).contains(needle), "{}", text(&output));
        }
    }
    // No accounts at all: serve refuses rather than answering every request with an error.
    let empty = write_config(dir.path(), "");
    let output = run_pkcv(&["serve"], Some(&empty), &[]).await;
    assert!(
        !output.status.success() && text(&output).contains("no [[accounts]]"),
        "{}",
        text(&output)
    );
}

/// `sign` loads accounts as `serve` does: one that lives only in `accounts_dir` (the Debian
/// and Kubernetes layouts) signs, and a file there overrides an `[[accounts]]` entry.
#[tokio::test]
async fn sign_sees_the_accounts_in_accounts_dir() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestAccount::a();
    let accounts = dir.path().join("accounts");
    pkcv_proxy::keys::dir::write_account(&accounts, &a.config()).unwrap();
    let config = write_config(
        dir.path(),
        &format!("accounts_dir = {:?}\n", accounts.display().to_string()),
    );
    let url = format!(
        "https://api.twilio.com/2010-04-01/Accounts/{}.json",
        a.account_sid
    );
    let user = format!("{}:not-a-real-secret", a.api_key_sid);
    let output = run_pkcv(&["sign", "--url", &url, "-u", &user], Some(&config), &[]).await;
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "{} (credential {})",
            a.account_sid, a.credential_sid
        )),
        "{out}"
    );

    // An inline entry with another credential, overridden by the directory's file.
    let inline = config_for_a(
        dir.path(),
        &format!("accounts_dir = {:?}", accounts.display().to_string()),
        &test_private_key(),
    );
    let mut overriding = a.config();
    overriding.credential_sid = "CR0000000000000000000000000000000f".into();
    pkcv_proxy::keys::dir::write_account(&accounts, &overriding).unwrap();
    let output = run_pkcv(&["sign", "--url", &url, "-u", &user], Some(&inline), &[]).await;
    assert!(
        text(&output).contains("(credential CR0000000000000000000000000000000f)"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn sign_prints_the_vector_hash_and_redacts_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for_a(dir.path(), "", &test_private_key());
    let vectors = canonical_vectors();
    let case = &vectors.cases[1];
    let url = format!("https://api.twilio.com{}?{}", case.path, case.query);
    let user = format!("{}:not-a-real-secret", vectors.api_key_sid);
    let output = run_pkcv(&["sign", "--url", &url, "-u", &user], Some(&config), &[]).await;
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains(&format!("rqh: {}", case.rqh)), "{out}");
    assert!(out.contains("hrh: authorization;host"));
    assert!(out.contains("Twilio-Client-Validation: eyJ"));
    let secret_b64 = case.header("Authorization").trim_start_matches("Basic ");
    assert!(
        !out.contains(secret_b64),
        "the credentials were printed: {out}"
    );

    let output = run_pkcv(
        &["sign", "--url", &url, "-u", &user, "--show-secrets"],
        Some(&config),
        &[],
    )
    .await;
    assert!(
        text(&output).contains(&case.canonical_request),
        "{}",
        text(&output)
    );

    let output = run_pkcv(
        &["sign", "--url", "https://example.com/x", "-u", &user],
        Some(&config),
        &[],
    )
    .await;
    assert!(
        !output.status.success() && text(&output).contains("79010"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn the_example_config_is_valid_once_its_placeholders_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pkcv-proxy.example.toml"),
    )
    .unwrap();
    let key = test_private_key();
    let example = example.replace("keys/pkcv-private.pem", &key.display().to_string());
    // As shipped: both commands say the SIDs are placeholders to replace.
    let shipped = write_config(dir.path(), &example);
    for command in ["check-config", "serve"] {
        let output = run_pkcv(&[command], Some(&shipped), &[]).await;
        let printed = text(&output);
        assert!(!output.status.success(), "{command}: {printed}");
        assert!(
            printed.contains("placeholder: replace it with an Account SID"),
            "{command}: {printed}"
        );
    }
    // With the SIDs replaced (and only them), it is valid.
    let a = TestAccount::a();
    let replaced = example
        .replace("AC00000000000000000000000000000000", &a.account_sid)
        .replace("CR00000000000000000000000000000000", &a.credential_sid);
    let config = write_config(dir.path(), &replaced);
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    assert!(output.status.success(), "{}", text(&output));
}

#[tokio::test]
async fn ca_init_writes_a_private_key_and_prints_client_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let output = run_pkcv(
        &["ca", "init", "--out-dir", out.to_str().unwrap()],
        None,
        &[],
    )
    .await;
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    for needle in [
        "HTTPS_PROXY=http://127.0.0.1:8080",
        "REQUESTS_CA_BUNDLE=",
        "NODE_EXTRA_CA_CERTS=",
        "enabled = true",
    ] {
        assert!(printed.contains(needle), "{needle}: {printed}");
    }
    assert!(!printed.contains("PRIVATE KEY"));
    // Never over an existing key.
    let again = run_pkcv(
        &["ca", "init", "--out-dir", out.to_str().unwrap()],
        None,
        &[],
    )
    .await;
    assert!(!again.status.success());
}

#[tokio::test]
async fn explain_prints_a_codes_entry_and_every_code_the_proxy_makes_is_documented() {
    let output = run_pkcv(&["explain", "79006"], None, &[]).await;
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.starts_with("79006 (HTTP 403): The API key is not in"),
        "{printed}"
    );
    // Twilio's codes on the road to Twilio, each from the table.
    for code in pkcv_proxy::rejection::TWILIO_CODES {
        let output = run_pkcv(&["explain", &code.code.to_string()], None, &[]).await;
        let printed = text(&output);
        assert!(output.status.success(), "{printed}");
        assert!(
            printed.starts_with(&format!("{} (Twilio: {}): ", code.code, code.name))
                && printed.contains(code.action),
            "{printed}"
        );
    }
    let unknown = run_pkcv(&["explain", "21211"], None, &[]).await;
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("come from Twilio"),
        "{}",
        text(&unknown)
    );
    // Every code in the source's error mapping has an entry.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/error.rs"))
            .unwrap();
    let table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/error-codes.md"))
            .unwrap();
    for code in source
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| n.len() == 5 && n.starts_with("790"))
    {
        assert!(
            table.contains(&format!("| {code} |")),
            "{code} is not in docs/error-codes.md"
        );
    }
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    let bash = run_pkcv(&["completions", "bash"], None, &[]).await;
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("pkcv-proxy") && script.contains("check-config"),
        "{script}"
    );
    let man = run_pkcv(&["man"], None, &[]).await;
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success());
    for needle in [
        ".TH pkcv-proxy",
        "PKCV-PROXY SIGN",
        "PKCV-PROXY SUBACCOUNT",
        "ENVIRONMENT",
        "PKCV_CONFIG",
    ] {
        assert!(page.contains(needle), "the man page lacks {needle}");
    }
}

#[tokio::test]
async fn systemd_credentials_directory_expands_in_path_settings() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::copy(test_private_key(), credentials.join("pkcv-private.pem")).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        credentials.join("pkcv-private.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = config_for_a(
        dir.path(),
        "",
        Path::new("${CREDENTIALS_DIRECTORY}/pkcv-private.pem"),
    );
    let unset = run_pkcv(&["check-config"], Some(&config), &[]).await;
    assert!(!unset.status.success());
    assert!(
        text(&unset).contains("CREDENTIALS_DIRECTORY}, which is not set"),
        "{}",
        text(&unset)
    );
    let set = run_pkcv(
        &["check-config"],
        Some(&config),
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    )
    .await;
    assert!(set.status.success(), "{}", text(&set));
}

/// A `--pkcs11` URI with a `pin-value` is refused without the PIN being repeated, and
/// without touching any module.
#[tokio::test]
async fn a_pkcs11_uri_with_a_pin_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let uri = "pkcs11:token=pkcv;object=k?pin-value=73519";
    for args in [
        vec![
            "keygen",
            "--pkcs11",
            uri,
            "--out-dir",
            out.to_str().unwrap(),
        ],
        vec!["keys", "rotate", "--account", "AC1", "--pkcs11", uri],
        vec![
            "subaccount",
            "create",
            "--friendly-name",
            "x",
            "--pkcs11",
            uri,
        ],
    ] {
        let output = run_pkcv(&args, None, &[]).await;
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains("sets pin-value"), "{args:?}: {shown}");
        assert!(!shown.contains("73519"), "{args:?} echoed the PIN: {shown}");
    }
    assert!(!out.exists());
}
