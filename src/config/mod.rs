//! Configuration: a TOML file overlaid by `PKCV_…` environment variables, validated whole
//! before anything is bound or contacted.
//!
//! Figment reads the raw, serde-shaped [`RawConfig`] (`raw`); [`Loaded::from_raw`] turns it
//! into the typed [`Config`] the rest of the proxy uses, one section at a time (`server`,
//! `upstream` with `[intercept]`, `signing` with `[pkcs11]`, `telemetry`, `accounts`, `clients`), refusing
//! anything unsafe or meaningless at start-up (a TTL over Twilio's 300 s, a default host
//! outside the allow-list, malformed SIDs) instead of failing on the first request. The
//! settings as read stay with the loader ([`Loaded::effective`], what `check-config` prints),
//! not in `Config`. Private keys are read by [`crate::keys`].
//!
//! `config/pkcv-proxy.example.toml` documents every key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

mod accounts;
mod clients;
mod error;
mod key_services;
mod load_error;
mod raw;
mod server;
mod signing;
mod telemetry;
mod upstream;

pub use accounts::{AccountConfig, PrivateKey, TransitKey};
pub use clients::ClientConfig;
pub use error::ConfigError;
pub(crate) use key_services::check_base_url;
pub use key_services::{AwsKmsSettings, VaultAuth, VaultSettings};
pub use raw::{
    LogFormat, RawConfig, RawIntercept, RawLog, RawPkcs11, RawServer, RawSigning, RawTelemetry,
    RawUpstream,
};
pub use server::{ServerSettings, TlsListenerSettings};
pub use signing::SigningSettings;
pub use telemetry::{OtlpSettings, TelemetrySettings, DEFAULT_SERVICE_NAME};
pub use upstream::{InterceptSettings, UpstreamSettings};

pub(crate) use load_error::redact_pin_values;

use accounts::validate_accounts;
use clients::validate_clients;
use server::server_settings;
use signing::{expand_pkcs11_paths, pkcs11_settings, signing_settings};
use telemetry::telemetry_settings;
use upstream::{check_connect_to, intercept_settings, passthrough_hosts, upstream_settings};

use crate::pkcs11::Pkcs11Settings;
use crate::route::HostPattern;

/// The status file's name in `accounts_dir` when `server.status_file` is not set.
pub const STATUS_FILE_NAME: &str = ".pkcv-proxy-loaded.json";

/// Prefix of the environment variables that override the file (`PKCV_SERVER__LISTEN`).
pub const ENV_PREFIX: &str = "PKCV_";

/// A validated configuration: only checked, typed values (the settings as written stay
/// with the loader: [`Loaded`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[signing]`
    pub signing: SigningSettings,
    /// `[pkcs11]`, with one session per signing thread.
    pub pkcs11: Pkcs11Settings,
    /// `[vault]`: where `vault-transit:` keys are.
    pub vault: VaultSettings,
    /// `[aws_kms]`: where `aws-kms:` keys are.
    pub aws_kms: AwsKmsSettings,
    /// `[log]`
    pub log: LogSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySettings,
    /// `[intercept]`, if enabled.
    pub intercept: Option<InterceptSettings>,
    /// Hosts tunnelled untouched on `CONNECT` (empty unless configured).
    pub passthrough_hosts: Vec<HostPattern>,
    /// `[[clients]]`, each validated: who may use the proxy; none means anyone who can
    /// connect.
    pub clients: Vec<ClientConfig>,
    /// `[[accounts]]` as the config file has them, each validated (its key is a PEM path or
    /// a parsed PKCS#11 URI, its SIDs checked) and no SID twice. `accounts_dir`'s files are
    /// merged in by [`crate::keys`], which reads them afresh on every reload.
    pub accounts: Vec<AccountConfig>,
    /// `accounts_dir`, if set.
    pub accounts_dir: Option<PathBuf>,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// How lines are written.
    pub format: LogFormat,
    /// A `tracing` filter that parses.
    pub level: String,
}

/// What the loader read, beside the configuration it validated: what `check-config` shows.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The settings as read (defaults, then the file, then `PKCV_…` variables), with
    /// `${CREDENTIALS_DIRECTORY}` expanded. It can be written back as TOML.
    pub effective: RawConfig,
}

impl Loaded {
    /// Reads `file` (if given) and `PKCV_…` variables over the defaults, then validates.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        let mut raw: RawConfig = figment(file)?.extract()?;
        if raw.upstream.proxy_from_env {
            let upstream = &mut raw.upstream;
            crate::egress::apply_env(&mut upstream.proxy, &mut upstream.no_proxy, |name| {
                std::env::var(name).ok()
            })?;
        }
        Loaded::from_raw(raw)
    }

    /// Validates a raw configuration, one section at a time.
    pub fn from_raw(raw: RawConfig) -> Result<Loaded, ConfigError> {
        let raw = expand_paths(raw)?;
        let server = server_settings(&raw.server, raw.accounts_dir.as_deref())?;
        let upstream = upstream_settings(&raw.upstream)?;
        let signing = signing_settings(&raw.signing)?;
        let pkcs11 = pkcs11_settings(&raw.pkcs11, &signing)?;
        let vault = key_services::vault_settings(&raw.vault)?;
        let aws_kms = key_services::aws_kms_settings(&raw.aws_kms)?;
        let log = log_settings(&raw.log)?;
        let telemetry = telemetry_settings(&raw.telemetry)?;
        let intercept = intercept_settings(&raw.intercept)?;
        let passthrough_hosts = passthrough_hosts(&raw.intercept, &upstream.hosts)?;
        check_connect_to(&upstream, &passthrough_hosts)?;
        if let Some(egress) = upstream.proxy.as_ref() {
            if egress.address == server.listen.to_string() {
                return Err(crate::egress::EgressConfigError::Loop(egress.address.clone()).into());
            }
        }
        validate_accounts(&raw.accounts)?;
        validate_clients(&raw.clients)?;
        let config = Config {
            server,
            upstream,
            signing,
            pkcs11,
            vault,
            aws_kms,
            log,
            telemetry,
            intercept,
            passthrough_hosts,
            accounts: raw.accounts.clone(),
            clients: raw.clients.clone(),
            accounts_dir: raw.accounts_dir.clone(),
        };
        Ok(Loaded {
            config,
            effective: raw,
        })
    }

    /// The settings as `check-config` prints them: [`Loaded::effective`] with each client's
    /// secret digest redacted (a digest is not for a terminal or a support ticket).
    pub fn shown(&self) -> RawConfig {
        let mut shown = self.effective.clone();
        for client in &mut shown.clients {
            if client.secret_sha256.is_some() {
                client.secret_sha256 = Some("<redacted>".into());
            }
        }
        shown
    }
}

impl Config {
    /// Reads `file` (if given) and `PKCV_…` variables over the defaults, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Loaded::load(file).map(|loaded| loaded.config)
    }

    /// Only `[pkcs11]` of `file` (and `PKCV_PKCS11__…`), validated: what `keygen --pkcs11`
    /// needs before the accounts are complete (their `credential_sid` comes from uploading
    /// the key it makes).
    pub fn load_pkcs11(file: Option<&Path>) -> Result<Pkcs11Settings, ConfigError> {
        let mut raw: RawPkcs11 = figment(file)?.extract_inner("pkcs11")?;
        expand_pkcs11_paths(&mut raw)?;
        pkcs11_settings(&raw, &signing_settings(&RawSigning::default())?)
    }

    /// Validates a raw configuration, one section at a time.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        Loaded::from_raw(raw).map(|loaded| loaded.config)
    }
}

/// The defaults, `file` over them (if given) and `PKCV_…` variables over that.
fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::FileMissing(file.to_path_buf()));
        }
        figment = figment.merge(TomlFile::read(file)?);
    }
    // PKCV_CONFIG names the file itself (see the CLI); it is not a config key.
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])))
}

/// A TOML file read whole through [`crate::files::read_bounded`] (figment's own
/// `Toml::file` reads any size), its values and errors attributed to the file as figment's
/// would be.
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl TomlFile {
    fn read(path: &Path) -> Result<TomlFile, ConfigError> {
        let bytes = crate::files::read_bounded(path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| ConfigError::NotText(path.to_path_buf()))?;
        Ok(TomlFile {
            path: path.to_path_buf(),
            text,
        })
    }
}

impl figment::Provider for TomlFile {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("TOML file", self.path.as_path())
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// `${CREDENTIALS_DIRECTORY}` in a path setting, as systemd's `LoadCredential=` provides it:
/// expanded from the environment, and an error when it is unset (a unit that forgot
/// `LoadCredential=` must not fall back to a path relative to the working directory).
pub fn expand_credentials(path: &Path) -> Result<PathBuf, ConfigError> {
    crate::files::expand_credentials(path)
        .map_err(|_| ConfigError::NoCredentialsDirectory(path.to_path_buf()))
}

/// Every path setting with `${CREDENTIALS_DIRECTORY}` expanded.
fn expand_paths(mut raw: RawConfig) -> Result<RawConfig, ConfigError> {
    let expand = |path: &mut Option<PathBuf>| -> Result<(), ConfigError> {
        if let Some(value) = path.as_mut() {
            *value = expand_credentials(value)?;
        }
        Ok(())
    };
    expand(&mut raw.upstream.extra_ca_file)?;
    expand(&mut raw.upstream.proxy_auth_file)?;
    expand(&mut raw.intercept.ca_cert_file)?;
    expand(&mut raw.intercept.ca_key_file)?;
    expand(&mut raw.server.tls_cert_file)?;
    expand(&mut raw.server.tls_key_file)?;
    expand(&mut raw.server.client_ca_file)?;
    expand(&mut raw.server.status_file)?;
    expand(&mut raw.accounts_dir)?;
    expand_pkcs11_paths(&mut raw.pkcs11)?;
    for account in &mut raw.accounts {
        if let PrivateKey::File(file) = &mut account.private_key {
            *file = expand_credentials(file)?;
        }
    }
    for client in &mut raw.clients {
        expand(&mut client.secret_file)?;
    }
    Ok(raw)
}

/// A number of milliseconds or seconds that must lie in `range`.
fn in_range(
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    described: &'static str,
) -> Result<u64, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value,
            range: described,
        })
    }
}

/// A duration in milliseconds, at least 1.
fn millis(key: &'static str, value: u64) -> Result<std::time::Duration, ConfigError> {
    in_range(key, value, 1..=u64::MAX, "at least 1").map(std::time::Duration::from_millis)
}

/// The cores this process may use: what `0` means for the thread counts.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn log_settings(raw: &RawLog) -> Result<LogSettings, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&raw.level).map_err(|err| ConfigError::LogLevel {
        value: raw.level.clone(),
        reason: err.to_string(),
    })?;
    Ok(LogSettings {
        format: raw.format,
        level: raw.level.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::Algorithm;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(text))
            .extract()?;
        Config::from_raw(raw)
    }

    #[test]
    fn an_account_has_exactly_one_key_and_private_key_takes_only_pkcs11_uris() {
        let account = |keys: &str| {
            format!(
                "[[accounts]]\naccount_sid = \"ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4\"\n\
                 credential_sid = \"CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d\"\n{keys}"
            )
        };
        let uri = r#"private_key = "pkcs11:token=pkcv;object=main;type=private""#;
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&account(uri)))
            .extract()
            .unwrap();
        let loaded = Loaded::from_raw(raw).unwrap();
        let config = &loaded.config;
        match &config.accounts[0].private_key {
            PrivateKey::Pkcs11(uri) => assert_eq!(uri.object.as_deref(), Some("main")),
            other => panic!("{other:?}"),
        }
        // Written back, it reads the same.
        let written = toml::to_string(&loaded.effective).unwrap();
        assert_eq!(from_toml(&written).unwrap().accounts, config.accounts);

        let refused = |keys: &str| from_toml(&account(keys)).unwrap_err().to_string();
        let both = format!("private_key_file = \"k.pem\"\n{uri}");
        assert!(refused(&both).contains("not both"), "{}", refused(&both));
        assert!(
            refused("").contains("set private_key_file"),
            "{}",
            refused("")
        );
        let file = r#"private_key = "keys/k.pem""#;
        assert!(
            refused(file).contains("takes only a pkcs11:"),
            "{}",
            refused(file)
        );
        let pin = r#"private_key = "pkcs11:object=k?pin-value=8642""#;
        assert!(refused(pin).contains("pin-value") && !refused(pin).contains("8642"));
        let both_pins = "[pkcs11]\npin_file = \"p\"\npin_env = \"P\"";
        assert!(matches!(from_toml(both_pins), Err(ConfigError::PinSources)));
    }

    #[test]
    fn a_config_file_over_the_file_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.toml");
        // Valid TOML all the way: only its size is wrong.
        let comment = format!("# {}\n", "x".repeat(1022));
        std::fs::write(&file, comment.repeat(2 * 1024)).unwrap();
        let err = Config::load(Some(&file)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::File(crate::files::FileError::TooLarge { .. })
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("big.toml is larger than 1 MiB"), "{text}");

        std::fs::write(&file, comment.repeat(16)).unwrap();
        assert!(Config::load(Some(&file)).is_ok());
        std::fs::write(&file, b"[server]\nlisten = \"\xff\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("big.toml is not UTF-8 text"), "{err}");
    }

    #[test]
    fn what_check_config_shows_comes_from_the_loader_with_digests_redacted() {
        let digest = "5a90063288c04e4df59164f25bacb191f42f8f7e11b127030cb01fffd22af956";
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&format!(
                "[server]\nlisten = \"127.0.0.1:9999\"\n[[clients]]\nname = \"app\"\nsecret_sha256 = \"{digest}\"\n"
            )))
            .extract()
            .unwrap();
        let loaded = Loaded::from_raw(raw).unwrap();
        assert_eq!(
            loaded.effective.clients[0].secret_sha256.as_deref(),
            Some(digest)
        );
        let shown = toml::to_string(&loaded.shown()).unwrap();
        assert!(shown.contains("127.0.0.1:9999"), "{shown}");
        assert!(
            shown.contains("<redacted>") && !shown.contains(digest),
            "{shown}"
        );
        // The validated config keeps the digest it authenticates with.
        assert_eq!(
            loaded.config.clients[0].secret_sha256.as_deref(),
            Some(digest)
        );
    }

    #[test]
    fn defaults_are_valid() {
        let config = from_toml("").unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.signing.ttl_secs, 300);
        assert_eq!(config.signing.algorithm, Algorithm::Rs256);
        assert!(config.upstream.hosts.is_allowed("api.twilio.com"));
    }

    #[test]
    fn refuses_bad_values() {
        for (text, needle) in [
            ("[signing]\nttl_secs = 301", "ttl_secs"),
            ("[signing]\nttl_secs = 0", "ttl_secs"),
            ("[signing]\nalgorithm = \"HS256\"", "HS256"),
            ("[server]\nlisten = \"nope\"", "listen"),
            ("[upstream]\ndefault_host = \"example.com\"", "default_host"),
            ("[upstream]\nallowed_hosts = []", "allowed_hosts"),
            ("[upstream]\nallowed_hosts = [\"*\"]", "allowed_hosts"),
            ("[upstream]\nallowed_hosts = [\"*.com\"]\ndefault_host = \"x.com\"", "too broad"),
            ("[intercept]\npassthrough_hosts = [\"*.twilio.com\"]", "overlaps"),
            ("[intercept]\npassthrough_hosts = [\"api.twilio.com\"]", "overlaps"),
            ("[intercept]\nenabled = true", "ca_cert_file"),
            ("[server]\nreload_interval_ms = 10", "reload_interval_ms"),
            ("[upstream.connect_to]\n\"api.twilio.com\" = \"nowhere\"", "connect_to"),
            ("[server]\nlisten_on = \"x\"", "listen_on"),
            (
                "[[accounts]]\naccount_sid = \"AC1\"\ncredential_sid = \"CR1\"\nprivate_key_file = \"k\"",
                "Account SID",
            ),
            ("[log]\nlevel = \"info,,=\"", "log.level"),
            ("[server]\nshutdown_grace_secs = 4000", "shutdown_grace_secs"),
            ("[server]\nheader_read_timeout_secs = 0", "header_read_timeout_secs"),
            ("[server]\nadmin_listen = \"127.0.0.1:8080\"", "must differ"),
            ("[server]\nadmin_listen = \"localhost:9090\"", "admin_listen"),
            ("[server]\nmax_buffered_bytes = 1000", "max_buffered_bytes"),
            ("[server]\nmax_connections = 0", "max_connections"),
            ("[server]\nmax_in_flight = 0", "max_in_flight"),
            ("[server]\nidle_timeout_secs = 0", "idle_timeout_secs"),
            ("[server]\nworker_threads = 1025", "worker_threads"),
            ("[upstream]\nallowed_hosts = [\"*.co.uk\"]\ndefault_host = \"x.co.uk\"", "public suffix"),
            ("[upstream]\nallowed_hosts = [\"twilio.com\", \"github.io\"]", "public suffix"),
            ("[upstream]\nallowed_hosts = [\"api.twilio.com.\"]\ndefault_host = \"api.twilio.com\"", "ends with a dot"),
            ("[upstream]\nallowed_hosts = [\"*.twilio.com\", \"10.0.0.5\"]", "IP address"),
            ("[upstream]\nallowed_hosts = [\"*.0.0.1\"]\ndefault_host = \"127.0.0.1\"", "IP address"),
            ("[upstream]\nallowed_hosts = [\"twilio.com\", \"127.1\"]\ndefault_host = \"twilio.com\"", "IP address"),
            ("[upstream]\nallowed_hosts = [\"twilio.com\", \"0x7f.1\"]\ndefault_host = \"twilio.com\"", "IP address"),
            ("[[clients]]\nname = \"spiffe://c/ns/app\"\nsecret_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"", "takes no secret"),
            ("[upstream.connect_to]\n\"example.com\" = \"127.0.0.1:1\"", "neither"),
            ("[intercept]\nenabled = true\nca_cert_file = \"\"\nca_key_file = \"k.pem\"", "intercept.ca_cert_file"),
            ("[intercept]\nenabled = true\nca_cert_file = \"c.pem\"", "intercept.ca_key_file"),
        ] {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }

    #[test]
    fn connect_to_exact_before_pattern() {
        let config = from_toml(
            "[upstream.connect_to]\n\"*.twilio.com\" = \"127.0.0.1:1\"\n\"api.twilio.com\" = \"127.0.0.1:2\"",
        )
        .unwrap();
        assert_eq!(config.upstream.connect_to[0].1, "127.0.0.1:2");
    }
}
