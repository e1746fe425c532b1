//! Keys in a network service: a cloud KMS or Vault's transit engine signs, the private key
//! never leaves it.
//!
//! Each signature is a request (tens of milliseconds), so a [`RemoteKey`] is the *awaited*
//! kind of key ([`Key::Awaited`]): it runs on the runtime, never blocking a thread, under
//! its backend's concurrency limit (`max_concurrent`) and one deadline for the whole
//! signature, retries included (`sign_timeout_ms`). What can go wrong is typed once here
//! ([`ServiceError`]) and becomes the request's answer in one place (`SignError`):
//!
//! - throttled (KMS `ThrottlingException`, Vault 429): retried with backoff inside the
//!   deadline, then 503 `79055`;
//! - refused (access denied, key disabled or deleted, or not the key that was loaded): 503
//!   `79056` for that account only;
//! - unreachable or too slow: 503 `79053`; the key fails fast for a moment
//!   ([`COOL_DOWN`]) and the next request after it tries again, so it recovers without a
//!   restart.
//!
//! **The key cannot change under the proxy.** The public key read at load is kept; every
//! signature the service returns is verified against it (RSA verification costs
//! microseconds beside the request), and [`RemoteKey::recheck`] reads it again at every
//! reload. A service that signs with another key (a repointed KMS alias, a transit key
//! deleted and created again) is refused until the public key is back or the config names
//! another key (`keys rotate --aws-kms`/`--vault-transit`).

pub(crate) mod http;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::signing_key::{
    rsa_spki_der, verify_rsa, Algorithm, Backend, Key, SignAwaited, SignError, SignFuture,
    SigningKey,
};

/// How long a key whose service did not answer refuses at once (503 `79053`) before the
/// next request tries the service again.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// The first wait before retrying a throttled signature; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Why one call to a key service did not give what was asked. Messages name the key and
/// the service's own words, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service asks to slow down; worth retrying.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The service refuses: access denied, key disabled, deleted or unusable for signing.
    #[error("refused: {0}")]
    Refused(String),
    /// The service could not be reached or did not answer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Anything else the service answered (a malformed answer, a server error).
    #[error("{0}")]
    Failed(String),
}

/// A key service's view of one key: what a backend (Vault transit, AWS KMS) implements.
pub trait KeyService: Send + Sync + std::fmt::Debug + 'static {
    /// One signature over `message` (the service hashes it), no retry.
    fn sign(
        &self,
        algorithm: Algorithm,
        message: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, ServiceError>> + Send;

    /// The key's public half as the service has it now.
    fn public_key(&self) -> impl Future<Output = Result<PublicKey, ServiceError>> + Send;
}

/// An RSA public key read from a key service, checked to be what Twilio takes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Parses a DER `SubjectPublicKeyInfo`: RSA-2048 with e = 65537 only (Twilio refuses
    /// other lengths), else a sentence for a person.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as Parsed;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| "is not a DER SubjectPublicKeyInfo".to_owned())?;
        let Ok(Parsed::RSA(rsa)) = spki.parsed() else {
            return Err("is not an RSA key (Twilio takes RSA-2048 keys only)".to_owned());
        };
        let modulus = strip_zeros(rsa.modulus);
        let exponent = strip_zeros(rsa.exponent);
        let bits = modulus.len() * 8
            - modulus
                .first()
                .map_or(0, |byte| byte.leading_zeros() as usize);
        if bits != 2048 {
            return Err(format!(
                "is an RSA-{bits} key; Twilio takes RSA-2048 keys only"
            ));
        }
        if exponent != [1, 0, 1] {
            return Err("has a public exponent other than 65537".to_owned());
        }
        Ok(PublicKey {
            spki: rsa_spki_der(modulus, exponent),
            modulus: modulus.to_vec(),
            exponent: exponent.to_vec(),
        })
    }

    /// Parses a PEM `PUBLIC KEY` (what Vault returns), with the same checks.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        let block = pem::parse(text).map_err(|_| "is not a PEM public key".to_owned())?;
        if block.tag() != "PUBLIC KEY" {
            return Err(format!(
                "is a PEM '{}' block, not a 'PUBLIC KEY'",
                block.tag()
            ));
        }
        PublicKey::from_spki_der(block.contents())
    }

    /// The DER `SubjectPublicKeyInfo`, for upload to Twilio.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The PEM `PUBLIC KEY` to register with Twilio.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki.clone()))
    }

    /// `SHA256:` and the hex SHA-256 of the DER: how logs, `check-config` and errors name a
    /// key without its bytes.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", hex::encode(Sha256::digest(&self.spki)))
    }

    /// Whether `signature` over `message` was made by this key's private half.
    pub fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        verify_rsa(algorithm, &self.modulus, &self.exponent, message, signature)
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A backend's shared limits: at most `max_concurrent` signatures in flight to the service,
/// each within `deadline` (retries included).
#[derive(Debug, Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    deadline: Duration,
}

impl Limits {
    /// `max_concurrent` permits (at least one) and the deadline of one signature.
    pub fn new(max_concurrent: usize, deadline: Duration) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            deadline,
        }
    }
}

/// What the key's last contact with its service said, for `/readyz` and fast failure.
#[derive(Debug, Default, Clone)]
struct Health {
    /// When the service last failed to answer, while it has not answered since.
    unreachable_at: Option<Instant>,
    /// The service refuses the key (until a signature or a recheck succeeds).
    refused: Option<String>,
    /// The service's key is not the one loaded (until a recheck finds it again).
    changed: Option<String>,
}

/// A key in a key service, checked at load, awaited to sign.
#[derive(Debug)]
pub struct RemoteKey<S> {
    service: S,
    description: String,
    backend: Backend,
    public: PublicKey,
    limits: Limits,
    health: ArcSwap<Health>,
}

impl<S: KeyService> RemoteKey<S> {
    /// Reads the key's public half (checked as Twilio requires) and asks for one test
    /// signature that must verify with it, so a key that cannot sign, or signs with
    /// another key, is refused at load with its reason.
    pub async fn load(
        service: S,
        description: String,
        backend: Backend,
        algorithm: Algorithm,
        limits: Limits,
    ) -> Result<RemoteKey<S>, ServiceError> {
        let public = within(limits.deadline, service.public_key()).await?;
        let key = RemoteKey {
            service,
            description,
            backend,
            public,
            limits,
            health: ArcSwap::from_pointee(Health::default()),
        };
        let probe = b"pkcv-proxy key check";
        let signature = key.sign_with_retries(algorithm, probe).await?;
        if !key.public.verifies(algorithm, probe, &signature) {
            return Err(ServiceError::Refused(format!(
                "{}: its test signature does not verify with its public key",
                key.description
            )));
        }
        Ok(key)
    }

    /// The public key loaded.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Reads the public key again (at every reload): a different key is refused from now
    /// on; the same key again lifts an earlier refusal.
    pub async fn recheck(&self) -> Result<(), ServiceError> {
        match within(self.limits.deadline, self.service.public_key()).await {
            Ok(now) if now == self.public => {
                self.health.store(Arc::default());
                Ok(())
            }
            Ok(now) => {
                let reason = self.changed_reason(&now.fingerprint());
                self.update(|health| health.changed = Some(reason.clone()));
                Err(ServiceError::Refused(reason))
            }
            Err(err) => Err(err),
        }
    }

    fn changed_reason(&self, now: &str) -> String {
        format!(
            "{} is no longer the key loaded ({} then, {now} now): run `keys rotate` to change keys",
            self.description,
            self.public.fingerprint()
        )
    }

    fn health(&self) -> arc_swap::Guard<Arc<Health>> {
        self.health.load()
    }

    fn update(&self, change: impl Fn(&mut Health)) {
        self.health.rcu(|health| {
            let mut health = Health::clone(health);
            change(&mut health);
            health
        });
    }

    /// One signature within the deadline: a permit, then calls, retrying while throttled.
    async fn sign_with_retries(
        &self,
        algorithm: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, ServiceError> {
        let deadline = tokio::time::Instant::now() + self.limits.deadline;
        let unanswered = || {
            ServiceError::Unreachable(format!(
                "{} did not answer within {} ms",
                self.description,
                self.limits.deadline.as_millis()
            ))
        };
        let Ok(Ok(_permit)) =
            tokio::time::timeout_at(deadline, self.limits.permits.acquire()).await
        else {
            return Err(unanswered());
        };
        // A permit that came free at the deadline is no time left to ask the service.
        if tokio::time::Instant::now() >= deadline {
            return Err(unanswered());
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.service.sign(algorithm, message));
            match attempt.await {
                Err(_) => return Err(unanswered()),
                Ok(Err(ServiceError::Throttled(reason))) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(ServiceError::Throttled(reason));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(answer) => return answer,
            }
        }
    }

    /// Signs, keeping [`Health`] and the key-change promise.
    async fn sign_checked(
        &self,
        algorithm: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, SignError> {
        if let Some(reason) = self.health().changed.clone() {
            return Err(SignError::Refused(reason));
        }
        match self.sign_with_retries(algorithm, message).await {
            Ok(signature) if self.public.verifies(algorithm, message, &signature) => {
                if self.health().unreachable_at.is_some() || self.health().refused.is_some() {
                    self.health.store(Arc::default());
                }
                Ok(signature)
            }
            Ok(_) => {
                let reason = format!(
                    "{} signed with a key other than the one loaded ({}): run `keys rotate` to change keys",
                    self.description,
                    self.public.fingerprint()
                );
                tracing::error!(key = %self.description, "the key service signed with another key; refusing until the key is back");
                self.update(|health| health.changed = Some(reason.clone()));
                Err(SignError::Refused(reason))
            }
            Err(ServiceError::Throttled(_)) => Err(SignError::Throttled),
            Err(ServiceError::Refused(reason)) => {
                if self.health().refused.as_ref() != Some(&reason) {
                    // Once per new reason: each refused request is in the access log anyway.
                    tracing::warn!(key = %self.description, %reason, "the key service refuses the key");
                }
                self.update(|health| health.refused = Some(reason.clone()));
                Err(SignError::Refused(reason))
            }
            Err(ServiceError::Unreachable(reason)) => {
                self.update(|health| health.unreachable_at = Some(Instant::now()));
                tracing::warn!(key = %self.description, error = %reason, "key service unavailable");
                Err(SignError::Unavailable)
            }
            Err(ServiceError::Failed(reason)) => Err(SignError::Failed(reason.into())),
        }
    }
}

impl<S: KeyService> SigningKey for RemoteKey<S> {
    fn modulus_len(&self) -> usize {
        self.public.modulus.len()
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.public.spki
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    /// False for [`COOL_DOWN`] after the service failed to answer: requests then get 503
    /// `79053` at once instead of each waiting out `sign_timeout_ms`.
    fn is_available(&self) -> bool {
        self.health()
            .unreachable_at
            .is_none_or(|at| at.elapsed() >= COOL_DOWN)
    }

    fn problem(&self) -> Option<String> {
        let health = self.health();
        if let Some(reason) = health.changed.as_ref().or(health.refused.as_ref()) {
            return Some(reason.clone());
        }
        health
            .unreachable_at
            .map(|_| format!("{} did not answer its last request", self.description))
    }
}

impl<S: KeyService> SignAwaited for RemoteKey<S> {
    fn sign<'a>(&'a self, algorithm: Algorithm, message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(self.sign_checked(algorithm, message))
    }

    fn recheck(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            RemoteKey::recheck(self)
                .await
                .map_err(|err| err.to_string())
        })
    }
}

impl<S> std::fmt::Display for RemoteKey<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, RSA-{}, public key {}",
            self.description,
            self.public.modulus.len() * 8,
            self.public.fingerprint()
        )
    }
}

impl<S: KeyService> From<RemoteKey<S>> for Key {
    fn from(key: RemoteKey<S>) -> Key {
        Key::Awaited(Arc::new(key))
    }
}

/// `future` within `deadline`, a timeout being the service not answering.
async fn within<T>(
    deadline: Duration,
    future: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| {
            Err(ServiceError::Unreachable(format!(
                "no answer within {} ms",
                deadline.as_millis()
            )))
        })
}

/// Why a key in a service could not be loaded. No message carries a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteLoadError {
    /// The settings do not allow reaching the service (no address, unreadable CA or token).
    #[error("{0}")]
    Settings(String),
    /// The service refused, failed or did not answer.
    #[error("{key}: {source}")]
    Service {
        /// The key as configured.
        key: String,
        /// What the service said.
        source: ServiceError,
    },
    /// This binary was built without the backend.
    #[error("{0} keys need a pkcv-proxy built with `--features {0}` (the Docker image and the .deb have it)")]
    NotBuilt(&'static str),
    /// No runtime could be started to load the key.
    #[error("cannot start the key loader: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Runs the async loading of a key from synchronous code (the account loader), wherever it
/// is called: on a multi-threaded runtime (`serve`, a reload's blocking thread) the runtime
/// runs it, so the service's connections stay on the runtime that will use them; elsewhere
/// (a current-thread runtime, no runtime) a scoped thread with its own runtime does.
pub fn block_on<F>(future: F) -> Result<F::Output, std::io::Error>
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|runtime| runtime.block_on(future))
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the key loading thread failed")))
        }),
    }
}

#[cfg(test)]
mod tests;
