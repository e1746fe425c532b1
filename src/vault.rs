//! Keys in Vault's transit engine (and OpenBao's, the same API): `private_key =
//! "vault-transit:NAME"`.
//!
//! The key is read once at load (`GET /v1/{mount}/keys/{name}`): it must be `rsa-2048`,
//! and the version loaded is pinned (or the one the config names, `?version=N`), so a
//! rotation of the transit key never changes the signing key under the proxy. Each token is
//! one `POST /v1/{mount}/sign/{name}` (`hash_algorithm` `sha2-256` in the body, so a policy
//! of `update` on `transit/sign/NAME` and `read` on `transit/keys/NAME` is all it needs) with
//! the JWT's signing input itself (Vault hashes it), `pkcs1v15` for RS256 and `pss` with a
//! salt as long as the hash for PS256, as RFC 7518 requires.
//!
//! One [`VaultService`] per process holds the connection pool, the concurrency limit and
//! the token: from `token_file` (read again whenever the file changes, so a token renewed
//! by an agent is picked up without a restart), from `token_env`, or from Kubernetes auth
//! (the service-account token exchanged for a Vault token, logged in again before its
//! lease ends). The token is never logged, nor any answer's body.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde_json::json;

use crate::config::{Config, TransitKey, VaultAuth, VaultSettings};
use crate::files::FileStamp;
use crate::remote::http::{Answer, JsonClient};
use crate::remote::{KeyService, Limits, PublicKey, RemoteKey, RemoteLoadError, ServiceError};
use crate::signing_key::{Algorithm, Backend, Key};

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");
const NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-vault-namespace");

/// One Vault server as the config reaches it: its client, limits and token.
#[derive(Debug)]
pub struct VaultService {
    client: JsonClient,
    settings: VaultSettings,
    limits: Limits,
    token: ArcSwap<Token>,
    /// One login at a time (Kubernetes auth).
    login: tokio::sync::Mutex<()>,
}

/// The token in use and where it came from.
#[derive(Default, Clone)]
struct Token {
    value: Option<HeaderValue>,
    /// The token file's stamp when it was read.
    stamp: Option<FileStamp>,
    /// When a login token should be renewed (Kubernetes auth).
    renew_at: Option<Instant>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Token")
            .field("set", &self.value.is_some())
            .finish_non_exhaustive()
    }
}

/// The process's services by settings: every key of one server shares its connections,
/// its `max_concurrent` and its token.
static SERVICES: OnceLock<ArcSwap<Vec<Known>>> = OnceLock::new();

/// A service and the settings it was made for.
type Known = (String, Arc<VaultService>);

impl VaultService {
    /// The service for `config`'s `[vault]` (and egress), made once per set of settings.
    pub fn for_config(config: &Config) -> Result<Arc<VaultService>, RemoteLoadError> {
        let identity = format!("{:?}{:?}", config.vault, config.upstream.proxy);
        let services = SERVICES.get_or_init(ArcSwap::default);
        if let Some((_, service)) = services.load().iter().find(|(id, _)| *id == identity) {
            return Ok(service.clone());
        }
        let settings = config.vault.clone();
        let address = match &settings.address {
            Some(address) => address.clone(),
            None => std::env::var("VAULT_ADDR").map_err(|_| {
                RemoteLoadError::Settings(
                    "vault-transit keys need [vault] address or VAULT_ADDR".into(),
                )
            })?,
        };
        crate::config::check_base_url(&address)
            .map_err(|problem| RemoteLoadError::Settings(format!("[vault] address {problem}")))?;
        let dialer = config
            .upstream
            .dialer()
            .map_err(|err| RemoteLoadError::Settings(err.to_string()))?;
        let client = JsonClient::new(&address, settings.ca_file.as_deref(), dialer)
            .map_err(|err| RemoteLoadError::Settings(format!("[vault] {err}")))?;
        let service = Arc::new(VaultService {
            client,
            limits: Limits::new(settings.max_concurrent, settings.sign_timeout),
            settings,
            token: ArcSwap::default(),
            login: tokio::sync::Mutex::new(()),
        });
        // Keep a few: settings change rarely, and each reload asks again. (Two first loads
        // racing make two services; both work, the later one is kept.)
        services.rcu(|known| {
            let mut known = Vec::clone(known);
            if known.len() >= 4 {
                known.remove(0);
            }
            known.push((identity.clone(), service.clone()));
            known
        });
        Ok(service)
    }

    fn token_state(&self) -> arc_swap::Guard<Arc<Token>> {
        self.token.load()
    }

    fn set_token(&self, change: impl Fn(&mut Token)) {
        self.token.rcu(|token| {
            let mut token = Token::clone(token);
            change(&mut token);
            token
        });
    }

    /// The token to send: read (again) from its file when it changed, from its variable, or
    /// from a login that is renewed before its lease ends.
    async fn token(&self) -> Result<HeaderValue, ServiceError> {
        match &self.settings.auth {
            VaultAuth::Token {
                file: Some(file), ..
            } => self.token_from_file(file),
            VaultAuth::Token { file: None, env } => {
                if let Some(value) = self.token_state().value.clone() {
                    return Ok(value);
                }
                let token = std::env::var(env).map_err(|_| {
                    ServiceError::Refused(format!("no Vault token: {env} is not set"))
                })?;
                let value = header_value(token.trim())?;
                self.set_token(|state| state.value = Some(value.clone()));
                Ok(value)
            }
            VaultAuth::Kubernetes {
                role,
                token_file,
                mount,
            } => self.login(role, token_file, mount).await,
        }
    }

    fn token_from_file(&self, file: &std::path::Path) -> Result<HeaderValue, ServiceError> {
        let unreadable =
            |err: crate::files::FileError| ServiceError::Refused(format!("Vault token: {err}"));
        let stamp = crate::files::stamp(file).map_err(unreadable)?;
        let state = self.token_state();
        if let (Some(value), Some(read)) = (&state.value, &state.stamp) {
            if *read == stamp {
                return Ok(value.clone());
            }
        }
        let token = crate::files::read_private(file).map_err(unreadable)?;
        let token = String::from_utf8(token)
            .map_err(|_| ServiceError::Refused("the Vault token file is not text".into()))?;
        let value = header_value(token.trim())?;
        self.set_token(|state| {
            state.value = Some(value.clone());
            state.stamp = Some(stamp);
        });
        Ok(value)
    }

    async fn login(
        &self,
        role: &str,
        token_file: &Path,
        mount: &str,
    ) -> Result<HeaderValue, ServiceError> {
        let fresh = |state: &Token| {
            state
                .value
                .clone()
                .filter(|_| state.renew_at.is_some_and(|at| Instant::now() < at))
        };
        if let Some(value) = fresh(&self.token_state()) {
            return Ok(value);
        }
        let _one_login = self.login.lock().await;
        if let Some(value) = fresh(&self.token_state()) {
            return Ok(value);
        }
        let jwt = crate::files::read_bounded(token_file).map_err(|err| {
            ServiceError::Refused(format!("Kubernetes service-account token: {err}"))
        })?;
        let jwt = String::from_utf8_lossy(&jwt).trim().to_owned();
        let answer = self
            .call(
                Method::POST,
                &format!("/v1/auth/{mount}/login"),
                None,
                Some(&json!({ "role": role, "jwt": jwt })),
            )
            .await
            .map_err(|err| in_login(err, mount, role))?;
        let auth = &answer.json["auth"];
        let Some(token) = auth["client_token"].as_str() else {
            return Err(ServiceError::Failed(
                "Kubernetes login answered without a client_token".into(),
            ));
        };
        let lease = auth["lease_duration"].as_u64().unwrap_or(0);
        let value = header_value(token)?;
        let renew_at = Instant::now() + renew_after(lease);
        self.set_token(|state| {
            state.value = Some(value.clone());
            state.renew_at = Some(renew_at);
        });
        Ok(value)
    }

    /// One call with the namespace and, unless `token` is `None` (a login), the token.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<HeaderValue>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ServiceError> {
        let mut headers = Vec::with_capacity(2);
        if let Some(token) = token {
            headers.push((TOKEN_HEADER, token));
        }
        if let Some(namespace) = &self.settings.namespace {
            headers.push((NAMESPACE_HEADER, header_value(namespace)?));
        }
        let answer = self.client.call(method, path, &headers, body).await?;
        match answer.status {
            status if status.is_success() => Ok(answer),
            StatusCode::TOO_MANY_REQUESTS => Err(ServiceError::Throttled(vault_errors(&answer))),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                // A token revoked or renewed elsewhere: read the file again next time.
                self.set_token(|state| {
                    state.stamp = None;
                    state.renew_at = None;
                });
                Err(ServiceError::Refused(format!(
                    "permission denied ({}): check the token and its policy",
                    vault_errors(&answer)
                )))
            }
            StatusCode::NOT_FOUND => Err(ServiceError::Refused(format!(
                "not found ({})",
                vault_errors(&answer)
            ))),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => {
                Err(ServiceError::Unreachable(format!(
                    "Vault is unavailable ({})",
                    vault_errors(&answer)
                )))
            }
            status if status == StatusCode::BAD_REQUEST => {
                Err(ServiceError::Refused(vault_errors(&answer)))
            }
            status => Err(ServiceError::Failed(format!(
                "Vault answered {status} ({})",
                vault_errors(&answer)
            ))),
        }
    }

    /// A call with the current token.
    async fn authorized(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ServiceError> {
        let token = self.token().await?;
        self.call(method, path, Some(token), body).await
    }

    fn key_path(&self, what: &str, name: &str) -> String {
        format!("/v1/{}/{what}/{name}", self.settings.mount)
    }

    /// Reads a transit key: its type, latest version and public keys.
    async fn read_key(&self, name: &str) -> Result<serde_json::Value, ServiceError> {
        let answer = self
            .authorized(Method::GET, &self.key_path("keys", name), None)
            .await?;
        Ok(answer.json["data"].clone())
    }

    /// Creates `name` as a non-exportable `rsa-2048` key unless it exists (an existing key
    /// is used, never overwritten): its latest version's public key, that version, and
    /// whether it was created now.
    pub async fn create_key(&self, name: &str) -> Result<(PublicKey, u32, bool), ServiceError> {
        let created = match self.read_key(name).await {
            Ok(_) => false,
            Err(ServiceError::Refused(reason)) if reason.starts_with("not found") => {
                self.authorized(
                    Method::POST,
                    &self.key_path("keys", name),
                    Some(&json!({ "type": "rsa-2048", "exportable": false })),
                )
                .await?;
                true
            }
            Err(err) => return Err(err),
        };
        let data = self.read_key(name).await?;
        let (public_key, version) = pinned_public_key(name, &data, None)?;
        Ok((public_key, version, created))
    }
}

/// A transit key, as a [`KeyService`].
#[derive(Debug)]
pub struct TransitSigner {
    service: Arc<VaultService>,
    name: String,
    version: u32,
}

impl KeyService for TransitSigner {
    async fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let (signature_algorithm, extra) = match algorithm {
            Algorithm::Rs256 => ("pkcs1v15", json!({})),
            // RFC 7518 §3.5: the salt is as long as the hash (32 bytes).
            Algorithm::Ps256 => ("pss", json!({ "salt_length": "hash" })),
        };
        // The hash goes in the body, not the path (`sign/NAME/sha2-256`): a policy granting
        // `update` on `transit/sign/NAME` alone (the least privilege) then covers it.
        let mut body = json!({
            "input": STANDARD.encode(message),
            "hash_algorithm": "sha2-256",
            "key_version": self.version,
            "signature_algorithm": signature_algorithm,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let path = self.service.key_path("sign", &self.name);
        let answer = self
            .service
            .authorized(Method::POST, &path, Some(&body))
            .await?;
        let signature = answer.json["data"]["signature"]
            .as_str()
            .unwrap_or_default();
        // `vault:v{version}:{base64}`
        let encoded = signature
            .strip_prefix("vault:v")
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, encoded)| encoded)
            .ok_or_else(|| ServiceError::Failed("Vault answered without a signature".into()))?;
        STANDARD
            .decode(encoded)
            .map_err(|_| ServiceError::Failed("Vault's signature is not base64".into()))
    }

    async fn public_key(&self) -> Result<PublicKey, ServiceError> {
        let data = self.service.read_key(&self.name).await?;
        pinned_public_key(&self.name, &data, Some(self.version)).map(|(public, _)| public)
    }
}

/// The public key of `version` (or the latest) in a transit key's `data`, checked: the key
/// must be `rsa-2048` and able to sign.
fn pinned_public_key(
    name: &str,
    data: &serde_json::Value,
    version: Option<u32>,
) -> Result<(PublicKey, u32), ServiceError> {
    let kind = data["type"].as_str().unwrap_or("unknown");
    if kind != "rsa-2048" {
        return Err(ServiceError::Refused(format!(
            "transit key {name} is of type {kind}; Twilio takes RSA-2048 keys only (type rsa-2048)"
        )));
    }
    let latest = data["latest_version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0);
    let version = version.unwrap_or(latest);
    let Some(pem) = data["keys"][version.to_string()]["public_key"].as_str() else {
        return Err(ServiceError::Refused(format!(
            "transit key {name} has no version {version} (latest is {latest})"
        )));
    };
    let public = PublicKey::from_pem(pem)
        .map_err(|problem| ServiceError::Refused(format!("transit key {name} {problem}")))?;
    Ok((public, version))
}

/// Loads `vault-transit:NAME[?version=N]`: reads the key, pins the version, checks one
/// signature.
pub(crate) async fn load(key: &TransitKey, config: &Config) -> Result<Key, RemoteLoadError> {
    let service = VaultService::for_config(config)?;
    let failed = |source| RemoteLoadError::Service {
        key: format!("vault-transit:{key}"),
        source,
    };
    let data = service.read_key(&key.name).await.map_err(failed)?;
    let (_, version) = pinned_public_key(&key.name, &data, key.version).map_err(failed)?;
    let algorithm = config.signing.algorithm;
    let description = format!(
        "Vault transit key {} version {version} ({})",
        key.name,
        match algorithm {
            Algorithm::Rs256 => "pkcs1v15",
            Algorithm::Ps256 => "pss",
        }
    );
    let limits = service.limits.clone();
    let signer = TransitSigner {
        service,
        name: key.name.clone(),
        version,
    };
    RemoteKey::load(
        signer,
        description,
        Backend::VaultTransit,
        algorithm,
        limits,
    )
    .await
    .map(Key::from)
    .map_err(failed)
}

/// A failed login, said as one: which mount and role (Vault's own words follow, such as
/// `invalid role name`), never the service-account token.
fn in_login(err: ServiceError, mount: &str, role: &str) -> ServiceError {
    let said =
        |reason: String| format!("Kubernetes login at auth/{mount} as role {role}: {reason}");
    match err {
        ServiceError::Throttled(reason) => ServiceError::Throttled(said(reason)),
        ServiceError::Refused(reason) => ServiceError::Refused(said(reason)),
        ServiceError::Unreachable(reason) => ServiceError::Unreachable(said(reason)),
        ServiceError::Failed(reason) => ServiceError::Failed(said(reason)),
    }
}

/// When to log in again after a login whose token lasts `lease` seconds: after two thirds
/// of it, so the token is still valid when it is replaced (logins at least 1 s apart); a
/// token without a lease (0), after 5 minutes.
fn renew_after(lease: u64) -> Duration {
    match lease {
        0 => Duration::from_secs(300),
        lease => Duration::from_millis(lease.saturating_mul(2000) / 3).max(Duration::from_secs(1)),
    }
}

/// Vault's `errors` array, joined (its own words; never a token).
fn vault_errors(answer: &Answer) -> String {
    let errors: Vec<&str> = answer.json["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    if errors.is_empty() {
        format!("HTTP {}", answer.status.as_u16())
    } else {
        // One line: Vault's errors come as "1 error occurred:\n\t* permission denied\n\n".
        let mut text = errors
            .join("; ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if let Some((cut, _)) = text.char_indices().nth(300) {
            text.truncate(cut);
        }
        text
    }
}

fn header_value(value: &str) -> Result<HeaderValue, ServiceError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| ServiceError::Refused("the Vault token is not a header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_renewed_before_its_lease_ends() {
        for lease in [2, 5, 10, 15, 3600] {
            let after = renew_after(lease);
            assert!(after < Duration::from_secs(lease), "{lease} s: {after:?}");
            assert!(after >= Duration::from_secs(1));
        }
        assert_eq!(renew_after(15), Duration::from_secs(10));
        assert_eq!(renew_after(0), Duration::from_secs(300));
    }

    #[test]
    fn vault_errors_are_one_line_and_cut_on_a_character() {
        let answer = |errors: serde_json::Value| Answer {
            status: StatusCode::FORBIDDEN,
            json: json!({ "errors": errors }),
        };
        let said = vault_errors(&answer(json!([
            "1 error occurred:\n\t* permission denied\n\n"
        ])));
        assert_eq!(said, "1 error occurred: * permission denied");
        // Byte 300 inside a two-byte character: cut before it, no panic.
        let long = format!("x{}", "é".repeat(400));
        let said = vault_errors(&answer(json!([long])));
        assert_eq!(said.chars().count(), 300);
        assert_eq!(vault_errors(&answer(json!([]))), "HTTP 403");
    }
}
