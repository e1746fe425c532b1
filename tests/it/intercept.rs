//! `HTTPS_PROXY` clients: `CONNECT`, TLS terminated with the local CA, every request inside
//! signed and verified by the stand-in; and every `CONNECT` the proxy must not honour.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::tunnel::{client_tls, connect, intercepting_harness};
use crate::support::{basic, json, test_public_key_pem, Harness, TestAccount};

const A: &str = "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4";

fn form_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// How long until the peer closes `stream`, at most `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(limit, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(_)) => None,
        Err(_) => None,
    }
}

#[tokio::test]
async fn tunnels_that_go_quiet_are_closed() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|raw| {
        raw.server.header_read_timeout_secs = 2;
        raw.server.tls_handshake_timeout_secs = 1;
    })
    .await;
    // Quiet after a complete handshake, whatever the ALPN: closed at the head deadline (an
    // HTTP/2 client that never sends its preface included).
    for alpn in [&b""[..], b"http/1.1", b"h2"] {
        let (stream, status, _) = connect(&h, "api.twilio.com:443").await;
        assert_eq!(status, 200);
        let server_name = rustls_pki_types::ServerName::try_from("api.twilio.com").unwrap();
        let mut tls = client_tls(&ca_file, alpn)
            .connect(server_name, stream)
            .await
            .unwrap();
        let closed = closed_within(&mut tls, Duration::from_secs(6)).await;
        let alpn = String::from_utf8_lossy(alpn);
        let closed = closed.unwrap_or_else(|| panic!("a quiet tunnel ({alpn:?}) stayed open"));
        assert!(
            closed >= Duration::from_millis(1500),
            "{alpn:?}: {closed:?}"
        );
    }
    // Quiet before the handshake: closed at the handshake deadline.
    let (mut stream, status, _) = connect(&h, "api.twilio.com:443").await;
    assert_eq!(status, 200);
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(closed < Duration::from_millis(2500), "{closed:?}");
    assert_eq!(h.metric("pkcv_proxy_tunnels_open").await, Some(0.0));
    h.stop().await;
}

#[tokio::test]
async fn https_proxy_clients_are_signed_inside_the_tunnel() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let a = TestAccount::a();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(h.url("")).unwrap())
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let (status, body) = json(
        client
            .get(format!("https://api.twilio.com/2010-04-01/Accounts/{A}/Messages.json?To=+14155550100&PageSize=2"))
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["verified"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    assert_eq!(body["host"], "api.twilio.com");
    assert_eq!(body["query"], "To=%2014155550100&PageSize=2");

    let (status, body) = json(
        client
            .post("https://accounts.twilio.com/v1/Credentials/PublicKeys")
            .header("authorization", a.basic_auth())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "FriendlyName=with+space&PublicKey={}",
                form_encode(&String::from_utf8(test_public_key_pem()).unwrap())
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["friendly_name"]),
        (201, &serde_json::json!("with space")),
        "{body}"
    );
    let record = h.standin.records().await.pop().unwrap();
    assert_eq!(record.host, "accounts.twilio.com");
    assert!(record.outcome.unwrap().signed);

    // Auth Token credentials inside the tunnel are refused like any other.
    let auth_token = basic(A, "token");
    let (status, body) = json(
        client
            .get("https://api.twilio.com/2010-04-01/Accounts.json")
            .header("authorization", auth_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (401, Some(79003)),
        "{body}"
    );
    assert_eq!(h.standin.verified(), 2);
    assert_eq!(h.standin.rejected(), 0);
    h.stop().await;
}

#[tokio::test]
async fn one_tunnel_carries_a_hundred_sequential_requests() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let a = TestAccount::a();
    let (stream, status, _) = connect(&h, "api.twilio.com:443").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("api.twilio.com").unwrap();
    let tls = client_tls(&ca_file, b"http/1.1")
        .connect(name, stream)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    for i in 0..100 {
        let request = http::Request::get(format!("/2010-04-01/Accounts/{A}/Calls.json?Page={i}"))
            .header("host", "api.twilio.com")
            .header("authorization", a.basic_auth())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        response.into_body().collect().await.unwrap();
    }
    // A request for another host on this tunnel is refused, not re-aimed.
    let misdirected = http::Request::get("/v1/Credentials/PublicKeys")
        .header("host", "accounts.twilio.com")
        .header("authorization", a.basic_auth())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(misdirected).await.unwrap();
    assert_eq!(response.status(), 421);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("79017"));
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert_eq!(h.standin.verified(), 100);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs curl (apt-get install curl)"]
async fn curl_through_https_proxy_is_signed() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let a = TestAccount::a();
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--proxy", &h.url(""), "--cacert"])
        .arg(&ca_file)
        .args(["-u", &format!("{}:{}", a.api_key_sid, a.secret)])
        .args([
            "--data-urlencode",
            "Body=Hello from curl",
            "--data-urlencode",
            "To=+14155550100",
        ])
        .arg(format!(
            "https://api.twilio.com/2010-04-01/Accounts/{A}/Messages.json"
        ))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("curl must be installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&body["body"], &body["to"]),
        (
            &serde_json::json!("Hello from curl"),
            &serde_json::json!("+14155550100")
        ),
        "{body}"
    );
    assert_eq!((h.standin.verified(), h.standin.rejected()), (1, 0));
    h.stop().await;
}

#[tokio::test]
async fn connect_to_a_host_that_is_not_allowed_never_dials() {
    let (h, _ca_dir, _) = intercepting_harness(|_| {}).await;
    for (target, status, code) in [
        ("evil.example:443", 403, 79010),
        ("127.0.0.1:443", 403, 79010),
        ("api.twilio.com:22", 403, 79011),
        ("api.twilio.com:99999", 403, 79011),
        ("api.twilio.com", 400, 79012),
    ] {
        let (_stream, got, body) = connect(&h, target).await;
        assert_eq!(got, status, "{target}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], code, "{target}");
    }
    // Every allowed host dials the stand-in; nothing else may be dialled at all.
    assert_eq!(
        h.standin.connections_accepted(),
        0,
        "the proxy opened a connection for a refused CONNECT"
    );
    assert!(h.standin.records().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn connect_without_interception_is_refused() {
    let h = Harness::start().await;
    let (_stream, status, body) = connect(&h, "api.twilio.com:443").await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("79015"));
    h.stop().await;
}

#[tokio::test]
async fn passthrough_hosts_get_an_untouched_tunnel() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.unwrap();
        stream.write_all(&buf[..n]).await.unwrap();
    });
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.intercept.passthrough_hosts = vec!["telemetry.example.net".into()];
        raw.upstream
            .connect_to
            .insert("telemetry.example.net".into(), echo_addr.to_string());
    })
    .await;
    let (mut stream, status, _) = connect(&h, "telemetry.example.net:443").await;
    assert_eq!(status, 200);
    stream.write_all(b"opaque bytes").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"opaque bytes");
    h.stop().await;
}

#[tokio::test]
async fn http2_inside_the_tunnel() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let a = TestAccount::a();
    let (stream, status, _) = connect(&h, "api.twilio.com:443").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("api.twilio.com").unwrap();
    let tls = client_tls(&ca_file, b"h2")
        .connect(name, stream)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 was not negotiated"
    );
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::get(format!(
            "https://api.twilio.com/2010-04-01/Accounts/{A}/Calls.json"
        ))
        .header("authorization", a.basic_auth())
        .body(Empty::<Bytes>::new())
        .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(h.standin.verified(), 3);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs curl (apt-get install curl)"]
async fn an_oversized_http2_upload_in_a_tunnel_gets_the_413_json() {
    let (h, ca_dir, ca_file) = intercepting_harness(|raw| {
        raw.server.max_body_bytes = 1024;
        raw.server.max_buffered_bytes = 1024;
    })
    .await;
    let a = TestAccount::a();
    let upload = ca_dir.path().join("upload.txt");
    std::fs::write(&upload, vec![b'x'; 4 * 1024 * 1024]).unwrap();
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--max-time",
            "20",
            "--proxy",
            &h.url(""),
            "--cacert",
        ])
        .arg(&ca_file)
        .args(["-u", &format!("{}:{}", a.api_key_sid, a.secret)])
        .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
        .arg("--data-binary")
        .arg(format!("@{}", upload.display()))
        .args(["-w", "\n%{http_version}"])
        .arg(format!(
            "https://api.twilio.com/2010-04-01/Accounts/{A}/Messages.json"
        ))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("curl must be installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, version) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "the tunnel did not speak HTTP/2");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (body["status"].as_u64(), body["code"].as_u64()),
        (Some(413), Some(79020)),
        "{body}"
    );
    assert!(h.standin.records().await.is_empty());
    h.stop().await;
}
