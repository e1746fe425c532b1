//! Picking up account changes in a running proxy: the config file's `[[accounts]]` and the
//! `accounts_dir` files are polled, and when their contents change the whole account set is
//! rebuilt and swapped into the [`KeyStore`]. A file that does not parse or a key that does
//! not load leaves the old set in place (and is logged), so a half-written change can never
//! take signing down. Settings other than accounts need a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Accounts, KeyStore};
use crate::config::Config;
use crate::shutdown::Shutdown;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The config or an account file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A key did not load.
    #[error(transparent)]
    Keys(#[from] super::KeyStoreError),
}

/// Loads the account set described now by the config file (if the proxy was started from
/// one) or else by `base`, plus `accounts_dir`.
pub fn load_accounts(base: &Config, config_path: Option<&Path>) -> Result<Accounts, ReloadError> {
    let config = match config_path {
        Some(path) => Config::load(Some(path))?,
        None => base.clone().with_accounts_dir()?,
    };
    Ok(Accounts::load(&config.accounts, &config.signing)?)
}

/// Polls every `server.reload_interval` until `shutdown`, swapping in a new account set on
/// each change. `config_path` is the file `base` was loaded from, if any.
pub async fn watch(
    base: Config,
    config_path: Option<PathBuf>,
    store: Arc<KeyStore>,
    mut shutdown: Shutdown,
) {
    let accounts_dir = base.accounts_dir.clone();
    let interval = base.server.reload_interval;
    let mut seen = fingerprint(config_path.as_deref(), accounts_dir.as_deref());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.recv() => return,
        }
        let now = fingerprint(config_path.as_deref(), accounts_dir.as_deref());
        if now == seen {
            continue;
        }
        seen = now;
        match load_accounts(&base, config_path.as_deref()) {
            Ok(accounts) => {
                let count = accounts.len();
                store.replace(accounts);
                tracing::info!(accounts = count, "accounts reloaded");
                if count == 0 {
                    tracing::warn!("no accounts are configured any more: every request is refused");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "accounts not reloaded; the previous set stays in use")
            }
        }
    }
}

/// A digest of everything accounts are read from: the config file and each account file.
fn fingerprint(config_path: Option<&Path>, accounts_dir: Option<&Path>) -> [u8; 32] {
    let mut sha = Sha256::new();
    if let Some(path) = config_path {
        sha.update(std::fs::read(path).unwrap_or_default());
    }
    if let Some(dir) = accounts_dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "toml"));
        files.sort();
        for file in files {
            sha.update(file.to_string_lossy().as_bytes());
            sha.update([0]);
            sha.update(std::fs::read(&file).unwrap_or_default());
        }
    }
    sha.finalize().into()
}
