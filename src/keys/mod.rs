//! The accounts the proxy signs for, and the rule that picks one per request.
//!
//! Keys are parsed once into an immutable [`Accounts`] snapshot held in a [`KeyStore`]. A
//! request takes one snapshot (a lock-free `ArcSwap` load) and uses it to the end; a reload
//! builds a whole new snapshot and swaps it in, so no request ever sees a mix of old and new
//! accounts.
//!
//! [`Accounts::from_config`] is the one loader: `[[accounts]]` with `accounts_dir` merged over
//! them and the clients, exactly what `serve` signs for; `check-config`, `sign` and the
//! workflow see the same set. At start-up any account that does not load is an error. A
//! reload ([`Accounts::reload`]) isolates accounts instead: an unchanged account keeps its
//! live key (no new HSM session, no new login), a changed account that fails to load keeps
//! its previous version, and a new one that fails is left out, each reported in
//! [`Accounts::problems`]; only a config or `accounts_dir` that cannot be read keeps the
//! whole previous snapshot.

pub mod dir;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::clients::Clients;
use crate::config::{AccountConfig, Config, PrivateKey};
use crate::error::ProxyError;
use crate::remote::{block_on, RemoteLoadError};
use crate::signing_key::{Backend, Key};
use crate::token::{TokenError, TokenMinter};

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
    pub minter: TokenMinter,
    /// What it was loaded from (its entry, its key file's bytes, its HSM settings and PIN):
    /// a reload keeps this very account while that stays the same.
    source: Option<[u8; 32]>,
}

impl Account {
    /// An account around a key loaded elsewhere (tests, an injected device). A reload
    /// never treats it as unchanged: it has no source to compare.
    pub fn new(
        account_sid: &str,
        credential_sid: &str,
        api_key_sids: Vec<String>,
        minter: TokenMinter,
    ) -> Account {
        Account {
            account_sid: account_sid.to_owned(),
            credential_sid: credential_sid.to_owned(),
            api_key_sids,
            minter,
            source: None,
        }
    }

    /// Loads the account's private key: parses its PEM file, or finds and checks it in its
    /// HSM.
    pub(crate) fn load(entry: &AccountConfig, config: &Config) -> Result<Account, KeyStoreError> {
        let failed = |source| KeyStoreError::Key {
            account: entry.account_sid.clone(),
            source,
        };
        let algorithm = config.signing.algorithm;
        let key = match &entry.private_key {
            PrivateKey::File(file) => {
                TokenMinter::from_pem_file(file, &entry.credential_sid, algorithm)
                    .map_err(failed)?
                    .key()
                    .clone()
            }
            PrivateKey::Pkcs11(uri) => crate::pkcs11::key::load(uri, &config.pkcs11, algorithm)
                .map_err(|err| failed(err.into()))?,
            in_service @ (PrivateKey::AwsKms(_) | PrivateKey::VaultTransit(_)) => {
                load_from_service(in_service, config).map_err(|err| failed(err.into()))?
            }
        };
        Ok(Account {
            account_sid: entry.account_sid.clone(),
            credential_sid: entry.credential_sid.clone(),
            api_key_sids: entry.api_key_sids.clone(),
            minter: TokenMinter::new(key, &entry.credential_sid, algorithm),
            source: Some(source(entry, config)),
        })
    }

    /// Whether its key can sign right now. A key in a file always can; an HSM's may be
    /// unreachable for a while.
    pub fn can_sign(&self) -> bool {
        self.minter.key().is_available()
    }

    fn allows(&self, api_key_sid: &str) -> bool {
        self.api_key_sids.is_empty() || self.api_key_sids.iter().any(|sid| sid == api_key_sid)
    }
}

/// Loads an account's key held in a service (`aws-kms:` or `vault-transit:`): its public
/// key read and checked, one test signature verified.
fn load_from_service(key: &PrivateKey, config: &Config) -> Result<Key, RemoteLoadError> {
    match key {
        PrivateKey::VaultTransit(transit) => block_on(crate::vault::load(transit, config))?,
        #[cfg(feature = "aws-kms")]
        PrivateKey::AwsKms(id) => block_on(crate::aws_kms::load(id, config))?,
        #[cfg(not(feature = "aws-kms"))]
        PrivateKey::AwsKms(_) => Err(RemoteLoadError::NotBuilt("aws-kms")),
        PrivateKey::File(_) | PrivateKey::Pkcs11(_) => Err(RemoteLoadError::Settings(
            "not a key in a key service".into(),
        )),
    }
}

/// A key in a service kept by a reload is read again: it must still be the key loaded (the
/// key keeps the outcome, refusing to sign if not). Nothing for other keys.
fn recheck(key: &Key) {
    let Key::Awaited(key) = key else { return };
    match block_on(key.recheck()).map_err(|err| err.to_string()) {
        Ok(Ok(())) => {}
        Ok(Err(problem)) | Err(problem) => {
            tracing::warn!(key = %key, %problem, "the key in the key service was read again and is not usable");
        }
    }
}

/// A digest of everything an account's live key depends on: its entry, the algorithm, and
/// its key file's bytes or its HSM settings and PIN. Unreadable parts hash as absent, so a
/// key file that vanishes counts as a change.
fn source(entry: &AccountConfig, config: &Config) -> [u8; 32] {
    let (signing, pkcs11) = (&config.signing, &config.pkcs11);
    let mut sha = Sha256::new();
    sha.update(serde_json::to_vec(entry).unwrap_or_default());
    sha.update(signing.algorithm.as_str());
    match &entry.private_key {
        PrivateKey::File(file) => {
            sha.update(b"file\0");
            sha.update(crate::files::read_private(file).unwrap_or_default());
        }
        PrivateKey::Pkcs11(uri) => {
            sha.update(b"pkcs11\0");
            sha.update(format!("{pkcs11:?}"));
            sha.update(pkcs11.pin_digest(uri).unwrap_or_default());
        }
        // The service's settings; its credentials are refreshed by the key itself.
        PrivateKey::AwsKms(_) => sha.update(format!("aws-kms\0{:?}", config.aws_kms)),
        PrivateKey::VaultTransit(_) => sha.update(format!("vault\0{:?}", config.vault)),
    }
    sha.finalize().into()
}

/// What became of one configured account when a set was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLoad {
    /// The account.
    pub account_sid: String,
    /// Where its key lives, as configured.
    pub backend: Backend,
    /// What happened.
    pub outcome: LoadOutcome,
}

/// What a load did with one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Its key was loaded now.
    Loaded,
    /// Unchanged: the live key was kept as it was.
    Unchanged,
    /// It changed but did not load: its previous version keeps signing.
    KeptPrevious(String),
    /// It is new and did not load: it is left out until it does.
    Skipped(String),
}

/// An account that a reload could not apply, and why (no secret: key errors name files and
/// causes, never contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProblem {
    /// The account.
    pub account_sid: String,
    /// Why it did not load.
    pub error: String,
    /// True when its previous version keeps signing; false when it is left out.
    pub kept_previous: bool,
}

/// An immutable set of accounts, indexed by account SID and by listed API key SID, with the
/// clients allowed to use them: reloaded, and swapped, together.
#[derive(Debug, Default)]
pub struct Accounts {
    by_account: HashMap<String, Arc<Account>>,
    by_api_key: HashMap<String, Arc<Account>>,
    clients: Clients,
    outcomes: Vec<AccountLoad>,
}

impl Accounts {
    /// Indexes `accounts`. Config validation has already refused duplicate account SIDs; an
    /// API key listed under two accounts would make `iss`/`sub` ambiguous and is refused.
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Result<Accounts, KeyStoreError> {
        Accounts::index(accounts.into_iter().map(Arc::new))
    }

    fn index(accounts: impl IntoIterator<Item = Arc<Account>>) -> Result<Accounts, KeyStoreError> {
        let mut set = Accounts::default();
        for account in accounts {
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

    /// Loads every account in `configs`; any that does not load is an error.
    pub(crate) fn load(
        entries: &[AccountConfig],
        config: &Config,
    ) -> Result<Accounts, KeyStoreError> {
        let accounts = entries
            .iter()
            .map(|entry| Account::load(entry, config))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = accounts
            .iter()
            .map(|a| AccountLoad {
                account_sid: a.account_sid.clone(),
                backend: a.minter.key().backend(),
                outcome: LoadOutcome::Loaded,
            })
            .collect();
        let mut set = Accounts::new(accounts)?;
        set.outcomes = outcomes;
        Ok(set)
    }

    /// The one loader: every account the config describes now (`[[accounts]]`, with
    /// `accounts_dir` read afresh over them) and the clients — what `serve` signs for. Any
    /// account that does not load is an error (start-up, `check-config`, `sign`).
    pub fn from_config(config: &Config) -> Result<Accounts, KeyStoreError> {
        let accounts = Accounts::load(&dir::configured_accounts(config)?, config)?;
        Ok(accounts.with_clients(Clients::load(&config.clients)?))
    }

    /// What a reload of `config` makes of `previous`, account by account: unchanged accounts
    /// keep their live keys, a changed account that fails keeps its previous version, a new
    /// one that fails is left out (see [`Accounts::problems`]). An error only when the set
    /// itself cannot be read (`accounts_dir`, duplicates, clients): then nothing changes.
    pub fn reload(config: &Config, previous: &Accounts) -> Result<Accounts, KeyStoreError> {
        Accounts::reload_with(config, previous, Account::load)
    }

    /// [`Accounts::reload`] with the key loader given: the seam tests use to make a device
    /// fail.
    pub(crate) fn reload_with(
        config: &Config,
        previous: &Accounts,
        load: impl Fn(&AccountConfig, &Config) -> Result<Account, KeyStoreError>,
    ) -> Result<Accounts, KeyStoreError> {
        let configs = dir::configured_accounts(config)?;
        let mut accounts = Vec::with_capacity(configs.len());
        let mut outcomes = Vec::with_capacity(configs.len());
        for entry in &configs {
            let old = previous.get(&entry.account_sid);
            let unchanged =
                old.filter(|old| old.source.is_some() && old.source == Some(source(entry, config)));
            let (account, outcome) = if let Some(old) = unchanged {
                // A key in a service is read again: it must still be the key loaded.
                recheck(old.minter.key());
                (Some(old.clone()), LoadOutcome::Unchanged)
            } else {
                match (load(entry, config), old) {
                    (Ok(account), _) => (Some(Arc::new(account)), LoadOutcome::Loaded),
                    (Err(err), Some(old)) => (
                        Some(old.clone()),
                        LoadOutcome::KeptPrevious(err.to_string()),
                    ),
                    (Err(err), None) => (None, LoadOutcome::Skipped(err.to_string())),
                }
            };
            accounts.extend(account);
            outcomes.push(AccountLoad {
                account_sid: entry.account_sid.clone(),
                backend: match entry.private_key {
                    PrivateKey::File(_) => Backend::Pem,
                    PrivateKey::Pkcs11(_) => Backend::Pkcs11,
                    PrivateKey::AwsKms(_) => Backend::AwsKms,
                    PrivateKey::VaultTransit(_) => Backend::VaultTransit,
                },
                outcome,
            });
        }
        let mut set = Accounts::index(accounts)?;
        set.outcomes = outcomes;
        Ok(set.with_clients(Clients::load(&config.clients)?))
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

    /// What became of each configured account when this set was loaded.
    pub fn outcomes(&self) -> &[AccountLoad] {
        &self.outcomes
    }

    /// The configured accounts this set could not apply: each kept at its previous version
    /// or left out.
    pub fn problems(&self) -> impl Iterator<Item = AccountProblem> + '_ {
        self.outcomes.iter().filter_map(|load| {
            let (error, kept_previous) = match &load.outcome {
                LoadOutcome::KeptPrevious(error) => (error, true),
                LoadOutcome::Skipped(error) => (error, false),
                _ => return None,
            };
            Some(AccountProblem {
                account_sid: load.account_sid.clone(),
                error: error.clone(),
                kept_previous,
            })
        })
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
        #[source]
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
pub(crate) mod tests;
