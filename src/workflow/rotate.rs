//! `keys rotate`: a new signing key with no moment in which the proxy signs with a key Twilio
//! does not know.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::Method;
use serde::Serialize;

use super::{sid_field, Session, WorkflowError};
use crate::config::AccountConfig;
use crate::keys::reload::LoadedStatus;
use crate::keys::{dir, Accounts, KeyStoreError};

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

impl Session {
    /// Rotates the account's signing key with no moment in which the proxy signs with a key
    /// Twilio does not know: generate, upload, verify with the new key and check the switched
    /// account set loads, switch the account file, wait until the running proxy reports the
    /// new key (and `grace` more for requests already signed), then delete the old credential.
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
            return Err(WorkflowError::NotConfigured(account_sid.to_owned()));
        };
        let (api_key_sid, secret) = if account_sid == self.main.account_sid {
            (self.main.api_key_sid.clone(), self.main.secret.clone())
        } else {
            let Some(key) = current.api_key_sids.first() else {
                return Err(WorkflowError::NoApiKey(account_sid.to_owned()));
            };
            let path = secret_file.map(Path::to_path_buf).unwrap_or_else(|| {
                let candidates = self.secret_file_candidates(account_sid, Some(&current));
                candidates
                    .iter()
                    .find(|path| path.is_file())
                    .or(candidates.first())
                    .cloned()
                    .unwrap_or_default()
            });
            let secret = std::fs::read_to_string(&path).map_err(|source| {
                WorkflowError::SecretUnreadable {
                    api_key: key.clone(),
                    path: path.clone(),
                    source,
                }
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
        let ready = match self
            .verify_as(
                &rotated,
                &api_key_sid,
                &secret,
                "step 3/5 (signed request with the new key)",
            )
            .await
        {
            Ok(()) => self.check_switch(&rotated),
            Err(err) => Err(err),
        };
        if let Err(err) = ready {
            // Nothing has switched: take the new credential back so nothing is left behind.
            self.say("          failed: deleting the new credential again; nothing was switched");
            let undo = self
                .delete(
                    "undo step 2/5",
                    &format!(
                        "https://accounts.twilio.com/v1/Credentials/PublicKeys/{new_credential}"
                    ),
                )
                .await;
            return Err(match undo {
                Ok(()) => err,
                Err(undo) => WorkflowError::UndoFailed {
                    error: Box::new(err),
                    undo: Box::new(undo),
                    credential: new_credential,
                },
            });
        }

        self.say("step 4/5: switch signing to the new key");
        dir::write_account(self.accounts_dir(), &rotated).map_err(WorkflowError::file(
            &dir::account_file(self.accounts_dir(), account_sid),
        ))?;
        self.wait_for_switch(account_sid, &new_credential, &current.credential_sid, grace)
            .await?;

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
        .await
        .map_err(|err| WorkflowError::OldCredentialKept {
            error: Box::new(err),
            new_credential: new_credential.clone(),
            old_credential: current.credential_sid.clone(),
        })?;
        Ok(Rotation {
            account_sid: account_sid.to_owned(),
            old_credential_sid: current.credential_sid,
            new_credential_sid: new_credential,
            private_key_file,
        })
    }

    /// Before switching: the whole account set as it will be after the switch must load
    /// (every account file parses, every key loads), or a running proxy would refuse it and
    /// keep signing with the old key.
    fn check_switch(&self, rotated: &AccountConfig) -> Result<(), WorkflowError> {
        let not_reloadable = |source: KeyStoreError| WorkflowError::WouldNotReload { source };
        let mut accounts =
            dir::configured_accounts(&self.config).map_err(|err| not_reloadable(err.into()))?;
        match accounts
            .iter_mut()
            .find(|a| a.account_sid == rotated.account_sid)
        {
            Some(account) => *account = rotated.clone(),
            None => accounts.push(rotated.clone()),
        }
        Accounts::load(&accounts, &self.config.signing)
            .map(drop)
            .map_err(not_reloadable)
    }

    /// Waits until the proxy running on `accounts_dir` reports signing with `new` for the
    /// account, then `grace` more for requests it signed with the old key to reach Twilio.
    /// With no running proxy reporting, waits `grace` alone.
    async fn wait_for_switch(
        &self,
        account_sid: &str,
        new: &str,
        old: &str,
        grace: Duration,
    ) -> Result<(), WorkflowError> {
        let timeout = (self.config.server.reload_interval * 20).max(Duration::from_secs(30));
        let deadline = Instant::now() + timeout;
        loop {
            match LoadedStatus::read(self.accounts_dir()) {
                Some(status) if status.writer_alive() => {
                    if status.accounts.get(account_sid).map(String::as_str) == Some(new) {
                        self.say(&format!(
                            "          the running proxy (pid {}) signs with {new}",
                            status.pid
                        ));
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(WorkflowError::SwitchNotConfirmed {
                            pid: status.pid,
                            new_credential: new.to_owned(),
                            old_credential: old.to_owned(),
                            waited: timeout,
                        });
                    }
                }
                _ => {
                    self.say("          no running proxy reports on accounts_dir");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.say(&format!(
            "          waiting {} s for requests signed with the old key",
            grace.as_secs_f32()
        ));
        tokio::time::sleep(grace).await;
        Ok(())
    }
}
