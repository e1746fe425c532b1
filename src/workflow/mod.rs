//! Twilio's account-and-key workflow under PKCV, done with a Main API key through the
//! proxy's own signing path and upstream settings.
//!
//! Once an account enforces PKCV, only a Main API key can manage accounts and keys, and every
//! request must be signed. Twilio's guide ("Account and Key Management with API Keys") brings
//! a subaccount up in four steps; [`Session::create_subaccount`] does them and registers the
//! result in `accounts_dir`, where a running proxy picks it up:
//!
//! 1. `POST /2010-04-01/Accounts.json` — create the subaccount;
//! 2. `POST /2010-04-01/Accounts/{AC}/Keys.json` — seed it with an API key;
//! 3. `POST accounts.twilio.com/v1/Credentials/PublicKeys` (`AccountSid`) — seed it with a
//!    public key;
//! 4. a request signed as the new account, listing its public keys.
//!
//! Every request is signed by the proxy's own [`RequestSigner`] and sent by its own
//! [`Upstream`] client, both built from the user's config, so `extra_ca_file`, `connect_to`
//! and the signing code are exactly the proxy's. A failed step reports which
//! step, what Twilio answered and what already exists, so it can be cleaned up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::config::{AccountConfig, Config};
use crate::error::ProxyError;
use crate::keygen;
pub use crate::keygen::KeyCustody;
use crate::keys::{dir, Accounts, KeyStore, KeyStoreError};
use crate::metrics::Metrics;
use crate::sid::is_sid;
use crate::sign::RequestSigner;
use crate::token::TokenMinter;
use crate::upstream::Upstream;

mod cleanup;
mod create;
mod key_pair;
mod rotate;

pub use create::{CreateFailure, CreateOptions, Created, Subaccount};
pub use rotate::Rotation;

/// The most pages of one list the workflow reads.
const MAX_PAGES: usize = 100;

/// The Main API key: the only kind of key that may manage accounts and keys under PKCV.
#[derive(Clone)]
pub struct MainKey {
    /// The main account.
    pub account_sid: String,
    /// The Main API key SID.
    pub api_key_sid: String,
    secret: String,
}

impl std::fmt::Debug for MainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainKey")
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key_sid)
            .finish_non_exhaustive()
    }
}

impl MainKey {
    /// A Main key from its parts.
    pub fn new(
        account_sid: &str,
        api_key_sid: &str,
        secret: &str,
    ) -> Result<MainKey, WorkflowError> {
        if !is_sid(account_sid, "AC") {
            // The rejected value is not echoed: it may be a secret in the wrong variable.
            return Err(WorkflowError::NotASid {
                what: "main account",
                expected: "an Account SID",
                prefix: "AC",
            });
        }
        if !is_sid(api_key_sid, "SK") {
            return Err(WorkflowError::NotASid {
                what: "Main key",
                expected: "an API key SID",
                prefix: "SK",
            });
        }
        Ok(MainKey {
            account_sid: account_sid.into(),
            api_key_sid: api_key_sid.into(),
            secret: secret.into(),
        })
    }
}

/// Why a workflow step failed. Each message says which step and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A Main-key setting has the wrong shape (its value is not echoed: it may be a secret
    /// in the wrong variable).
    #[error("the {what} is not {expected} ({prefix} followed by 32 hex digits)")]
    NotASid {
        /// What the setting is.
        what: &'static str,
        /// What it should be.
        expected: &'static str,
        /// The prefix it should have.
        prefix: &'static str,
    },
    /// The config has no `accounts_dir`.
    #[error("accounts_dir is not set in the config: it is where new accounts are registered for the proxy")]
    NoAccountsDir,
    /// The main account has no signing key configured.
    #[error("the main account {0} is not configured (an [[accounts]] entry or a file in accounts_dir): its credential_sid and private_key_file sign the Main key's requests")]
    MainAccountNotConfigured(String),
    /// An account to act on is not configured.
    #[error("{0} is not configured on this proxy")]
    NotConfigured(String),
    /// Cleanup was asked to delete the main account.
    #[error("refusing to clean up the main account")]
    MainAccount,
    /// An account lists no API key to verify a new key with.
    #[error("{0} lists no api_key_sids to verify the new key with")]
    NoApiKey(String),
    /// The accounts directory could not be read.
    #[error(transparent)]
    AccountsDir(#[from] dir::AccountsDirError),
    /// An account set did not load.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The accounts would not reload with the rotated key, so nothing was switched.
    #[error("the accounts would not reload after the switch: {source}")]
    WouldNotReload {
        /// Why.
        source: KeyStoreError,
    },
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// The signing threads could not be started.
    #[error("cannot start the signing threads: {0}")]
    SigningPool(#[source] std::io::Error),
    /// A request could not be built.
    #[error("{step}: cannot build the request: {source}")]
    Request {
        /// Which step.
        step: String,
        /// Why.
        source: http::Error,
    },
    /// Twilio (or the proxy) refused a request.
    #[error("{step}: HTTP {status}{}: {message}", code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Twilio {
        /// Which step.
        step: String,
        /// The HTTP status.
        status: u16,
        /// Twilio's (or the proxy's) error code.
        code: Option<u64>,
        /// Its message.
        message: String,
    },
    /// Twilio's answer lacks something the workflow needs.
    #[error("{step}: Twilio's answer has no {what}")]
    MissingInAnswer {
        /// Which step.
        step: String,
        /// What is missing.
        what: String,
    },
    /// The signed request worked, but the account does not list the credential.
    #[error("{step}: the signed request succeeded but {credential} is not among the account's public keys")]
    CredentialNotListed {
        /// Which step.
        step: String,
        /// The credential.
        credential: String,
    },
    /// An API key secret could not be read.
    #[error("the secret of {api_key}: {source}; pass --secret-file")]
    SecretUnreadable {
        /// The API key.
        api_key: String,
        /// The file tried.
        path: PathBuf,
        /// Why.
        source: crate::files::FileError,
    },
    /// A local file could not be written or read.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key pair could not be made or written.
    #[error(transparent)]
    Keygen(#[from] keygen::KeygenError),
    /// A key pair could not be made in the HSM.
    #[error("generating the key in the HSM: {0}")]
    Pkcs11(#[from] crate::pkcs11::Pkcs11Error),
    /// A key could not be made (or found) in its key service.
    #[error("the key in the key service: {0}")]
    KeyService(#[from] crate::remote::RemoteLoadError),
    /// A key could not be encoded.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// A step failed and undoing it failed too.
    #[error("{error}; undoing step 2/5 failed too ({undo}): delete the unused credential {credential} yourself")]
    UndoFailed {
        /// The first failure.
        error: Box<WorkflowError>,
        /// The failed undo.
        undo: Box<WorkflowError>,
        /// What is left behind.
        credential: String,
    },
    /// Signing switched, but the old credential could not be deleted.
    #[error("{error}; signing has switched to {new_credential}, but the old credential {old_credential} still exists: delete it yourself")]
    OldCredentialKept {
        /// Why the delete failed.
        error: Box<WorkflowError>,
        /// What the proxy signs with now.
        new_credential: String,
        /// What is left behind.
        old_credential: String,
    },
    /// The running proxy did not report the new credential in time.
    #[error("step 4/5: the running proxy (pid {pid}) has not loaded {new_credential} within {} s (see its log); the account file points to the new key and both credentials are kept: once the proxy signs with {new_credential}, delete {old_credential}", .waited.as_secs())]
    SwitchNotConfirmed {
        /// The proxy.
        pid: u32,
        /// What it should sign with.
        new_credential: String,
        /// What is kept.
        old_credential: String,
        /// How long the workflow waited.
        waited: std::time::Duration,
    },
}

impl WorkflowError {
    /// A request the proxy's own signing path refused, reported as a step's failure.
    fn refused(step: &str, err: &ProxyError) -> WorkflowError {
        WorkflowError::Twilio {
            step: step.to_owned(),
            status: err.status().as_u16(),
            code: Some(u64::from(err.code())),
            message: err.to_string(),
        }
    }

    /// A file error at `path`.
    fn file(path: &Path) -> impl FnOnce(std::io::Error) -> WorkflowError + '_ {
        move |source| WorkflowError::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A workflow run: the user's config, the Main key, and a proxy to send through.
pub struct Session {
    config: Config,
    main: MainKey,
    main_account: AccountConfig,
    store: Arc<KeyStore>,
    signer: RequestSigner,
    upstream: Upstream,
    progress: Box<dyn Fn(&str) + Send + Sync>,
}

impl Session {
    /// Sets up a session. The main account must be configured (its credential and key sign
    /// the Main key's requests), and `accounts_dir` must be set.
    pub fn new(
        config: &Config,
        main: MainKey,
        progress: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<Session, WorkflowError> {
        let config = config.clone();
        if config.accounts_dir.is_none() {
            return Err(WorkflowError::NoAccountsDir);
        }
        let Some(main_account) = dir::configured_accounts(&config)?
            .into_iter()
            .find(|a| a.account_sid == main.account_sid)
        else {
            return Err(WorkflowError::MainAccountNotConfigured(main.account_sid));
        };
        let store = Arc::new(KeyStore::new(Accounts::default()));
        // The workflow's own signatures and connections are not the running proxy's:
        // nothing exports these metrics.
        let metrics = Arc::new(Metrics::new());
        let signer =
            RequestSigner::new(&config, metrics.clone()).map_err(WorkflowError::SigningPool)?;
        let upstream = Upstream::new(&config.upstream, metrics)?;
        let session = Session {
            config,
            main,
            main_account,
            store,
            signer,
            upstream,
            progress: Box::new(progress),
        };
        session.use_accounts(&session.main_account, &[])?;
        Ok(session)
    }

    /// Signs with `main` (the main account, the Main key listed under it so that it signs as
    /// the parent even on a subaccount's path) plus `others`.
    fn use_accounts(
        &self,
        main: &AccountConfig,
        others: &[AccountConfig],
    ) -> Result<(), WorkflowError> {
        let mut main = main.clone();
        if !main.api_key_sids.is_empty() && !main.api_key_sids.contains(&self.main.api_key_sid) {
            main.api_key_sids.push(self.main.api_key_sid.clone());
        } else if main.api_key_sids.is_empty() {
            main.api_key_sids = vec![self.main.api_key_sid.clone()];
        }
        let mut configs = vec![main];
        configs.extend(others.iter().cloned());
        let accounts = Accounts::load(&configs, &self.config)?;
        self.store.replace(accounts);
        Ok(())
    }

    /// The main account as loaded for signing (its key parsed, or found in the HSM).
    fn main_account_loaded(&self) -> Result<Arc<crate::keys::Account>, WorkflowError> {
        self.store
            .snapshot()
            .get(&self.main_account.account_sid)
            .cloned()
            .ok_or_else(|| {
                WorkflowError::MainAccountNotConfigured(self.main_account.account_sid.clone())
            })
    }

    fn say(&self, line: &str) {
        (self.progress)(line);
    }

    /// Sends one signed request; a non-2xx answer becomes [`WorkflowError::Twilio`].
    async fn call(
        &self,
        step: &str,
        method: Method,
        url: &str,
        credentials: (&str, &str),
        form: &[(&str, &str)],
    ) -> Result<Option<Value>, WorkflowError> {
        let body = if form.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
        };
        let authorization = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", credentials.0, credentials.1))
        );
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", authorization)
            .header("accept", "application/json");
        if !form.is_empty() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let (parts, ()) = request
            .body(())
            .map_err(|source| WorkflowError::Request {
                step: step.to_owned(),
                source,
            })?
            .into_parts();
        let (status, bytes) = self
            .send(parts, body)
            .await
            .map_err(|err| WorkflowError::refused(step, &err))?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return Ok(json);
        }
        let field = |name: &str| json.as_ref().and_then(|j| j.get(name)).cloned();
        Err(WorkflowError::Twilio {
            step: step.to_owned(),
            status: status.as_u16(),
            code: field("code").and_then(|c| c.as_u64()),
            message: field("message")
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect()),
        })
    }

    /// Signs the request exactly as the proxy would and sends it upstream; the answer's
    /// status and body.
    async fn send(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), ProxyError> {
        let target = self.signer.resolve(&self.store.snapshot(), &parts, None)?;
        let signed = self
            .signer
            .sign(parts, Arc::new(target), crate::body::hashed(body))
            .await?;
        let response = self
            .upstream
            .send(signed)
            .await
            .map_err(|failure| failure.error)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        Ok((status, bytes))
    }

    /// The account as configured now (`accounts_dir` read afresh: an earlier step of this
    /// session may have written it).
    fn configured(&self, account_sid: &str) -> Result<Option<AccountConfig>, WorkflowError> {
        Ok(dir::configured_accounts(&self.config)?
            .into_iter()
            .find(|a| a.account_sid == account_sid))
    }

    fn main_credentials(&self) -> (&str, &str) {
        (&self.main.api_key_sid, &self.main.secret)
    }

    fn accounts_dir(&self) -> &Path {
        // `new` refuses a config without one.
        self.config
            .accounts_dir
            .as_deref()
            .unwrap_or(Path::new("."))
    }

    /// A request signed as `account` with its API key, listing its public keys; the
    /// account's credential must be among them.
    /// Every record of a Twilio list under `key`, following its next-page links (v2010's
    /// `next_page_uri`, v1's `meta.next_page_url`) up to [`MAX_PAGES`].
    async fn list_all(
        &self,
        step: &str,
        url: &str,
        key: &str,
        credentials: (&str, &str),
    ) -> Result<Vec<Value>, WorkflowError> {
        let mut records = Vec::new();
        let mut next = Some(url.to_owned());
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else { break };
            let page = self
                .call(step, Method::GET, &url, credentials, &[])
                .await?
                .unwrap_or_default();
            if let Some(items) = page.get(key).and_then(Value::as_array) {
                records.extend(items.iter().cloned());
            }
            next = page
                .get("next_page_uri")
                .and_then(Value::as_str)
                .map(|uri| format!("https://api.twilio.com{uri}"))
                .or_else(|| {
                    page.pointer("/meta/next_page_url")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
        }
        Ok(records)
    }

    /// Where `create` may have put the account's API key secret: next to its private key,
    /// or in the default key directory.
    fn secret_file_candidates(
        &self,
        account_sid: &str,
        account: Option<&AccountConfig>,
    ) -> Vec<PathBuf> {
        secret_file_candidates(self.accounts_dir(), account_sid, account)
    }

    async fn verify_as(
        &self,
        account: &AccountConfig,
        api_key_sid: &str,
        secret: &str,
        step: &str,
    ) -> Result<(), WorkflowError> {
        if account.account_sid == self.main_account.account_sid {
            self.use_accounts(account, &[])?;
        } else {
            self.use_accounts(&self.main_account, std::slice::from_ref(account))?;
        }
        let listed = self
            .list_all(
                step,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                "credentials",
                (api_key_sid, secret),
            )
            .await;
        self.use_accounts(&self.main_account, &[])?;
        let found = listed?
            .iter()
            .any(|c| c["sid"] == account.credential_sid.as_str());
        if !found {
            return Err(WorkflowError::CredentialNotListed {
                step: step.to_owned(),
                credential: account.credential_sid.clone(),
            });
        }
        Ok(())
    }

    async fn delete(&self, step: &str, url: &str) -> Result<(), WorkflowError> {
        self.say(step);
        match self
            .call(step, Method::DELETE, url, self.main_credentials(), &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(WorkflowError::Twilio { status: 404, .. }) => {
                self.say("          already gone");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

/// Where `subaccount create` puts an account's API key secret (`AC….secret`): next to its
/// private key, or in `accounts_dir/keys`. `keys rotate` and `doctor` look there.
pub fn secret_file_candidates(
    accounts_dir: &Path,
    account_sid: &str,
    account: Option<&AccountConfig>,
) -> Vec<PathBuf> {
    account
        .and_then(|a| a.private_key.file()?.parent().map(Path::to_path_buf))
        .into_iter()
        .chain(std::iter::once(accounts_dir.join("keys")))
        .map(|dir| dir.join(format!("{account_sid}.secret")))
        .collect()
}

fn sid_field(json: &Option<Value>, prefix: &str, step: &str) -> Result<String, WorkflowError> {
    json.as_ref()
        .and_then(|j| j.get("sid"))
        .and_then(Value::as_str)
        .filter(|sid| is_sid(sid, prefix))
        .map(str::to_owned)
        .ok_or_else(|| WorkflowError::MissingInAnswer {
            step: step.to_owned(),
            what: format!("{prefix}… sid"),
        })
}

fn spki_pem(signer: &TokenMinter) -> Result<String, WorkflowError> {
    let der = signer.public_key_spki_der();
    Ok(pem::encode(&pem::Pem::new("PUBLIC KEY", der)))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
