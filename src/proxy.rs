//! The request path for one request: route → authenticate → normalize → pick the account →
//! buffer and hash the body → sign → forward. Each step is a module; this file only puts
//! them in order.
//!
//! Everything that can refuse a request without reading its body (a host off the allow-list,
//! Auth Token credentials, a malformed target) runs before the body is read, and nothing is
//! ever sent upstream unsigned: the only way to the [`Upstream`] is through
//! [`RequestSigner::sign`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::Either;
use hyper::body::Incoming;

use crate::access_log::{ProxyBody, RequestLog};
use crate::body;
use crate::config::Config;
use crate::error::ProxyError;
use crate::hop;
use crate::keys::KeyStore;
use crate::sign::RequestSigner;
use crate::upstream::{Upstream, UpstreamError};

/// The signing proxy: shared by every connection and every tunnel.
#[derive(Debug)]
pub(crate) struct Proxy {
    signer: RequestSigner,
    upstream: Upstream,
    max_body_bytes: u64,
    body_read_timeout: Duration,
}

impl Proxy {
    /// Builds the proxy from a validated config and a key store. Connects nowhere yet.
    pub(crate) fn new(config: &Config, keys: Arc<KeyStore>) -> Result<Proxy, UpstreamError> {
        Ok(Proxy {
            signer: RequestSigner::new(config, keys),
            upstream: Upstream::new(&config.upstream)?,
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
        })
    }

    /// The signer: what resolves and signs requests, and the key store behind it.
    pub(crate) fn signer(&self) -> &RequestSigner {
        &self.signer
    }

    /// Forwards one request signed, or answers with a Twilio-style error. `tunnel_host` is
    /// the host of the `CONNECT` tunnel the request came through, if any.
    pub(crate) async fn handle<B>(
        &self,
        request: Request<B>,
        tunnel_host: Option<&str>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let mut log = RequestLog::start(request.method());
        let outcome = self
            .forward(request, tunnel_host, &mut log)
            .await
            .map(|response| response.map(Either::Left));
        log.finish(outcome)
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
                timeout: self.body_read_timeout,
            })??;
        let request = self.signer.sign(parts, &target, body, body_hash)?;
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
