//! The binary as a user runs it: `demo`, `check-config`, `sign`, and start-up refusals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    canonical_vectors, fixture_key, run_pkcv, test_private_key, text, wait_until, write_config,
    Harness, ProxyProcess, TestAccount,
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
    // The next steps name files .gitignore keeps out of git, and the variable the SDKs
    // (https:// URLs) read.
    let next = &out[out.find("Next,").expect("next steps")..];
    let ignored =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore")).unwrap();
    for (written, rule) in [
        ("--out-dir keys", "/keys/"),
        (
            "cp config/pkcv-proxy.example.toml config/pkcv-proxy.toml",
            "/config/pkcv-proxy.toml",
        ),
        ("--out-dir ca", "/ca/"),
    ] {
        assert!(next.contains(written), "{written}: {next}");
        assert!(
            ignored.lines().any(|line| line == rule),
            "{rule} is not in .gitignore"
        );
    }
    assert!(
        next.contains("HTTPS_PROXY=http://127.0.0.1:8080 (with [intercept])"),
        "{next}"
    );
    assert!(!next.contains(" HTTP_PROXY"), "{next}");
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
    assert!(
        printed.contains("\nWhat to do: Add the API key SID to that account's `api_key_sids`"),
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
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("come from Twilio"),
        "{}",
        text(&unknown)
    );
    // Every code in the source's error mapping has an entry, and the entry says what to do.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/error.rs"))
            .unwrap();
    let mut codes: Vec<&str> = source
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| n.len() == 5 && n.starts_with("790"))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert!(codes.len() > 30, "{codes:?}");
    for code in codes {
        let output = run_pkcv(&["explain", code], None, &[]).await;
        let printed = text(&output);
        assert!(
            output.status.success(),
            "{code} is not in docs/error-codes.md: {printed}"
        );
        let what_to_do = printed
            .lines()
            .find_map(|line| line.strip_prefix("What to do: "))
            .unwrap_or_default();
        assert!(
            what_to_do.len() > 10,
            "{code} says nothing about what to do: {printed}"
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

#[tokio::test]
async fn a_second_signal_during_the_drain_exits_130_at_once() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.shutdown_grace_secs = 60;
    })
    .await;
    let proxy = ProxyProcess::start(&h.raw, h.dir.path()).await;
    // A request whose body never finishes keeps the drain waiting.
    let mut held = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let head = format!(
        "POST /2010-04-01/Accounts/{}/Messages.json HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: 18\r\n\r\nTo=",
        TestAccount::a().account_sid,
        proxy.listen,
        TestAccount::a().basic_auth()
    );
    held.write_all(head.as_bytes()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            proxy.metric("pkcv_proxy_requests_in_flight").await == Some(1.0)
        })
        .await,
        "the request never got in flight"
    );
    proxy.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            proxy.admin_get("/readyz").await.0 == 503
        })
        .await,
        "the first signal did not start the drain"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM");
    let exit = proxy.exit(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(130), "{exit:?}");
    drop(held);
    h.stop().await;
}

#[tokio::test]
async fn serve_says_first_that_no_config_file_was_given() {
    let output = run_pkcv(&["serve"], None, &[]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.starts_with("pkcv-proxy: no config file given: use -c or PKCV_CONFIG"),
        "{shown}"
    );
    assert!(!shown.contains("accounts"), "{shown}");
    // The same with no subcommand at all, and for check-config.
    let bare = run_pkcv(&[], None, &[]).await;
    assert_eq!(text(&bare), shown);
    let checked = run_pkcv(&["check-config"], None, &[]).await;
    assert_eq!(text(&checked), shown);
}

#[tokio::test]
async fn a_taken_port_names_the_setting_and_how_to_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for_a(dir.path(), "", &test_private_key());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    for (setting, env) in [
        ("listen", "PKCV_SERVER__LISTEN"),
        ("admin_listen", "PKCV_SERVER__ADMIN_LISTEN"),
    ] {
        let mut envs = vec![
            ("PKCV_SERVER__LISTEN", "127.0.0.1:0"),
            ("PKCV_SERVER__ADMIN_LISTEN", "127.0.0.1:0"),
        ];
        envs.retain(|(name, _)| *name != env);
        envs.push((env, &address));
        let output = run_pkcv(&["serve"], Some(&config), &envs).await;
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        assert!(
            shown.contains(&format!(
                "pkcv-proxy: server.{setting} {address} is in use: set [server] {setting} or {env}\n"
            )),
            "{shown}"
        );
    }
}

/// The subcommands a `--help` text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_subcommands_help_shows_an_example() {
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = run_pkcv(&args, None, &[]).await;
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        let children = subcommands(&help);
        let example = help
            .lines()
            .skip_while(|line| !line.starts_with("Example"))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .any(|line| {
                line.trim()
                    .starts_with(&format!("pkcv-proxy {}", path.join(" ")))
            });
        assert!(
            example,
            "`pkcv-proxy {}` --help shows no example of itself:\n{help}",
            path.join(" ")
        );
        for child in children {
            let mut next = path.clone();
            next.push(child);
            pending.push(next);
        }
        seen += 1;
    }
    // The top level, its subcommands, and the groups' own (ca init, keys list, ...).
    assert!(seen >= 17, "only {seen} help texts found");
}

#[tokio::test]
async fn keygen_refuses_to_overwrite_and_says_how_to_write_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = run_pkcv(&["keygen", "--out-dir", out], None, &[]).await;
    assert!(first.status.success(), "{}", text(&first));
    let private = dir.path().join("pkcv-private.pem");
    let before = std::fs::read(&private).unwrap();
    // Either half of the pair existing is enough to refuse, before a key is made.
    for remove in [None, Some("pkcv-public.pem")] {
        if let Some(name) = remove {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        let again = run_pkcv(&["keygen", "--out-dir", out], None, &[]).await;
        let shown = text(&again);
        assert_eq!(again.status.code(), Some(1), "{shown}");
        assert!(
            shown.contains(
                "exists: refusing to overwrite a key pair; choose another --name or --out-dir"
            ),
            "{shown}"
        );
        assert!(
            !shown.contains("BEGIN PUBLIC KEY"),
            "a key was made: {shown}"
        );
    }
    assert_eq!(std::fs::read(&private).unwrap(), before);
    let beside = run_pkcv(&["keygen", "--out-dir", out, "--name", "next"], None, &[]).await;
    assert!(beside.status.success(), "{}", text(&beside));
    assert!(dir.path().join("next-private.pem").exists());
}

#[tokio::test]
async fn a_public_key_given_as_the_private_key_is_called_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    // The other half of the pair, readable by all as a public key is.
    let public = dir.path().join("pkcv-public.pem");
    std::fs::write(&public, crate::support::test_public_key_pem()).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&public, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = config_for_a(dir.path(), "", &public);
    for command in ["check-config", "serve"] {
        let output = run_pkcv(&[command], Some(&config), &[]).await;
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {shown}");
        assert!(
            shown.contains("pkcv-public.pem holds a public key, not a private key"),
            "{command}: {shown}"
        );
        assert!(!shown.contains("chmod"), "{command}: {shown}");
    }
}

/// The Main API key's variables: every missing one named in one message, said once (no
/// "environment variable not found" after it).
#[tokio::test]
async fn missing_main_key_variables_are_named_together_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for_a(dir.path(), "", &test_private_key());
    let a = TestAccount::a();
    let run = |set: &'static [(&'static str, &'static str)]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pkcv-proxy"));
        command
            .args(["keys", "list", "--account", &a.account_sid, "--config"])
            .arg(&config)
            .env_remove("PKCV_CONFIG")
            .env_remove("TWILIO_ACCOUNT_SID")
            .env_remove("TWILIO_MAIN_KEY")
            .env_remove("TWILIO_MAIN_SECRET")
            .envs(set.iter().copied())
            .kill_on_drop(true);
        command.output()
    };
    let output = run(&[]).await.unwrap();
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains(
            "TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY and TWILIO_MAIN_SECRET are not set (the Main API key comes from the environment)"
        ),
        "{out}"
    );
    assert!(!out.contains("environment variable not found"), "{out}");
    let output = run(&[("TWILIO_MAIN_KEY", "SK00000000000000000000000000000001")])
        .await
        .unwrap();
    let out = text(&output);
    assert!(
        out.contains("TWILIO_ACCOUNT_SID and TWILIO_MAIN_SECRET are not set"),
        "{out}"
    );
}

/// One limit for every file read: a 2 MiB config file, or account file, is refused by name
/// and with the limit, before anything parses it.
#[tokio::test]
async fn files_over_one_mib_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let padding = format!("# {}\n", "x".repeat(1022)).repeat(2 * 1024);
    let big = dir.path().join("big.toml");
    std::fs::write(&big, &padding).unwrap();
    let output = run_pkcv(&["check-config"], Some(&big), &[]).await;
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("big.toml is larger than 1 MiB (1048576 bytes)"),
        "{out}"
    );

    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    let a = TestAccount::a();
    std::fs::write(
        accounts.join(format!("{}.toml", a.account_sid)),
        format!(
            "account_sid = \"{}\"\ncredential_sid = \"{}\"\nprivate_key_file = \"{}\"\n{padding}",
            a.account_sid,
            a.credential_sid,
            test_private_key().display()
        ),
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!("accounts_dir = \"{}\"\n", accounts.display()),
    );
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains(&format!("{}.toml is larger than 1 MiB", a.account_sid)),
        "{out}"
    );
}
