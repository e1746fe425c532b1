//! Signing a request: resolve it to an upstream host, a normalized target and an account,
//! then mint the token over exactly what will be forwarded.
//!
//! [`RequestSigner`] needs no network, so the proxy, `pkcv-proxy sign` and the account
//! workflow all sign through this one path.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, Uri};

use crate::auth::{self, ApiKeyAuth};
use crate::canonical::{CanonicalRequest, HexDigest};
use crate::config::{Config, SigningSettings};
use crate::error::ProxyError;
use crate::keys::{Account, KeyStore};
use crate::normalize::{normalize_path, normalize_query};
use crate::route::{self, HostPolicy, TargetForm};
use crate::sid::account_in_path;
use crate::token::Claims;

/// A request resolved to an upstream host, a normalized target and a signing account.
#[derive(Debug, Clone)]
pub struct Target {
    /// The upstream host (no port).
    pub host: String,
    /// The normalized path.
    pub path: String,
    /// The normalized query, in the client's order, without `?`.
    pub query: String,
    /// How the client named the host.
    pub form: TargetForm,
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
            form: route.form,
            auth,
            account,
        })
    }

    /// Mints the token for `target` with `request_hash` at `now` (Unix seconds).
    pub fn mint(
        &self,
        target: &Target,
        request_hash: &HexDigest,
        now: u64,
    ) -> Result<String, ProxyError> {
        let claims = Claims {
            api_key_sid: &target.auth.api_key_sid,
            account_sid: &target.account.account_sid,
            request_hash,
            issued_at: now,
            ttl_secs: self.signing.ttl_secs,
        };
        target.account.signer.mint(&claims).map_err(|err| {
            tracing::error!(account = %target.account.account_sid, error = %err, "signing failed");
            ProxyError::Signing
        })
    }
}
