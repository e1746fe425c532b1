//! Span export over OTLP/HTTP (protobuf), with the `otlp` cargo feature and
//! `[telemetry] otlp_endpoint`.
//!
//! - What is exported: the `request` span of `access_log` alone (a per-layer filter gives the
//!   OpenTelemetry layer that span and nothing else: no log event becomes a span event). Its
//!   parent is the client's `traceparent`, so a trace backend shows the proxy's span under the
//!   app's call; its attributes are the request ID, the client's trace and span IDs, and, once
//!   known, the method, the Twilio host, the account SID and the status ([`record`]). Never a
//!   query string, a header value, a token or a key.
//! - How: the OpenTelemetry SDK's batch processor queues finished spans and exports them from
//!   a thread of its own, off the request path; a full queue drops spans, never waits. The
//!   exporter posts through [`Poster`], the hyper client with rustls the proxy already has
//!   (the public web roots plus `[upstream] extra_ca_file`), connecting directly: not through
//!   `[upstream] proxy`.
//! - Failures: an export that fails is dropped and logged at most once a minute; it never
//!   fails or slows a request. On shutdown, what is queued is exported within
//!   [`SHUTDOWN_TIMEOUT`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, LogSettings, OtlpSettings, UpstreamSettings};

/// The longest one export (connect, post, answer) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the shutdown waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to the collector may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans waiting for export at most; more are dropped (a collector that is down must not
/// grow the proxy's memory).
const MAX_QUEUED_SPANS: usize = 4096;

/// The most of a collector's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why span export could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The TLS settings for an `https` collector (`[upstream] extra_ca_file`).
    #[error("telemetry.otlp_endpoint: {0}")]
    Tls(#[from] crate::upstream::UpstreamError),
    /// The OpenTelemetry exporter refused its settings.
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Set up off the runtime that would carry the posts.
    #[error("span export must be set up on the serving runtime")]
    NoRuntime,
}

/// The running export: flushed and stopped by [`Export::shutdown`].
#[derive(Debug)]
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Exports what is queued and stops, waiting at most [`SHUTDOWN_TIMEOUT`] (the SDK's
    /// shutdown blocks, so it runs on a blocking thread while the runtime carries the post).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stopping =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
        match tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(1), stopping).await {
            Ok(Ok(Ok(()))) => tracing::debug!("span export stopped"),
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %err, "span export: the last spans may not have been exported");
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("span export: the last spans were not exported in time");
            }
        }
    }
}

/// Installs the global subscriber: the log as `init_log` would, plus the
/// OpenTelemetry layer for the request span. Must run on the serving runtime.
pub(super) fn install(
    log: &LogSettings,
    otlp: &OtlpSettings,
    upstream: &UpstreamSettings,
) -> Result<Export, OtlpError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(Poster::new(upstream)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(otlp.endpoint.to_string())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batches)
                .build(),
        )
        .with_resource(
            Resource::builder()
                .with_service_name(otlp.service_name.clone())
                .build(),
        )
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pkcv-proxy"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && meta.name() == "request" && meta.target() == REQUEST_SPAN_TARGET
        }));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(super::ansi())
        .with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(super::log_filter(log)))
        .with(spans)
        .try_init();
    tracing::info!(endpoint = %otlp.endpoint, service_name = %otlp.service_name, "exporting request spans over OTLP/HTTP");
    Ok(Export { provider })
}

/// Where the request span is made (`access_log`).
const REQUEST_SPAN_TARGET: &str = "pkcv_proxy::access_log";

/// Makes the client's span (`traceparent`: its trace ID, span ID and sampled flag) the
/// parent of `span`, which must not have been entered yet. IDs that do not parse leave the
/// span a root.
pub(crate) fn set_parent(span: &tracing::Span, trace_id: &str, parent_id: &str, sampled: bool) {
    let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(trace_id), SpanId::from_hex(parent_id))
    else {
        return;
    };
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let parent = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    // Without the OpenTelemetry layer (no endpoint set) there is nothing to parent.
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
}

/// How a request ended, as the exported span's attributes: what routing decided (each
/// `None` when it did not get that far) and the status. A 5xx marks the span an error.
pub(crate) fn record(
    span: &tracing::Span,
    method: &http::Method,
    host: Option<&str>,
    account: Option<&str>,
    status: u16,
) {
    span.set_attribute("http.request.method", method.as_str().to_owned());
    if let Some(host) = host {
        span.set_attribute("server.address", host.to_owned());
    }
    if let Some(account) = account {
        span.set_attribute("pkcv.account_sid", account.to_owned());
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(Status::error(format!("status {status}")));
    }
}

/// The exporter's HTTP client: hyper with rustls, `http` and `https`, HTTP/1.1. The SDK calls
/// it from its own batch thread; each post runs on the serving runtime (`runtime`), which the
/// thread only waits for.
#[derive(Clone)]
struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster").finish_non_exhaustive()
    }
}

impl Poster {
    fn new(upstream: &UpstreamSettings) -> Result<Poster, OtlpError> {
        let mut dial = HttpConnector::new();
        dial.enforce_http(false);
        dial.set_connect_timeout(Some(CONNECT_TIMEOUT));
        dial.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::upstream::tls_config(upstream)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(dial);
        Ok(Poster {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime: tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime)?,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Poster {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let posting = self.runtime.spawn(async move {
            match tokio::time::timeout(EXPORT_TIMEOUT, post(&client, request)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {} s", EXPORT_TIMEOUT.as_secs()).into()),
            }
        });
        let outcome = match posting.await {
            Ok(outcome) => outcome,
            Err(err) => Err(err.into()),
        };
        match &outcome {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => export_failed(&format!("the collector answered {}", response.status())),
            Err(err) => export_failed(&error_chain(err.as_ref())),
        }
        outcome
    }
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, HttpError> {
    let response = client.request(request.map(Full::new)).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?;
    Ok(Response::from_parts(parts, body.to_bytes()))
}

/// An error and its causes, each said once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut current = Some(err);
    while let Some(cause) = current {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        current = cause.source();
    }
    text
}

/// When (Unix seconds) the last export failure was logged, and how many were left out since.
static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
static LEFT_OUT: AtomicU64 = AtomicU64::new(0);

/// Logs a failed export at most once a minute — a sliding minute since the last line, not a
/// calendar minute, which would let one through at :59 and another at :00 (the spans are
/// dropped; requests are not affected).
fn export_failed(reason: &str) {
    let now = crate::token::unix_now();
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    let due = last == 0 || now >= last.saturating_add(60);
    // One of several failing at once wins the line.
    if !due
        || LAST_LOGGED
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let left_out = LEFT_OUT.swap(0, Ordering::Relaxed);
    tracing::warn!(
        reason,
        left_out,
        "span export over OTLP failed: these spans are dropped (requests are not affected)"
    );
}
