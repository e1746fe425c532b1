//! Who may use the proxy: `[[clients]]`.
//!
//! With PKCV the private key is the second factor behind a stolen API key secret, so a proxy
//! that anyone on the network can reach would hand that factor to anyone. When any client is
//! configured, every request and every `CONNECT` must name one:
//!
//! - with `Proxy-Authorization: Basic base64(name:secret)`, what `HTTPS_PROXY=http://name:
//!   secret@host:port` makes curl, twilio-python (requests), twilio-node and Java send; a
//!   tunnel keeps the client of the `CONNECT` that opened it;
//! - or with a client certificate on the TLS listener, whose SAN (DNS name or URI) is the
//!   client's name; such a client needs no secret.
//!
//! Secrets are kept only as SHA-256 digests and compared in constant time. A client with an
//! `accounts` list may have requests signed for those accounts only.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, PROXY_AUTHORIZATION};
use sha2::{Digest, Sha256};

use crate::config::ClientConfig;
use crate::error::ProxyError;
use crate::files::{self, FileError};

/// One client allowed to use the proxy.
pub struct Client {
    /// Its name.
    pub name: String,
    secret: Option<[u8; 32]>,
    accounts: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Whether it may have a request signed as `account_sid`.
    pub fn may_sign_for(&self, account_sid: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|sid| sid == account_sid)
    }

    /// Whether `secret` is its secret (constant time over the digests).
    fn accepts(&self, secret: &[u8]) -> bool {
        let Some(expected) = &self.secret else {
            // A certificate-only client has no secret to match.
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(secret).into();
        aws_lc_rs::constant_time::verify_slices_are_equal(expected, &presented).is_ok()
    }
}

/// Why the clients could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientsError {
    /// A secret file could not be read, or others may read it.
    #[error("[[clients]] {name}: secret_file: {source}")]
    SecretFile {
        /// The client.
        name: String,
        /// Why.
        source: FileError,
    },
    /// A secret file holds no secret.
    #[error("[[clients]] {name}: secret_file is empty")]
    EmptySecret {
        /// The client.
        name: String,
    },
}

/// The configured clients, by name.
#[derive(Debug, Default)]
pub struct Clients {
    by_name: HashMap<String, Arc<Client>>,
}

impl Clients {
    /// Loads the clients (reading secret files); the configs are already validated.
    pub fn load(configs: &[ClientConfig]) -> Result<Clients, ClientsError> {
        let mut by_name = HashMap::with_capacity(configs.len());
        for config in configs {
            let client = Client {
                name: config.name.clone(),
                secret: secret_digest(config)?,
                accounts: config.accounts.clone(),
            };
            by_name.insert(config.name.clone(), Arc::new(client));
        }
        Ok(Clients { by_name })
    }

    /// True when none is configured: then the proxy serves anyone who can connect.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many are configured.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The client with this name (a certificate's SAN, or a tunnel's `CONNECT` client).
    pub fn get(&self, name: &str) -> Option<&Arc<Client>> {
        self.by_name.get(name)
    }

    /// The client a request's `Proxy-Authorization` names and proves, or 407.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Arc<Client>, ProxyError> {
        let (name, secret) = proxy_credentials(headers)?;
        match self.by_name.get(&name) {
            Some(client) if client.accepts(&secret) => Ok(client),
            _ => Err(ProxyError::ProxyAuthentication(
                "the proxy credentials are wrong",
            )),
        }
    }
}

/// The SHA-256 of a client's secret, from the config or its file.
fn secret_digest(config: &ClientConfig) -> Result<Option<[u8; 32]>, ClientsError> {
    if let Some(hex_digest) = &config.secret_sha256 {
        let mut digest = [0u8; 32];
        // Validated as 64 hex digits with the config.
        if hex::decode_to_slice(hex_digest, &mut digest).is_ok() {
            return Ok(Some(digest));
        }
    }
    let Some(path) = &config.secret_file else {
        return Ok(None);
    };
    let contents = files::read_private(path).map_err(|source| ClientsError::SecretFile {
        name: config.name.clone(),
        source,
    })?;
    // A trailing newline from `echo` or an editor is not part of the secret.
    let secret = contents.trim_ascii_end();
    if secret.is_empty() {
        return Err(ClientsError::EmptySecret {
            name: config.name.clone(),
        });
    }
    Ok(Some(Sha256::digest(secret).into()))
}

/// `Proxy-Authorization: Basic base64(name:secret)`: the name and the secret bytes.
pub fn proxy_credentials(headers: &HeaderMap) -> Result<(String, Vec<u8>), ProxyError> {
    let missing = ProxyError::ProxyAuthentication(
        "send Proxy-Authorization: Basic credentials (HTTPS_PROXY=http://name:secret@host:port)",
    );
    let mut values = headers.get_all(PROXY_AUTHORIZATION).iter();
    let value = values.next().ok_or(missing)?;
    let malformed = || {
        ProxyError::ProxyAuthentication(
            "Proxy-Authorization is not one well-formed Basic credential",
        )
    };
    if values.next().is_some() {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, encoded) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(malformed)?;
    let name = std::str::from_utf8(&decoded[..colon]).map_err(|_| malformed())?;
    Ok((name.to_owned(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn clients() -> Clients {
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        Clients::load(&[
            ClientConfig {
                name: "billing".into(),
                secret_sha256: Some(digest),
                secret_file: None,
                accounts: vec!["ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4".into()],
            },
            ClientConfig {
                name: "spiffe://cluster/ns/app".into(),
                secret_sha256: None,
                secret_file: None,
                accounts: vec![],
            },
        ])
        .unwrap()
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(user_secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_secret))
    }

    #[test]
    fn basic_proxy_credentials_are_checked() {
        let clients = clients();
        let billing = clients
            .authenticate(&with(&basic("billing:s3cret")))
            .unwrap();
        assert_eq!(billing.name, "billing");
        assert!(billing.may_sign_for("ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4"));
        assert!(!billing.may_sign_for("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"));
        for refused in [
            basic("billing:wrong"),
            basic("billing:"),
            basic("nobody:s3cret"),
            // A certificate-only client cannot log in with a password at all.
            basic("spiffe://cluster/ns/app:"),
            "Bearer abc".into(),
            "Basic !!!".into(),
            basic("no-colon"),
        ] {
            let err = clients.authenticate(&with(&refused)).unwrap_err();
            assert_eq!(
                (err.status().as_u16(), err.code()),
                (407, 79060),
                "{refused}"
            );
        }
        let err = clients.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.code(), 79060);
        assert!(clients.get("spiffe://cluster/ns/app").is_some());
    }

    #[test]
    fn secret_files_are_read_trimmed_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config = ClientConfig {
            name: "ops".into(),
            secret_sha256: None,
            secret_file: Some(path.clone()),
            accounts: vec![],
        };
        let clients = Clients::load(std::slice::from_ref(&config)).unwrap();
        assert!(clients.authenticate(&with(&basic("ops:s3cret"))).is_ok());
        #[cfg(unix)]
        {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            let err = Clients::load(&[config]).unwrap_err();
            assert!(err.to_string().contains("readable by others"), "{err}");
        }
    }
}
