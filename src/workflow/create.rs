//! `subaccount create`: Twilio's four steps, then registration in `accounts_dir`.

use std::path::PathBuf;

use http::Method;
use serde::Serialize;
use serde_json::Value;

use super::{absolute, sid_field, spki_pem, KeyCustody, Session, WorkflowError};
use crate::config::{AccountConfig, PrivateKey};
use crate::keygen;
use crate::keys::dir;

/// What the workflow has created so far (for reporting and cleanup).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Created {
    /// The subaccount.
    pub account_sid: Option<String>,
    /// Its API key.
    pub api_key_sid: Option<String>,
    /// Its public-key credential.
    pub credential_sid: Option<String>,
    /// The private key made for it: a PEM file written, or a key generated in the HSM.
    pub private_key: Option<PrivateKey>,
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
    /// Make the new key in an HSM or a key service instead of in `key_dir`.
    pub custody: Option<KeyCustody>,
    /// Where to write the API key secret (default `key_dir/<AC>.secret`); `None` with
    /// `secret_to_stdout` writes no file.
    pub secret_file: Option<PathBuf>,
    /// Return the secret instead of writing it.
    pub secret_to_stdout: bool,
}

/// A subaccount brought up and registered. Its `Debug` leaves the secret out.
#[derive(Clone, Serialize)]
pub struct Subaccount {
    /// `AC…`
    pub account_sid: String,
    /// `SK…`
    pub api_key_sid: String,
    /// `CR…`
    pub credential_sid: String,
    /// The private key that signs for it: a PEM file, or a `pkcs11:`, `vault-transit:` or
    /// `aws-kms:` URI.
    pub private_key: PrivateKey,
    /// Where the API key secret was written (`None` if it went to stdout).
    pub secret_file: Option<PathBuf>,
    /// The account file the running proxy reads.
    pub account_file: PathBuf,
    /// The secret, only when asked for on stdout.
    #[serde(skip)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for Subaccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subaccount")
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key_sid)
            .field("credential_sid", &self.credential_sid)
            .field("private_key", &self.private_key)
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

impl Session {
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
        let account_sid = self.create_account(options, created).await?;
        let (api_key_sid, secret, secret_file) =
            self.create_api_key(options, &account_sid, created).await?;
        let (private_key, credential_sid) = self
            .upload_public_key(options, &account_sid, created)
            .await?;
        let account = AccountConfig {
            account_sid: account_sid.clone(),
            credential_sid: credential_sid.clone(),
            private_key: private_key.clone(),
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

        let account_file =
            dir::write_account(self.accounts_dir(), &account).map_err(WorkflowError::file(
                &dir::account_file(self.accounts_dir(), &account.account_sid),
            ))?;
        Ok(Subaccount {
            account_sid,
            api_key_sid,
            credential_sid,
            private_key,
            secret: options.secret_to_stdout.then_some(secret),
            secret_file,
            account_file,
        })
    }

    /// Step 1: the subaccount itself.
    async fn create_account(
        &self,
        options: &CreateOptions,
        created: &mut Created,
    ) -> Result<String, WorkflowError> {
        const STEP: &str = "step 1/4 (create the subaccount)";
        self.say(&format!(
            "step 1/4: create subaccount '{}'",
            options.friendly_name
        ));
        let account = self
            .call(
                STEP,
                Method::POST,
                "https://api.twilio.com/2010-04-01/Accounts.json",
                self.main_credentials(),
                &[("FriendlyName", &options.friendly_name)],
            )
            .await?;
        let account_sid = sid_field(&account, "AC", STEP)?;
        created.account_sid = Some(account_sid.clone());
        self.say(&format!("          created {account_sid}"));
        Ok(account_sid)
    }

    /// Step 2: an API key for the subaccount; its secret is shown only now, so it is kept
    /// (a 0600 file unless asked for on stdout). Returns the key, its secret and the file.
    async fn create_api_key(
        &self,
        options: &CreateOptions,
        account_sid: &str,
        created: &mut Created,
    ) -> Result<(String, String, Option<PathBuf>), WorkflowError> {
        const STEP: &str = "step 2/4 (create the API key)";
        self.say("step 2/4: seed it with an API key");
        let key = self
            .call(
                STEP,
                Method::POST,
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                self.main_credentials(),
                &[(
                    "FriendlyName",
                    &format!("pkcv-proxy {}", options.friendly_name),
                )],
            )
            .await?;
        let api_key_sid = sid_field(&key, "SK", STEP)?;
        let secret = key
            .as_ref()
            .and_then(|k| k.get("secret"))
            .and_then(Value::as_str)
            .ok_or_else(|| WorkflowError::MissingInAnswer {
                step: STEP.into(),
                what: "secret for the new key".into(),
            })?
            .to_owned();
        created.api_key_sid = Some(api_key_sid.clone());
        self.say(&format!("          created {api_key_sid}"));
        if options.secret_to_stdout && options.secret_file.is_none() {
            return Ok((api_key_sid, secret, None));
        }
        let path = options
            .secret_file
            .clone()
            .unwrap_or_else(|| options.key_dir.join(format!("{account_sid}.secret")));
        std::fs::create_dir_all(&options.key_dir).map_err(WorkflowError::file(&options.key_dir))?;
        keygen::write_new_private(&path, &secret)?;
        created.secret_file = Some(absolute(&path));
        Ok((api_key_sid, secret, Some(absolute(&path))))
    }

    /// Step 3: a public key for the subaccount, fresh or the main account's. Returns the
    /// private key that signs for it and the credential.
    async fn upload_public_key(
        &self,
        options: &CreateOptions,
        account_sid: &str,
        created: &mut Created,
    ) -> Result<(PrivateKey, String), WorkflowError> {
        const STEP: &str = "step 3/4 (upload the public key)";
        self.say("step 3/4: seed it with a public key");
        let (private_key, public_pem) = if options.reuse_main_key {
            let main = self.main_account_loaded()?;
            let key = match &self.main_account.private_key {
                PrivateKey::File(file) => PrivateKey::File(absolute(file)),
                elsewhere @ (PrivateKey::Pkcs11(_)
                | PrivateKey::AwsKms(_)
                | PrivateKey::VaultTransit(_)) => elsewhere.clone(),
            };
            (key, spki_pem(&main.minter)?)
        } else {
            let (key, public) = self
                .new_key_pair(&options.key_dir, options.custody.as_ref(), account_sid)
                .await?;
            created.private_key = Some(key.clone());
            (key, public)
        };
        let credential = self
            .call(
                STEP,
                Method::POST,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                self.main_credentials(),
                &[
                    ("AccountSid", account_sid),
                    (
                        "FriendlyName",
                        &format!("pkcv-proxy {}", options.friendly_name),
                    ),
                    ("PublicKey", &public_pem),
                ],
            )
            .await?;
        let credential_sid = sid_field(&credential, "CR", STEP)?;
        created.credential_sid = Some(credential_sid.clone());
        self.say(&format!("          created {credential_sid}"));
        Ok((private_key, credential_sid))
    }
}
