//! The accounts the proxy signs for, and the rule that picks one per request.
//!
//! Keys are parsed once into an immutable [`Accounts`] snapshot held in a [`KeyStore`]. A
//! request takes one snapshot (a lock-free `ArcSwap` load) and uses it to the end; a reload
//! builds a whole new snapshot and swaps it in, so a bad key file never half-replaces the
//! good state and no request ever sees a mix of old and new accounts.

pub mod dir;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clients::Clients;
use crate::config::{AccountConfig, Config, PrivateKey, SigningSettings};
use crate::error::ProxyError;
use crate::pkcs11::Pkcs11Settings;
use crate::token::{Signer, TokenError};

/// One account the proxy can sign for.
#[derive(Debug)]
pub struct Account {
    /// `AC…`, the token's `sub`.
    pub account_sid: String,
    /// `CR…`, the token's `kid`.
    pub credential_sid: String,
    /// If non-empty, the only API keys allowed to sign as this account.
    pub api_key_sids: Vec<String>,
    /// The parsed private key.
    pub signer: Signer,
}

impl Account {
    /// Loads the account's private key: parses its PEM file, or finds and checks it in its
    /// HSM.
    pub fn load(
        config: &AccountConfig,
        signing: &SigningSettings,
        pkcs11: &Pkcs11Settings,
    ) -> Result<Account, TokenError> {
        let signer = match &config.private_key {
            PrivateKey::File(file) => {
                Signer::from_pem_file(file, &config.credential_sid, signing.algorithm)?
            }
            PrivateKey::Pkcs11(uri) => Signer::new(
                crate::pkcs11::key::load(uri, pkcs11, signing.algorithm)?,
                &config.credential_sid,
                signing.algorithm,
            ),
        };
        Ok(Account {
            account_sid: config.account_sid.clone(),
            credential_sid: config.credential_sid.clone(),
            api_key_sids: config.api_key_sids.clone(),
            signer,
        })
    }

    /// Whether its key can sign right now. A key in a file always can; an HSM's may be
    /// unreachable for a while.
    pub fn can_sign(&self) -> bool {
        self.signer.key().is_available()
    }

    fn allows(&self, api_key_sid: &str) -> bool {
        self.api_key_sids.is_empty() || self.api_key_sids.iter().any(|sid| sid == api_key_sid)
    }
}

/// An immutable set of accounts, indexed by account SID and by listed API key SID, with the
/// clients allowed to use them: reloaded, and swapped, together.
#[derive(Debug, Default)]
pub struct Accounts {
    by_account: HashMap<String, Arc<Account>>,
    by_api_key: HashMap<String, Arc<Account>>,
    clients: Clients,
}

impl Accounts {
    /// Indexes `accounts`. Config validation has already refused duplicate account SIDs; an
    /// API key listed under two accounts would make `iss`/`sub` ambiguous and is refused.
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Result<Accounts, KeyStoreError> {
        let mut set = Accounts::default();
        for account in accounts {
            let account = Arc::new(account);
            for key in &account.api_key_sids {
                if let Some(other) = set.by_api_key.insert(key.clone(), account.clone()) {
                    return Err(KeyStoreError::ApiKeyListedTwice {
                        api_key: key.clone(),
                        first: other.account_sid.clone(),
                        second: account.account_sid.clone(),
                    });
                }
            }
            if set
                .by_account
                .insert(account.account_sid.clone(), account.clone())
                .is_some()
            {
                return Err(KeyStoreError::AccountListedTwice(
                    account.account_sid.clone(),
                ));
            }
        }
        Ok(set)
    }

    /// Loads every configured account's key.
    pub fn load(
        configs: &[AccountConfig],
        signing: &SigningSettings,
        pkcs11: &Pkcs11Settings,
    ) -> Result<Accounts, KeyStoreError> {
        let accounts = configs
            .iter()
            .map(|config| {
                Account::load(config, signing, pkcs11).map_err(|source| KeyStoreError::Key {
                    account: config.account_sid.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Accounts::new(accounts)
    }

    /// Loads every account the config describes now: `[[accounts]]`, with `accounts_dir`
    /// read afresh over them.
    pub fn from_config(config: &Config) -> Result<Accounts, KeyStoreError> {
        let accounts = Accounts::load(
            &dir::configured_accounts(config)?,
            &config.signing,
            &config.pkcs11,
        )?;
        Ok(accounts.with_clients(Clients::load(&config.clients)?))
    }

    /// The same accounts, used by `clients`.
    pub fn with_clients(mut self, clients: Clients) -> Accounts {
        self.clients = clients;
        self
    }

    /// Who may use the proxy (none configured: anyone who can connect).
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Every account, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_account.values()
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.by_account.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }

    /// The account with this SID.
    pub fn get(&self, account_sid: &str) -> Option<&Arc<Account>> {
        self.by_account.get(account_sid)
    }

    /// Picks the signing account for a request by `api_key_sid` whose path names
    /// `path_account` (if any):
    ///
    /// 1. the account that lists the API key — even on another account's path, because `iss`
    ///    must belong to `sub` (a Main key managing a subaccount signs as its parent);
    /// 2. else the account named in the path (403 if it is not configured);
    /// 3. else the only configured account;
    /// 4. else the request is ambiguous (400).
    ///
    /// The chosen account must allow the key (403 otherwise).
    pub fn select(
        &self,
        api_key_sid: &str,
        path_account: Option<&str>,
    ) -> Result<&Arc<Account>, ProxyError> {
        if self.is_empty() {
            return Err(ProxyError::NoAccounts);
        }
        let account = if let Some(account) = self.by_api_key.get(api_key_sid) {
            account
        } else if let Some(sid) = path_account {
            self.by_account
                .get(sid)
                .ok_or_else(|| ProxyError::AccountNotConfigured(sid.to_owned()))?
        } else if self.by_account.len() == 1 {
            self.by_account
                .values()
                .next()
                .ok_or(ProxyError::NoAccounts)?
        } else {
            return Err(ProxyError::AmbiguousAccount);
        };
        if !account.allows(api_key_sid) {
            return Err(ProxyError::ApiKeyNotAllowed {
                api_key: api_key_sid.to_owned(),
                account: account.account_sid.clone(),
            });
        }
        Ok(account)
    }
}

/// Why a set of accounts could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// A private key could not be loaded.
    #[error("account {account}: {source}")]
    Key {
        /// The account.
        account: String,
        /// Why.
        source: TokenError,
    },
    /// One API key appears under two accounts.
    #[error("API key {api_key} is listed under both {first} and {second}")]
    ApiKeyListedTwice {
        /// The key.
        api_key: String,
        /// One account.
        first: String,
        /// The other.
        second: String,
    },
    /// One account appears twice.
    #[error("account {0} is configured twice")]
    AccountListedTwice(String),
    /// The accounts directory could not be read.
    #[error(transparent)]
    Dir(#[from] dir::AccountsDirError),
    /// A client's secret could not be read.
    #[error(transparent)]
    Clients(#[from] crate::clients::ClientsError),
}

/// The live account set: a snapshot per request, replaced whole on reload.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwap<Accounts>,
}

impl KeyStore {
    /// A store holding `accounts`.
    pub fn new(accounts: Accounts) -> Self {
        KeyStore {
            current: ArcSwap::from_pointee(accounts),
        }
    }

    /// The current accounts. Hold it for one request, not across reloads.
    pub fn snapshot(&self) -> Arc<Accounts> {
        self.current.load_full()
    }

    /// Replaces every account at once.
    pub fn replace(&self, accounts: Accounts) {
        self.current.store(Arc::new(accounts));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::token::Algorithm;

    const PEM: &str = include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem");
    pub(crate) const A: &str = "AC00000000000000000000000000000001";
    pub(crate) const B: &str = "AC00000000000000000000000000000002";
    pub(crate) const K1: &str = "SK00000000000000000000000000000001";
    pub(crate) const K2: &str = "SK00000000000000000000000000000002";
    const K3: &str = "SK00000000000000000000000000000003";

    /// An account `sid` with the fixture key, listing `keys`.
    pub(crate) fn account(sid: &str, keys: &[&str]) -> Account {
        let credential = "CR00000000000000000000000000000001";
        Account {
            account_sid: sid.into(),
            credential_sid: credential.into(),
            api_key_sids: keys.iter().map(|k| k.to_string()).collect(),
            signer: Signer::from_pem(PEM.as_bytes(), credential, Algorithm::Rs256).unwrap(),
        }
    }

    fn pick(accounts: &Accounts, key: &str, path: Option<&str>) -> Result<String, ProxyError> {
        accounts.select(key, path).map(|a| a.account_sid.clone())
    }

    #[test]
    fn selection_rules() {
        let two = Accounts::new([account(A, &[K1]), account(B, &[])]).unwrap();
        // The listing account wins, even on the other account's path.
        assert_eq!(pick(&two, K1, Some(B)).unwrap(), A);
        assert_eq!(pick(&two, K1, None).unwrap(), A);
        // Unlisted key: the path's account, if it allows any key.
        assert_eq!(pick(&two, K2, Some(B)).unwrap(), B);
        assert!(matches!(
            pick(&two, K2, Some(A)),
            Err(ProxyError::ApiKeyNotAllowed { .. })
        ));
        assert!(matches!(
            pick(&two, K2, Some("AC0000000000000000000000000000000f")),
            Err(ProxyError::AccountNotConfigured(_))
        ));
        assert!(matches!(
            pick(&two, K2, None),
            Err(ProxyError::AmbiguousAccount)
        ));

        let one = Accounts::new([account(A, &[K1, K2])]).unwrap();
        assert_eq!(pick(&one, K2, None).unwrap(), A);
        assert!(matches!(
            pick(&one, K3, None),
            Err(ProxyError::ApiKeyNotAllowed { .. })
        ));

        assert!(matches!(
            pick(&Accounts::default(), K1, None),
            Err(ProxyError::NoAccounts)
        ));
    }

    #[test]
    fn a_key_under_two_accounts_is_refused() {
        let err = Accounts::new([account(A, &[K1]), account(B, &[K1])]).unwrap_err();
        assert!(matches!(err, KeyStoreError::ApiKeyListedTwice { .. }));
    }

    #[test]
    fn replace_swaps_whole_snapshots() {
        let store = KeyStore::new(Accounts::new([account(A, &[])]).unwrap());
        let before = store.snapshot();
        store.replace(Accounts::new([account(B, &[])]).unwrap());
        assert!(before.get(A).is_some(), "a held snapshot is unaffected");
        assert!(store.snapshot().get(A).is_none());
        assert!(store.snapshot().get(B).is_some());
    }
}
