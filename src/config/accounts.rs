//! `[[accounts]]` entries (and the files of `accounts_dir`, which have the same keys).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::pkcs11::Pkcs11Uri;
use crate::sid::is_sid;

/// One `[[accounts]]` entry: an account the proxy signs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAccountConfig", into = "RawAccountConfig")]
pub struct AccountConfig {
    /// `AC…`
    pub account_sid: String,
    /// `CR…`: the public-key credential Twilio verifies with.
    pub credential_sid: String,
    /// Where the private key is.
    pub private_key: PrivateKey,
    /// If non-empty, only these API keys may sign as this account.
    pub api_key_sids: Vec<String>,
}

/// Where an account's private key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateKey {
    /// `private_key_file`: a PEM file (PKCS#1 or PKCS#8, RSA ≥ 2048 bits).
    File(PathBuf),
    /// `private_key = "pkcs11:…"`: a key inside an HSM, named by an RFC 7512 URI.
    Pkcs11(Box<Pkcs11Uri>),
    /// `private_key = "aws-kms:…"`: a key in AWS KMS (key ID, `alias/NAME` or key ARN).
    AwsKms(String),
    /// `private_key = "vault-transit:NAME[?version=N]"`: a key in Vault's transit engine.
    VaultTransit(TransitKey),
}

/// A transit key's name and, if pinned in the config, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitKey {
    /// The key's name under the transit mount.
    pub name: String,
    /// The version to sign with; unset, the latest version at load is pinned.
    pub version: Option<u32>,
}

impl std::fmt::Display for TransitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}?version={version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The URI schemes of keys held by a key service.
pub(super) const AWS_KMS_SCHEME: &str = "aws-kms:";
/// See [`AWS_KMS_SCHEME`].
pub(super) const VAULT_TRANSIT_SCHEME: &str = "vault-transit:";

impl PrivateKey {
    /// Parses `aws-kms:…` or `vault-transit:…`; `None` for any other scheme.
    pub fn parse_service_key(value: &str) -> Option<Result<PrivateKey, String>> {
        if let Some(id) = value.strip_prefix(AWS_KMS_SCHEME) {
            let ok = !id.is_empty()
                && id.len() <= 2048
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/:.".contains(&b));
            return Some(if ok {
                Ok(PrivateKey::AwsKms(id.to_owned()))
            } else {
                Err("is not aws-kms: followed by a key ID, alias/NAME or key ARN".to_owned())
            });
        }
        let rest = value.strip_prefix(VAULT_TRANSIT_SCHEME)?;
        let (name, version) = match rest.split_once("?version=") {
            Some((name, version)) => match version.parse::<u32>() {
                Ok(version) if version > 0 => (name, Some(version)),
                _ => return Some(Err("has a version that is not a positive number".to_owned())),
            },
            None => (rest, None),
        };
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        Some(if ok {
            Ok(PrivateKey::VaultTransit(TransitKey {
                name: name.to_owned(),
                version,
            }))
        } else {
            Err("is not vault-transit: followed by a key name (letters, digits, - _ .) and optionally ?version=N".to_owned())
        })
    }
}

impl PrivateKey {
    /// The PEM file, if the key is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            PrivateKey::File(path) => Some(path),
            PrivateKey::Pkcs11(_) | PrivateKey::AwsKms(_) | PrivateKey::VaultTransit(_) => None,
        }
    }
}

/// As written in the config: the file's path or the URI.
impl Serialize for PrivateKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateKey::File(path) => write!(f, "{}", path.display()),
            PrivateKey::Pkcs11(uri) => write!(f, "{uri}"),
            PrivateKey::AwsKms(id) => write!(f, "{AWS_KMS_SCHEME}{id}"),
            PrivateKey::VaultTransit(key) => write!(f, "{VAULT_TRANSIT_SCHEME}{key}"),
        }
    }
}

/// `[[accounts]]` as written: exactly one of `private_key_file` and `private_key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccountConfig {
    account_sid: String,
    credential_sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(default)]
    api_key_sids: Vec<String>,
}

impl TryFrom<RawAccountConfig> for AccountConfig {
    type Error = String;

    fn try_from(raw: RawAccountConfig) -> Result<Self, String> {
        let private_key = match (raw.private_key_file, raw.private_key) {
            (Some(file), None) => PrivateKey::File(file),
            (None, Some(uri)) if uri.starts_with("pkcs11:") => {
                // The URI is not echoed: a refused one may hold a pin-value.
                let uri = Pkcs11Uri::parse(&uri).map_err(|err| {
                    format!("account {}: the private_key URI {err}", raw.account_sid)
                })?;
                PrivateKey::Pkcs11(Box::new(uri))
            }
            (None, Some(key)) => match PrivateKey::parse_service_key(&key) {
                Some(Ok(key)) => key,
                Some(Err(problem)) => {
                    return Err(format!(
                        "account {}: private_key '{key}' {problem}",
                        raw.account_sid
                    ))
                }
                None => return Err(format!(
                    "account {}: private_key takes only a pkcs11:, aws-kms: or vault-transit: URI (a PEM file goes in private_key_file)",
                    raw.account_sid
                )),
            },
            (Some(_), Some(_)) => {
                return Err(format!(
                    "account {}: set private_key_file or private_key, not both",
                    raw.account_sid
                ))
            }
            (None, None) => {
                return Err(format!(
                    "account {}: set private_key_file (a PEM file) or private_key (a pkcs11: URI)",
                    raw.account_sid
                ))
            }
        };
        Ok(AccountConfig {
            account_sid: raw.account_sid,
            credential_sid: raw.credential_sid,
            private_key,
            api_key_sids: raw.api_key_sids,
        })
    }
}

impl From<AccountConfig> for RawAccountConfig {
    fn from(account: AccountConfig) -> Self {
        let (private_key_file, private_key) = match account.private_key {
            PrivateKey::File(file) => (Some(file), None),
            PrivateKey::Pkcs11(uri) => (None, Some(uri.as_str().to_owned())),
            in_service @ (PrivateKey::AwsKms(_) | PrivateKey::VaultTransit(_)) => {
                (None, Some(in_service.to_string()))
            }
        };
        RawAccountConfig {
            account_sid: account.account_sid,
            credential_sid: account.credential_sid,
            private_key_file,
            private_key,
            api_key_sids: account.api_key_sids,
        }
    }
}

impl AccountConfig {
    /// Checks the SIDs' shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let context = || format!("account {}", self.account_sid);
        expect_sid(&self.account_sid, "AC", "an Account SID", || {
            "[[accounts]] account_sid".into()
        })?;
        expect_sid(
            &self.credential_sid,
            "CR",
            "a public-key credential SID",
            context,
        )?;
        for sid in &self.api_key_sids {
            expect_sid(sid, "SK", "an API key SID", context)?;
        }
        Ok(())
    }
}

pub(super) fn expect_sid(
    value: &str,
    prefix: &'static str,
    what: &'static str,
    context: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if is_sid(value, prefix) && value[prefix.len()..].bytes().all(|b| b == b'0') {
        return Err(ConfigError::Placeholder {
            context: context(),
            value: value.to_owned(),
            what,
        });
    }
    if is_sid(value, prefix) {
        return Ok(());
    }
    Err(ConfigError::NotASid {
        context: context(),
        value: value.to_owned(),
        what,
        prefix,
    })
}

pub(super) fn validate_accounts(accounts: &[AccountConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for account in accounts {
        account.validate()?;
        if !seen.insert(account.account_sid.as_str()) {
            return Err(ConfigError::DuplicateAccount(account.account_sid.clone()));
        }
    }
    Ok(())
}
