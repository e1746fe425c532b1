//! The request path for one request: admit → route → authenticate → normalize → pick the
//! account → buffer and hash the body → sign → forward. Each step is a module; this file
//! only puts them in order.
//!
//! Everything that can refuse a request without reading its body (overload, a host off the
//! allow-list, Auth Token credentials, a malformed target) runs before the body is read, and
//! nothing is ever sent upstream unsigned: [`Upstream::send`] takes only a
//! [`crate::sign::SignedRequest`], which only [`RequestSigner::sign`] makes.
//!
//! A request reads the key store once: the client check and the signing account come from
//! that one snapshot, so a reload in between cannot authorize against one account set and
//! sign with another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, DATE};
use http::request::Parts;
use http::{Method, Request, Response, Version};
use http_body::Body;
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::access_log::{ProxyBody, RequestLog, REQUEST_ID};
use crate::admission::Admission;
use crate::body::{self, BodyBudget, HashedBody};
use crate::clients::Client;
use crate::clock_skew::ClockSkew;
use crate::config::Config;
use crate::error::ProxyError;
use crate::head;
use crate::hop;
use crate::keys::{Accounts, KeyStore};
use crate::metrics::Metrics;
use crate::rejection::{self, Inspected};
use crate::response::{self, Stalling};
use crate::sign::{RequestSigner, Target};
use crate::upstream::{Failure, Upstream, UpstreamError};

/// Where a request came from, as far as signing is concerned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The host of the `CONNECT` tunnel it came through, if any.
    pub(crate) tunnel_host: Option<Arc<str>>,
    /// The client its connection already proved to be (a tunnel's `CONNECT`, a client
    /// certificate), if any.
    pub(crate) client: Option<Arc<str>>,
}

/// The signing proxy: shared by every connection and every tunnel.
#[derive(Debug)]
pub(crate) struct Proxy {
    keys: Arc<KeyStore>,
    signer: RequestSigner,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    budget: BodyBudget,
    max_body_bytes: u64,
    body_read_timeout: Duration,
    response_idle_timeout: Duration,
    clock_skew: ClockSkew,
    /// `[telemetry] propagate_upstream`: forward `traceparent`/`tracestate` to Twilio.
    propagate_trace: bool,
}

impl Proxy {
    /// Builds the proxy from a validated config and a key store. Connects nowhere yet.
    pub(crate) fn new(
        config: &Config,
        keys: Arc<KeyStore>,
        admission: Arc<Admission>,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, ProxyBuildError> {
        Ok(Proxy {
            keys,
            signer: RequestSigner::new(config, metrics.clone())
                .map_err(ProxyBuildError::SigningPool)?,
            upstream: Upstream::new(&config.upstream, metrics.clone())?,
            admission,
            budget: BodyBudget::new(config.server.max_buffered_bytes),
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            response_idle_timeout: config.upstream.response_idle_timeout,
            clock_skew: ClockSkew::new(metrics.clone()),
            propagate_trace: config.telemetry.propagate_upstream,
            metrics,
        })
    }

    /// The signer: what resolves and signs requests.
    pub(crate) fn signer(&self) -> &RequestSigner {
        &self.signer
    }

    /// The live account set, one snapshot per request.
    pub(crate) fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// How upstream connections are opened (through the egress proxy, if any).
    pub(crate) fn dialer(&self) -> &crate::egress::Dialer {
        self.upstream.dialer()
    }

    /// The metrics every request is counted in.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Forwards one request signed, or answers with a Twilio-style error.
    pub(crate) async fn handle<B>(
        &self,
        request: Request<B>,
        origin: &Origin,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let mut log = RequestLog::start(&request, &self.metrics);
        // The client's trace is the span's parent; the access log line itself, written
        // outside it, names the trace ID as a field.
        let span = log.span();
        // Refused at once when full: waiting in a queue would only slow every request.
        let outcome = match self.admission.request() {
            Ok(_slot) => {
                self.forward(request, origin, &mut log)
                    .instrument(span)
                    .await
            }
            Err(err) => Err(err),
        };
        log.finish(outcome.map(|response| response.map(Either::Left)))
    }

    async fn forward<B>(
        &self,
        request: Request<B>,
        origin: &Origin,
        log: &mut RequestLog,
    ) -> Result<Response<Stalling<Inspected<Incoming>>>, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (mut parts, body) = request.into_parts();
        // The one snapshot of the key store this request uses, for the client check and
        // the signing account alike.
        let accounts = self.keys.snapshot();
        // Who is asking comes first: nothing is routed or read for an unknown client.
        let client = self.client(&accounts, &parts.headers, origin)?;
        log.client = client.as_ref().map(|client| client.name.clone());
        forwarded_method(&parts)?;
        // Hop-by-hop headers go first: one named in `Connection` (even `Authorization`) is not
        // the client's to pass on, so it can neither route nor sign the request.
        hop::strip(&mut parts.headers);
        hop::strip_client_network(&mut parts.headers);
        if !self.propagate_trace {
            hop::strip_trace_context(&mut parts.headers);
        }
        parts.headers.insert(REQUEST_ID, log.request_id.clone());
        let target = Arc::new(self.signer.resolve(
            &accounts,
            &parts,
            origin.tunnel_host.as_deref(),
        )?);
        drop(accounts);
        let host_pattern = self.signer.hosts().matching(&target.host);
        log.routed(&target, host_pattern.map(|pattern| pattern.to_string()));
        if let Some(client) =
            client.filter(|client| !client.may_sign_for(&target.account.account_sid))
        {
            return Err(ProxyError::ClientNotAllowed {
                client: client.name.clone(),
                account: target.account.account_sid.clone(),
            });
        }

        let body = self.read_body(&parts, body).await?;
        // A place among the host's connections first, so the token is minted fresh when
        // the request can really leave.
        let permit = self.upstream.permit(&target.host).await?;
        let response = self.send(parts, target.clone(), body).await?;
        self.clock_skew.observe(response.headers().get(DATE));
        // Twilio's 401/403 say why in their body: read (bounded) as it streams, counted.
        let rejections = self.metrics.rejections();
        let response = rejection::inspect(response, &target.account.account_sid, rejections);
        response::prepare(response, &target.host, self.response_idle_timeout, permit)
    }

    /// Answers a request head that [`crate::head`] refused, logging at most one such refusal
    /// a second at warn.
    pub(crate) fn refuse<B>(
        &self,
        request: &Request<B>,
        refusal: head::Refusal,
    ) -> Response<ProxyBody> {
        let mut log = RequestLog::start(request, &self.metrics);
        log.limit = Some(&head::MALFORMED_HEADS);
        log.finish(Err(refusal.error()))
    }

    /// The client a request comes from when `[[clients]]` are configured (`None` when they
    /// are not): the one its connection already proved to be (a tunnel's `CONNECT`, a
    /// client certificate), or the one its `Proxy-Authorization` proves; else 407.
    pub(crate) fn client(
        &self,
        accounts: &Accounts,
        headers: &http::HeaderMap,
        origin: &Origin,
    ) -> Result<Option<Arc<Client>>, ProxyError> {
        let clients = accounts.clients();
        if clients.is_empty() {
            return Ok(None);
        }
        let client = match &origin.client {
            Some(name) => clients.get(name).ok_or(ProxyError::ProxyAuthentication(
                "this connection's client is no longer configured",
            ))?,
            None => clients.authenticate(headers)?,
        };
        Ok(Some(client.clone()))
    }

    /// The whole body, hashed, within the body deadline and the memory budget.
    async fn read_body<B>(&self, parts: &Parts, body: B) -> Result<HashedBody, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let declared_len = declared_length(parts)?;
        let mut body = std::pin::pin!(body);
        let buffering = body::buffer(
            body.as_mut(),
            declared_len,
            self.max_body_bytes,
            Some(&self.budget),
        );
        let buffered = tokio::time::timeout(self.body_read_timeout, buffering)
            .await
            .map_err(|_| ProxyError::BodyTimeout {
                timeout: self.body_read_timeout,
            })?;
        if let (Err(ProxyError::BodyTooLarge { .. }), Version::HTTP_2) = (&buffered, parts.version)
        {
            // An HTTP/2 stream whose upload is still arriving would be reset under the 413;
            // read (and drop) a bounded rest of it first, so the client gets the answer.
            body::discard(body.as_mut(), DISCARD_AT_MOST, DISCARD_FOR).await;
        }
        buffered
    }

    /// Signs and sends; an idempotent request whose connection failed before a byte was
    /// sent is signed afresh and sent once more. A POST is never sent twice.
    async fn send(
        &self,
        parts: Parts,
        target: Arc<Target>,
        body: HashedBody,
    ) -> Result<Response<Incoming>, ProxyError> {
        let signed = self.signer.sign(parts, target, body).await?;
        let sending = Instant::now();
        let first = self.upstream.send(signed).await;
        self.metrics.upstream(sending.elapsed());
        let unsent = match first {
            Ok(response) => return Ok(response),
            Err(Failure {
                unsent: Some(unsent),
                error,
            }) => {
                tracing::debug!(error = %error, "connection failed before sending; retrying once with a fresh token");
                unsent
            }
            Err(failure) => return Err(failure.error),
        };
        let signed = self.signer.sign_again(unsent).await?;
        let sending = Instant::now();
        let again = self.upstream.send(signed).await;
        self.metrics.upstream(sending.elapsed());
        again.map_err(|failure| failure.error)
    }
}

/// Only what Twilio's REST API uses is forwarded, in the case HTTP gives it: `TRACE`, a
/// `CONNECT` inside a tunnel, `get` and made-up methods, and `OPTIONS *` are refused.
fn forwarded_method(parts: &Parts) -> Result<(), ProxyError> {
    let forwarded = matches!(
        parts.method,
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD
    ) || (parts.method == Method::OPTIONS && parts.uri.path() != "*");
    if forwarded {
        return Ok(());
    }
    let shown: String = parts.method.as_str().chars().take(32).collect();
    let target = if parts.uri.path() == "*" { " *" } else { "" };
    Err(ProxyError::MethodNotForwarded(format!("{shown}{target}")))
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyBuildError {
    /// The upstream client.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The signing threads could not be started.
    #[error("cannot start the signing threads: {0}")]
    SigningPool(#[from] std::io::Error),
}

/// How much of an oversized HTTP/2 upload is read and dropped before its 413 is sent, and
/// for how long at most: past either, the stream is reset under the answer.
const DISCARD_AT_MOST: u64 = 64 * 1024 * 1024;
const DISCARD_FOR: Duration = Duration::from_secs(5);

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
