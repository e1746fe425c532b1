//! Configuration: a TOML file overlaid by `PKCV_…` environment variables, validated whole
//! before anything is bound or contacted.
//!
//! Figment reads the raw, serde-shaped [`RawConfig`]; [`Config::from_raw`] turns it into the
//! typed [`Config`] the rest of the proxy uses, refusing anything unsafe or meaningless at
//! start-up (a TTL over Twilio's 300 s, a default host outside the allow-list, malformed SIDs)
//! instead of failing on the first request. Private keys are read by [`crate::keys`].
//!
//! `config/pkcv-proxy.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::route::{HostPattern, HostPolicy};
use crate::sid::is_sid;
use crate::token::{Algorithm, MAX_TTL_SECS};

/// Prefix of the environment variables that override the file (`PKCV_SERVER__LISTEN`).
pub const ENV_PREFIX: &str = "PKCV_";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or environment could not be read or does not have the expected shape.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value is out of range or malformed.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Load(Box::new(err))
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}

/// The configuration as written, before validation. Every field has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[upstream]`
    pub upstream: RawUpstream,
    /// `[signing]`
    pub signing: RawSigning,
    /// `[log]`
    pub log: RawLog,
    /// `[intercept]`
    pub intercept: RawIntercept,
    /// `[[accounts]]`
    pub accounts: Vec<AccountConfig>,
    /// A directory of per-account TOML files (same keys as `[[accounts]]`), managed by the
    /// CLI and watched by a running proxy.
    pub accounts_dir: Option<PathBuf>,
}

/// `[intercept]`: `HTTPS_PROXY` (`CONNECT`) interception with a local CA.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIntercept {
    /// Terminate TLS inside `CONNECT` tunnels to allowed hosts and sign what is inside.
    pub enabled: bool,
    /// The CA certificate (PEM) from `pkcv-proxy ca init`.
    pub ca_cert_file: Option<PathBuf>,
    /// The CA private key (PEM); must not be readable by group or others.
    pub ca_key_file: Option<PathBuf>,
    /// Hosts (or `*.` patterns) tunnelled untouched — unsigned — instead. Empty by default.
    pub passthrough_hosts: Vec<String>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// How often the running proxy checks the config file and `accounts_dir` for account
    /// changes, in milliseconds.
    pub reload_interval_ms: u64,
    /// Time a client gets to send its whole request body, in milliseconds (slow senders
    /// would otherwise hold a buffer and a connection forever).
    pub body_read_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 10 * 1024 * 1024,
            reload_interval_ms: 2_000,
            body_read_timeout_ms: 60_000,
        }
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    /// Host for requests that name none.
    pub default_host: String,
    /// Hosts the proxy may contact.
    pub allowed_hosts: Vec<String>,
    /// An extra PEM CA bundle trusted besides the public web roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Host (or `*.` pattern) → `address:port` to dial instead, keeping SNI and `Host`.
    pub connect_to: std::collections::BTreeMap<String, String>,
    /// TCP connect timeout (the TLS handshake counts against `request_timeout_ms`).
    pub connect_timeout_ms: u64,
    /// Time allowed until the response headers arrive.
    pub request_timeout_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            default_host: "api.twilio.com".into(),
            allowed_hosts: vec!["twilio.com".into(), "*.twilio.com".into()],
            extra_ca_file: None,
            connect_to: Default::default(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 60_000,
        }
    }
}

impl RawUpstream {
    /// Dials every Twilio host at `address` and trusts the CA in `extra_ca_file`, while SNI,
    /// certificate checks and `Host` keep the real names: a private link, or a stand-in.
    pub fn route_all_to(&mut self, address: SocketAddr, extra_ca_file: PathBuf) {
        self.extra_ca_file = Some(extra_ca_file);
        for host in ["twilio.com", "*.twilio.com"] {
            self.connect_to.insert(host.into(), address.to_string());
        }
    }
}

/// `[signing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSigning {
    /// `RS256` or `PS256`.
    pub algorithm: Algorithm,
    /// Token lifetime, 1–300 s.
    pub ttl_secs: u64,
}

impl Default for RawSigning {
    fn default() -> Self {
        RawSigning {
            algorithm: Algorithm::Rs256,
            ttl_secs: MAX_TTL_SECS,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `pkcv_proxy=debug`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// One `[[accounts]]` entry: an account the proxy signs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// `AC…`
    pub account_sid: String,
    /// `CR…`: the public-key credential Twilio verifies with.
    pub credential_sid: String,
    /// PEM private key (PKCS#1 or PKCS#8, RSA ≥ 2048 bits).
    pub private_key_file: PathBuf,
    /// If non-empty, only these API keys may sign as this account.
    #[serde(default)]
    pub api_key_sids: Vec<String>,
}

impl AccountConfig {
    /// Checks the SIDs' shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_sid(&self.account_sid, "AC") {
            return invalid(format!(
                "accounts: '{}' is not an Account SID (AC…)",
                self.account_sid
            ));
        }
        if !is_sid(&self.credential_sid, "CR") {
            return invalid(format!(
                "account {}: credential_sid '{}' is not a public-key credential SID (CR…)",
                self.account_sid, self.credential_sid
            ));
        }
        if let Some(bad) = self.api_key_sids.iter().find(|sid| !is_sid(sid, "SK")) {
            return invalid(format!(
                "account {}: '{bad}' is not an API key SID (SK…)",
                self.account_sid
            ));
        }
        Ok(())
    }
}

/// Where the proxy listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Account reload polling interval.
    pub reload_interval: Duration,
    /// Body read deadline.
    pub body_read_timeout: Duration,
}

/// How the proxy reaches Twilio.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The allow-list and default host.
    pub hosts: HostPolicy,
    /// Extra trusted CAs.
    pub extra_ca_file: Option<PathBuf>,
    /// Dial overrides, exact hosts before patterns.
    pub connect_to: Vec<(HostPattern, String)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response-headers timeout.
    pub request_timeout: Duration,
}

/// How tokens are minted.
#[derive(Debug, Clone, Copy)]
pub struct SigningSettings {
    /// The JWS algorithm.
    pub algorithm: Algorithm,
    /// Token lifetime (≤ 300 s).
    pub ttl_secs: u64,
}

/// Interception, when enabled.
#[derive(Debug, Clone)]
pub struct InterceptSettings {
    /// The CA certificate.
    pub ca_cert_file: PathBuf,
    /// The CA key.
    pub ca_key_file: PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[signing]`
    pub signing: SigningSettings,
    /// `[log]`
    pub log: RawLog,
    /// `[intercept]`, if enabled.
    pub intercept: Option<InterceptSettings>,
    /// Hosts tunnelled untouched on `CONNECT` (empty unless configured).
    pub passthrough_hosts: Vec<HostPattern>,
    /// `[[accounts]]`, with `accounts_dir`'s files merged in (a file overrides an entry with
    /// the same SID).
    pub accounts: Vec<AccountConfig>,
    /// `accounts_dir`, if set.
    pub accounts_dir: Option<PathBuf>,
    /// What it was built from, for `check-config`.
    pub raw: RawConfig,
}

impl Config {
    /// Reads `file` (if given) and `PKCV_…` variables over the defaults, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return invalid(format!("config file {} does not exist", file.display()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // PKCV_CONFIG names the file itself (see the CLI); it is not a config key.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        Config::from_raw(figment.extract()?)?.with_accounts_dir()
    }

    /// This config with the `accounts_dir` files read afresh over the `[[accounts]]` entries
    /// (a file overrides an entry with the same SID).
    pub fn with_accounts_dir(mut self) -> Result<Config, ConfigError> {
        self.accounts = self.raw.accounts.clone();
        if let Some(dir) = &self.accounts_dir {
            for account in crate::keys::dir::read_accounts(dir)? {
                match self
                    .accounts
                    .iter_mut()
                    .find(|a| a.account_sid == account.account_sid)
                {
                    Some(existing) => *existing = account,
                    None => self.accounts.push(account),
                }
            }
        }
        Ok(self)
    }

    /// Validates a raw configuration.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw.server.listen.parse().or_else(|_| {
            invalid(format!(
                "server.listen '{}' is not an address:port",
                raw.server.listen
            ))
        })?;
        if raw.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be at least 1");
        }
        if raw.server.body_read_timeout_ms == 0 {
            return invalid("server.body_read_timeout_ms must be at least 1");
        }
        if raw.server.reload_interval_ms < 100 {
            return invalid("server.reload_interval_ms must be at least 100");
        }

        let mut allowed = Vec::with_capacity(raw.upstream.allowed_hosts.len());
        for pattern in &raw.upstream.allowed_hosts {
            match HostPattern::parse(pattern) {
                Some(pattern) => allowed.push(pattern),
                None => {
                    return invalid(format!(
                        "upstream.allowed_hosts: '{pattern}' is not a host name or *.host pattern"
                    ))
                }
            }
        }
        // `*.com` would make the proxy send API-key credentials to any .com host.
        if let Some(broad) = allowed.iter().find(
            |p| matches!(p, HostPattern::Subdomains(suffix) if suffix.matches('.').count() < 2),
        ) {
            return invalid(format!(
                "upstream.allowed_hosts: '{broad}' is too broad: a wildcard needs at least two labels (*.twilio.com)"
            ));
        }
        if allowed.is_empty() {
            return invalid("upstream.allowed_hosts is empty: the proxy could reach nothing");
        }
        let Some(default_host) = crate::route::canonical_host(&raw.upstream.default_host) else {
            return invalid(format!(
                "upstream.default_host '{}' is not a host name",
                raw.upstream.default_host
            ));
        };
        let hosts = HostPolicy::new(allowed, default_host);
        if !hosts.is_allowed(hosts.default_host()) {
            return invalid(format!(
                "upstream.default_host '{}' is not in allowed_hosts",
                hosts.default_host()
            ));
        }

        let mut connect_to = Vec::with_capacity(raw.upstream.connect_to.len());
        for (host, address) in &raw.upstream.connect_to {
            let Some(pattern) = HostPattern::parse(host) else {
                return invalid(format!(
                    "upstream.connect_to: '{host}' is not a host name or *.host pattern"
                ));
            };
            if !address
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok())
            {
                return invalid(format!(
                    "upstream.connect_to.'{host}': '{address}' is not host:port"
                ));
            }
            connect_to.push((pattern, address.clone()));
        }
        // Exact names win over patterns.
        connect_to.sort_by_key(|(pattern, _)| matches!(pattern, HostPattern::Subdomains(_)));

        if raw.upstream.connect_timeout_ms == 0 || raw.upstream.request_timeout_ms == 0 {
            return invalid("upstream timeouts must be at least 1 ms");
        }
        if !(1..=MAX_TTL_SECS).contains(&raw.signing.ttl_secs) {
            return invalid(format!(
                "signing.ttl_secs must be 1–{MAX_TTL_SECS}, not {}",
                raw.signing.ttl_secs
            ));
        }

        let intercept = match (&raw.intercept.enabled, &raw.intercept.ca_cert_file, &raw.intercept.ca_key_file) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some(InterceptSettings {
                ca_cert_file: cert.clone(),
                ca_key_file: key.clone(),
            }),
            (true, _, _) => {
                return invalid("intercept.enabled needs ca_cert_file and ca_key_file (make them with `pkcv-proxy ca init`)")
            }
        };
        let mut passthrough_hosts = Vec::new();
        for pattern in &raw.intercept.passthrough_hosts {
            match HostPattern::parse(pattern) {
                Some(pattern) => passthrough_hosts.push(pattern),
                None => {
                    return invalid(format!(
                    "intercept.passthrough_hosts: '{pattern}' is not a host name or *.host pattern"
                ))
                }
            }
        }

        // A host both allowed and passed through would reach Twilio unsigned.
        for pass in &passthrough_hosts {
            if hosts.is_allowed(&pass.example())
                || hosts.allowed().iter().any(|a| pass.matches(&a.example()))
            {
                return invalid(format!(
                    "intercept.passthrough_hosts: '{pass}' overlaps upstream.allowed_hosts: Twilio traffic must be signed, never passed through"
                ));
            }
        }

        let mut seen = std::collections::HashSet::new();
        for account in &raw.accounts {
            account.validate()?;
            if !seen.insert(account.account_sid.as_str()) {
                return invalid(format!(
                    "account {} is configured twice",
                    account.account_sid
                ));
            }
        }

        Ok(Config {
            server: ServerSettings {
                listen,
                max_body_bytes: raw.server.max_body_bytes,
                reload_interval: Duration::from_millis(raw.server.reload_interval_ms),
                body_read_timeout: Duration::from_millis(raw.server.body_read_timeout_ms),
            },
            upstream: UpstreamSettings {
                hosts,
                extra_ca_file: raw.upstream.extra_ca_file.clone(),
                connect_to,
                connect_timeout: Duration::from_millis(raw.upstream.connect_timeout_ms),
                request_timeout: Duration::from_millis(raw.upstream.request_timeout_ms),
            },
            signing: SigningSettings {
                algorithm: raw.signing.algorithm,
                ttl_secs: raw.signing.ttl_secs,
            },
            log: raw.log.clone(),
            intercept,
            passthrough_hosts,
            accounts: raw.accounts.clone(),
            accounts_dir: raw.accounts_dir.clone(),
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(text))
            .extract()?;
        Config::from_raw(raw)
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
