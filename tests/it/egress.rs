//! Egress through a corporate HTTP proxy: a real squid (from Debian; `.ci/run` installs
//! `squid` and `apache2-utils` for `htpasswd`) started on loopback with a private config,
//! with and without proxy authentication. The stand-in sees signed, verified requests;
//! squid sees only `CONNECT`s (the TLS to the stand-in runs end to end inside); each failure
//! of the corporate proxy gets its own code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pkcv_standin::StandIn;

use crate::support::{
    json, registry, run_pkcv, text, verified, wait_until, write_config, Harness, TestAccount,
};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";
const SQUID: &str = "/usr/sbin/squid";
/// Where Debian's squid package puts the htpasswd-file helper.
const NCSA_AUTH: &str = "/usr/lib/squid/basic_ncsa_auth";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

/// squid on loopback, one process in the foreground with its own directory, port and config;
/// killed on drop (its log's end printed when a test fails).
struct Squid {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- squid cache.log:\n{}\n--- squid access.log:\n{}",
                read(&self.dir.path().join("cache.log")),
                self.access_log()
            );
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Squid {
    /// Starts squid admitting `CONNECT` to `admitted_ports` only, from loopback only; with
    /// `authenticated`, only for `USER`/`PASSWORD` (an htpasswd file made here).
    fn start(admitted_ports: &[u16], authenticated: bool) -> Squid {
        assert!(
            Path::new(SQUID).exists(),
            "needs squid: apt-get install squid (.ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        // squid started as root runs as the `proxy` user: it must write its logs here.
        set_mode(dir.path(), 0o777);
        let port = free_port();
        let config = config(dir.path(), port, admitted_ports, authenticated);
        let config_file = dir.path().join("squid.conf");
        std::fs::write(&config_file, config).unwrap();
        set_mode(&config_file, 0o644);
        let child = Command::new(SQUID)
            .arg("-N")
            .arg("-f")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut squid = Squid { child, port, dir };
        squid.wait_ready();
        squid
    }

    fn wait_ready(&mut self) {
        // Not probed with a connection: squid would log it. It says when it listens.
        let cache_log = self.dir.path().join("cache.log");
        for _ in 0..200 {
            if read(&cache_log).contains("Accepting HTTP Socket connections") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "squid exited at start-up ({status}):\n{}",
                    read(&self.dir.path().join("cache.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("squid did not listen on port {} within 10 s", self.port);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn access_log(&self) -> String {
        read(&self.dir.path().join("access.log"))
    }

    /// The access log once it has at least `lines` lines (squid logs a tunnel when it
    /// closes), within 10 s.
    async fn access_log_lines(&self, lines: usize) -> Vec<String> {
        let logged = wait_until(Duration::from_secs(10), || async {
            self.access_log().lines().count() >= lines
        })
        .await;
        assert!(logged, "squid logged fewer than {lines} line(s)");
        self.access_log().lines().map(str::to_owned).collect()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn config(dir: &Path, port: u16, admitted_ports: &[u16], authenticated: bool) -> String {
    let d = dir.display();
    let admitted: Vec<String> = admitted_ports.iter().map(u16::to_string).collect();
    let admitted = admitted.join(" ");
    let mut config = format!(
        "http_port 127.0.0.1:{port}\n\
         pid_filename {d}/squid.pid\n\
         access_log stdio:{d}/access.log\n\
         cache_log {d}/cache.log\n\
         coredump_dir {d}\n\
         netdb_filename none\n\
         pinger_enable off\n\
         cache deny all\n\
         cache_mem 8 MB\n\
         shutdown_lifetime 0 seconds\n\
         visible_hostname pkcv-test-squid\n\
         acl SSL_ports port {admitted}\n\
         acl Safe_ports port {admitted}\n\
         acl CONNECT method CONNECT\n\
         acl loopback src 127.0.0.1/32\n\
         http_access deny !Safe_ports\n\
         http_access deny CONNECT !SSL_ports\n"
    );
    if authenticated {
        let htpasswd = htpasswd(dir);
        config.push_str(&format!(
            "auth_param basic program {NCSA_AUTH} {}\n\
             auth_param basic realm pkcv-test\n\
             acl authenticated proxy_auth REQUIRED\n\
             http_access deny !authenticated\n",
            htpasswd.display()
        ));
    }
    config.push_str("http_access allow loopback\nhttp_access deny all\n");
    config
}

/// An htpasswd file for `USER`/`PASSWORD` (MD5, which `basic_ncsa_auth` reads).
fn htpasswd(dir: &Path) -> PathBuf {
    assert!(
        Path::new(NCSA_AUTH).exists(),
        "needs squid's basic_ncsa_auth at {NCSA_AUTH}: apt-get install squid"
    );
    let file = dir.join("htpasswd");
    let output = Command::new("htpasswd")
        .args(["-b", "-c", "-m"])
        .arg(&file)
        .args([USER, PASSWORD])
        .output()
        .unwrap_or_else(|err| {
            panic!("needs htpasswd: apt-get install apache2-utils (.ci/run installs it): {err}")
        });
    assert!(output.status.success(), "htpasswd: {output:?}");
    set_mode(&file, 0o644);
    file
}

/// Asserts the proxy's own error with `status` and `code`; returns its message.
async fn assert_refused(response: reqwest::Response, status: u16, code: u64) -> String {
    let (got, body) = json(response).await;
    assert_eq!((got, body["code"].as_u64()), (status, Some(code)), "{body}");
    body["message"].as_str().unwrap().to_owned()
}

/// Every line of squid's access log is a `CONNECT` to `target`, and none names a path.
fn assert_only_connects(lines: &[String], target: &str) {
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(5), Some(&"CONNECT"), "{line}");
        assert_eq!(fields.get(6), Some(&target), "{line}");
        assert!(!line.contains("/2010-04-01"), "squid saw a path: {line}");
    }
}

/// Writes `user:password` to an owner-only file, as `proxy_auth_file` wants it.
fn credentials_file(dir: &Path, name: &str, credentials: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, format!("{credentials}\n")).unwrap();
    set_mode(&file, 0o600);
    file
}

/// Sends `CONNECT target` to the proxy on a new connection; returns the status line.
fn connect_through(proxy: std::net::SocketAddr, target: &str) -> String {
    let mut stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 512];
    let read = stream.read(&mut head).unwrap();
    String::from_utf8_lossy(&head[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
#[ignore = "needs squid (apt-get install squid)"]
async fn signed_requests_and_passthrough_reach_their_hosts_through_squid_which_sees_only_connect() {
    let a = TestAccount::a();
    let standin = StandIn::start(registry(std::slice::from_ref(&a)))
        .await
        .unwrap();
    let target = standin.addr().to_string();
    let squid = Squid::start(&[standin.addr().port()], false);
    let h = Harness::start_around(standin, std::slice::from_ref(&a), |raw| {
        raw.upstream.proxy = Some(squid.url());
        raw.intercept.passthrough_hosts = vec!["passthrough.example".into()];
        raw.upstream
            .connect_to
            .insert("passthrough.example".into(), target.clone());
    })
    .await;
    for _ in 0..2 {
        verified(&h, h.get_as(A_ACCOUNTS, &a).await, &a.account_sid).await;
    }
    assert_eq!(h.standin.verified(), 2);
    // A passthrough tunnel is dialled through squid too.
    let proxy = h.proxy;
    let status =
        tokio::task::spawn_blocking(move || connect_through(proxy, "passthrough.example:443"))
            .await
            .unwrap();
    assert!(status.contains(" 200"), "{status}");
    h.stop().await;
    // One pooled connection for both requests, one for the passthrough tunnel: squid logs
    // each when it closes.
    let lines = squid.access_log_lines(2).await;
    assert_only_connects(&lines, &target);
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[tokio::test]
#[ignore = "needs squid and htpasswd (apt-get install squid apache2-utils)"]
async fn proxy_authentication_is_sent_and_a_407_or_a_refused_connect_is_79044() {
    let a = TestAccount::a();
    let mut standins = Vec::new();
    for _ in 0..3 {
        standins.push(
            StandIn::start(registry(std::slice::from_ref(&a)))
                .await
                .unwrap(),
        );
    }
    let ports: Vec<u16> = standins.iter().map(|s| s.addr().port()).collect();
    let squid = Squid::start(&ports, true);
    let secrets = tempfile::tempdir().unwrap();
    let good = credentials_file(secrets.path(), "good", &format!("{USER}:{PASSWORD}"));
    let bad = credentials_file(secrets.path(), "bad", &format!("{USER}:wrong"));
    let mut standins = standins.into_iter();
    let mut start = |auth: Option<PathBuf>| {
        let standin = standins.next().unwrap();
        let url = squid.url();
        async move {
            Harness::start_around(standin, std::slice::from_ref(&TestAccount::a()), |raw| {
                raw.upstream.proxy = Some(url);
                raw.upstream.proxy_auth_file = auth;
            })
            .await
        }
    };

    let h = start(Some(good)).await;
    verified(&h, h.get_as(A_ACCOUNTS, &a).await, &a.account_sid).await;
    let target = h.standin.addr().to_string();
    h.stop().await;
    let lines = squid.access_log_lines(1).await;
    assert!(
        lines
            .iter()
            .any(|line| line.contains(&target) && line.split_whitespace().nth(7) == Some(USER)),
        "no authenticated CONNECT to {target}: {lines:?}"
    );

    let h = start(Some(bad)).await;
    let message = assert_refused(h.get_as(A_ACCOUNTS, &a).await, 502, 79044).await;
    assert!(
        message.contains("407") && message.contains("refused the credentials"),
        "{message}"
    );
    assert!(
        !message.contains("wrong") && !message.contains(PASSWORD),
        "{message}"
    );
    assert_eq!(h.standin.connections_accepted(), 0);
    assert_eq!(
        h.metric(r#"pkcv_proxy_rejected_total{code="79044"}"#).await,
        Some(1.0)
    );
    h.stop().await;

    let h = start(None).await;
    let message = assert_refused(h.get_as(A_ACCOUNTS, &a).await, 502, 79044).await;
    assert!(
        message.contains("set upstream.proxy_auth_file"),
        "{message}"
    );
    h.stop().await;

    // A port squid does not admit: refused (403) before authentication is asked for.
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream.proxy = Some(squid.url());
    })
    .await;
    let message = assert_refused(h.get_as(A_ACCOUNTS, &a).await, 502, 79044).await;
    assert!(message.contains("403"), "{message}");
    assert_eq!(h.standin.connections_accepted(), 0);
    h.stop().await;

    let lines = squid.access_log_lines(4).await;
    for line in &lines {
        assert_eq!(line.split_whitespace().nth(5), Some("CONNECT"), "{line}");
        assert!(!line.contains(PASSWORD), "{line}");
    }
}

#[tokio::test]
async fn an_unreachable_egress_proxy_is_79045() {
    let a = TestAccount::a();
    let closed = free_port();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream.proxy = Some(format!("http://127.0.0.1:{closed}"));
    })
    .await;
    let message = assert_refused(h.get_as(A_ACCOUNTS, &a).await, 502, 79045).await;
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(h.standin.connections_accepted(), 0);
    assert_eq!(
        h.metric(r#"pkcv_proxy_rejected_total{code="79045"}"#).await,
        Some(1.0)
    );
    h.stop().await;
}

#[tokio::test]
async fn no_proxy_hosts_are_dialled_directly() {
    let a = TestAccount::a();
    let closed = free_port();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream.proxy = Some(format!("http://127.0.0.1:{closed}"));
        raw.upstream.no_proxy = vec!["*.twilio.com".into()];
    })
    .await;
    verified(&h, h.get_as(A_ACCOUNTS, &a).await, &a.account_sid).await;
    h.stop().await;
}

#[tokio::test]
async fn check_config_shows_the_egress_proxy_with_its_credentials_redacted() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let secrets = tempfile::tempdir().unwrap();
    let file = credentials_file(secrets.path(), "auth", &format!("{USER}:{PASSWORD}"));
    let mut raw = h.raw.clone();
    raw.upstream.proxy = Some("http://proxy.corp.example:3128".into());
    raw.upstream.proxy_auth_file = Some(file.clone());
    raw.upstream.no_proxy = vec!["*.internal.example".into()];
    let config = write_config(h.dir.path(), &toml::to_string(&raw).unwrap());
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        shown["egress_proxy"],
        serde_json::json!({
            "address": "proxy.corp.example:3128",
            "credentials": "<redacted>",
            "no_proxy": ["*.internal.example"],
        })
    );
    assert!(
        !printed.contains(PASSWORD) && !printed.contains("Y29ycmVjdCBob3JzZQ"),
        "{printed}"
    );

    // Others may read the credentials: refused like a private key, the value not shown.
    set_mode(&file, 0o644);
    let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
    let printed = text(&output);
    assert!(
        !output.status.success() && printed.contains("proxy_auth_file"),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD), "{printed}");

    // Credentials in the URL, both sources, auth without a proxy: refused, nothing shown.
    for (url, env, problem) in [
        (
            Some(format!("http://{USER}:{PASSWORD}@proxy:3128")),
            None,
            "holds credentials",
        ),
        (
            Some("http://proxy:3128".into()),
            Some("VAR"),
            "both proxy_auth_file and proxy_auth_env",
        ),
        (None, None, "neither proxy nor proxy_from_env"),
        (
            Some("https://proxy:3128".into()),
            None,
            "only http:// proxies",
        ),
        // The listener itself (the harness listens on 127.0.0.1:0).
        (Some("http://127.0.0.1:0".into()), None, "loop back"),
    ] {
        let mut raw = raw.clone();
        raw.upstream.proxy = url;
        raw.upstream.proxy_auth_env = env.map(str::to_owned);
        let config = write_config(h.dir.path(), &toml::to_string(&raw).unwrap());
        let output = run_pkcv(&["check-config"], Some(&config), &[]).await;
        let printed = text(&output);
        assert!(
            !output.status.success() && printed.contains(problem),
            "{printed}"
        );
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
    h.stop().await;
}

#[tokio::test]
async fn proxy_from_env_reads_the_process_https_proxy_only_when_asked() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let env = [
        ("HTTPS_PROXY", "http://proxy.corp.example:3128"),
        ("NO_PROXY", ".internal.example"),
    ];
    let egress = |raw: &pkcv_proxy::config::RawConfig| {
        let config = write_config(h.dir.path(), &toml::to_string(raw).unwrap());
        async move {
            let output = run_pkcv(&["check-config"], Some(&config), &env).await;
            assert!(output.status.success(), "{}", text(&output));
            let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            shown["egress_proxy"].clone()
        }
    };
    assert_eq!(egress(&h.raw).await, serde_json::Value::Null);
    let mut raw = h.raw.clone();
    raw.upstream.proxy_from_env = true;
    assert_eq!(
        egress(&raw).await,
        serde_json::json!({
            "address": "proxy.corp.example:3128",
            "credentials": null,
            "no_proxy": ["internal.example", "*.internal.example"],
        })
    );
    h.stop().await;
}

#[tokio::test]
async fn an_egress_proxy_that_does_not_answer_connect_in_time_is_504_79041() {
    // Accepts the connection and reads the CONNECT, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream.proxy = Some(format!("http://{address}"));
        raw.upstream.connect_timeout_ms = 300;
    })
    .await;
    assert_refused(h.get_as(A_ACCOUNTS, &a).await, 504, 79041).await;
    assert_eq!(h.standin.connections_accepted(), 0);
    h.stop().await;
    held.abort();
}

/// Keys in a key service are reached through the corporate proxy too: the transit key's
/// reads and every signature go as `CONNECT`s to OpenBao through squid, and the request is
/// signed and verified.
#[tokio::test]
#[ignore = "needs squid and OpenBao (apt-get install squid; bash tests/keyservices/setup.sh)"]
async fn a_key_in_vault_is_reached_through_squid_too() {
    use crate::vault::{get, proxy_config, public_key, standin_with, write_token, OpenBao, ROOT};
    let bao = OpenBao::start().await;
    bao.key("orders", "rsa-2048").await;
    let public = public_key(&bao, "orders").await;
    let standin = standin_with(public.as_bytes()).await;
    let squid = Squid::start(&[standin.addr().port(), bao.addr.port()], false);
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), ROOT);
    let mut raw = proxy_config(&standin, dir.path(), &bao.url(), "orders");
    raw.upstream.proxy = Some(squid.url());
    let proxy = crate::support::ProxyProcess::start(&raw, dir.path()).await;
    assert_eq!(get(&proxy, &TestAccount::a()).await.0, 200);
    assert_eq!(standin.verified(), 1);
    // squid logs a tunnel when it closes: stop the proxy, closing its pooled connections.
    drop(proxy);
    let vault = bao.addr.to_string();
    let lines = squid.access_log_lines(2).await;
    let to_vault: Vec<_> = lines.iter().filter(|l| l.contains(&vault)).collect();
    assert!(
        !to_vault.is_empty(),
        "squid saw no tunnel to Vault: {lines:?}"
    );
    for line in to_vault {
        assert_only_connects(std::slice::from_ref(line), &vault);
        assert!(!line.contains("transit"), "squid saw a Vault path: {line}");
    }
}
