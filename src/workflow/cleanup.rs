//! `subaccount cleanup` and `keys list`.

use http::Method;
use serde_json::Value;

use super::{Session, WorkflowError};
use crate::keys::dir;

impl Session {
    /// Deletes the subaccount's API keys and public key and closes it; removes its account
    /// file and secret file. Things already gone are skipped.
    pub async fn cleanup_subaccount(
        &self,
        account_sid: &str,
        credential_sid: Option<&str>,
    ) -> Result<Vec<String>, WorkflowError> {
        if account_sid == self.main.account_sid {
            return Err(WorkflowError::MainAccount);
        }
        let main = self.main_credentials();
        let registered = self.configured(account_sid)?;
        let mut done = Vec::new();

        self.say(&format!("list the API keys of {account_sid}"));
        let keys = self
            .list_all(
                "list the API keys",
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                "keys",
                main,
            )
            .await?;
        let key_sids: Vec<String> = keys
            .iter()
            .filter_map(|k| k["sid"].as_str().map(str::to_owned))
            .collect();
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

        if dir::remove_account(self.accounts_dir(), account_sid).map_err(WorkflowError::file(
            &dir::account_file(self.accounts_dir(), account_sid),
        ))? {
            done.push(
                "removed it from accounts_dir (the running proxy stops signing for it)".into(),
            );
        }
        // The secret is useless now its key is deleted.
        for secret in self.secret_file_candidates(account_sid, registered.as_ref()) {
            if std::fs::remove_file(&secret).is_ok() {
                done.push(format!("removed {}", secret.display()));
            }
        }
        Ok(done)
    }

    /// The account's API keys (as Twilio lists them) and the credential the proxy signs with.
    pub async fn list_keys(&self, account_sid: &str) -> Result<Value, WorkflowError> {
        let keys = self
            .list_all(
                "list the API keys",
                &format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Keys.json"),
                "keys",
                self.main_credentials(),
            )
            .await?;
        let configured = self.configured(account_sid)?;
        Ok(serde_json::json!({
            "account_sid": account_sid,
            "api_keys": keys,
            "signing": configured.map(|a| serde_json::json!({
                "credential_sid": a.credential_sid,
                "private_key": a.private_key.to_string(),
                "api_key_sids": a.api_key_sids,
            })),
        }))
    }
}
