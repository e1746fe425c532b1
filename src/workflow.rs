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
//! Every request goes through a [`Proxy`] built from the user's config, so `extra_ca_file`,
//! `connect_to` and the signing code are exactly the proxy's. A failed step reports which
//! step, what Twilio answered and what already exists, so it can be cleaned up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

use crate::config::{AccountConfig, Config};
use crate::keygen;
use crate::keys::{dir, Accounts, KeyStore};
use crate::proxy::Proxy;
use crate::sid::is_sid;
use crate::token::Signer;

/// The Main API key, from `TWILIO_ACCOUNT_SID`, `TWILIO_MAIN_KEY`, `TWILIO_MAIN_SECRET`.
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
            return Err(WorkflowError::Setup(format!(
                "'{account_sid}' is not an Account SID"
            )));
        }
        if !is_sid(api_key_sid, "SK") {
            return Err(WorkflowError::Setup(format!(
                "'{api_key_sid}' is not an API key SID"
            )));
        }
        Ok(MainKey {
            account_sid: account_sid.into(),
            api_key_sid: api_key_sid.into(),
            secret: secret.into(),
        })
    }

    /// Reads `TWILIO_ACCOUNT_SID`, `TWILIO_MAIN_KEY` and `TWILIO_MAIN_SECRET`.
    pub fn from_env() -> Result<MainKey, WorkflowError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                WorkflowError::Setup(format!(
                    "{name} is not set (the Main API key comes from the environment)"
                ))
            })
        };
        MainKey::new(
            &var("TWILIO_ACCOUNT_SID")?,
            &var("TWILIO_MAIN_KEY")?,
            &var("TWILIO_MAIN_SECRET")?,
        )
    }
}

/// Why a workflow step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// Missing or inconsistent input.
    #[error("{0}")]
    Setup(String),
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
    /// A local file could not be written or read.
    #[error("{0}")]
    Local(String),
}

/// What the workflow has created so far (for reporting and cleanup).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Created {
    /// The subaccount.
    pub account_sid: Option<String>,
    /// Its API key.
    pub api_key_sid: Option<String>,
    /// Its public-key credential.
    pub credential_sid: Option<String>,
    /// The private key file written for it.
    pub private_key_file: Option<PathBuf>,
    /// The API key secret file written for it.
    pub secret_file: Option<PathBuf>,
}

/// A failed `subaccount create`: the error and what already exists.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CreateFailure {
    /// What failed.
    pub error: WorkflowError,
    /// What was created before it failed.
    pub created: Created,
}

/// Options of `subaccount create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The subaccount's friendly name.
    pub friendly_name: String,
    /// Where to write the new key pair (and, by default, the secret).
    pub key_dir: PathBuf,
    /// Seed the main account's public key instead of a fresh one.
    pub reuse_main_key: bool,
    /// Where to write the API key secret (default `key_dir/<AC>.secret`); `None` with
    /// `secret_to_stdout` writes no file.
    pub secret_file: Option<PathBuf>,
    /// Return the secret instead of writing it.
    pub secret_to_stdout: bool,
}

/// A subaccount brought up and registered.
#[derive(Debug, Clone, Serialize)]
pub struct Subaccount {
    /// `AC…`
    pub account_sid: String,
    /// `SK…`
    pub api_key_sid: String,
    /// `CR…`
    pub credential_sid: String,
    /// The private key that signs for it.
    pub private_key_file: PathBuf,
    /// Where the API key secret was written (`None` if it went to stdout).
    pub secret_file: Option<PathBuf>,
    /// The account file the running proxy reads.
    pub account_file: PathBuf,
    /// The secret, only when asked for on stdout.
    #[serde(skip)]
    pub secret: Option<String>,
}

/// A completed rotation.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The account.
    pub account_sid: String,
    /// The credential that signed before.
    pub old_credential_sid: String,
    /// The credential that signs now.
    pub new_credential_sid: String,
    /// The new private key.
    pub private_key_file: PathBuf,
}

/// A workflow run: the user's config, the Main key, and a proxy to send through.
pub struct Session {
    config: Config,
    main: MainKey,
    main_account: AccountConfig,
    store: Arc<KeyStore>,
    proxy: Arc<Proxy>,
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
        let config = config
            .clone()
            .with_accounts_dir()
            .map_err(|e| WorkflowError::Setup(e.to_string()))?;
        if config.accounts_dir.is_none() {
            return Err(WorkflowError::Setup(
                "accounts_dir is not set in the config: it is where new accounts are registered for the proxy".into(),
            ));
        }
        let Some(main_account) = config
            .accounts
            .iter()
            .find(|a| a.account_sid == main.account_sid)
            .cloned()
        else {
            return Err(WorkflowError::Setup(format!(
                "the main account {} has no [[accounts]] entry: its credential_sid and private_key_file sign the Main key's requests",
                main.account_sid
            )));
        };
        let store = Arc::new(KeyStore::new(Accounts::default()));
        let proxy =
            Proxy::new(&config, store.clone()).map_err(|e| WorkflowError::Setup(e.to_string()))?;
        let session = Session {
            config,
            main,
            main_account,
            store,
            proxy: Arc::new(proxy),
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
        let accounts = Accounts::load(&configs, &self.config.signing)
            .map_err(|e| WorkflowError::Setup(e.to_string()))?;
        self.store.replace(accounts);
        Ok(())
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
        let request = request
            .body(Full::new(body))
            .map_err(|e| WorkflowError::Setup(format!("{step}: {e}")))?;
        let response = self.proxy.handle_in(request, None).await;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
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

    /// The account as configured now (`accounts_dir` read afresh: an earlier step of this
    /// session may have written it).
    fn configured(&self, account_sid: &str) -> Result<Option<AccountConfig>, WorkflowError> {
        let config = self
            .config
            .clone()
            .with_accounts_dir()
            .map_err(|e| WorkflowError::Setup(e.to_string()))?;
        Ok(config
            .accounts
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

    /// Steps 1–4 of Twilio's guide, then registers the account for the proxy.
    pub async fn create_subaccount(
        &self,
        options: &CreateOptions,
    ) -> Result<Subaccount, CreateFailure> {
        let mut created = Created::default();
        match self.create_steps(options, &mut created).await {
            Ok(subaccount) => Ok(subaccount),
            Err(error) => Err(CreateFailure { error, created }),
        }
    }

    async fn create_steps(
        &self,
        options: &CreateOptions,
        created: &mut Created,
    ) -> Result<Subaccount, WorkflowError> {
        let main = self.main_credentials();
        self.say(&format!(
            "step 1/4: create subaccount '{}'",
            options.friendly_name
        ));
        let account = self
            .call(
                "step 1/4 (create the subaccount)",
                Method::POST,
                "https://api.twilio.com/2010-04-01/Accounts.json",
                main,
                &[("FriendlyName", &options.friendly_name)],
            )
            .await?;
        let account_sid = sid_field(&account, "AC", "step 1/4 (create the subaccount)")?;
        created.account_sid = Some(account_sid.clone());
        self.say(&format!("          created {account_sid}"));

        self.say("step 2/4: seed it with an API key");
        let key = self
            .call(
                "step 2/4 (create the API key)",
                Method::POST,
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                main,
                &[(
                    "FriendlyName",
                    &format!("pkcv-proxy {}", options.friendly_name),
                )],
            )
            .await?;
        let api_key_sid = sid_field(&key, "SK", "step 2/4 (create the API key)")?;
        let secret = key
            .as_ref()
            .and_then(|k| k.get("secret"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                WorkflowError::Setup("step 2/4: Twilio returned no secret for the new key".into())
            })?
            .to_owned();
        created.api_key_sid = Some(api_key_sid.clone());
        self.say(&format!("          created {api_key_sid}"));
        let secret_file = if options.secret_to_stdout && options.secret_file.is_none() {
            None
        } else {
            let path = options
                .secret_file
                .clone()
                .unwrap_or_else(|| options.key_dir.join(format!("{account_sid}.secret")));
            std::fs::create_dir_all(&options.key_dir)
                .map_err(|e| WorkflowError::Local(format!("{}: {e}", options.key_dir.display())))?;
            keygen::write_new_private(&path, &secret)
                .map_err(|e| WorkflowError::Local(e.to_string()))?;
            created.secret_file = Some(absolute(&path));
            Some(absolute(&path))
        };

        self.say("step 3/4: seed it with a public key");
        let (private_key_file, public_pem) = if options.reuse_main_key {
            let signer = Signer::from_pem_file(
                &self.main_account.private_key_file,
                &self.main_account.credential_sid,
                self.config.signing.algorithm,
            )
            .map_err(|e| WorkflowError::Local(e.to_string()))?;
            (
                absolute(&self.main_account.private_key_file),
                spki_pem(&signer),
            )
        } else {
            let (file, public) = self.new_key_pair(&options.key_dir, &account_sid)?;
            created.private_key_file = Some(file.clone());
            (file, public)
        };
        let credential = self
            .call(
                "step 3/4 (upload the public key)",
                Method::POST,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                main,
                &[
                    ("AccountSid", &account_sid),
                    (
                        "FriendlyName",
                        &format!("pkcv-proxy {}", options.friendly_name),
                    ),
                    ("PublicKey", &public_pem),
                ],
            )
            .await?;
        let credential_sid = sid_field(&credential, "CR", "step 3/4 (upload the public key)")?;
        created.credential_sid = Some(credential_sid.clone());
        self.say(&format!("          created {credential_sid}"));

        let account = AccountConfig {
            account_sid: account_sid.clone(),
            credential_sid: credential_sid.clone(),
            private_key_file: private_key_file.clone(),
            api_key_sids: vec![api_key_sid.clone()],
        };
        self.say("step 4/4: a signed request as the new account (list its public keys)");
        self.verify_as(
            &account,
            &api_key_sid,
            &secret,
            "step 4/4 (signed request as the new account)",
        )
        .await?;
        self.say("          verified");

        let account_file = dir::write_account(self.accounts_dir(), &account)
            .map_err(|e| WorkflowError::Local(format!("writing the account file: {e}")))?;
        Ok(Subaccount {
            account_sid,
            api_key_sid,
            credential_sid,
            private_key_file,
            secret_file,
            account_file,
            secret: options.secret_to_stdout.then_some(secret),
        })
    }

    /// A request signed as `account` with its API key, listing its public keys; the
    /// account's credential must be among them.
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
            .call(
                step,
                Method::GET,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                (api_key_sid, secret),
                &[],
            )
            .await;
        self.use_accounts(&self.main_account, &[])?;
        let listed = listed?;
        let found = listed
            .as_ref()
            .and_then(|page| page.get("credentials"))
            .and_then(Value::as_array)
            .is_some_and(|credentials| {
                credentials
                    .iter()
                    .any(|c| c["sid"] == account.credential_sid.as_str())
            });
        if !found {
            return Err(WorkflowError::Setup(format!(
                "{step}: the signed request succeeded but {} is not among the account's public keys",
                account.credential_sid
            )));
        }
        Ok(())
    }

    fn new_key_pair(
        &self,
        key_dir: &Path,
        account_sid: &str,
    ) -> Result<(PathBuf, String), WorkflowError> {
        std::fs::create_dir_all(key_dir)
            .map_err(|e| WorkflowError::Local(format!("{}: {e}", key_dir.display())))?;
        let key = keygen::generate(2048).map_err(|e| WorkflowError::Local(e.to_string()))?;
        // Unique per key pair: a rotation right after a create must not collide.
        let stamp = format!(
            "{}-{}",
            crate::token::unix_now(),
            crate::sid::random_hex::<4>()
        );
        let private = key_dir.join(format!("{account_sid}-{stamp}-private.pem"));
        keygen::write_new_private(&private, &key.private_pem)
            .map_err(|e| WorkflowError::Local(e.to_string()))?;
        let public = key_dir.join(format!("{account_sid}-{stamp}-public.pem"));
        std::fs::write(&public, &key.public_pem)
            .map_err(|e| WorkflowError::Local(format!("{}: {e}", public.display())))?;
        Ok((absolute(&private), key.public_pem))
    }

    /// Deletes the subaccount's API keys and public key and closes it; removes its account
    /// file and secret file. Things already gone are skipped.
    pub async fn cleanup_subaccount(
        &self,
        account_sid: &str,
        credential_sid: Option<&str>,
    ) -> Result<Vec<String>, WorkflowError> {
        if account_sid == self.main.account_sid {
            return Err(WorkflowError::Setup(
                "refusing to clean up the main account".into(),
            ));
        }
        let main = self.main_credentials();
        let registered = self.configured(account_sid)?;
        let mut done = Vec::new();

        self.say(&format!("list the API keys of {account_sid}"));
        let keys = self
            .call(
                "list the API keys",
                Method::GET,
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                main,
                &[],
            )
            .await?;
        let key_sids: Vec<String> = keys
            .as_ref()
            .and_then(|page| page.get("keys"))
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["sid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for key in key_sids {
            self.delete(
                &format!("delete API key {key}"),
                &format!(
                    "https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys/{key}.json"
                ),
            )
            .await?;
            done.push(format!("deleted API key {key}"));
        }

        let credential = credential_sid
            .map(str::to_owned)
            .or_else(|| registered.as_ref().map(|a| a.credential_sid.clone()));
        match credential {
            Some(credential) => {
                self.delete(
                    &format!("delete public key {credential}"),
                    &format!("https://accounts.twilio.com/v1/Credentials/PublicKeys/{credential}"),
                )
                .await?;
                done.push(format!("deleted public key {credential}"));
            }
            None => {
                done.push("no public key known for it (pass --credential CR… to delete one)".into())
            }
        }

        self.say(&format!("close {account_sid}"));
        self.call(
            "close the subaccount",
            Method::POST,
            &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}.json"),
            main,
            &[("Status", "closed")],
        )
        .await?;
        done.push(format!("closed {account_sid}"));

        if dir::remove_account(self.accounts_dir(), account_sid)
            .map_err(|e| WorkflowError::Local(e.to_string()))?
        {
            done.push(
                "removed it from accounts_dir (the running proxy stops signing for it)".into(),
            );
        }
        // The secret is useless now its key is deleted; remove it where `create` puts it: next
        // to the account's key, or in the default key dir (a create that failed half-way).
        let key_dirs = registered
            .as_ref()
            .and_then(|account| account.private_key_file.parent().map(Path::to_path_buf))
            .into_iter()
            .chain(std::iter::once(self.accounts_dir().join("keys")));
        for key_dir in key_dirs {
            let secret = key_dir.join(format!("{account_sid}.secret"));
            if std::fs::remove_file(&secret).is_ok() {
                done.push(format!("removed {}", secret.display()));
            }
        }
        Ok(done)
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

    /// The account's API keys (as Twilio lists them) and the credential the proxy signs with.
    pub async fn list_keys(&self, account_sid: &str) -> Result<Value, WorkflowError> {
        let keys = self
            .call(
                "list the API keys",
                Method::GET,
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                self.main_credentials(),
                &[],
            )
            .await?;
        let configured = self.configured(account_sid)?;
        Ok(serde_json::json!({
            "account_sid": account_sid,
            "api_keys": keys.and_then(|page| page.get("keys").cloned()).unwrap_or(Value::Null),
            "signing": configured.map(|a| serde_json::json!({
                "credential_sid": a.credential_sid,
                "private_key_file": a.private_key_file,
                "api_key_sids": a.api_key_sids,
            })),
        }))
    }

    /// Rotates the account's signing key with no moment in which the proxy signs with a key
    /// Twilio does not know: generate, upload, verify with the new key, switch the account
    /// file, wait `grace` for running proxies to reload, then delete the old credential.
    ///
    /// The verifying request is made as the account: with the Main key for the main account,
    /// else with its API key (`api_key_sids[0]`) and the secret in `secret_file`.
    pub async fn rotate(
        &self,
        account_sid: &str,
        key_dir: &Path,
        secret_file: Option<&Path>,
        grace: Duration,
    ) -> Result<Rotation, WorkflowError> {
        let Some(current) = self.configured(account_sid)? else {
            return Err(WorkflowError::Setup(format!(
                "{account_sid} is not configured on this proxy"
            )));
        };
        let (api_key_sid, secret) = if account_sid == self.main.account_sid {
            (self.main.api_key_sid.clone(), self.main.secret.clone())
        } else {
            let Some(key) = current.api_key_sids.first() else {
                return Err(WorkflowError::Setup(format!(
                    "{account_sid} lists no api_key_sids to verify the new key with"
                )));
            };
            let path = secret_file.map(Path::to_path_buf).unwrap_or_else(|| {
                current
                    .private_key_file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{account_sid}.secret"))
            });
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                WorkflowError::Setup(format!(
                    "the secret of {key} ({}): {e}; pass --secret-file",
                    path.display()
                ))
            })?;
            (key.clone(), secret.trim().to_owned())
        };

        self.say("step 1/5: generate a new key pair");
        let (private_key_file, public_pem) = self.new_key_pair(key_dir, account_sid)?;
        self.say("step 2/5: upload the new public key");
        let mut form = vec![
            ("FriendlyName", "pkcv-proxy rotated key"),
            ("PublicKey", public_pem.as_str()),
        ];
        if account_sid != self.main.account_sid {
            form.push(("AccountSid", account_sid));
        }
        let uploaded = self
            .call(
                "step 2/5 (upload the new public key)",
                Method::POST,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                self.main_credentials(),
                &form,
            )
            .await?;
        let new_credential = sid_field(&uploaded, "CR", "step 2/5 (upload the new public key)")?;
        self.say(&format!("          created {new_credential}"));

        let rotated = AccountConfig {
            credential_sid: new_credential.clone(),
            private_key_file: private_key_file.clone(),
            ..current.clone()
        };
        self.say("step 3/5: verify a request signed with the new key");
        let verified = self
            .verify_as(
                &rotated,
                &api_key_sid,
                &secret,
                "step 3/5 (signed request with the new key)",
            )
            .await;
        if let Err(err) = verified {
            self.say("          failed: deleting the new credential again");
            let _ = self
                .delete(
                    "undo step 2/5",
                    &format!(
                        "https://accounts.twilio.com/v1/Credentials/PublicKeys/{new_credential}"
                    ),
                )
                .await;
            return Err(err);
        }

        self.say("step 4/5: switch signing to the new key");
        dir::write_account(self.accounts_dir(), &rotated)
            .map_err(|e| WorkflowError::Local(format!("writing the account file: {e}")))?;
        self.say(&format!(
            "          waiting {} s for running proxies to reload",
            grace.as_secs_f32()
        ));
        tokio::time::sleep(grace).await;

        self.say(&format!(
            "step 5/5: delete the old public key {}",
            current.credential_sid
        ));
        self.delete(
            "step 5/5 (delete the old public key)",
            &format!(
                "https://accounts.twilio.com/v1/Credentials/PublicKeys/{}",
                current.credential_sid
            ),
        )
        .await?;
        Ok(Rotation {
            account_sid: account_sid.to_owned(),
            old_credential_sid: current.credential_sid,
            new_credential_sid: new_credential,
            private_key_file,
        })
    }
}

fn sid_field(json: &Option<Value>, prefix: &str, step: &str) -> Result<String, WorkflowError> {
    json.as_ref()
        .and_then(|j| j.get("sid"))
        .and_then(Value::as_str)
        .filter(|sid| is_sid(sid, prefix))
        .map(str::to_owned)
        .ok_or_else(|| {
            WorkflowError::Setup(format!("{step}: Twilio's answer has no {prefix}… sid"))
        })
}

fn spki_pem(signer: &Signer) -> String {
    pem::encode(&pem::Pem::new("PUBLIC KEY", signer.public_key_spki_der()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
