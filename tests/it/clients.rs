//! Client authentication: with `[[clients]]` configured, every request and every `CONNECT`
//! must prove a client (`Proxy-Authorization`), tunnels inherit their `CONNECT`'s client, a
//! client limited to some accounts signs for no other, and clients reload with the accounts.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    basic, client_config, enable_interception, json, wait_until, Harness, ProxyProcess, TestAccount,
};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";
const B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A and B, interception on, and two clients: `app` (any account) and `other` (B only).
async fn with_clients() -> (Harness, tempfile::TempDir, std::path::PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut ca_file = None;
    let h = Harness::start_with(&[TestAccount::a(), TestAccount::b()], |raw| {
        ca_file = Some(enable_interception(raw, ca_dir.path()));
        raw.clients = vec![
            client_config("app", "app-secret", &[]),
            client_config("other", "other-secret", &[B]),
        ];
    })
    .await;
    (h, ca_dir, ca_file.unwrap())
}

async fn get_as(h: &Harness, proxy_authorization: Option<&str>) -> reqwest::Response {
    let mut request = h
        .client()
        .get(h.url(A_ACCOUNTS))
        .header("authorization", TestAccount::a().basic_auth());
    if let Some(value) = proxy_authorization {
        request = request.header("proxy-authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn requests_must_prove_a_client() {
    let (h, _ca_dir, _) = with_clients().await;
    for (credential, status, code) in [
        (None, 407, 79060),
        (Some(basic("app", "wrong")), 407, 79060),
        (Some(basic("nobody", "app-secret")), 407, 79060),
        (Some("Bearer app-secret".to_owned()), 407, 79060),
        (Some(basic("other", "other-secret")), 403, 79061),
    ] {
        let response = get_as(&h, credential.as_deref()).await;
        if status == 407 {
            assert_eq!(
                response.headers()["proxy-authenticate"],
                "Basic realm=\"pkcv-proxy\""
            );
        }
        let (got, body) = json(response).await;
        assert_eq!(
            (got, body["code"].as_u64()),
            (status, Some(code)),
            "{credential:?}: {body}"
        );
    }
    assert!(
        h.standin.records().await.is_empty(),
        "a refused client reached Twilio"
    );
    assert_eq!(
        h.metric(r#"pkcv_proxy_rejected_total{code="79060"}"#).await,
        Some(4.0)
    );

    let response = get_as(&h, Some(&basic("app", "app-secret"))).await;
    assert_eq!(response.status(), 200);
    // The proxy credential is for the proxy: it never travels on.
    let record = h.standin.records().await.pop().unwrap();
    assert!(!record
        .headers
        .iter()
        .any(|(name, _)| name == "proxy-authorization"));

    // An HTTP_PROXY client with credentials in its proxy URL.
    let proxy = reqwest::Proxy::http(h.url(""))
        .unwrap()
        .basic_auth("app", "app-secret");
    let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
    let response = client
        .get(format!("http://api.twilio.com{A_ACCOUNTS}"))
        .header("authorization", TestAccount::a().basic_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.standin.verified(), 2);
    h.stop().await;
}

/// Sends a `CONNECT` with an optional `Proxy-Authorization`; the status it gets.
async fn connect_status(h: &Harness, proxy_authorization: Option<&str>) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let credential = proxy_authorization
        .map(|value| format!("Proxy-Authorization: {value}\r\n"))
        .unwrap_or_default();
    let connect = format!(
        "CONNECT api.twilio.com:443 HTTP/1.1\r\nHost: api.twilio.com:443\r\n{credential}\r\n"
    );
    stream.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test]
async fn tunnels_need_a_client_and_inherit_it() {
    let (h, _ca_dir, ca_file) = with_clients().await;
    assert_eq!(connect_status(&h, None).await, 407);
    assert_eq!(connect_status(&h, Some(&basic("app", "wrong"))).await, 407);
    assert_eq!(
        connect_status(&h, Some(&basic("app", "app-secret"))).await,
        200
    );

    // reqwest sends the credentials on the CONNECT only; requests inside carry none.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap();
    let through = |user: &str, secret: &str| {
        let proxy = reqwest::Proxy::https(h.url(""))
            .unwrap()
            .basic_auth(user, secret);
        reqwest::Client::builder()
            .proxy(proxy)
            .add_root_certificate(ca.clone())
            .build()
            .unwrap()
    };
    let response = through("app", "app-secret")
        .get(format!("https://api.twilio.com{A_ACCOUNTS}"))
        .header("authorization", TestAccount::a().basic_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // `other`'s tunnel opens, but it may sign only for B.
    let (status, body) = json(
        through("other", "other-secret")
            .get(format!("https://api.twilio.com{A_ACCOUNTS}"))
            .header("authorization", TestAccount::a().basic_auth())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (403, Some(79061)),
        "{body}"
    );
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs curl (apt-get install curl)"]
async fn curl_with_proxy_user_is_signed() {
    let (h, _ca_dir, ca_file) = with_clients().await;
    let a = TestAccount::a();
    let curl = |proxy_user: &'static str| {
        let mut command = tokio::process::Command::new("curl");
        command
            .args([
                "-sS",
                "--max-time",
                "20",
                "--proxy",
                &h.url(""),
                "--proxy-user",
                proxy_user,
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-u", &format!("{}:{}", a.api_key_sid, a.secret)])
            .arg(format!("https://api.twilio.com{A_ACCOUNTS}"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
        command
    };
    let output = curl("app:app-secret")
        .output()
        .await
        .expect("curl must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(body["sid"], a.account_sid.as_str(), "{body}");
    let refused = curl("app:wrong").output().await.unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("407"),
        "{refused:?}"
    );
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

#[tokio::test]
async fn clients_reload_with_the_accounts_and_a_network_listener_without_them_is_flagged() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let mut raw = h.raw.clone();
    raw.server.reload_interval_ms = 3_600_000;
    let proxy = ProxyProcess::start(&raw, h.dir.path()).await;
    assert_eq!(proxy.get(A_ACCOUNTS, &a.basic_auth()).await, 200);

    raw.clients = vec![client_config("app", "app-secret", &[])];
    let mut restarted = raw.clone();
    restarted.server.listen = proxy.listen.to_string();
    restarted.server.admin_listen = proxy.admin.to_string();
    crate::support::write_config(h.dir.path(), &toml::to_string(&restarted).unwrap());
    proxy.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(10), || async {
        proxy.get(A_ACCOUNTS, &a.basic_auth()).await == 407
    });
    assert!(reloaded.await, "the new client was not reloaded");
    proxy.signal("TERM");
    assert!(proxy.exit(Duration::from_secs(10)).await.success());

    // Listening beyond loopback with no clients: a warning on /readyz.
    let open = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.server.listen = "0.0.0.0:0".into();
    })
    .await;
    let (_, body) = open.admin_get("/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = ready["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("no [[clients]]")),
        "{body}"
    );
    open.stop().await;
    h.stop().await;
}

/// A throwaway PKI for the mutual-TLS listener: a CA, the listener's certificate (for
/// `localhost`), and client certificates it signs for the given SANs.
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names, or URIs when they contain "://"): chain PEM, key PEM.
    fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.contains("://") {
                true => rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*name).unwrap()),
                false => {
                    rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(*name).unwrap())
                }
            })
            .collect();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    /// Turns on the mutual-TLS listener: its certificate (for `localhost`) and the CA client
    /// certificates must chain to are this PKI's, written to `dir`.
    fn enable_tls_listener(&self, raw: &mut pkcv_proxy::config::RawConfig, dir: &std::path::Path) {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            #[cfg(unix)]
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            path
        };
        let (server_chain, server_key) = self.leaf(&["localhost"], false);
        raw.server.tls_listen = "127.0.0.1:0".into();
        raw.server.tls_cert_file = Some(write("server.pem", &server_chain));
        raw.server.tls_key_file = Some(write("server-key.pem", &server_key));
        raw.server.client_ca_file = Some(write("client-ca.pem", &self.ca_pem));
    }
}

/// A GET over the mutual-TLS listener with `identity` (chain PEM, key PEM) if any.
async fn get_over_mtls(
    h: &Harness,
    server_ca: &str,
    identity: Option<&(String, String)>,
) -> Result<u16, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let stream = tokio::net::TcpStream::connect(h.tls()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(A_ACCOUNTS)
        .header("authorization", TestAccount::a().basic_auth())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn client_certificates_on_the_tls_listener_name_their_client() {
    let pki = Pki::new("test client CA");
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        pki.enable_tls_listener(raw, dir.path());
        let mut billing = client_config("billing.clients.example", "unused", &[]);
        billing.secret_sha256 = None;
        let mut spiffe = client_config("spiffe://cluster/ns/app", "unused", &[B]);
        spiffe.secret_sha256 = None;
        raw.clients = vec![billing, spiffe, client_config("app", "app-secret", &[])];
    })
    .await;
    // A certificate naming a configured client: served, no secret needed.
    let billing = pki.leaf(&["other.example", "billing.clients.example"], true);
    assert_eq!(
        get_over_mtls(&h, &pki.ca_pem, Some(&billing)).await,
        Ok(200)
    );
    // A URI SAN (SPIFFE) names a client limited to account B.
    let spiffe = pki.leaf(&["spiffe://cluster/ns/app"], true);
    assert_eq!(get_over_mtls(&h, &pki.ca_pem, Some(&spiffe)).await, Ok(403));
    // A valid certificate naming no client must still prove one.
    let stranger = pki.leaf(&["stranger.example"], true);
    assert_eq!(
        get_over_mtls(&h, &pki.ca_pem, Some(&stranger)).await,
        Ok(407)
    );
    // No certificate, or one from another CA: no connection at all.
    assert!(get_over_mtls(&h, &pki.ca_pem, None).await.is_err());
    let other = Pki::new("another CA").leaf(&["billing.clients.example"], true);
    assert!(get_over_mtls(&h, &pki.ca_pem, Some(&other)).await.is_err());
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

/// Peers that fail the mutual-TLS handshake, or get 407, as fast as they can: the log gets at
/// most one WARN line of each a second (saying how many were left out), not one per peer.
#[tokio::test]
async fn failed_handshakes_and_407s_log_a_bounded_number_of_lines() {
    let pki = Pki::new("test client CA");
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        pki.enable_tls_listener(raw, dir.path());
        raw.clients = vec![client_config("app", "app-secret", &[])];
    })
    .await;
    let logs = crate::support::capture_logs();
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(h.tls()).await.unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    }
    let client = h.client();
    for _ in 0..200 {
        let response = client.get(h.url(A_ACCOUNTS)).send().await.unwrap();
        assert_eq!(response.status(), 407);
    }
    // One line a second at most, per kind, and one for the second the loop began in.
    let bound = usize::try_from(started.elapsed().as_secs()).unwrap() + 2;
    let handshakes = logs.count_lines(&["WARN", "handshake failed"]);
    let refusals = logs.count_lines(&["WARN", "code=79060"]);
    assert!(
        handshakes <= bound,
        "{handshakes} handshake lines (bound {bound})"
    );
    assert!(refusals <= bound, "{refusals} 407 lines (bound {bound})");
    h.stop().await;
}
