//! The accounts directory (`accounts_dir`): one TOML file per account, with the same keys as
//! an `[[accounts]]` entry, so the CLI can add, change and remove accounts without touching
//! the user's config file. A file here overrides an `[[accounts]]` entry with the same SID.
//!
//! Files are written to a temporary name and renamed into place, so a reader (the running
//! proxy's reload) sees either the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{AccountConfig, Config, ConfigError, PrivateKey};
use crate::files::{FileError, Shown};

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
    /// A file cannot be read, is not a regular file, or is larger than any account file.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file does not have the shape of an `[[accounts]]` entry. The parser's message only,
    /// never the line it quotes: an account file may hold a PIN in a refused URI, and one
    /// that is not an account file at all may hold anything.
    #[error("{}: {}{message}", Shown::from(.file.as_path()), .at.map(|(line, column)| format!("line {line}, column {column}: ")).unwrap_or_default())]
    Parse {
        /// The file.
        file: PathBuf,
        /// Where in it (line and column, from 1), if the parser said.
        at: Option<(usize, usize)>,
        /// What the parser found, on one line, with any `pin-value` redacted.
        message: String,
    },
    /// A file's values are invalid. Said with any `pin-value` redacted (a refusal quotes the
    /// value it refuses), so the problem is not this error's `source`: a cause printed after
    /// it would repeat the value unredacted.
    #[error("{}: {}", Shown::from(.file.as_path()), crate::config::redact_pin_values(&.problem.to_string()))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: ConfigError,
    },
    /// A `*.toml` symlink that resolves outside the directory.
    #[error("{}: a link to a file outside accounts_dir: refused unread (only links that stay inside it, such as a Kubernetes Secret's ..data, are followed)", crate::files::Shown::from(.file.as_path()))]
    LinkOutside {
        /// The link.
        file: PathBuf,
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
///
/// A file may be a symlink only if it resolves inside `dir` (as a Kubernetes Secret or
/// ConfigMap volume's `file.toml -> ..data/file.toml` does): a link leading out is refused
/// unread, so that a link to a secret elsewhere never reaches a parser or an error message.
pub fn read_accounts(dir: &Path) -> Result<Vec<AccountConfig>, AccountsDirError> {
    let unreadable = |source| AccountsDirError::Read {
        dir: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Not created yet: the CLI creates it when it registers the first account.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(unreadable(source)),
    };
    // Links are judged against the directory itself, wherever its own path leads.
    let root = std::fs::canonicalize(dir).map_err(unreadable)?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    files.sort();
    let mut seen = std::collections::HashSet::new();
    files
        .iter()
        .map(|file| {
            let account = read_account(&root, file)?;
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

/// One account file of the directory `root` (canonical).
fn read_account(root: &Path, file: &Path) -> Result<AccountConfig, AccountsDirError> {
    let target = std::fs::canonicalize(file).map_err(|source| FileError::Read {
        path: file.into(),
        source,
    })?;
    if !target.starts_with(root) {
        return Err(AccountsDirError::LinkOutside {
            file: file.to_path_buf(),
        });
    }
    // The resolved path, so what is read is what was checked.
    let bytes = crate::files::read_bounded(&target)?;
    parse_account(file, &bytes)
}

/// One account file's contents, parsed and validated as [`read_accounts`] does (`file` is
/// only named in errors). No error quotes the text: the parser's message and position only,
/// any `pin-value` redacted.
pub fn parse_account(file: &Path, bytes: &[u8]) -> Result<AccountConfig, AccountsDirError> {
    let parse_error = |at, message: &str| AccountsDirError::Parse {
        file: file.to_path_buf(),
        at,
        message: crate::config::redact_pin_values(&message.replace('\n', "; ")),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| parse_error(None, "not UTF-8 text"))?;
    let mut account: AccountConfig = toml::from_str(text).map_err(|err| {
        let at = err.span().map(|span| line_and_column(text, span.start));
        parse_error(at, err.message().trim())
    })?;
    let invalid = |problem| AccountsDirError::Invalid {
        file: file.to_path_buf(),
        problem,
    };
    if let PrivateKey::File(file) = &mut account.private_key {
        *file = crate::config::expand_credentials(file).map_err(invalid)?;
    }
    account.validate().map_err(invalid)?;
    Ok(account)
}

/// The line and column (from 1) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
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

    const ACCOUNT: &str = "account_sid = \"AC00000000000000000000000000000001\"\n\
        credential_sid = \"CR00000000000000000000000000000001\"\n";

    #[test]
    fn parse_errors_never_echo_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("AC1.toml");
        // An unterminated string: TOML's own error would quote the line, PIN and all.
        std::fs::write(
            &file,
            format!("{ACCOUNT}private_key = \"pkcs11:object=k?pin-value=86429753\n"),
        )
        .unwrap();
        let err = read_accounts(dir.path()).unwrap_err().to_string();
        assert!(err.contains("AC1.toml") && err.contains("line 3"), "{err}");
        assert!(
            !err.contains("86429753") && !err.contains("pkcs11:"),
            "{err}"
        );

        // A value of the wrong type whose text holds a PIN.
        std::fs::write(
            &file,
            "account_sid = [\"pkcs11:object=k?pin-value=86429753\"]\n",
        )
        .unwrap();
        let err = read_accounts(dir.path()).unwrap_err().to_string();
        assert!(err.contains("AC1.toml"), "{err}");
        assert!(!err.contains("86429753"), "{err}");

        // A refusal that quotes the value it refuses.
        std::fs::write(
            &file,
            "account_sid = \"pkcs11:object=k?pin-value=86429753\"\ncredential_sid = \"CR1\"\nprivate_key_file = \"k\"\n",
        )
        .unwrap();
        let err = read_accounts(dir.path()).unwrap_err();
        assert!(matches!(err, AccountsDirError::Invalid { .. }), "{err}");
        assert!(std::error::Error::source(&err).is_none());
        let err = err.to_string();
        assert!(err.contains("pin-value=<redacted>"), "{err}");
        assert!(!err.contains("86429753"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn links_leaving_the_directory_are_refused_unread() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("client-secret");
        std::fs::write(&secret, "hunter2-first-line\nmore\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("evil.toml")).unwrap();
        let err = read_accounts(dir.path()).unwrap_err();
        assert!(matches!(err, AccountsDirError::LinkOutside { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("evil.toml") && text.contains("outside"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        // A relative link that climbs out is the same.
        std::fs::remove_file(dir.path().join("evil.toml")).unwrap();
        let up = Path::new("..")
            .join(outside.path().file_name().unwrap())
            .join("client-secret");
        std::os::unix::fs::symlink(&up, dir.path().join("evil.toml")).unwrap();
        assert!(matches!(
            read_accounts(dir.path()),
            Err(AccountsDirError::LinkOutside { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_kubernetes_secret_layout_is_read() {
        // What the kubelet makes: AC….toml -> ..data/AC….toml, ..data -> ..2026_…/
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("..2026_01_01_00_00_00.123456789");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(
            version.join("AC1.toml"),
            format!("{ACCOUNT}private_key_file = \"k.pem\"\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(version.file_name().unwrap(), dir.path().join("..data"))
            .unwrap();
        std::os::unix::fs::symlink("..data/AC1.toml", dir.path().join("AC1.toml")).unwrap();
        let accounts = read_accounts(dir.path()).unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].private_key, PrivateKey::File("k.pem".into()));
        // Also when accounts_dir itself is named through a link.
        let parent = tempfile::tempdir().unwrap();
        let named = parent.path().join("accounts");
        std::os::unix::fs::symlink(dir.path(), &named).unwrap();
        assert_eq!(read_accounts(&named).unwrap().len(), 1);
    }

    #[test]
    fn an_account_file_over_the_file_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let comment = format!("# {}\n", "x".repeat(1022));
        let text = format!(
            "{ACCOUNT}private_key_file = \"k.pem\"\n{}",
            comment.repeat(2 * 1024)
        );
        std::fs::write(dir.path().join("AC1.toml"), text).unwrap();
        let err = read_accounts(dir.path()).unwrap_err().to_string();
        assert!(err.contains("AC1.toml is larger than 1 MiB"), "{err}");
    }
}
