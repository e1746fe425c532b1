//! W3C trace context: a client's `traceparent` is logged (its trace ID beside the request
//! ID, human and JSON) and, by default, not forwarded to Twilio; `[telemetry]
//! propagate_upstream` forwards it and `tracestate` unchanged.

use std::net::SocketAddr;
use std::time::Duration;

use pkcv_proxy::config::LogFormat;

use crate::support::{wait_until, Harness, ProxyProcess, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE";

/// The proxy binary (so its log is its own, whatever other tests log) in front of the
/// stand-in, logging in `format`.
async fn serve(format: LogFormat) -> (Harness, ProxyProcess) {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let mut raw = h.raw.clone();
    raw.log.format = format;
    let proxy = ProxyProcess::start_with_env(&raw, h.dir.path(), &[("RUST_LOG", "info")]).await;
    (h, proxy)
}

/// `GET` as account A through `proxy` with trace context and `request_id`; the trace
/// headers the stand-in received (it verified the request).
async fn traced_get(
    h: &Harness,
    proxy: SocketAddr,
    traceparent: &str,
    request_id: &str,
) -> Vec<(String, String)> {
    let response = h
        .client()
        .get(format!("http://{proxy}{A_ACCOUNTS}"))
        .header("authorization", TestAccount::a().basic_auth())
        .header("traceparent", traceparent)
        .header("tracestate", TRACESTATE)
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let record = h.standin.records().await.pop().unwrap();
    let outcome = record.outcome.as_ref().unwrap_or_else(|r| panic!("{r}"));
    assert!(outcome.signed);
    record
        .headers
        .into_iter()
        .filter(|(name, _)| name == "traceparent" || name == "tracestate")
        .collect()
}

/// The access log line of `request_id`, once the process has written it.
async fn access_line(proxy: &ProxyProcess, request_id: &str) -> String {
    let find = || {
        proxy
            .log()
            .lines()
            .find(|line| line.contains("proxied") && line.contains(request_id))
            .map(str::to_owned)
    };
    let logged = wait_until(Duration::from_secs(5), || async { find().is_some() }).await;
    assert!(
        logged,
        "no access log line for {request_id}: {}",
        proxy.log()
    );
    find().unwrap_or_default()
}

#[tokio::test]
async fn a_client_traceparent_is_logged_and_not_forwarded_by_default() {
    let (h, proxy) = serve(LogFormat::Human).await;
    assert_eq!(
        traced_get(&h, proxy.listen, TRACEPARENT, "req-traced").await,
        []
    );
    let line = access_line(&proxy, "req-traced").await;
    assert!(line.contains(&format!("trace_id=\"{TRACE_ID}\"")), "{line}");
    assert!(
        !line.contains("00f067aa0ba902b7-01"),
        "the header is not logged: {line}"
    );
    // An invalid one is ignored (and not forwarded either).
    let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    assert_eq!(
        traced_get(&h, proxy.listen, invalid, "req-invalid").await,
        []
    );
    let line = access_line(&proxy, "req-invalid").await;
    assert!(line.contains("trace_id=\"-\""), "{line}");
    h.stop().await;
}

#[tokio::test]
async fn propagate_upstream_forwards_trace_context_unchanged() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.telemetry.propagate_upstream = true;
    })
    .await;
    let forwarded = traced_get(&h, h.proxy, TRACEPARENT, "req-propagated").await;
    assert_eq!(
        forwarded,
        [
            ("traceparent".to_owned(), TRACEPARENT.to_owned()),
            ("tracestate".to_owned(), TRACESTATE.to_owned()),
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn the_json_access_log_carries_the_trace_id_beside_the_request_id() {
    let (h, proxy) = serve(LogFormat::Json).await;
    assert_eq!(
        traced_get(&h, proxy.listen, TRACEPARENT, "req-json").await,
        []
    );
    let line = access_line(&proxy, "req-json").await;
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["request_id"], "req-json", "{line}");
    assert_eq!(event["trace_id"], TRACE_ID, "{line}");
    assert!(
        !line.contains("00f067aa0ba902b7-01"),
        "the header is not logged: {line}"
    );
    h.stop().await;
}
