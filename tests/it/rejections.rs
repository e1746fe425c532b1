//! Twilio's own rejections: the stand-in answers with each code of the table, and each one
//! reaches the client unchanged and shows up in `/metrics`, the log (once a minute per code
//! and account) and `/readyz`'s details, while readiness stays up.

use serde_json::Value;

use crate::support::{Harness, ProxyProcess, TestAccount};

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
