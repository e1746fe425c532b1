//! The accounts directory (`accounts_dir`): one TOML file per account, with the same keys as
//! an `[[accounts]]` entry, so the CLI can add, change and remove accounts without touching
//! the user's config file. A file here overrides an `[[accounts]]` entry with the same SID.
//!
//! Files are written to a temporary name and renamed into place, so a reader (the running
//! proxy's reload) sees either the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;

use crate::config::{AccountConfig, Config, ConfigError, PrivateKey};

/// Why the accounts directory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountsDirError {
    /// The directory exists but cannot be listed.
    #[error("cannot read accounts_dir {}: {source}", crate::files::Shown::from(.dir.as_path()))]
    Read {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not have the shape of an `[[accounts]]` entry.
    #[error("{}: {source}", .file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What figment found.
        source: Box<figment::Error>,
    },
    /// A file's values are invalid.
    #[error("{}: {source}", .file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        source: ConfigError,
    },
    /// Two files hold the same account.
    #[error("{}: account {account} is in two files of accounts_dir", .file.display())]
    Duplicate {
        /// The second file.
        file: PathBuf,
        /// The account.
        account: String,
    },
}

/// The accounts the proxy signs for: the config's `[[accounts]]` with the `accounts_dir`
/// files read afresh over them (a file overrides an entry with the same SID).
pub fn configured_accounts(config: &Config) -> Result<Vec<AccountConfig>, AccountsDirError> {
    let mut accounts = config.accounts.clone();
    if let Some(dir) = &config.accounts_dir {
        for account in read_accounts(dir)? {
            accounts = with_override(accounts, account);
        }
    }
    Ok(accounts)
}

/// `accounts` with `account` in place of the entry with its SID, or added: how an
/// `accounts_dir` file overrides `[[accounts]]`, and how a rotation's new version replaces
/// the old.
fn with_override(mut accounts: Vec<AccountConfig>, account: AccountConfig) -> Vec<AccountConfig> {
    match accounts
        .iter_mut()
        .find(|a| a.account_sid == account.account_sid)
    {
        Some(existing) => *existing = account,
        None => accounts.push(account),
    }
    accounts
}

/// The file that holds `account_sid` in `dir`.
pub fn account_file(dir: &Path, account_sid: &str) -> PathBuf {
    dir.join(format!("{account_sid}.toml"))
}

/// Every `*.toml` account in `dir`, sorted by file name, each validated.
pub fn read_accounts(dir: &Path) -> Result<Vec<AccountConfig>, AccountsDirError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Not created yet: the CLI creates it when it registers the first account.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AccountsDirError::Read {
                dir: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    files.sort();
    let mut seen = std::collections::HashSet::new();
    files
        .iter()
        .map(|file| {
            let account = read_account(file)?;
            if !seen.insert(account.account_sid.clone()) {
                return Err(AccountsDirError::Duplicate {
                    file: file.clone(),
                    account: account.account_sid,
                });
            }
            Ok(account)
        })
        .collect()
}

fn read_account(file: &Path) -> Result<AccountConfig, AccountsDirError> {
    let mut account: AccountConfig =
        Figment::from(Toml::file_exact(file))
            .extract()
            .map_err(|source| AccountsDirError::Parse {
                file: file.to_path_buf(),
                source: Box::new(source),
            })?;
    let invalid = |source| AccountsDirError::Invalid {
        file: file.to_path_buf(),
        source,
    };
    if let PrivateKey::File(file) = &mut account.private_key {
        *file = crate::config::expand_credentials(file).map_err(invalid)?;
    }
    account.validate().map_err(invalid)?;
    Ok(account)
}

/// Writes `account` to its file in `dir`, atomically. Returns the file.
pub fn write_account(dir: &Path, account: &AccountConfig) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = account_file(dir, &account.account_sid);
    let text = toml::to_string(account).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!(".{}.toml.tmp", account.account_sid));
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(b"# Written by pkcv-proxy; the running proxy picks up changes.\n")?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}

/// Removes the account's file; `false` if there was none.
pub fn remove_account(dir: &Path, account_sid: &str) -> std::io::Result<bool> {
    match std::fs::remove_file(account_file(dir, account_sid)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountConfig {
            account_sid: "AC00000000000000000000000000000001".into(),
            credential_sid: "CR00000000000000000000000000000001".into(),
            private_key: PrivateKey::File(dir.path().join("key with \"quotes\".pem")),
            api_key_sids: vec!["SK00000000000000000000000000000001".into()],
        };
        write_account(dir.path(), &account).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(read_accounts(dir.path()).unwrap(), vec![account.clone()]);
        assert!(remove_account(dir.path(), &account.account_sid).unwrap());
        assert!(!remove_account(dir.path(), &account.account_sid).unwrap());
        assert!(read_accounts(dir.path()).unwrap().is_empty());

        write_account(dir.path(), &account).unwrap();
        std::fs::copy(
            account_file(dir.path(), &account.account_sid),
            dir.path().join("copy.toml"),
        )
        .unwrap();
        assert!(read_accounts(dir.path())
            .unwrap_err()
            .to_string()
            .contains("two files"));
        std::fs::remove_file(dir.path().join("copy.toml")).unwrap();
        assert!(read_accounts(&dir.path().join("not-yet"))
            .unwrap()
            .is_empty());

        std::fs::write(dir.path().join("bad.toml"), "account_sid = 1").unwrap();
        assert!(read_accounts(dir.path())
            .unwrap_err()
            .to_string()
            .contains("bad.toml"));
    }
}
