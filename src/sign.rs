//! Signing a request: resolve it to an upstream host, a normalized target and an account,
//! then one async step that canonicalizes, mints and attaches the token.
//!
//! [`RequestSigner::sign`] is the only way to make a [`SignedRequest`], and
//! `Upstream::send` takes nothing else, so "every request that leaves is
//! signed, over exactly what leaves" is kept by the compiler. The proxy, `pkcv-proxy sign`
//! and the account workflow all sign through this step.
//!
//! A key says how it must be called (its [`Key`] variant), and the step honours it: a key that
//! never blocks (PEM in memory) signs inline on the connection's thread, unless
//! `signing.pem_on_pool`; a key that may block (an HSM) signs on the signing pool, never on a
//! runtime thread; a network signer (cloud KMS, Vault transit) is awaited on the runtime
//! under its backend's concurrency limit and deadline, holding no thread.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, EXPECT, HOST};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::auth::{self, ApiKeyAuth};
use crate::body::{BufferedBody, HashedBody};
use crate::canonical::{CanonicalRequest, HexDigest};
use crate::config::{Config, SigningSettings};
use crate::error::ProxyError;
use crate::keys::{Account, Accounts};
use crate::metrics::Metrics;
use crate::normalize::{normalize_path, normalize_query};
use crate::route::{self, HostPolicy};
use crate::sid::account_in_path;
use crate::signing_key::{Key, SignError};
use crate::signing_pool::{PoolError, SigningPool};
use crate::token::{self, Claims, TokenError};

/// A request resolved to an upstream host, a normalized target and a signing account.
#[derive(Debug, Clone)]
pub struct Target {
    /// The upstream host (no port).
    pub host: String,
    /// The normalized path.
    pub path: String,
    /// The normalized query, in the client's order, without `?`.
    pub query: String,
    /// The API key credentials.
    pub auth: ApiKeyAuth,
    /// The account that signs, from the snapshot the request was resolved against.
    pub account: Arc<Account>,
}

impl Target {
    /// The canonical request for this target with `method` and a body hash.
    pub fn canonical<'a>(
        &'a self,
        method: &'a Method,
        body_hash: Option<HexDigest>,
    ) -> CanonicalRequest<'a> {
        CanonicalRequest {
            method: method.as_str(),
            path: &self.path,
            query: &self.query,
            authorization: &self.auth.authorization,
            host: &self.host,
            body_hash,
        }
    }

    /// The upstream URI: always HTTPS on the default port.
    pub fn uri(&self) -> Result<Uri, ProxyError> {
        let bad = |_| ProxyError::BadTarget("the normalized target is not a valid URI");
        let path_and_query = if self.query.is_empty() {
            http::uri::PathAndQuery::try_from(self.path.as_str()).map_err(bad)?
        } else {
            let joined = [self.path.as_str(), "?", self.query.as_str()].concat();
            http::uri::PathAndQuery::try_from(joined).map_err(bad)?
        };
        Uri::builder()
            .scheme(http::uri::Scheme::HTTPS)
            .authority(self.host.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadTarget("the normalized target is not a valid URI"))
    }
}

/// A request as it goes to Twilio, with the token minted over exactly it. Only
/// [`RequestSigner::sign`] makes one (its fields are private and it has no constructor), and
/// the upstream client sends nothing else.
#[derive(Debug)]
pub struct SignedRequest {
    request: Request<BufferedBody>,
    target: Arc<Target>,
    body: Option<HashedBody>,
    body_hash: Option<HexDigest>,
    rqh: HexDigest,
}

impl SignedRequest {
    /// The canonical request string that was hashed into `rqh`.
    pub fn canonical_string(&self) -> String {
        self.target
            .canonical(self.request.method(), self.body_hash)
            .to_canonical_string()
    }

    /// The canonical request hash (`rqh`).
    pub fn rqh(&self) -> &HexDigest {
        &self.rqh
    }

    /// The `Twilio-Client-Validation` token.
    pub fn token(&self) -> &str {
        self.request
            .headers()
            .get(token::HEADER_NAME)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The request it was resolved from.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The method.
    pub fn method(&self) -> &Method {
        self.request.method()
    }

    /// The URI it goes to.
    pub fn uri(&self) -> &Uri {
        self.request.uri()
    }

    /// The request for the wire, and a copy to sign again when it may be retried (see
    /// [`RequestSigner::sign_again`]).
    pub(crate) fn into_request(self) -> (Request<BufferedBody>, Option<Unsent>) {
        let retry = self.body.map(|body| Unsent {
            parts: {
                let mut parts = Request::new(()).into_parts().0;
                parts.method = self.request.method().clone();
                parts.uri = self.request.uri().clone();
                parts.version = self.request.version();
                parts.headers = self.request.headers().clone();
                parts
            },
            target: self.target.clone(),
            body,
            rqh: self.rqh,
            body_hash: self.body_hash,
        });
        (self.request, retry)
    }
}

/// A signed request that was not sent (its connection failed before a byte left), kept to be
/// signed afresh: the request is already normalized and its hash known, so only the token
/// is minted again, and the body is not hashed again.
#[derive(Debug)]
pub(crate) struct Unsent {
    parts: Parts,
    target: Arc<Target>,
    body: HashedBody,
    rqh: HexDigest,
    body_hash: Option<HexDigest>,
}

/// Why a request was not signed. Each failure knows its wire error and its metric label, so
/// no caller maps one to the other.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignFailure {
    /// The request cannot be put on the wire as normalized (no signature was attempted).
    #[error(transparent)]
    Request(ProxyError),
    /// The account's key is on a device that is being reconnected.
    #[error("the key of {account} is unavailable")]
    Unavailable {
        /// The account.
        account: String,
    },
    /// The account's key service throttled the signature past its deadline.
    #[error("the key service of {account} is throttling")]
    Throttled {
        /// The account.
        account: String,
    },
    /// The account's key service refuses the key (access denied, disabled, deleted, or no
    /// longer the key that was loaded).
    #[error("the key service refuses the key of {account}: {reason}")]
    Refused {
        /// The account.
        account: String,
        /// What the service said, without credentials.
        reason: String,
    },
    /// The signing pool's queue is full.
    #[error("the signing queue is full")]
    QueueFull,
    /// The signature failed.
    #[error("signing as {account} failed: {source}")]
    Failed {
        /// The account.
        account: String,
        /// Why.
        #[source]
        source: MintError,
    },
}

/// Why minting failed after it was attempted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The key refused or failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The signing pool is gone (shutting down).
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl SignFailure {
    /// The failure of `account`'s key to sign.
    fn from_key(account: &str, err: SignError) -> SignFailure {
        let account = account.to_owned();
        match err {
            SignError::Unavailable => SignFailure::Unavailable { account },
            SignError::Throttled => SignFailure::Throttled { account },
            SignError::Refused(reason) => SignFailure::Refused { account, reason },
            source => SignFailure::Failed {
                account,
                source: MintError::Token(TokenError::Sign(source)),
            },
        }
    }

    /// The `reason` label of `pkcv_proxy_sign_errors_total`, or `None` when no signature was
    /// attempted.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            SignFailure::Request(_) => None,
            SignFailure::Unavailable { .. } => Some("unavailable"),
            SignFailure::Throttled { .. } => Some("throttled"),
            SignFailure::Refused { .. } => Some("refused"),
            SignFailure::QueueFull => Some("queue_full"),
            SignFailure::Failed { .. } => Some("failed"),
        }
    }
}

impl From<SignFailure> for ProxyError {
    fn from(failure: SignFailure) -> ProxyError {
        match failure {
            SignFailure::Request(err) => err,
            SignFailure::Unavailable { account } => ProxyError::KeyUnavailable(account),
            SignFailure::Throttled { account } => ProxyError::KeyThrottled(account),
            SignFailure::Refused { account, .. } => ProxyError::KeyRefused { account },
            SignFailure::QueueFull => ProxyError::Overloaded("the signing queue is full"),
            SignFailure::Failed { .. } => ProxyError::Signing,
        }
    }
}

/// Resolves requests against an account snapshot and signs them with the configured hosts
/// and token settings.
#[derive(Debug, Clone)]
pub struct RequestSigner {
    hosts: HostPolicy,
    signing: SigningSettings,
    pool: Arc<SigningPool>,
    metrics: Arc<Metrics>,
}

impl RequestSigner {
    /// A signer with the config's host policy and token settings, its signing pool started,
    /// counting signatures in `metrics`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> std::io::Result<RequestSigner> {
        Ok(RequestSigner {
            hosts: config.upstream.hosts.clone(),
            signing: config.signing,
            pool: Arc::new(SigningPool::new(
                config.signing.threads(),
                config.signing.pool_queue,
            )?),
            metrics,
        })
    }

    /// The allow-list and default host.
    pub fn hosts(&self) -> &HostPolicy {
        &self.hosts
    }

    /// How many signing threads there are, and whether PEM keys sign on them too.
    pub(crate) fn signing_threads(&self) -> (usize, bool) {
        (self.pool.threads(), self.signing.pem_on_pool)
    }

    /// Route, authenticate, normalize and pick the account from `accounts` (the request's one
    /// snapshot): everything decided before the body is read. `tunnel_host` is the host of
    /// the `CONNECT` tunnel the request came through, if any; it overrides whatever the
    /// request names.
    pub fn resolve(
        &self,
        accounts: &Accounts,
        parts: &Parts,
        tunnel_host: Option<&str>,
    ) -> Result<Target, ProxyError> {
        let route = match tunnel_host {
            Some(host) => route::in_tunnel(&parts.uri, &parts.headers, host)?,
            None => route::resolve(&parts.uri, &parts.headers, &self.hosts)?,
        };
        let auth = auth::api_key_auth(&parts.headers)?;
        let path = normalize_path(route.path)?;
        let query = normalize_query(route.query)?;
        let account = accounts
            .select(&auth.api_key_sid, account_in_path(&path))?
            .clone();
        Ok(Target {
            host: route.host,
            path,
            query,
            auth,
            account,
        })
    }

    /// Signs a resolved request whose body is complete: the request as it goes to Twilio,
    /// with the normalized target, the client's end-to-end headers, and exactly the `Host`,
    /// `Authorization` and body that were hashed, plus the token over them. The token is
    /// minted last, so it is fresh when the request leaves.
    pub async fn sign(
        &self,
        mut parts: Parts,
        target: Arc<Target>,
        body: HashedBody,
    ) -> Result<SignedRequest, SignFailure> {
        prepare(&mut parts, &target, &body).map_err(SignFailure::Request)?;
        let body_hash = body.hash();
        let rqh = target.canonical(&parts.method, body_hash).hash();
        // A request that may be retried keeps its body for a second signature.
        let keep = is_idempotent(&parts.method).then(|| body.clone());
        let token = self.mint(&target, rqh).await?;
        finish(parts, target, body, keep, body_hash, rqh, token)
    }

    /// Signs a request again that was never sent, with a fresh token over the same hash.
    pub(crate) async fn sign_again(&self, unsent: Unsent) -> Result<SignedRequest, SignFailure> {
        let Unsent {
            parts,
            target,
            body,
            rqh,
            body_hash,
        } = unsent;
        let token = self.mint(&target, rqh).await?;
        finish(parts, target, body, None, body_hash, rqh, token)
    }

    /// Mints the token over `rqh` where the account's key must be called, counting the
    /// signature or its failure.
    async fn mint(&self, target: &Target, rqh: HexDigest) -> Result<String, SignFailure> {
        let account = &target.account;
        let key = account.minter.key();
        let started = Instant::now();
        let minted = if !key.is_available() {
            // Refused before queueing: the device is being reconnected.
            Err(SignError::Unavailable)
        } else {
            let unsigned = account.minter.unsigned(&Claims {
                api_key_sid: &target.auth.api_key_sid,
                account_sid: &account.account_sid,
                request_hash: &rqh,
                issued_at: token::unix_now(),
                ttl_secs: self.signing.ttl_secs,
            });
            let algorithm = account.minter.algorithm();
            let signed = match (key, self.signing.pem_on_pool) {
                (Key::Inline(key), false) => key
                    .sign(algorithm, unsigned.input())
                    .map(|signature| (unsigned, signature)),
                (Key::Inline(key) | Key::Blocking(key), _) => {
                    let key = Arc::clone(key);
                    let job = move || {
                        key.sign(algorithm, unsigned.input())
                            .map(|signature| (unsigned, signature))
                    };
                    match self.pool.run(job).await {
                        Ok(signed) => signed,
                        Err(PoolError::Full) => return self.failed(target, SignFailure::QueueFull),
                        Err(err) => {
                            return self.failed(
                                target,
                                SignFailure::Failed {
                                    account: account.account_sid.clone(),
                                    source: err.into(),
                                },
                            )
                        }
                    }
                }
                (Key::Awaited(key), _) => key
                    .sign(algorithm, unsigned.input())
                    .await
                    .map(|signature| (unsigned, signature)),
            };
            signed.map(|(unsigned, signature)| unsigned.finish(&signature))
        };
        match minted {
            Ok(token) => {
                self.metrics
                    .signed(key.backend().as_str(), started.elapsed());
                Ok(token)
            }
            Err(err) => self.failed(target, SignFailure::from_key(&account.account_sid, err)),
        }
    }

    /// Counts and logs a signature that was not made.
    fn failed<T>(&self, target: &Target, failure: SignFailure) -> Result<T, SignFailure> {
        let account = &target.account.account_sid;
        if let SignFailure::Failed { source, .. } = &failure {
            tracing::error!(%account, error = %source, "signing failed");
        }
        if let Some(reason) = failure.reason() {
            self.metrics.sign_failed(account, reason);
        }
        Err(failure)
    }
}

/// Sets the normalized target, `Authorization` and `Content-Length` that the hash covers;
/// everything but the token.
fn prepare(parts: &mut Parts, target: &Target, body: &HashedBody) -> Result<(), ProxyError> {
    parts.uri = target.uri()?;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    // The body is complete, so there is nothing to wait for a 100 Continue about.
    headers.remove(EXPECT);
    // The host goes as the URI's authority: hyper writes it as `Host` over HTTP/1.1 and as
    // `:authority` alone over HTTP/2 (RFC 9113 §8.3.1), exactly the signed value either way.
    // Whatever `Host` the client sent must not travel on beside it.
    headers.remove(HOST);
    headers.insert(
        AUTHORIZATION,
        sensitive(&target.auth.authorization, "authorization")?,
    );
    if body.is_empty() && !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        headers.remove(CONTENT_LENGTH);
    } else {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(())
}

/// The prepared request with its token attached.
fn finish(
    mut parts: Parts,
    target: Arc<Target>,
    body: HashedBody,
    keep: Option<HashedBody>,
    body_hash: Option<HexDigest>,
    rqh: HexDigest,
    token: String,
) -> Result<SignedRequest, SignFailure> {
    // A token is base64url and dots, so this cannot fail; if it ever did, nothing is sent.
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(token))
        .map_err(|_| SignFailure::Request(ProxyError::Signing))?;
    value.set_sensitive(true);
    parts.headers.insert(token::HEADER_NAME, value);
    Ok(SignedRequest {
        request: Request::from_parts(parts, body.into_body()),
        target,
        body: keep,
        body_hash,
        rqh,
    })
}

/// Methods a retry cannot turn into a second effect.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::DELETE)
}

/// A header value that HTTP/2 must never index (HPACK) and `Debug` never prints.
fn sensitive(value: &str, name: &'static str) -> Result<HeaderValue, ProxyError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| ProxyError::BadHeader(name))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests;
