//! Picking up account changes in a running proxy: the config file's `[[accounts]]`, the
//! `accounts_dir` files and the private key files they name are polled, and when any of them
//! changes the whole account set is rebuilt and swapped into the [`KeyStore`].
//!
//! A file that does not parse or a key that does not load leaves the old set in place (and is
//! logged); the change is retried on every tick until it loads, so an account file that
//! arrives before its key is picked up once the key is there. Settings other than accounts
//! need a restart.
//!
//! After every successful load the proxy writes [`STATUS_FILE`] into `accounts_dir`: which
//! credential it signs with for each account. `keys rotate` waits on it before deleting an
//! old credential, so no running proxy is left signing with a key Twilio no longer knows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Accounts, KeyStore};
use crate::config::Config;
use crate::shutdown::Shutdown;

/// The file in `accounts_dir` where a running proxy reports what it signs with.
pub const STATUS_FILE: &str = ".pkcv-proxy-loaded.json";

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An account file or key did not load.
    #[error(transparent)]
    Keys(#[from] super::KeyStoreError),
}

/// What a running proxy last loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedStatus {
    /// The proxy's process id.
    pub pid: u32,
    /// Account SID → the credential SID it signs with.
    pub accounts: BTreeMap<String, String>,
}

impl LoadedStatus {
    /// The status a running proxy wrote into `accounts_dir`, if any.
    pub fn read(accounts_dir: &Path) -> Option<LoadedStatus> {
        let text = std::fs::read(accounts_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether the process that wrote it still runs (always assumed where that cannot be told).
    pub fn writer_alive(&self) -> bool {
        if cfg!(target_os = "linux") {
            Path::new(&format!("/proc/{}", self.pid)).exists()
        } else {
            true
        }
    }
}

/// The config as it stands now: the file re-read if the proxy was started from one, else
/// the one it was started with.
fn current_config(base: &Config, config_path: Option<&Path>) -> Result<Config, ReloadError> {
    Ok(match config_path {
        Some(path) => Config::load(Some(path))?,
        None => base.clone(),
    })
}

/// The config and the whole account set it describes now.
fn load(base: &Config, config_path: Option<&Path>) -> Result<(Config, Accounts), ReloadError> {
    let config = current_config(base, config_path)?;
    let accounts = Accounts::from_config(&config)?;
    Ok((config, accounts))
}

/// Polls every `server.reload_interval` until `shutdown`, swapping in a new account set on
/// each change. `config_path` is the file `base` was loaded from, if any.
pub async fn watch(
    base: Config,
    config_path: Option<PathBuf>,
    store: Arc<KeyStore>,
    mut shutdown: Shutdown,
) {
    let interval = base.server.reload_interval;
    if let Some(dir) = &base.accounts_dir {
        write_status(dir, &store.snapshot());
    }
    let mut seen = inputs_fingerprint(base.clone(), config_path.clone()).await;
    let mut failed: Option<[u8; 32]> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.recv() => return,
        }
        let now = inputs_fingerprint(base.clone(), config_path.clone()).await;
        if now == seen {
            continue;
        }
        // Reading files and parsing RSA keys blocks: keep it off the runtime's threads.
        let loaded = {
            let (base, config_path) = (base.clone(), config_path.clone());
            tokio::task::spawn_blocking(move || load(&base, config_path.as_deref())).await
        };
        match loaded {
            Ok(Ok((config, accounts))) => {
                let count = accounts.len();
                if let Some(dir) = &config.accounts_dir {
                    write_status(dir, &accounts);
                }
                store.replace(accounts);
                seen = now;
                failed = None;
                tracing::info!(accounts = count, "accounts reloaded");
                if count == 0 {
                    tracing::warn!("no accounts are configured any more: every request is refused");
                }
            }
            Ok(Err(err)) => {
                // Retried on every tick; logged once per distinct broken state.
                if failed != Some(now) {
                    tracing::error!(error = %err, "accounts not reloaded; the previous set stays in use");
                    failed = Some(now);
                }
            }
            Err(err) => tracing::error!(error = %err, "account reload task failed"),
        }
    }
}

/// A digest of everything accounts are read from, computed off the runtime's threads.
async fn inputs_fingerprint(base: Config, config_path: Option<PathBuf>) -> [u8; 32] {
    tokio::task::spawn_blocking(move || fingerprint(&base, config_path.as_deref()))
        .await
        .unwrap_or_default()
}

/// The config file, each account file, and each private key file named by the accounts as
/// they stand now (so a key that appears or is replaced in place is noticed too).
fn fingerprint(base: &Config, config_path: Option<&Path>) -> [u8; 32] {
    let mut sha = Sha256::new();
    let mut add = |path: &Path| {
        sha.update(path.to_string_lossy().as_bytes());
        sha.update([0]);
        sha.update(std::fs::read(path).unwrap_or_default());
        sha.update([0]);
    };
    if let Some(path) = config_path {
        add(path);
    }
    if let Some(dir) = &base.accounts_dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "toml"));
        files.sort();
        for file in &files {
            add(file);
        }
    }
    let accounts = current_config(base, config_path)
        .ok()
        .and_then(|config| super::dir::configured_accounts(&config).ok())
        .unwrap_or_default();
    for account in &accounts {
        add(&account.private_key_file);
    }
    sha.finalize().into()
}

/// Reports what this proxy signs with, atomically. Failing to write it is logged, not fatal:
/// it only informs `keys rotate`.
fn write_status(dir: &Path, accounts: &Accounts) {
    let status = LoadedStatus {
        pid: std::process::id(),
        accounts: accounts
            .iter()
            .map(|account| (account.account_sid.clone(), account.credential_sid.clone()))
            .collect(),
    };
    let temporary = dir.join(format!("{STATUS_FILE}.{}.tmp", std::process::id()));
    let written = serde_json::to_vec(&status)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&temporary, json))
        .and_then(|()| std::fs::rename(&temporary, dir.join(STATUS_FILE)));
    if let Err(err) = written {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot write the accounts status file");
    }
}
