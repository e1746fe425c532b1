//! End to end: real HTTP clients → pkcv-proxy → the verifying Twilio stand-in over TLS.
//! Every success asserts the stand-in verified the signature; every refusal asserts the
//! Twilio-style error and, where it matters, that nothing reached the stand-in.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};

use crate::support::{basic, json, verified, Harness, TestAccount};

const A: &str = "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4";
const B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Asserts a proxy error with `status` and `code`.
async fn refused(response: reqwest::Response, status: u16, code: u64) -> serde_json::Value {
    let (got, body) = json(response).await;
    assert_eq!((got, body["code"].as_u64()), (status, Some(code)), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["more_info"].is_string());
    body
}

#[tokio::test]
async fn get_with_awkward_queries_is_normalized_and_verified() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let cases = [
        (
            "FriendlyName=Main Line*&Tag=a~b",
            "FriendlyName=Main%20Line%2A&Tag=a~b",
        ),
        ("To=+14155550100", "To=%2014155550100"),
        (
            "To=%2B14155550100&PageSize=2",
            "To=%2B14155550100&PageSize=2",
        ),
        (
            "FriendlyName=Caf%c3%a9%20%E2%98%83",
            "FriendlyName=Caf%C3%A9%20%E2%98%83",
        ),
        (
            "Status=queued&Status=completed&PageSize=2",
            "Status=queued&Status=completed&PageSize=2",
        ),
        ("DateSent>=2026-01-01&&flag", "DateSent%3E=2026-01-01&flag"),
        ("Tag=%7e%7E", "Tag=~~"),
    ];
    for (raw, forwarded) in cases {
        let url = h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json?{raw}"));
        let body = verified(&h, h.get(url, &a.basic_auth()).await, A).await;
        assert_eq!(body["query"], forwarded, "{raw}");
        assert_eq!(body["host"], "api.twilio.com");
    }
    // A path with dot segments, doubled and encoded slashes and a space.
    let url = h.url(&format!(
        "//2010-04-01/./Accounts/x/..%2F{A}//Calls/CA 1.json"
    ));
    let body = verified(&h, h.get(url, &a.basic_auth()).await, A).await;
    assert_eq!(
        body["path"],
        format!("/2010-04-01/Accounts/{A}/Calls/CA%201.json")
    );
    assert_eq!(h.standin.rejected(), 0);
    h.stop().await;
}

#[tokio::test]
async fn bodies_are_forwarded_as_hashed() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let client = h.client();
    let messages = h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json"));

    let form = "To=%2B14155550100&From=%2B14155550199&Body=Hello%20from%20PKCV";
    let body = verified(
        &h,
        client
            .post(&messages)
            .header("authorization", a.basic_auth())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    assert_eq!(body["body_length"], form.len());

    let json_body =
        r#"{"friendly_name":"caf\u00e9 ☃","types":{"twilio/text":{"body":"Hi {{1}}"}}}"#;
    verified(
        &h,
        client
            .post(h.url("/content.twilio.com/v1/Content"))
            .header("authorization", a.basic_auth())
            .header("content-type", "application/json")
            .body(json_body)
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;

    // Empty POST: Content-Length 0, no body hash.
    verified(
        &h,
        client
            .post(h.url(&format!("/2010-04-01/Accounts/{A}/Calls/CA0000.json")))
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    // DELETE with no body.
    verified(
        &h,
        client
            .delete(h.url("/sync.twilio.com/v1/Services/IS00/Documents/ET00"))
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;

    // 5 MiB.
    let big = vec![b'x'; 5 * 1024 * 1024];
    let body = verified(
        &h,
        client
            .post(h.url("/serverless.twilio.com/v1/Services/ZS00/Assets/ZH00/Versions"))
            .header("authorization", a.basic_auth())
            .body(big)
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    assert_eq!(body["body_length"], 5 * 1024 * 1024);

    let records = h.standin.records().await;
    let empty_post = records
        .iter()
        .find(|r| r.method == "POST" && r.body.is_empty())
        .unwrap();
    assert_eq!(empty_post.content_length, Some(0));
    let delete = records.iter().find(|r| r.method == "DELETE").unwrap();
    assert!(delete.body.is_empty());
    h.stop().await;
}

/// A chunked upload (no Content-Length) over a raw HTTP/1.1 connection.
async fn chunked_post(h: &Harness, auth: &str, chunks: Vec<Vec<u8>>) -> (u16, serde_json::Value) {
    let stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = chunks
        .into_iter()
        .map(|c| Ok(http_body::Frame::data(Bytes::from(c))))
        .collect();
    let body = StreamBody::new(futures_iter(frames));
    let request = http::Request::post(format!("/2010-04-01/Accounts/{A}/Messages.json"))
        .header("host", h.proxy.to_string())
        .header("authorization", auth)
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn futures_iter<T: Unpin>(items: Vec<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::iter(items)
}

#[tokio::test]
async fn chunked_bodies_are_sent_with_content_length_or_refused_whole() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| raw.server.max_body_bytes = 1024).await;
    let auth = TestAccount::a().basic_auth();

    let (status, body) =
        chunked_post(&h, &auth, vec![b"To=%2B1".to_vec(), b"&Body=hi".to_vec()]).await;
    // The stand-in emulates Messages: it parsed the form the proxy forwarded.
    assert_eq!(
        (status, &body["to"], &body["body"]),
        (201, &serde_json::json!("+1"), &serde_json::json!("hi")),
        "{body}"
    );
    let records = h.standin.records().await;
    assert_eq!(records[0].content_length, Some(15));
    assert_eq!(&records[0].body[..], b"To=%2B1&Body=hi");

    let (status, body) = chunked_post(&h, &auth, vec![vec![b'x'; 600], vec![b'y'; 600]]).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (413, Some(79020)),
        "{body}"
    );
    // A declared length over the limit is refused before the body is read.
    let response = h
        .client()
        .post(h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json")))
        .header("authorization", &auth)
        .body(vec![0u8; 2048])
        .send()
        .await
        .unwrap();
    refused(response, 413, 79020).await;
    assert_eq!(
        h.standin.records().await.len(),
        1,
        "nothing oversized reached the upstream"
    );
    h.stop().await;
}

#[tokio::test]
async fn every_routing_mode_reaches_the_right_host() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let path = format!("/2010-04-01/Accounts/{A}/Messages.json?PageSize=1");

    // Base URL = proxy, no host named: default_host.
    let body = verified(&h, h.get_as(&path, &a).await, A).await;
    assert_eq!(body["host"], "api.twilio.com");

    // Host as the first path segment, including a regional edge.
    let body = verified(
        &h,
        h.get_as(&format!("/api.dublin.ie1.twilio.com{path}"), &a)
            .await,
        A,
    )
    .await;
    assert_eq!(body["host"], "api.dublin.ie1.twilio.com");
    assert_eq!(
        body["path"],
        format!("/2010-04-01/Accounts/{A}/Messages.json")
    );

    // Sidecar: the Host header names a Twilio host.
    let body = verified(
        &h,
        h.client()
            .get(h.url("/v1/Credentials/PublicKeys"))
            .header("host", "accounts.twilio.com")
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    assert_eq!(body["host"], "accounts.twilio.com");

    // HTTP_PROXY: absolute-form http:// (the proxy upgrades to HTTPS upstream).
    let body = verified(
        &h,
        h.proxied_client()
            .get("http://api.twilio.com/2010-04-01/Accounts.json?FriendlyName=with%20space")
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    assert_eq!(
        (body["host"].as_str(), body["query"].as_str()),
        (Some("api.twilio.com"), Some("FriendlyName=with%20space"))
    );
    h.stop().await;
}

#[tokio::test]
async fn several_accounts_sign_with_their_own_keys() {
    let h = Harness::start().await;
    let (a, b) = (TestAccount::a(), TestAccount::b());
    // B is a subaccount of A, as in Twilio's subaccount guide.
    h.standin
        .update_registry(|registry| {
            if let Some(account) = registry.accounts.get_mut(B) {
                account.owner_account_sid = A.into();
            }
        })
        .await;
    // B's key is not listed anywhere: B's path picks B.
    verified(
        &h,
        h.get_as(&format!("/2010-04-01/Accounts/{B}/Calls.json"), &b)
            .await,
        B,
    )
    .await;
    // A's key is listed under A: it signs as A even on B's path (a Main key managing a subaccount).
    verified(
        &h,
        h.get_as(&format!("/2010-04-01/Accounts/{B}/Keys.json"), &a)
            .await,
        A,
    )
    .await;
    // B's key on A's path: A lists only its own key.
    refused(
        h.get_as(&format!("/2010-04-01/Accounts/{A}/Calls.json"), &b)
            .await,
        403,
        79006,
    )
    .await;
    // B's key with no account in the path: two accounts, none lists it.
    refused(h.get_as("/v1/Services", &b).await, 400, 79007).await;
    h.stop().await;
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    // Every allowed host dials the stand-in, and the config refuses `connect_to` entries for
    // hosts that are not allowed: a refused request that were dialled anyway would show up
    // as a stand-in connection, an opened upstream connection, or a 502 instead of its code.
    let h = Harness::start().await;
    credentials_that_are_refused(&h).await;
    targets_that_are_refused(&h).await;
    assert!(
        h.standin.records().await.is_empty(),
        "a refused request reached the upstream"
    );
    assert_eq!(
        h.standin.connections_accepted(),
        0,
        "the proxy opened a connection for a refused request"
    );
    assert_eq!(
        h.metric("pkcv_proxy_upstream_connections_opened_total")
            .await,
        Some(0.0)
    );
    h.stop().await;
}

/// No, hop-by-hop, Bearer, Auth Token and non-API-key credentials, and an API key no account
/// lists: each refused with its own code.
async fn credentials_that_are_refused(h: &Harness) {
    let a = TestAccount::a();
    let client = h.client();
    let messages = h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json"));
    refused(client.get(&messages).send().await.unwrap(), 401, 79001).await;
    refused(
        client
            .get(&messages)
            .header("authorization", "Bearer x")
            .send()
            .await
            .unwrap(),
        401,
        79002,
    )
    .await;
    refused(
        client
            .get(&messages)
            .header("authorization", basic(A, "auth-token"))
            .send()
            .await
            .unwrap(),
        401,
        79003,
    )
    .await;
    refused(
        client
            .get(&messages)
            .header("authorization", basic("alice", "pw"))
            .send()
            .await
            .unwrap(),
        401,
        79004,
    )
    .await;
    refused(
        client
            .get(h.url("/2010-04-01/Accounts/AC0000000000000000000000000000000f/Calls.json"))
            .header("authorization", TestAccount::b().basic_auth())
            .send()
            .await
            .unwrap(),
        403,
        79005,
    )
    .await;
    // `Connection: authorization` makes the credentials hop-by-hop: nothing to sign with.
    refused(
        client
            .get(&messages)
            .header("authorization", a.basic_auth())
            .header("connection", "authorization")
            .send()
            .await
            .unwrap(),
        401,
        79001,
    )
    .await;
}

/// Hosts that are not Twilio's, ports other than 443, and undecodable queries: refused with
/// valid credentials.
async fn targets_that_are_refused(h: &Harness) {
    let a = TestAccount::a();
    let messages = h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json"));
    refused(
        h.get_as("/example.com/2010-04-01/Accounts.json", &a).await,
        403,
        79010,
    )
    .await;
    refused(
        h.proxied_client()
            .get("http://evil.example/2010-04-01/Accounts.json")
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        403,
        79010,
    )
    .await;
    refused(
        h.proxied_client()
            .get("http://api.twilio.com:8443/2010-04-01/Accounts.json")
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        403,
        79011,
    )
    .await;
    refused(
        h.get(format!("{messages}?To=%2"), &a.basic_auth()).await,
        400,
        79013,
    )
    .await;
    refused(
        h.get(format!("{messages}?To=%FF"), &a.basic_auth()).await,
        400,
        79014,
    )
    .await;
    // CONNECT to a port other than 443 (here the proxy's own) is refused before anything else.
    refused(
        h.client()
            .request(reqwest::Method::CONNECT, h.url("/"))
            .header("authorization", a.basic_auth())
            .send()
            .await
            .unwrap(),
        403,
        79011,
    )
    .await;
}

#[tokio::test]
async fn absolute_https_targets_and_response_hop_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let a = TestAccount::a();
    // `GET https://…` in absolute form, as some HTTP_PROXY clients send it.
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let request = format!(
        "GET https://api.twilio.com/2010-04-01/Accounts/{A}/Calls.json?PageSize=1 HTTP/1.1\r\nHost: api.twilio.com\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        a.basic_auth()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    // The stand-in's echo carries `Connection: x-standin-hop` and `x-standin-hop`: neither
    // may reach the client.
    assert!(!head.contains("x-standin-hop"), "{head}");
    let record = h.standin.records().await.pop().unwrap();
    assert!(record.outcome.unwrap().signed);
    assert_eq!(
        (record.host.as_str(), record.query.as_str()),
        ("api.twilio.com", "PageSize=1")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_body_that_never_finishes_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.body_read_timeout_ms = 300
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let request = format!(
        "POST /2010-04-01/Accounts/{A}/Messages.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Length: 100\r\n\r\nTo=%2B1",
        TestAccount::a().basic_auth()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(
        response.starts_with("HTTP/1.1 408") && response.contains("79022"),
        "{response}"
    );
    assert!(h.standin.records().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn client_tokens_and_hop_by_hop_headers_do_not_pass() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    verified(
        &h,
        h.client()
            .get(h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json")))
            .header("authorization", format!("  {}  ", a.basic_auth()))
            .header("twilio-client-validation", "forged.token.value")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", basic("proxy", "pw"))
            .header("user-agent", "twilio-python/9.13.0")
            .send()
            .await
            .unwrap(),
        A,
    )
    .await;
    let record = &h.standin.records().await[0];
    let has = |name: &str| record.headers.iter().any(|(n, _)| n == name);
    assert!(!has("x-hop") && !has("proxy-authorization") && !has("connection"));
    assert!(has("user-agent"), "end-to-end headers are kept");
    let tokens: Vec<_> = record
        .headers
        .iter()
        .filter(|(n, _)| n == "twilio-client-validation")
        .collect();
    assert_eq!(tokens.len(), 1);
    assert_ne!(tokens[0].1, "forged.token.value");
    let auth: Vec<_> = record
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .collect();
    assert_eq!(auth[0].1, a.basic_auth(), "Authorization is trimmed");
    h.stop().await;
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let a = TestAccount::a();
    let path = format!("/2010-04-01/Accounts/{A}/Messages.json");

    // Nothing listens: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream
            .connect_to
            .insert("api.twilio.com".into(), closed.to_string());
    })
    .await;
    let body = refused(h.get_as(&path, &a).await, 502, 79040).await;
    let message = body["message"].as_str().unwrap();
    // The cause, said once, without the HTTP client's own wrapper.
    assert!(
        message.starts_with("could not connect to api.twilio.com: ")
            && !message.contains("client error"),
        "{body}"
    );
    h.stop().await;

    // Accepts TCP but never answers TLS: the request timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream
            .connect_to
            .insert("api.twilio.com".into(), silent_addr.to_string());
        raw.upstream.request_timeout_ms = 300;
    })
    .await;
    refused(h.get_as(&path, &a).await, 504, 79041).await;
    h.stop().await;
    holder.abort();

    // A server whose certificate the proxy does not trust: verification is never skipped.
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.upstream.extra_ca_file = None
    })
    .await;
    let body = refused(h.get_as(&path, &a).await, 502, 79040).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{body}"
    );
    assert_eq!(h.standin.verified(), 0);
    h.stop().await;
}

#[tokio::test]
async fn upstream_speaks_http1_by_default_with_exactly_the_signed_host() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let response = h
        .client()
        .get(h.url(&format!("/2010-04-01/Accounts/{A}.json")))
        .header("authorization", a.basic_auth())
        .header("host", "api.twilio.com:443")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = h.standin.records().await.pop().unwrap();
    assert_eq!(record.version, http::Version::HTTP_11);
    let hosts: Vec<&str> = record
        .headers
        .iter()
        .filter(|(name, _)| name == "host")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(hosts, ["api.twilio.com"], "one Host, the signed one");
    h.stop().await;
}

#[tokio::test]
async fn many_requests_reuse_pooled_connections_concurrently() {
    let h = Harness::start_with(&[TestAccount::a(), TestAccount::b()], |raw| {
        raw.upstream.http2 = true;
    })
    .await;
    let a = TestAccount::a();
    let client = h.client();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let request = client
            .get(h.url(&format!("/2010-04-01/Accounts/{A}/Messages.json?Page={i}")))
            .header("authorization", a.basic_auth());
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap(),
            200
        );
    }
    assert_eq!(h.standin.verified(), 40);
    // With upstream.http2 the pooled connections are HTTP/2 (the stand-in offers h2 by
    // ALPN), and 40 requests share a few of them rather than opening one each.
    let records = h.standin.records().await;
    assert!(records.iter().all(|r| r.version == http::Version::HTTP_2));
    let connections: std::collections::HashSet<u64> =
        records.iter().map(|r| r.connection).collect();
    assert!(
        connections.len() <= 4,
        "{} upstream connections for 40 requests",
        connections.len()
    );
    h.stop().await;
}

#[tokio::test]
async fn ps256_and_a_shorter_ttl_are_honoured() {
    use base64::Engine;
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.signing.algorithm = pkcv_proxy::signing_key::Algorithm::Ps256;
        raw.signing.ttl_secs = 60;
    })
    .await;
    verified(
        &h,
        h.get_as(&format!("/2010-04-01/Accounts/{A}/Messages.json"), &a)
            .await,
        A,
    )
    .await;
    let record = &h.standin.records().await[0];
    let token = &record
        .headers
        .iter()
        .find(|(n, _)| n == "twilio-client-validation")
        .unwrap()
        .1;
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let parts: Vec<&str> = token.split('.').collect();
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["kid"], a.credential_sid);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
        60
    );
    assert_eq!(claims["iss"], a.api_key_sid);
    h.stop().await;
}
