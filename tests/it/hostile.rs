//! Raw bytes a black-box probe sends: every malformed request head gets the proxy's JSON
//! error (79023 400, 79024 431) instead of hyper's bare answer or a silent close, and a
//! keep-alive connection is checked anew at every head, after bodies too.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Harness, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";

/// Sends `bytes` on a fresh connection; the status and JSON body of the answer.
async fn send_raw(h: &Harness, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_answer(&mut stream).await
}

/// Reads one response (head and Content-Length body) from `stream`.
async fn read_answer(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no answer within 10 s")
            .unwrap_or(0);
        assert!(
            read > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            let body = &buffer[end + 4..end + 4 + length];
            let json = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
            return (head[9..12].parse().unwrap(), json);
        }
    }
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
