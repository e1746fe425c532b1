//! `[[clients]]` entries: who may use the proxy.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::accounts::expect_sid;
use super::ConfigError;

/// The SHA-256 of no bytes at all (`printf '' | sha256sum`).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
        // An empty secret_file is refused when it is read; its digest written out is the same
        // client with no secret, so it is refused too.
        if self
            .secret_sha256
            .as_ref()
            .is_some_and(|hex| hex.eq_ignore_ascii_case(EMPTY_SHA256))
        {
            return Err(invalid(
                "secret_sha256 is the SHA-256 of an empty secret: set the digest of a real secret (printf %s SECRET | sha256sum)",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_an_empty_secret_is_refused() {
        use sha2::Digest as _;
        assert_eq!(hex::encode(sha2::Sha256::digest(b"")), EMPTY_SHA256);
        let client = |digest: &str| ClientConfig {
            name: "app".into(),
            secret_sha256: Some(digest.into()),
            secret_file: None,
            accounts: Vec::new(),
        };
        for digest in [EMPTY_SHA256.to_owned(), EMPTY_SHA256.to_ascii_uppercase()] {
            let err = client(&digest).validate().unwrap_err().to_string();
            assert!(err.contains("SHA-256 of an empty secret"), "{err}");
        }
        assert!(client(&hex::encode(sha2::Sha256::digest(b"s3cret")))
            .validate()
            .is_ok());
    }
}
