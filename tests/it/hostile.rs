//! Raw bytes a black-box probe sends: every malformed request head gets the proxy's JSON
//! error (79023 400, 79024 431) instead of hyper's bare answer or a silent close, and a
//! keep-alive connection is checked anew at every head, after bodies too: pipelined heads
//! (in the same write, or sent while the previous request is in flight) and heads inside
//! an intercepted tunnel (HTTP/1.1 and HTTP/2) meet the same rules as a connection's first.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::tunnel::{client_tls, connect, intercepting_harness};
use crate::support::{Harness, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";

/// Sends `bytes` on a fresh connection; the status and JSON body of the answer.
async fn send_raw(h: &Harness, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_answer(&mut stream).await
}

/// Reads one response (head and Content-Length body) from `stream`, and no further: a
/// pipelined answer after it stays unread.
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, serde_json::Value) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("no answer within 10 s")
            .unwrap_or(0);
        assert!(
            read > 0 && head.len() < 64 * 1024,
            "closed without an answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body))
        .await
        .expect("no body within 10 s")
        .expect("closed within the body");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (head[9..12].parse().unwrap(), json)
}

#[tokio::test]
async fn malformed_heads_get_the_json_error() {
    let h = Harness::start().await;
    let many: Vec<u8> = [
        b"GET / HTTP/1.1\r\nHost: api.twilio.com\r\n".to_vec(),
        (0..150)
            .flat_map(|i| format!("X-{i}: 1\r\n").into_bytes())
            .collect(),
        b"\r\n".to_vec(),
    ]
    .concat();
    let long_line = [
        b"GET /".to_vec(),
        vec![b'a'; 1024 * 1024],
        b" HTTP/1.1\r\n\r\n".to_vec(),
    ]
    .concat();
    let cases: [(&[u8], u16, u64); 11] = [
        (b"POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400, 79023),
        (b"POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, 79023),
        (b"POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, 79023),
        (b"GET /x HTTP/1.1\r\nHost: api.twilio.com\r\nX-A: a\r\n b\r\n\r\n", 400, 79023),
        (b"GET /x HTTP/1.1\r\nHost: api.twilio.com\r\nX-A: a\x01b\r\n\r\n", 400, 79023),
        (b"GET /x HTTP/1.1\r\nHost: api.twilio.com\r\nX\x01A: ab\r\n\r\n", 400, 79023),
        (b"GET /x\x01y HTTP/1.1\r\nHost: api.twilio.com\r\n\r\n", 400, 79023),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 79023),
        (b"GET /x HTTP/9.9\r\nHost: api.twilio.com\r\n\r\n", 400, 79023),
        (&many, 431, 79024),
        (&long_line, 431, 79024),
    ];
    for (bytes, status, code) in cases {
        let (got, body) = send_raw(&h, bytes).await;
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).to_string();
        assert_eq!(
            (got, body["code"].as_u64()),
            (status, Some(code)),
            "{shown:?}: {body}"
        );
        assert_eq!(body["status"], status);
    }
    assert!(h.standin.records().await.is_empty());
    assert_eq!(
        h.metric(r#"pkcv_proxy_rejected_total{code="79023"}"#).await,
        Some(9.0)
    );
    h.stop().await;
}

#[tokio::test]
async fn every_head_on_a_keep_alive_connection_is_checked() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let post = format!(
        "POST /2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 18\r\n\r\nTo=%2B1&Body=Hello",
        h.proxy,
        a.basic_auth()
    );
    stream.write_all(post.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.0, 201);
    let get = format!(
        "GET {A_ACCOUNTS} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        h.proxy,
        a.basic_auth()
    );
    stream.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.0, 200);
    // The third head on the same connection is malformed: the JSON error, then the end.
    stream
        .write_all(b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_answer(&mut stream).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (400, Some(79023)),
        "{body}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after a refused head"
    );
    assert_eq!(h.standin.verified(), 2);
    h.stop().await;
}

#[tokio::test]
async fn http_1_0_heads_are_served() {
    // Python's http.client tunnels with an HTTP/1.0 CONNECT; plain HTTP/1.0 requests pass too.
    let h = Harness::start().await;
    let a = TestAccount::a();
    let request = format!(
        "GET {A_ACCOUNTS} HTTP/1.0\r\nHost: api.twilio.com\r\nAuthorization: {}\r\n\r\n",
        a.basic_auth()
    );
    let (status, body) = send_raw(&h, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

#[tokio::test]
async fn targets_the_uri_parser_rejects_get_the_json_error() {
    // httparse takes these request lines; `http`'s URI parser (hyper's) does not.
    let h = Harness::start().await;
    for target in ["http://[bad/", "{x}", "http:///x", "http://a\"b/"] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: api.twilio.com\r\n\r\n");
        let (status, body) = send_raw(&h, head.as_bytes()).await;
        assert_eq!(
            (status, body["code"].as_u64(), body["status"].as_u64()),
            (400, Some(79023), Some(400)),
            "{target}: {body}"
        );
    }
    assert!(h.standin.records().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_host_port_that_is_no_port_is_refused_and_a_numeric_one_ignored() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let get = |host: &str| {
        format!(
            "GET {A_ACCOUNTS} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\n\r\n",
            a.basic_auth()
        )
    };
    for host in ["api.twilio.com:99999", "api.twilio.com:abc"] {
        let (status, body) = send_raw(&h, get(host).as_bytes()).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(79012)),
            "{host}: {body}"
        );
    }
    assert!(h.standin.records().await.is_empty());
    // The sidecar form: the port is ignored, the upstream is 443.
    let (status, body) = send_raw(&h, get("api.twilio.com:8080").as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

/// Heads that smuggling feeds on, each refused with 79023 wherever it arrives.
const SMUGGLING: [&str; 3] = [
    "POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: api.twilio.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

/// A head of about `kib` KiB (one long header field).
fn head_of(kib: usize, host: &str) -> String {
    format!(
        "GET {A_ACCOUNTS} HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(kib * 1024)
    )
}

/// Writes `first` (a good request), then `then` on the same connection, in one write or
/// (`in_flight`) while the first request's body is still being read; the two answers.
async fn pipelined<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    then: &str,
    in_flight: bool,
) -> ((u16, serde_json::Value), (u16, serde_json::Value)) {
    let a = TestAccount::a();
    let body = "To=%2B1&Body=Hello";
    let first = format!(
        "POST /2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        a.basic_auth(),
        body.len()
    );
    if in_flight {
        // All but the body's last byte: the proxy is then reading the first request's body
        // when the last byte arrives with the next head.
        let (early, last) = first.split_at(first.len() - 1);
        stream.write_all(early.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(format!("{last}{then}").as_bytes())
            .await
            .unwrap();
    } else {
        stream
            .write_all(format!("{first}{then}").as_bytes())
            .await
            .unwrap();
    }
    stream.flush().await.unwrap();
    let one = read_answer(stream).await;
    let two = read_answer(stream).await;
    (one, two)
}

#[tokio::test]
async fn pipelined_heads_meet_the_same_rules_as_the_first() {
    let h = Harness::start().await;
    let too_large = head_of(68, "api.twilio.com");
    let cases =
        SMUGGLING
            .iter()
            .map(|head| (*head, 400, 79023))
            .chain([(too_large.as_str(), 431, 79024)]);
    for (head, status, code) in cases {
        for in_flight in [false, true] {
            let mut stream = TcpStream::connect(h.proxy).await.unwrap();
            let (one, two) = pipelined(&mut stream, "api.twilio.com", head, in_flight).await;
            let shown = &head[..60];
            assert_eq!(one.0, 201, "{shown:?} (in flight: {in_flight}): {}", one.1);
            assert_eq!(
                (two.0, two.1["code"].as_u64()),
                (status, Some(code)),
                "{shown:?} (in flight: {in_flight}): {}",
                two.1
            );
        }
    }
    assert_eq!(
        h.standin.verified(),
        8,
        "only the good requests went upstream"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_head_limit_is_64_kib() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let with_auth = |kib: usize| {
        head_of(kib, "api.twilio.com").replacen(
            "\r\n\r\n",
            &format!("\r\nAuthorization: {}\r\n\r\n", a.basic_auth()),
            1,
        )
    };
    let (status, body) = send_raw(&h, with_auth(60).as_bytes()).await;
    assert_eq!(status, 200, "a 60 KiB head is served: {body}");
    for kib in [65, 68, 71, 300] {
        let (status, body) = send_raw(&h, with_auth(kib).as_bytes()).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (431, Some(79024)),
            "{kib} KiB: {body}"
        );
    }
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

/// A TLS connection inside an intercepted tunnel to api.twilio.com, with `alpn`.
async fn tunnel(
    h: &Harness,
    ca_file: &std::path::Path,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (stream, status, _) = connect(h, "api.twilio.com:443").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("api.twilio.com").unwrap();
    client_tls(ca_file, alpn)
        .connect(name, stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn heads_inside_a_tunnel_meet_the_same_rules() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let too_large = head_of(300, "api.twilio.com");
    let cases =
        SMUGGLING
            .iter()
            .map(|head| (*head, 400, 79023))
            .chain([(too_large.as_str(), 431, 79024)]);
    let mut good = 0;
    for (head, status, code) in cases {
        let shown = &head[..60];
        // As the tunnel's first request.
        let mut tls = tunnel(&h, &ca_file, b"http/1.1").await;
        tls.write_all(head.as_bytes()).await.unwrap();
        let (got, body) = read_answer(&mut tls).await;
        assert_eq!(
            (got, body["code"].as_u64()),
            (status, Some(code)),
            "{shown:?} first in the tunnel: {body}"
        );
        // After a good one, pipelined and in flight.
        for in_flight in [false, true] {
            let mut tls = tunnel(&h, &ca_file, b"http/1.1").await;
            let (one, two) = pipelined(&mut tls, "api.twilio.com", head, in_flight).await;
            assert_eq!(one.0, 201, "{shown:?} (in flight: {in_flight}): {}", one.1);
            good += 1;
            assert_eq!(
                (two.0, two.1["code"].as_u64()),
                (status, Some(code)),
                "{shown:?} pipelined in the tunnel (in flight: {in_flight}): {}",
                two.1
            );
        }
    }
    assert_eq!(
        h.standin.verified(),
        good,
        "only the good requests went upstream"
    );
    h.stop().await;
}

#[tokio::test]
async fn http2_heads_inside_a_tunnel_meet_the_same_rules() {
    let (h, _ca_dir, ca_file) = intercepting_harness(|_| {}).await;
    let a = TestAccount::a();
    let tls = tunnel(&h, &ca_file, b"h2").await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = |fields: usize, pad: usize| {
        let mut request = http::Request::get(format!("https://api.twilio.com{A_ACCOUNTS}"))
            .header("authorization", a.basic_auth())
            .header("x-pad", "a".repeat(pad));
        for i in 0..fields {
            request = request.header(format!("x-{i}"), "1");
        }
        request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // 48 KiB of headers: above h2's 16 KiB default, within the documented 64 KiB.
    let response = sender.send_request(request(0, 48 * 1024)).await.unwrap();
    assert_eq!(response.status(), 200);
    // More than 100 fields: the JSON 431, as over HTTP/1.1.
    let response = sender.send_request(request(120, 0)).await.unwrap();
    assert_eq!(response.status(), 431);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], 79024, "{body}");
    // Over 64 KiB: refused by h2 itself (431), never forwarded.
    let refused = sender.send_request(request(0, 70 * 1024)).await;
    assert!(
        refused.as_ref().map_or(true, |r| r.status() == 431),
        "{refused:?}"
    );
    assert_eq!(h.standin.verified(), 1);
    h.stop().await;
}

#[tokio::test]
async fn requests_after_a_refused_connect_are_never_read() {
    // A refused CONNECT closes the connection: nothing after it is parsed unchecked.
    let h = Harness::start().await;
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let bytes = format!(
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n{}",
        SMUGGLING[0]
    );
    stream.write_all(bytes.as_bytes()).await.unwrap();
    let (status, body) = read_answer(&mut stream).await;
    assert_eq!(status, 403, "{body}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "the connection stayed open after a refused CONNECT"
    );
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    h.stop().await;
}

#[tokio::test]
async fn a_broken_chunked_body_ends_the_connection_before_anything_after_it() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let bytes = format!(
        "POST /2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json HTTP/1.1\r\nHost: api.twilio.com\r\nAuthorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET {A_ACCOUNTS} HTTP/1.1\r\nHost: api.twilio.com\r\nAuthorization: {auth}\r\n\r\n",
        auth = a.basic_auth()
    );
    stream.write_all(bytes.as_bytes()).await.unwrap();
    let (status, body) = read_answer(&mut stream).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (400, Some(79021)),
        "{body}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the connection stayed open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(h.standin.records().await.is_empty());
    h.stop().await;
}
