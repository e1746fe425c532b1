//! Span export over OTLP/HTTP (`--features otlp`): the proxy binary posts its request spans,
//! protobuf, to a collector on loopback (a small hyper server here), decoded with the
//! OpenTelemetry project's own types. The span's parent is the client's `traceparent`; its
//! attributes carry no query string, no `Authorization` value, no token. Spans are queued and
//! exported in batches, the last ones on `SIGTERM`; a collector that is down changes nothing
//! for clients and is logged once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support::{wait_until, Harness, ProxyProcess, TestAccount};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// A query value that must never leave in a span.
const QUERY_SECRET: &str = "q5ecretvalue";

/// One POST the collector received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Bytes,
}

/// An OTLP/HTTP collector on loopback: answers every POST 200 with an empty
/// `ExportTraceServiceResponse` and keeps what it got.
struct Collector {
    addr: SocketAddr,
    posts: Arc<tokio::sync::Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let kept = posts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let content_type = request
                                    .headers()
                                    .get("content-type")
                                    .and_then(|value| value.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let body = request.into_body().collect().await?.to_bytes();
                                kept.lock().await.push(Post {
                                    path,
                                    content_type,
                                    body,
                                });
                                let mut response = http::Response::new(Full::new(Bytes::new()));
                                response.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, hyper::Error>(response)
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Collector { addr, posts, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    async fn posts(&self) -> Vec<Post> {
        self.posts.lock().await.clone()
    }

    /// Every span received so far.
    async fn spans(&self) -> Vec<Span> {
        self.posts()
            .await
            .iter()
            .flat_map(|post| {
                let request = ExportTraceServiceRequest::decode(post.body.clone()).unwrap();
                request
                    .resource_spans
                    .into_iter()
                    .flat_map(|resource| resource.scope_spans)
                    .flat_map(|scope| scope.spans)
            })
            .collect()
    }
}

/// An attribute's value as text (strings as they are, other values debug-printed).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

/// Every attribute of every span, and the span's name and events, as one text.
fn everything(span: &Span) -> String {
    format!("{span:?}")
}

/// Neither `span` nor anything else exported (other spans, the resource) holds any of
/// `secrets`; the resource names the service.
fn assert_carries_none(span: &Span, posts: &[Post], secrets: &[&str]) {
    let text = everything(span);
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "the span carries {secret:?}: {text}"
        );
    }
    for post in posts {
        let raw = String::from_utf8_lossy(&post.body);
        let request = ExportTraceServiceRequest::decode(post.body.clone()).unwrap();
        let decoded = format!("{request:?}");
        for secret in secrets {
            assert!(
                !raw.contains(secret) && !decoded.contains(secret),
                "the export carries {secret:?}"
            );
        }
        let resource = format!("{:?}", request.resource_spans[0].resource);
        assert!(resource.contains("pkcv-proxy"), "service.name: {resource}");
    }
}

/// The proxy binary exporting to `endpoint`, in front of the stand-in; the batch delay is a
/// minute (OTEL_BSP_SCHEDULE_DELAY), so spans leave only when the queue is flushed at
/// shutdown unless `delay_ms` says otherwise.
async fn serve(endpoint: &str, delay_ms: &str) -> (Harness, ProxyProcess) {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let mut raw = h.raw.clone();
    raw.telemetry.otlp_endpoint = Some(endpoint.to_owned());
    let proxy = ProxyProcess::start_with_env(
        &raw,
        h.dir.path(),
        &[("RUST_LOG", "info"), ("OTEL_BSP_SCHEDULE_DELAY", delay_ms)],
    )
    .await;
    (h, proxy)
}

/// A `GET` as `account` through `proxy` with the client's `traceparent` and a query holding
/// [`QUERY_SECRET`], verified by the stand-in: the token the proxy signed it with.
async fn traced_get(h: &Harness, proxy: &ProxyProcess, account: &TestAccount) -> String {
    let path = format!(
        "/2010-04-01/Accounts/{}/Messages.json?PageSize=20&To={QUERY_SECRET}",
        account.account_sid
    );
    let response = h
        .client()
        .get(format!("http://{}{path}", proxy.listen))
        .header("authorization", account.basic_auth())
        .header("traceparent", TRACEPARENT)
        .header("x-request-id", "req-otlp")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let record = h.standin.records().await.pop().unwrap();
    assert!(record.outcome.as_ref().unwrap().signed);
    assert!(record.query.contains(QUERY_SECRET), "{}", record.query);
    record
        .headers
        .iter()
        .find(|(name, _)| name == "twilio-client-validation")
        .map(|(_, value)| value.clone())
        .expect("the proxy signed the request")
}

#[tokio::test]
async fn the_request_span_is_exported_under_the_clients_span_and_carries_no_secret() {
    let collector = Collector::start().await;
    let (h, proxy) = serve(&collector.endpoint(), "60000").await;
    let account = TestAccount::a();
    let authorization = account.basic_auth();
    let token = traced_get(&h, &proxy, &account).await;
    // Queued, not yet exported: the batch delay is a minute.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.posts().await.is_empty(),
        "exported before the flush"
    );

    // SIGTERM: drained, and the queue flushed before the process ends.
    proxy.signal("TERM");
    let status = proxy.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let posts = collector.posts().await;
    assert!(!posts.is_empty(), "nothing was exported on shutdown");
    for post in &posts {
        assert_eq!(post.path, "/v1/traces");
        assert_eq!(post.content_type, "application/x-protobuf");
    }
    let spans = collector.spans().await;
    let span = spans
        .iter()
        .find(|span| attribute(span, "request_id").as_deref() == Some("req-otlp"))
        .unwrap_or_else(|| panic!("no request span for req-otlp in {spans:?}"));
    assert_eq!(span.name, "request");
    assert_eq!(hex::encode(&span.trace_id), TRACE_ID, "{span:?}");
    assert_eq!(hex::encode(&span.parent_span_id), CLIENT_SPAN, "{span:?}");
    assert_ne!(hex::encode(&span.span_id), CLIENT_SPAN, "a span of its own");
    assert_eq!(
        attribute(span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(span, "server.address").as_deref(),
        Some("api.twilio.com")
    );
    assert_eq!(
        attribute(span, "pkcv.account_sid").as_deref(),
        Some(account.account_sid.as_str())
    );
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(span.events.is_empty(), "no log event is exported: {span:?}");
    let basic = authorization.trim_start_matches("Basic ");
    let signature = token.split('.').nth(2).unwrap_or("-");
    assert_carries_none(
        span,
        &posts,
        &[
            QUERY_SECRET,
            "PageSize",
            &authorization,
            basic,
            &account.secret,
            &token,
            signature,
        ],
    );
    drop(h);
}

#[tokio::test]
async fn a_collector_that_is_down_costs_clients_nothing_and_is_logged_once() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (h, proxy) = serve(&format!("http://{closed}/v1/traces"), "100").await;
    let account = TestAccount::a();
    let path = format!("/2010-04-01/Accounts/{}.json", account.account_sid);
    for _ in 0..3 {
        assert_eq!(proxy.get(&path, &account.basic_auth()).await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let failed = || proxy.log().matches("span export over OTLP failed").count();
    let logged = wait_until(Duration::from_secs(10), || async { failed() >= 1 }).await;
    assert!(logged, "no export failure logged: {}", proxy.log());
    assert_eq!(proxy.get(&path, &account.basic_auth()).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failed(), 1, "at most once a minute: {}", proxy.log());
    // The log is written as without export: one access line per request.
    let proxied = proxy
        .log()
        .lines()
        .filter(|line| line.contains("proxied") && line.contains(&account.account_sid))
        .count();
    assert_eq!(proxied, 4, "{}", proxy.log());
    proxy.signal("TERM");
    assert!(proxy.exit(Duration::from_secs(15)).await.success());
    drop(h);
}
