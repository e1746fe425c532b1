//! The one log line per request (and per `CONNECT`), and the request's metrics. It logs
//! nothing secret: no header but the request ID, no query, no token; only what routing
//! decided, the request IDs, the client's W3C trace ID, and how the request ended. (It keeps
//! the request's target and `Host`, shared, to log a request refused before routing by its
//! host and path; nothing else of them is shown, its `Debug` included.)
//!
//! Trace context: a valid `traceparent` from the client (W3C Trace Context) is the parent
//! of the request's span (`request`, carrying the request ID, the trace ID and the client's
//! span ID as `parent_id`), and its trace ID is logged beside the request ID, so one search
//! finds the app's call and the proxy's. An invalid one is ignored (and, like a valid one,
//! not forwarded unless `[telemetry] propagate_upstream`: see `hop`). With span export (the
//! `otlp` feature, `[telemetry] otlp_endpoint`) that span is exported under the client's, with
//! the method, the routed host, the account and the status (`telemetry::otlp`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{Either, Full};

use crate::error::ProxyError;
use crate::head::{self, WarnLimit};
use crate::metrics::{MethodLabel, Metrics, RequestLabels};
pub(crate) use crate::response::ProxyBody;
use crate::sign::Target;

/// The header that carries a request's ID, both ways.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// What is known about a request so far, filled in step by step as it is routed.
#[derive(Debug)]
pub(crate) struct RequestLog {
    method: Method,
    started: Instant,
    metrics: Arc<Metrics>,
    pub(crate) request_id: HeaderValue,
    /// The target and `Host` as the request named them (shared with the request, not
    /// copied): what a request refused before routing is logged for.
    named: Named,
    /// What routing decided: the host, path and account logged (shared, not copied).
    target: Option<Arc<Target>>,
    /// The host and path when no request is routed (`CONNECT`).
    pub(crate) host: Option<String>,
    /// The `allowed_hosts` pattern the host matched, for metrics.
    pub(crate) host_pattern: Option<String>,
    pub(crate) path: Option<String>,
    /// The `[[clients]]` name, when clients are configured.
    pub(crate) client: Option<String>,
    /// The client's trace context, when it sent a valid `traceparent`.
    pub(crate) trace: Option<TraceParent>,
    /// The rate limit a refusal's WARN line is under, for refusals an unauthenticated peer
    /// can repeat at will (a 407 is always under [`head::PROXY_AUTH`]); lines over the limit
    /// go to debug.
    pub(crate) limit: Option<&'static WarnLimit>,
    /// The request's span, once [`RequestLog::span`] made it: span export records how the
    /// request ended on it.
    #[cfg(feature = "otlp")]
    span: tracing::Span,
}

impl RequestLog {
    /// Starts the log of a request: its ID is the client's `X-Request-Id` when that is at
    /// most 128 visible ASCII characters, else a new one; its host and path are what the
    /// request names until routing decides (so a refusal logs what it was for).
    pub(crate) fn start<B>(request: &Request<B>, metrics: &Arc<Metrics>) -> RequestLog {
        RequestLog {
            method: request.method().clone(),
            started: Instant::now(),
            metrics: metrics.clone(),
            request_id: request_id(request.headers()),
            named: Named {
                uri: request.uri().clone(),
                host: request.headers().get(http::header::HOST).cloned(),
            },
            target: None,
            host: None,
            host_pattern: None,
            path: None,
            client: None,
            limit: None,
            trace: TraceParent::from_headers(request.headers()),
            #[cfg(feature = "otlp")]
            span: tracing::Span::none(),
        }
    }

    /// The request's span: the client's span (`traceparent`) is its parent. Events logged
    /// while the request is handled carry its request ID and trace ID; nothing else (no
    /// header value, no query, no secret). With span export the log keeps a handle on it
    /// until [`RequestLog::finish`], which records how the request ended on it.
    pub(crate) fn span(&mut self) -> tracing::Span {
        let request_id = self.request_id.to_str().unwrap_or("-");
        let span = match &self.trace {
            Some(trace) => tracing::info_span!(
                "request",
                request_id,
                trace_id = %trace.trace_id,
                parent_id = %trace.parent_id,
            ),
            None => tracing::info_span!("request", request_id),
        };
        #[cfg(feature = "otlp")]
        {
            if let Some(trace) = &self.trace {
                crate::telemetry::otlp::set_parent(
                    &span,
                    &trace.trace_id,
                    &trace.parent_id,
                    trace.sampled,
                );
            }
            self.span = span.clone();
        }
        span
    }

    /// Routing decided: the request is logged for `target`, and counted under the
    /// `allowed_hosts` pattern its host matched.
    pub(crate) fn routed(&mut self, target: &Arc<Target>, host_pattern: Option<String>) {
        self.target = Some(target.clone());
        self.host_pattern = host_pattern;
    }

    /// Turns an outcome into the response, logging and counting it: a refusal as the
    /// proxy's Twilio-style error, a failure to reach Twilio as a failure.
    pub(crate) fn finish(
        self,
        outcome: Result<Response<ProxyBody>, ProxyError>,
    ) -> Response<ProxyBody> {
        let elapsed = self.started.elapsed();
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let method = &self.method;
        let (named_host, named_path) = match (&self.target, &self.host) {
            (None, None) => self.named.printable(),
            _ => (None, None),
        };
        let target = self.target.as_deref();
        let host = target
            .map(|target| target.host.as_str())
            .or(self.host.as_deref())
            .or(named_host.as_deref())
            .unwrap_or("-");
        let path = target
            .map(|target| target.path.as_str())
            .or(self.path.as_deref())
            .or(named_path.as_deref())
            .unwrap_or("-");
        let account = target.map_or("-", |target| target.account.account_sid.as_str());
        let client = self.client.as_deref().unwrap_or("-");
        let request_id = self.request_id.to_str().unwrap_or("-");
        let trace_id = self
            .trace
            .as_ref()
            .map_or("-", |trace| trace.trace_id.as_str());
        let mut response = match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                let twilio_request_id = response
                    .headers()
                    .get("twilio-request-id")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-");
                tracing::info!(%method, host, path, account, client, status, latency_us, request_id, trace_id, twilio_request_id, "proxied");
                response
            }
            Err(err) => {
                let status = err.status().as_u16();
                let code = err.code();
                self.metrics.rejected(code);
                let limit = self.limit.or_else(|| {
                    matches!(err, ProxyError::ProxyAuthentication(_)).then_some(&head::PROXY_AUTH)
                });
                // `None`: not limited; `Some(None)`: over the limit; `Some(Some(n))`: written,
                // `n` left out before it.
                let allowed = limit.map(WarnLimit::allow);
                let suppressed = allowed.flatten().filter(|&n| n > 0);
                if matches!(allowed, Some(None)) {
                    tracing::debug!(%method, status, code, error = %err, "refused");
                } else if err.is_upstream_failure() {
                    tracing::warn!(%method, host, path, account, client, status, latency_us, request_id, trace_id, code, error = %err, "upstream failed");
                } else {
                    tracing::warn!(%method, host, path, account, client, status, latency_us, request_id, trace_id, code, suppressed, error = %err, "refused");
                }
                err.to_response::<Full<Bytes>>().map(Either::Right)
            }
        };
        // Only what routing decided (a host on the allow-list, a validated account SID).
        #[cfg(feature = "otlp")]
        crate::telemetry::otlp::record(
            &self.span,
            &self.method,
            self.host_pattern.as_ref().map(|_| host),
            target.map(|target| target.account.account_sid.as_str()),
            response.status().as_u16(),
        );
        let labels = RequestLabels {
            host: self.host_pattern.unwrap_or_else(|| "none".to_owned()),
            method: MethodLabel::from(&self.method),
            status: response.status().as_u16(),
        };
        self.metrics.request(&labels, elapsed);
        response.headers_mut().insert(REQUEST_ID, self.request_id);
        response
    }
}

/// A client's W3C `traceparent` (Trace Context Level 1), as far as the proxy uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// 32 lower-case hex digits, not all zero.
    pub(crate) trace_id: String,
    /// The client's span: 16 lower-case hex digits, not all zero.
    pub(crate) parent_id: String,
    /// The client sampled its span (flags bit 0): an exported span follows that decision.
    pub(crate) sampled: bool,
}

impl TraceParent {
    /// The one `traceparent` header, if it is valid: `version-traceid-parentid-flags`, all
    /// lower-case hex, version not `ff` (version `00` exactly 55 characters; a later version
    /// may append `-…`), neither ID all zeros. Anything else, or two headers, is ignored.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?.to_str().ok()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(value)
    }

    fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches([' ', '\t']);
        let head = value.get(..55)?;
        let mut fields = head.split('-');
        let (version, trace_id, parent_id, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let nonzero = |field: &str| field.bytes().any(|b| b != b'0');
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && hex(parent_id, 16)
            && hex(flags, 2)
            && nonzero(trace_id)
            && nonzero(parent_id)
            && match &value[55..] {
                "" => true,
                rest => version != "00" && rest.starts_with('-'),
            };
        let sampled = u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1);
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            sampled,
        })
    }
}

/// The target and `Host` a request named. Only their host and path are ever shown (its
/// `Debug` too): the query stays out of logs.
struct Named {
    uri: Uri,
    host: Option<HeaderValue>,
}

impl Named {
    /// The host and path, printable: made only for a request refused before routing.
    fn printable(&self) -> (Option<String>, Option<String>) {
        let host = self
            .uri
            .host()
            .or_else(|| self.host.as_ref().and_then(|value| value.to_str().ok()));
        let path = Some(self.uri.path()).filter(|path| !path.is_empty() && *path != "/");
        (host.map(printable), path.map(printable))
    }
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (host, path) = self.printable();
        f.debug_struct("Named")
            .field("host", &host)
            .field("path", &path)
            .finish()
    }
}

/// The W3C Trace Context header that names the client's span.
const TRACEPARENT: &str = "traceparent";

/// At most 200 characters of what a client sent, each printable.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// The client's request ID if it is one a log can hold safely, else a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers.get(REQUEST_ID).filter(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
    });
    match given {
        Some(value) => value.clone(),
        None => {
            let mut id = [0u8; 16];
            // The system RNG does not fail on supported platforms; an all-zero ID would
            // still be a valid (if unhelpful) one.
            let _ = aws_lc_rs::rand::fill(&mut id);
            // The hex string becomes the value's bytes as it is: one allocation, not two.
            HeaderValue::from_maybe_shared(Bytes::from(hex::encode(id)))
                .unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_w3c_trace_context_says() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).unwrap();
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        assert!(parsed.sampled);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceParent::parse(unsampled).unwrap().sampled);
        // A later version may carry more after a dash.
        assert!(TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        )
        .is_some());
        for invalid in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid}");
        }
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(valid));
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(valid));
        assert_eq!(TraceParent::from_headers(&headers), None, "two headers");
    }

    #[test]
    fn a_request_log_never_shows_the_query() {
        let request =
            Request::get("http://api.twilio.com/2010-04-01/Accounts.json?To=%2B1555&Page=2")
                .body(())
                .unwrap();
        let log = RequestLog::start(&request, &Arc::new(Metrics::new()));
        let shown = format!("{log:?}");
        assert!(shown.contains("api.twilio.com") && shown.contains("/2010-04-01/Accounts.json"));
        assert!(!shown.contains("To=") && !shown.contains("Page"), "{shown}");
    }

    #[test]
    fn request_ids_are_kept_when_safe_and_replaced_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-42"));
        assert_eq!(request_id(&headers), "req-42");
        for bad in [" spaced out".to_owned(), "x".repeat(129), String::new()] {
            headers.insert(REQUEST_ID, HeaderValue::from_str(&bad).unwrap());
            let id = request_id(&headers);
            assert_ne!(id, bad.as_str());
            assert_eq!(id.len(), 32);
        }
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }
}
