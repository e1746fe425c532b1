//! Twilio's own rejections: the stand-in answers with each code of the table, and each one
//! reaches the client unchanged and shows up in `/metrics`, the log (once a minute per code
//! and account) and `/readyz`'s details, while readiness stays up. A gzip-encoded rejection
//! is passed on byte for byte and counted by the code inside; one that does not decompress is
//! counted as `encoded`.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::support::{wait_until, Harness, ProxyProcess, TestAccount};

/// The binary's own log (a process of its own: a log captured in-process would miss events
/// whose callsite another test thread registered first).
#[tokio::test]
async fn each_twilio_code_is_counted_logged_once_a_minute_and_shown_in_readyz() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let proxy = ProxyProcess::start(&h.raw, h.dir.path()).await;
    let client = h.client();
    let url = |path: &str| format!("http://{}{path}", proxy.listen);
    let path = format!("/2010-04-01/Accounts/{}/Calls.json", a.account_sid);
    let mut codes: Vec<(u32, &str)> = pkcv_proxy::rejection::TWILIO_CODES
        .iter()
        .map(|code| (code.code, code.name))
        .collect();
    // A code outside the table is counted as `other`.
    codes.push((21211, "Invalid 'To' Phone Number"));
    for (code, message) in &codes {
        for status in [401, 403] {
            h.standin
                .fail_next("GET", &path, status, *code, message)
                .await;
            let response = client
                .get(url(&path))
                .header("authorization", a.basic_auth())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], *code, "the body reaches the client unchanged");
            assert_eq!(body["message"], *message);
        }
    }
    for (code, _) in &codes {
        let label = if *code == 21211 {
            "other".to_owned()
        } else {
            code.to_string()
        };
        let sample = format!(
            r#"pkcv_proxy_twilio_rejections_total{{code="{label}",account="{}"}}"#,
            a.account_sid
        );
        assert_eq!(proxy.metric(&sample).await, Some(2.0), "{sample}");
        // Twice, one warning: the second is within the minute.
        let needles = [
            "Twilio rejected a request",
            a.account_sid.as_str(),
            &format!("code={code}"),
        ];
        let log = proxy.log();
        let lines = log
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count();
        assert_eq!(lines, 1, "{code}: {log}");
    }
    assert!(proxy
        .log()
        .lines()
        .any(|line| line.contains("code=20151") && line.contains("re-register the public key")));
    // A response that is not a rejection is not counted.
    assert_eq!(proxy.get(&path, &a.basic_auth()).await, 200);
    let (status, ready) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200, "readiness stays up: {ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let last = &ready["twilio_rejections"];
    assert_eq!(last.as_array().unwrap().len(), 1, "{ready}");
    assert_eq!(last[0]["account"], a.account_sid.as_str());
    assert_eq!(last[0]["code"], "other");
    assert_eq!(last[0]["twilio_code"], 21211);
    assert_eq!(last[0]["status"], 403);
    h.stop().await;
}

#[tokio::test]
async fn a_real_verification_failure_is_counted_with_its_code() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    // The stand-in's clock runs 10 minutes ahead: every token has expired there.
    h.standin.shift_clock(600);
    let path = format!("/2010-04-01/Accounts/{}/Calls.json", a.account_sid);
    let response = h.get_as(&path, &a).await;
    assert_eq!(response.status().as_u16(), 401);
    let sample = format!(
        r#"pkcv_proxy_twilio_rejections_total{{code="20156",account="{}"}}"#,
        a.account_sid
    );
    assert_eq!(h.metric(&sample).await, Some(1.0));
    let (_, ready) = h.admin_get("/readyz").await;
    assert!(ready.contains("fix NTP"), "{ready}");
    h.stop().await;
}

/// `body` gzip-compressed.
fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// The stand-in answers the next `GET path` with `status` and `body` as given, marked
/// `Content-Encoding: gzip`; the client (which does not decompress) gets exactly those bytes,
/// still marked gzip.
async fn gzip_answer_passes_unchanged(
    h: &Harness,
    a: &TestAccount,
    path: &str,
    status: u16,
    body: &[u8],
) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-encoding", HeaderValue::from_static("gzip"));
    h.standin
        .answer_next("GET", path, status, headers, Bytes::copy_from_slice(body))
        .await;
    let response = h.get_as(path, a).await;
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers().get("content-encoding").unwrap(),
        "gzip",
        "the encoding is passed on"
    );
    let received = response.bytes().await.unwrap();
    assert_eq!(
        received.as_ref(),
        body,
        "the body reaches the client unchanged"
    );
}

#[tokio::test]
async fn a_gzip_rejection_is_passed_on_unchanged_and_counted_by_its_code() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let path = format!("/2010-04-01/Accounts/{}/Calls.json", a.account_sid);
    let sample = |label: &str| {
        format!(
            r#"pkcv_proxy_twilio_rejections_total{{code="{label}",account="{}"}}"#,
            a.account_sid
        )
    };
    let counted = |label: &'static str, value: f64| {
        let sample = sample(label);
        let h = &h;
        async move {
            wait_until(Duration::from_secs(5), || async {
                h.metric(&sample).await == Some(value)
            })
            .await
        }
    };

    let json = br#"{"code":20151,"message":"Authentication Error - invalid signature","more_info":"https://www.twilio.com/docs/errors/20151","status":401}"#;
    let compressed = gzip(json);
    assert_ne!(compressed.as_slice(), json.as_slice());
    gzip_answer_passes_unchanged(&h, &a, &path, 401, &compressed).await;
    assert!(
        counted("20151", 1.0).await,
        "{}",
        h.admin_get("/metrics").await.1
    );

    // Marked gzip, but not gzip (plain JSON): passed on all the same, and counted as
    // `encoded`, not by the code a decoder that ignored the header would find.
    let broken = br#"{"code":20151,"message":"marked gzip, sent plain"}"#;
    gzip_answer_passes_unchanged(&h, &a, &path, 403, broken).await;
    assert!(
        counted("encoded", 1.0).await,
        "{}",
        h.admin_get("/metrics").await.1
    );
    assert_eq!(h.metric(&sample("20151")).await, Some(1.0), "counted once");
    h.stop().await;
}
