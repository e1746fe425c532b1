//! The request path: route → authenticate → normalize → pick the account → buffer and hash
//! the body → sign → forward. Each step is a module; this file only puts them in order.
//!
//! Everything that can refuse a request without reading its body (a host off the allow-list,
//! Auth Token credentials, a malformed target) runs before the body is read, and nothing is
//! ever sent upstream unsigned: the only way to the [`Upstream`] is through
//! [`RequestSigner::mint`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, EXPECT, HOST};
use http::request::Parts;
use http::{Method, Request, Response, Version};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::body::{self, BufferedBody};
use crate::config::Config;
use crate::connect::Tunnels;
use crate::error::ProxyError;
use crate::hop;
use crate::intercept::InterceptError;
use crate::keys::KeyStore;
use crate::sign::{RequestSigner, Target};
use crate::token;
use crate::upstream::{Upstream, UpstreamError};

/// What the proxy answers with: Twilio's streamed response, or its own error JSON.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The signing proxy: shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    signer: RequestSigner,
    max_body_bytes: u64,
    body_read_timeout: std::time::Duration,
    upstream: Upstream,
    pub(crate) tunnels: Tunnels,
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The upstream client.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The interception CA.
    #[error(transparent)]
    Intercept(#[from] InterceptError),
}

impl Proxy {
    /// Builds the proxy from a validated config and a key store. Connects nowhere yet.
    pub fn new(config: &Config, keys: Arc<KeyStore>) -> Result<Proxy, BuildError> {
        Ok(Proxy {
            signer: RequestSigner::new(config, keys),
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            upstream: Upstream::new(&config.upstream)?,
            tunnels: Tunnels::new(config)?,
        })
    }

    /// The signer, for reloads and for code that signs without forwarding.
    pub fn signer(&self) -> &RequestSigner {
        &self.signer
    }

    /// Handles one request from a client connection: forwards it signed, opens a `CONNECT`
    /// tunnel, or answers with a Twilio-style error.
    pub async fn handle<B>(self: &Arc<Self>, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        if request.method() == Method::CONNECT {
            let started = Instant::now();
            let mut log = RequestLog::default();
            let response = self.connect(request, &mut log).await;
            let response = log.finish(&Method::CONNECT, response, started);
            return response;
        }
        self.handle_in(request, None).await
    }

    /// Handles one request, inside the `CONNECT` tunnel to `tunnel_host` if given.
    pub async fn handle_in<B>(
        &self,
        request: Request<B>,
        tunnel_host: Option<&str>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let mut log = RequestLog::default();
        let response = self
            .forward(request, tunnel_host, &mut log)
            .await
            .map(|response| response.map(Either::Left));
        log.finish(&method, response, started)
    }

    async fn forward<B>(
        &self,
        request: Request<B>,
        tunnel_host: Option<&str>,
        log: &mut RequestLog,
    ) -> Result<Response<Incoming>, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (mut parts, body) = request.into_parts();
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotSupported(
                "CONNECT inside a tunnel".into(),
            ));
        }
        // Hop-by-hop headers go first: one named in `Connection` (even `Authorization`) is not
        // the client's to pass on, so it can neither route nor sign the request.
        hop::strip(&mut parts.headers);
        let target = self.signer.resolve(&parts, tunnel_host)?;
        log.host = Some(target.host.clone());
        log.path = Some(target.path.clone());
        log.account = Some(target.account.account_sid.clone());

        let declared_len = declared_length(&parts)?;
        let buffering = body::buffer(body, declared_len, self.max_body_bytes);
        let (body, body_hash) = tokio::time::timeout(self.body_read_timeout, buffering)
            .await
            .map_err(|_| ProxyError::BodyTimeout {
                millis: self.body_read_timeout.as_millis() as u64,
            })??;
        let request_hash = target.canonical(&parts.method, body_hash).hash();
        let token = self
            .signer
            .mint(&target, &request_hash, token::unix_now())?;

        let request = upstream_request(parts, &target, &token, body)?;
        let mut response = self.upstream.send(request, &target.host).await?;
        hop::strip(response.headers_mut());
        Ok(response)
    }
}

/// The client's `Content-Length`, if it sent one.
fn declared_length(parts: &Parts) -> Result<Option<u64>, ProxyError> {
    parts
        .headers
        .get(CONTENT_LENGTH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or(ProxyError::BadHeader("Content-Length is not a number"))
        })
        .transpose()
}

/// The request as it goes to Twilio: the normalized target, the client's end-to-end headers,
/// and exactly the `Host`, `Authorization` and body that were signed.
fn upstream_request(
    mut parts: Parts,
    target: &Target,
    token: &str,
    body: BufferedBody,
) -> Result<Request<BufferedBody>, ProxyError> {
    parts.uri = target.uri()?;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    // The body is complete, so there is nothing to wait for a 100 Continue about.
    headers.remove(EXPECT);
    headers.remove(token::HEADER_NAME);
    headers.insert(
        HOST,
        HeaderValue::from_str(&target.host).map_err(|_| ProxyError::BadHeader("host"))?,
    );
    let mut authorization = HeaderValue::from_str(&target.auth.authorization)
        .map_err(|_| ProxyError::BadHeader("authorization"))?;
    authorization.set_sensitive(true);
    headers.insert(AUTHORIZATION, authorization);
    let mut token = HeaderValue::from_str(token).map_err(|_| ProxyError::Signing)?;
    token.set_sensitive(true);
    headers.insert(token::HEADER_NAME, token);
    if body.is_empty() && !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        headers.remove(CONTENT_LENGTH);
    } else {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(Request::from_parts(parts, body))
}

/// The one log line per request. Holds nothing secret: no headers, no query, no token.
#[derive(Default)]
pub(crate) struct RequestLog {
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) account: Option<String>,
    error: Option<(u32, String)>,
}

impl RequestLog {
    /// Turns an outcome into the response, logging it.
    fn finish(
        &mut self,
        method: &Method,
        outcome: Result<Response<ProxyBody>, ProxyError>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let response = match outcome {
            Ok(response) => response,
            Err(err) => {
                self.error = Some((err.code(), err.to_string()));
                err.to_response::<Full<Bytes>>().map(Either::Right)
            }
        };
        self.emit(method, response.status().as_u16(), started);
        response
    }

    fn emit(&self, method: &Method, status: u16, started: Instant) {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let host = self.host.as_deref().unwrap_or("-");
        let path = self.path.as_deref().unwrap_or("-");
        let account = self.account.as_deref().unwrap_or("-");
        match &self.error {
            None => tracing::info!(%method, host, path, account, status, latency_ms, "proxied"),
            Some((code, message)) => {
                tracing::warn!(%method, host, path, account, status, latency_ms, code, message = %message, "refused")
            }
        }
    }
}
