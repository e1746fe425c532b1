//! Signing a request: resolve it to an upstream host, a normalized target and an account,
//! then mint the token over exactly what will be forwarded.
//!
//! [`RequestSigner`] needs no network, so the proxy, `pkcv-proxy sign` and the account
//! workflow all sign through this one path.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, EXPECT, HOST};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::auth::{self, ApiKeyAuth};
use crate::body::BufferedBody;
use crate::canonical::{CanonicalRequest, HexDigest};
use crate::config::{Config, SigningSettings};
use crate::error::ProxyError;
use crate::keys::{Account, KeyStore};
use crate::normalize::{normalize_path, normalize_query};
use crate::route::{self, HostPolicy};
use crate::sid::account_in_path;
use crate::signing_key::SignError;
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
    /// The account that signs.
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
        let uri = if self.query.is_empty() {
            format!("https://{}{}", self.host, self.path)
        } else {
            format!("https://{}{}?{}", self.host, self.path, self.query)
        };
        uri.parse()
            .map_err(|_| ProxyError::BadTarget("the normalized target is not a valid URI"))
    }
}

/// Resolves and signs requests with the configured hosts, keys and token settings.
#[derive(Debug, Clone)]
pub struct RequestSigner {
    keys: Arc<KeyStore>,
    hosts: HostPolicy,
    signing: SigningSettings,
}

impl RequestSigner {
    /// A signer over `keys` with the config's host policy and token settings.
    pub fn new(config: &Config, keys: Arc<KeyStore>) -> RequestSigner {
        RequestSigner {
            keys,
            hosts: config.upstream.hosts.clone(),
            signing: config.signing,
        }
    }

    /// The key store, for reloads.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// The allow-list and default host.
    pub fn hosts(&self) -> &HostPolicy {
        &self.hosts
    }

    /// Route, authenticate, normalize and pick the account: everything decided before the
    /// body is read. `tunnel_host` is the host of the `CONNECT` tunnel the request came
    /// through, if any; it overrides whatever the request names.
    pub fn resolve(&self, parts: &Parts, tunnel_host: Option<&str>) -> Result<Target, ProxyError> {
        let route = match tunnel_host {
            Some(host) => route::in_tunnel(&parts.uri, &parts.headers, host)?,
            None => route::resolve(&parts.uri, &parts.headers, &self.hosts)?,
        };
        let auth = auth::api_key_auth(&parts.headers)?;
        let path = normalize_path(route.path)?;
        let query = normalize_query(route.query)?;
        let accounts = self.keys.snapshot();
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
    /// `Authorization` and body that were hashed, plus the token over them.
    pub fn sign(
        &self,
        parts: Parts,
        target: &Target,
        body: BufferedBody,
        body_hash: Option<HexDigest>,
    ) -> Result<Request<BufferedBody>, ProxyError> {
        let request_hash = target.canonical(&parts.method, body_hash).hash();
        let token = self.mint(target, &request_hash, token::unix_now())?;
        self.signed_request(parts, target, &token, body)
    }

    /// The request as it goes to Twilio, carrying `token` (minted over exactly this request,
    /// here or on the signing pool).
    pub fn signed_request(
        &self,
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
        // The host goes as the URI's authority: hyper writes it as `Host` over HTTP/1.1 and
        // as `:authority` alone over HTTP/2 (RFC 9113 §8.3.1), exactly the signed value either
        // way. Whatever `Host` the client sent must not travel on beside it.
        headers.remove(HOST);
        headers.insert(
            AUTHORIZATION,
            sensitive(&target.auth.authorization, "authorization")?,
        );
        headers.insert(token::HEADER_NAME, sensitive(token, token::HEADER_NAME)?);
        if body.is_empty() && !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            headers.remove(CONTENT_LENGTH);
        } else {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Mints the token for `target` with `request_hash` at `now` (Unix seconds).
    pub fn mint(
        &self,
        target: &Target,
        request_hash: &HexDigest,
        now: u64,
    ) -> Result<String, ProxyError> {
        self.mint_job(target, *request_hash, now).run()
    }

    /// What minting the token needs, owned, so it can run on another thread (the signing
    /// pool).
    pub fn mint_job(&self, target: &Target, request_hash: HexDigest, now: u64) -> MintJob {
        MintJob {
            account: target.account.clone(),
            api_key_sid: target.auth.api_key_sid.clone(),
            request_hash,
            issued_at: now,
            ttl_secs: self.signing.ttl_secs,
        }
    }
}

/// One token to mint: the account whose key signs, and the claims.
#[derive(Debug)]
pub struct MintJob {
    account: Arc<Account>,
    api_key_sid: String,
    request_hash: HexDigest,
    issued_at: u64,
    ttl_secs: u64,
}

impl MintJob {
    /// Whether minting may block its thread (an HSM): then it must run on the signing pool.
    pub fn blocks(&self) -> bool {
        self.account.signer.key().blocks()
    }

    /// Mints the token: the one RSA private-key operation a request costs.
    pub fn run(self) -> Result<String, ProxyError> {
        let claims = Claims {
            api_key_sid: &self.api_key_sid,
            account_sid: &self.account.account_sid,
            request_hash: &self.request_hash,
            issued_at: self.issued_at,
            ttl_secs: self.ttl_secs,
        };
        self.account.signer.mint(&claims).map_err(|err| match err {
            TokenError::Sign(SignError::Unavailable) => {
                ProxyError::KeyUnavailable(self.account.account_sid.clone())
            }
            err => {
                tracing::error!(account = %self.account.account_sid, error = %err, "signing failed");
                ProxyError::Signing
            }
        })
    }
}

/// A header value that HTTP/2 must never index (HPACK) and `Debug` never prints.
fn sensitive(value: &str, name: &'static str) -> Result<HeaderValue, ProxyError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| ProxyError::BadHeader(name))?;
    value.set_sensitive(true);
    Ok(value)
}
