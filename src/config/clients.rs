//! `[[clients]]` entries: who may use the proxy.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::accounts::expect_sid;
use super::ConfigError;

/// One `[[clients]]` entry: a client allowed to use the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Its name: the `Proxy-Authorization` Basic username, or its certificate's SAN.
    pub name: String,
    /// The SHA-256 (hex) of its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// A file holding its secret (not readable by others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// If non-empty, the only accounts it may have requests signed for.
    #[serde(default)]
    pub accounts: Vec<String>,
}

impl ClientConfig {
    /// Checks the name, the secret's form and the account SIDs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |problem| ConfigError::Client {
            name: self.name.chars().take(64).collect(),
            problem,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 253
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
        if !name_ok {
            return Err(invalid("the name must be 1–253 letters, digits or . _ - : / @ (a Basic username or a certificate's DNS or URI name)"));
        }
        if self.secret_sha256.is_some() && self.secret_file.is_some() {
            return Err(invalid("set secret_sha256 or secret_file, not both"));
        }
        let has_secret = self.secret_sha256.is_some() || self.secret_file.is_some();
        if has_secret && self.name.contains(':') {
            // Basic auth splits `name:secret` at the first ':': such a name could never log
            // in, or would log in as another client.
            return Err(invalid(
                "a name with ':' is for a client certificate (spiffe://…) and takes no secret",
            ));
        }
        let digest_ok =
            |hex: &String| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if self
            .secret_sha256
            .as_ref()
            .is_some_and(|hex| !digest_ok(hex))
        {
            return Err(invalid(
                "secret_sha256 must be 64 hex digits (printf %s SECRET | sha256sum)",
            ));
        }
        for account in &self.accounts {
            expect_sid(account, "AC", "an Account SID", || {
                format!("[[clients]] {} accounts", self.name)
            })?;
        }
        Ok(())
    }
}

pub(super) fn validate_clients(clients: &[ClientConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for client in clients {
        client.validate()?;
        if !seen.insert(client.name.as_str()) {
            return Err(ConfigError::Client {
                name: client.name.clone(),
                problem: "configured twice",
            });
        }
    }
    Ok(())
}
