//! `keys rotate`: a new signing key with no moment in which the proxy signs with a key Twilio
//! does not know.

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use serde::Serialize;

use super::{sid_field, KeyCustody, Session, WorkflowError};
use crate::config::{AccountConfig, Config, PrivateKey};
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
    /// The new private key: a PEM file, or a `pkcs11:`, `vault-transit:` or `aws-kms:` URI.
    pub private_key: PrivateKey,
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
        new_key: (&Path, Option<&KeyCustody>),
        secret_file: Option<&Path>,
        grace: Duration,
    ) -> Result<Rotation, WorkflowError> {
        let Some(current) = self.configured(account_sid)? else {
            return Err(WorkflowError::NotConfigured(account_sid.to_owned()));
        };
        let (api_key_sid, secret) = self.account_credentials(&current, secret_file)?;

        self.say("step 1/5: generate a new key pair");
        let (private_key, public_pem) =
            self.new_key_pair(new_key.0, new_key.1, account_sid).await?;
        let new_credential = self.upload_rotated_key(account_sid, &public_pem).await?;
        let rotated = AccountConfig {
            credential_sid: new_credential.clone(),
            private_key: private_key.clone(),
            ..current.clone()
        };
        self.verify_rotated_or_undo(&rotated, &api_key_sid, &secret)
            .await?;

        self.say("step 4/5: switch signing to the new key");
        dir::write_account(self.accounts_dir(), &rotated).map_err(WorkflowError::file(
            &dir::account_file(self.accounts_dir(), account_sid),
        ))?;
        self.wait_for_switch(account_sid, &new_credential, &current.credential_sid, grace)
            .await?;

        self.delete_old_credential(&current.credential_sid, &new_credential)
            .await?;
        Ok(Rotation {
            account_sid: account_sid.to_owned(),
            old_credential_sid: current.credential_sid,
            new_credential_sid: new_credential,
            private_key,
        })
    }

    /// The API key and secret a request as `account` is made with: the Main key for the
    /// main account, else its first listed API key and the secret `create` wrote for it.
    fn account_credentials(
        &self,
        account: &AccountConfig,
        secret_file: Option<&Path>,
    ) -> Result<(String, String), WorkflowError> {
        let account_sid = &account.account_sid;
        if *account_sid == self.main.account_sid {
            return Ok((self.main.api_key_sid.clone(), self.main.secret.clone()));
        }
        let Some(key) = account.api_key_sids.first() else {
            return Err(WorkflowError::NoApiKey(account_sid.clone()));
        };
        let path = secret_file.map(Path::to_path_buf).unwrap_or_else(|| {
            let candidates = self.secret_file_candidates(account_sid, Some(account));
            candidates
                .iter()
                .find(|path| path.is_file())
                .or(candidates.first())
                .cloned()
                .unwrap_or_default()
        });
        let secret = crate::files::read_bounded(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|source| WorkflowError::SecretUnreadable {
                api_key: key.clone(),
                path: path.clone(),
                source,
            })?;
        Ok((key.clone(), secret.trim().to_owned()))
    }

    /// Step 2: uploads the new public key; returns its credential.
    async fn upload_rotated_key(
        &self,
        account_sid: &str,
        public_pem: &str,
    ) -> Result<String, WorkflowError> {
        const STEP: &str = "step 2/5 (upload the new public key)";
        self.say("step 2/5: upload the new public key");
        let mut form = vec![
            ("FriendlyName", "pkcv-proxy rotated key"),
            ("PublicKey", public_pem),
        ];
        if account_sid != self.main.account_sid {
            form.push(("AccountSid", account_sid));
        }
        let uploaded = self
            .call(
                STEP,
                Method::POST,
                "https://accounts.twilio.com/v1/Credentials/PublicKeys",
                self.main_credentials(),
                &form,
            )
            .await?;
        let new_credential = sid_field(&uploaded, "CR", STEP)?;
        self.say(&format!("          created {new_credential}"));
        Ok(new_credential)
    }

    /// Step 3: a request signed with the new key must verify and the switched account set
    /// must load; otherwise the new credential is deleted again and nothing is switched.
    async fn verify_rotated_or_undo(
        &self,
        rotated: &AccountConfig,
        api_key_sid: &str,
        secret: &str,
    ) -> Result<(), WorkflowError> {
        self.say("step 3/5: verify a request signed with the new key");
        let ready = match self
            .verify_as(
                rotated,
                api_key_sid,
                secret,
                "step 3/5 (signed request with the new key)",
            )
            .await
        {
            Ok(()) => self.check_switch(rotated),
            Err(err) => Err(err),
        };
        let Err(err) = ready else { return Ok(()) };
        self.say("          failed: deleting the new credential again; nothing was switched");
        let new_credential = &rotated.credential_sid;
        let undo = self
            .delete(
                "undo step 2/5",
                &format!("https://accounts.twilio.com/v1/Credentials/PublicKeys/{new_credential}"),
            )
            .await;
        Err(match undo {
            Ok(()) => err,
            Err(undo) => WorkflowError::UndoFailed {
                error: Box::new(err),
                undo: Box::new(undo),
                credential: new_credential.clone(),
            },
        })
    }

    /// Step 5: the old credential goes once nothing signs with it any more.
    async fn delete_old_credential(&self, old: &str, new: &str) -> Result<(), WorkflowError> {
        self.say(&format!("step 5/5: delete the old public key {old}"));
        self.delete(
            "step 5/5 (delete the old public key)",
            &format!("https://accounts.twilio.com/v1/Credentials/PublicKeys/{old}"),
        )
        .await
        .map_err(|err| WorkflowError::OldCredentialKept {
            error: Box::new(err),
            new_credential: new.to_owned(),
            old_credential: old.to_owned(),
        })
    }

    fn check_switch(&self, rotated: &AccountConfig) -> Result<(), WorkflowError> {
        check_switch(&self.config, rotated)
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
        let status_file = self.config.server.status_file.clone();
        loop {
            match status_file.as_deref().and_then(LoadedStatus::read_file) {
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
                    // A read-only accounts_dir (a Secret mount) has no status file: with a
                    // Secret, rotation is updating the Secret (see the README).
                    let shown = status_file
                        .as_deref()
                        .map_or_else(|| "(none)".into(), |file| file.display().to_string());
                    self.say(&format!(
                        "          cannot confirm the switch: no running proxy reports in {shown}"
                    ));
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

/// Before switching: the account set as it will be after the switch must read (every account
/// file parses), and the rotated account must load. A running proxy's reload keeps an account
/// whose new version does not load at its previous version, so without this check it would go
/// on signing with the old key, which step 5 deletes.
fn check_switch(config: &Config, rotated: &AccountConfig) -> Result<(), WorkflowError> {
    let not_reloadable = |source: KeyStoreError| WorkflowError::WouldNotReload { source };
    dir::configured_accounts(config).map_err(|err| not_reloadable(err.into()))?;
    Accounts::load(std::slice::from_ref(rotated), config)
        .map(drop)
        .map_err(not_reloadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    #[test]
    fn a_switch_to_a_key_that_does_not_load_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem"),
        )
        .unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config = Config::from_raw(RawConfig::default()).unwrap();
        let rotated = AccountConfig {
            account_sid: "AC00000000000000000000000000000001".into(),
            credential_sid: "CR00000000000000000000000000000002".into(),
            private_key: PrivateKey::File(key),
            api_key_sids: vec![],
        };
        check_switch(&config, &rotated).unwrap();
        let missing = AccountConfig {
            private_key: PrivateKey::File(dir.path().join("missing.pem")),
            ..rotated
        };
        let err = check_switch(&config, &missing).unwrap_err();
        assert!(
            matches!(err, WorkflowError::WouldNotReload { .. })
                && err.to_string().contains("missing.pem"),
            "{err}"
        );
    }
}
