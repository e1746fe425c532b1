//! The one log line per request (and per `CONNECT`). It holds nothing secret: no headers,
//! no query, no token; only what routing decided and how the request ended.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::{Either, Full};

use crate::error::ProxyError;

/// What the proxy answers with: Twilio's streamed response, or its own (error) body.
pub(crate) type ProxyBody = Either<hyper::body::Incoming, Full<Bytes>>;

/// What is known about a request so far, filled in step by step as it is routed.
#[derive(Debug)]
pub(crate) struct RequestLog {
    method: Method,
    started: Instant,
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) account: Option<String>,
}

impl RequestLog {
    pub(crate) fn start(method: &Method) -> RequestLog {
        RequestLog {
            method: method.clone(),
            started: Instant::now(),
            host: None,
            path: None,
            account: None,
        }
    }

    /// Turns an outcome into the response, logging it: a refusal as the proxy's Twilio-style
    /// error, a failure to reach Twilio as a failure.
    pub(crate) fn finish(
        self,
        outcome: Result<Response<ProxyBody>, ProxyError>,
    ) -> Response<ProxyBody> {
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let method = &self.method;
        let host = self.host.as_deref().unwrap_or("-");
        let path = self.path.as_deref().unwrap_or("-");
        let account = self.account.as_deref().unwrap_or("-");
        match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                tracing::info!(%method, host, path, account, status, latency_us, "proxied");
                response
            }
            Err(err) => {
                let status = err.status().as_u16();
                let code = err.code();
                if err.is_upstream_failure() {
                    tracing::warn!(%method, host, path, account, status, latency_us, code, error = %err, "upstream failed");
                } else {
                    tracing::warn!(%method, host, path, account, status, latency_us, code, error = %err, "refused");
                }
                err.to_response::<Full<Bytes>>().map(Either::Right)
            }
        }
    }
}
