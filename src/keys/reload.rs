//! Picking up account changes in a running proxy: the config file's `[[accounts]]`, the
//! `accounts_dir` files and the private key files they name are polled, and when any of them
//! changes the whole account set is rebuilt and swapped into the [`KeyStore`].
//!
//! `SIGHUP` (or [`ReloadHandle::reload_now`]) triggers the same reload at once.
//!
//! Accounts are isolated ([`Accounts::reload`]): an unchanged account keeps its live key (no
//! new HSM session or login), a changed account whose key does not load keeps its previous
//! version, and a new one that does not load is left out; each is logged, counted
//! (`pkcv_proxy_account_loads_total{result="failed"}`) and shown in `/readyz`. Only a config
//! file or `accounts_dir` file that does not parse leaves the whole old set in place (a
//! failed reload). Changes are noticed by the files' size, modification time and inode, so a
//! broken file is not read again until it changes; an account file that arrives before its
//! key is picked up once the key is there (the key file is watched too). Requests in flight
//! finish with the snapshot they started with. Settings other than accounts and clients
//! need a restart.
//!
//! After every successful load the proxy writes the status file (`server.status_file`,
//! default [`STATUS_FILE`] in `accounts_dir`): which credential it signs with for each
//! account. `keys rotate` waits on it before deleting an old credential, so no running proxy
//! is left signing with a key Twilio no longer knows. Where it cannot be written (a read-only
//! Secret mount) that is said once, at info level, and rotation falls back to waiting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tokio::sync::Notify;

use super::{AccountProblem, Accounts, KeyStore, LoadOutcome};
use crate::config::{Config, PrivateKey};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::token::unix_now;

/// The file in `accounts_dir` where a running proxy reports what it signs with, unless
/// `server.status_file` names another.
pub const STATUS_FILE: &str = crate::config::STATUS_FILE_NAME;

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
    /// The status a running proxy wrote into `accounts_dir` (the default place), if any.
    pub fn read(accounts_dir: &Path) -> Option<LoadedStatus> {
        Self::read_file(&accounts_dir.join(STATUS_FILE))
    }

    /// The status a running proxy wrote into `file`, if any.
    pub fn read_file(file: &Path) -> Option<LoadedStatus> {
        let text = crate::files::read_bounded(file).ok()?;
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

/// The config and the account set it describes now, built over `previous`.
fn load(
    base: &Config,
    config_path: Option<&Path>,
    previous: &Accounts,
) -> Result<(Config, Accounts), ReloadError> {
    let config = current_config(base, config_path)?;
    let accounts = Accounts::reload(&config, previous)?;
    Ok((config, accounts))
}

/// The reload loop's inputs and outputs.
#[derive(Debug)]
pub struct Reloader {
    base: Config,
    config_path: Option<PathBuf>,
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    now: Arc<Notify>,
    status_unwritable: bool,
    /// The accounts the last reload could not apply.
    problems: Vec<AccountProblem>,
    /// Where the settings that changed but need a restart are shown (`/readyz`).
    restart_needed: Arc<arc_swap::ArcSwap<Vec<String>>>,
}

/// How often accounts that did not load are tried again while nothing changes.
const RETRY_FAILED_ACCOUNTS: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks a running [`Reloader`] to reload at once.
#[derive(Debug, Clone)]
pub struct ReloadHandle(Arc<Notify>);

impl ReloadHandle {
    /// Reloads at once (what `SIGHUP` does).
    pub fn reload_now(&self) {
        self.0.notify_one();
    }
}

impl Reloader {
    /// A reloader for the proxy started from `base` (read from `config_path`, if any).
    pub fn new(
        base: Config,
        config_path: Option<PathBuf>,
        store: Arc<KeyStore>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            base,
            config_path,
            store,
            metrics,
            now: Arc::new(Notify::new()),
            status_unwritable: false,
            problems: Vec::new(),
            restart_needed: Arc::default(),
        }
    }

    /// Shows the settings a reload finds changed, but that only a restart applies, in
    /// `shown` (readiness details) as well as the log.
    pub(crate) fn reporting_restart_needed(
        mut self,
        shown: Arc<arc_swap::ArcSwap<Vec<String>>>,
    ) -> Reloader {
        self.restart_needed = shown;
        self
    }

    /// A handle that triggers an immediate reload.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle(self.now.clone())
    }

    /// Polls every `server.reload_interval` and reloads on each change, or at once on
    /// `SIGHUP` or [`ReloadHandle::reload_now`], until `shutdown`.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let interval = self.base.server.reload_interval;
        self.write_status(&self.base.clone(), &self.store.snapshot());
        let mut hangup = hangup_signals();
        // Nothing is taken as seen: a file that changed between the start-up load and this
        // task's first look is picked up at the first tick (unchanged accounts keep their
        // live keys, so that reload costs no HSM login).
        let mut seen = [0u8; 32];
        let mut failed: Option<[u8; 32]> = None;
        // Accounts that did not load (a token down) are tried again now and then even when no
        // file changes; a broken file is not read again until it changes.
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = self.now.notified() => true,
                Some(()) = hangup.recv() => true,
                _ = shutdown.recv() => return,
            };
            if forced {
                tracing::info!("reload requested");
                crate::notify::reloading();
            }
            let now = self.fingerprint().await;
            let retry_due = retry_at.is_some_and(|at| tokio::time::Instant::now() >= at);
            if !forced && !retry_due && (now == seen || failed == Some(now)) {
                continue;
            }
            let loaded = self.reload(forced || failed != Some(now)).await;
            if loaded {
                seen = now;
                failed = None;
                retry_at = (!self.problems.is_empty())
                    .then(|| tokio::time::Instant::now() + RETRY_FAILED_ACCOUNTS.max(interval));
            } else {
                failed = Some(now);
            }
            if forced {
                crate::notify::reloaded(loaded.then(|| self.store.snapshot().len()));
            }
        }
    }

    /// Loads and swaps in the whole account set; `false` (the old set kept) when anything
    /// does not load. A failure is logged when `log_failure` (once per distinct broken state
    /// when polling, every time when asked for).
    async fn reload(&mut self, log_failure: bool) -> bool {
        // Reading files and parsing RSA keys blocks: keep it off the runtime's threads.
        let loaded = {
            let (base, config_path) = (self.base.clone(), self.config_path.clone());
            let previous = self.store.snapshot();
            tokio::task::spawn_blocking(move || load(&base, config_path.as_deref(), &previous))
                .await
        };
        let error = match loaded {
            Ok(Ok((config, accounts))) => {
                let count = accounts.len();
                self.report(&accounts, log_failure);
                self.report_restart_needed(&config);
                self.store.replace(accounts);
                // Only once the set is live: a reader of the status file (the demo, `keys
                // rotate`) may send a request for an account the moment it is listed.
                self.write_status(&config, &self.store.snapshot());
                self.metrics.reloaded(Some(count), unix_now());
                tracing::info!(accounts = count, "accounts reloaded");
                if count == 0 {
                    tracing::warn!("no accounts are configured any more: every request is refused");
                }
                return true;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => format!("the reload task failed: {err}"),
        };
        self.metrics.reloaded(None, unix_now());
        if log_failure {
            tracing::error!(error = %error, "accounts not reloaded; the previous set stays in use");
        }
        false
    }

    /// Counts what the reload did with each account, and logs the accounts it could not
    /// apply (when asked for, and whenever that list changes).
    fn report(&mut self, accounts: &Accounts, log_failure: bool) {
        for load in accounts.outcomes() {
            let result = match load.outcome {
                LoadOutcome::Loaded => "loaded",
                LoadOutcome::Unchanged => "unchanged",
                LoadOutcome::KeptPrevious(_) | LoadOutcome::Skipped(_) => "failed",
            };
            self.metrics.account_loaded(load.backend.as_str(), result);
        }
        let problems: Vec<AccountProblem> = accounts.problems().collect();
        let changed = problems != self.problems;
        self.problems = problems;
        if !log_failure && !changed {
            return;
        }
        for problem in &self.problems {
            if problem.kept_previous {
                tracing::error!(account = %problem.account_sid, error = %problem.error, "account not reloaded; its previous version keeps signing");
            } else {
                tracing::error!(account = %problem.account_sid, error = %problem.error, "new account not loaded; its requests are refused until it loads");
            }
        }
    }

    /// Warns (once per change) about settings that differ from those the proxy started
    /// with but are applied only at start: everything but the accounts, the clients and
    /// `[pkcs11]` (which the next key load uses).
    fn report_restart_needed(&self, config: &Config) {
        let changed = restart_only_changes(&self.base, config);
        if **self.restart_needed.load() == changed {
            return;
        }
        for section in &changed {
            tracing::warn!("{section} changed: restart to apply");
        }
        self.restart_needed.store(Arc::new(changed));
    }

    async fn fingerprint(&self) -> [u8; 32] {
        let (base, config_path) = (self.base.clone(), self.config_path.clone());
        tokio::task::spawn_blocking(move || fingerprint(&base, config_path.as_deref()))
            .await
            .unwrap_or_default()
    }

    /// Reports what this proxy signs with, atomically. It only informs `keys rotate`, so a
    /// status file that cannot be written (a read-only mount) is said once, not fatal.
    fn write_status(&mut self, config: &Config, accounts: &Accounts) {
        let Some(file) = &config.server.status_file else {
            return;
        };
        match write_status(file, accounts) {
            Ok(()) => self.status_unwritable = false,
            Err(err) if !self.status_unwritable => {
                self.status_unwritable = true;
                tracing::info!(file = %file.display(), error = %err, "cannot write the status file; `keys rotate` will wait its grace time instead of confirming the switch");
            }
            Err(_) => {}
        }
    }
}

/// The sections of `now` that differ from `started` and that only a restart applies.
fn restart_only_changes(started: &Config, now: &Config) -> Vec<String> {
    // The settings are plain values whose `Debug` shows every field and no secret.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    [
        ("[server]", differs(&started.server, &now.server)),
        ("[upstream]", differs(&started.upstream, &now.upstream)),
        ("[signing]", differs(&started.signing, &now.signing)),
        ("[log]", differs(&started.log, &now.log)),
        ("[intercept]", differs(&started.intercept, &now.intercept)),
        (
            "passthrough_hosts",
            differs(&started.passthrough_hosts, &now.passthrough_hosts),
        ),
        ("accounts_dir", started.accounts_dir != now.accounts_dir),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(section, _)| section.to_owned())
    .collect()
}

/// `SIGHUP`s as a stream (none where there are no Unix signals).
fn hangup_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        // A reload already queued covers this one too.
                        let _ = sender.try_send(());
                    }
                });
            }
            Err(err) => tracing::warn!(error = %err, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(sender);
    receiver
}

/// The config file, each account file, each private key file and each PIN file named by
/// the accounts as they stand now (so a key that appears or is replaced in place is noticed
/// too), by size, modification time and inode: nothing is read but metadata, so a huge or
/// broken file costs nothing until it changes.
fn fingerprint(base: &Config, config_path: Option<&Path>) -> [u8; 32] {
    let mut sha = Sha256::new();
    let mut add = |path: &Path| {
        sha.update(path.to_string_lossy().as_bytes());
        sha.update([0]);
        // Debug of the stamp: size, modification time and inode; "Err" when it is missing.
        sha.update(format!("{:?}", crate::files::stamp(path).ok()));
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
    let Ok(config) = current_config(base, config_path) else {
        return sha.finalize().into();
    };
    if let Some(pin_file) = &config.pkcs11.pin_file {
        add(pin_file);
    }
    for account in super::dir::configured_accounts(&config).unwrap_or_default() {
        match &account.private_key {
            PrivateKey::File(file) => add(file),
            PrivateKey::Pkcs11(uri) => {
                if let Some(pin_file) = &uri.pin_file {
                    add(pin_file);
                }
            }
            // The service's token file is read again by the service itself when it changes.
            PrivateKey::AwsKms(_) | PrivateKey::VaultTransit(_) => {}
        }
    }
    sha.finalize().into()
}

/// Writes the status file through a temporary file and a rename, so a reader sees the old
/// report or the new one.
fn write_status(file: &Path, accounts: &Accounts) -> std::io::Result<()> {
    let status = LoadedStatus {
        pid: std::process::id(),
        accounts: accounts
            .iter()
            .map(|account| (account.account_sid.clone(), account.credential_sid.clone()))
            .collect(),
    };
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let json = serde_json::to_vec(&status).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}
