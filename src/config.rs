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

mod load_error;

use crate::pkcs11::{Digest, Pkcs11Settings, Pkcs11Uri};
use crate::route::{HostPattern, HostPolicy};
use crate::sid::is_sid;
use crate::signing_key::Retry;
use crate::token::{Algorithm, MAX_TTL_SECS};

/// The status file's name in `accounts_dir` when `server.status_file` is not set.
pub const STATUS_FILE_NAME: &str = ".pkcv-proxy-loaded.json";

/// Prefix of the environment variables that override the file (`PKCV_SERVER__LISTEN`).
pub const ENV_PREFIX: &str = "PKCV_";

/// A configuration that cannot be used. Each message names the setting and what it takes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--config` names a file that is not there.
    #[error("config file {} does not exist", crate::files::Shown::from(.0.as_path()))]
    FileMissing(PathBuf),
    /// The file or environment could not be read or does not have the expected shape.
    #[error("{}", load_error::describe(.0))]
    Load(Box<figment::Error>),
    /// An address setting is not `ip:port`.
    #[error("{key} '{value}' is not an ip:port address such as 127.0.0.1:8080")]
    NotAnAddress {
        /// The setting.
        key: &'static str,
        /// What it holds.
        value: String,
    },
    /// A path names `${CREDENTIALS_DIRECTORY}` but systemd did not set it.
    #[error("{} names ${{CREDENTIALS_DIRECTORY}}, which is not set: run the proxy under systemd with LoadCredential= for it", .0.display())]
    NoCredentialsDirectory(PathBuf),
    /// The mutual-TLS listener's settings do not fit together.
    #[error("{0}")]
    TlsListener(&'static str),
    /// The admin listener would share the proxy's port.
    #[error("server.admin_listen must differ from server.listen ({0}): the proxy port never serves admin paths")]
    SameAddress(SocketAddr),
    /// A number is outside what the setting takes.
    #[error("{key} must be {range}, not {value}")]
    OutOfRange {
        /// The setting.
        key: &'static str,
        /// What it holds.
        value: u64,
        /// What it takes, for a person.
        range: &'static str,
    },
    /// A host setting is not a host name or `*.` pattern.
    #[error("{key}: '{value}' is not a host name or *.host pattern")]
    NotAHostPattern {
        /// The setting.
        key: &'static str,
        /// The entry.
        value: String,
    },
    /// A wildcard so broad it would send credentials far beyond Twilio.
    #[error("upstream.allowed_hosts: '{0}' is too broad: a wildcard needs at least two labels (*.twilio.com)")]
    TooBroad(String),
    /// The allow-list is empty.
    #[error("upstream.allowed_hosts is empty: the proxy could reach nothing")]
    NoAllowedHosts,
    /// The default host is not a host name.
    #[error("upstream.default_host '{0}' is not a host name")]
    NotAHost(String),
    /// The default host is not allowed.
    #[error("upstream.default_host '{0}' is not in allowed_hosts")]
    DefaultHostNotAllowed(String),
    /// A `connect_to` address is not `host:port`.
    #[error("upstream.connect_to.'{host}': '{address}' is not host:port")]
    NotADialAddress {
        /// The host it is for.
        host: String,
        /// What it holds.
        address: String,
    },
    /// Interception is on but a CA file is not named.
    #[error("intercept.enabled needs {0} (make the CA with `pkcv-proxy ca init`)")]
    InterceptNeedsCa(&'static str),
    /// A host pattern that would reach far beyond Twilio, or is not a name at all.
    #[error("{key}: '{value}' {problem}")]
    UnsafeHostPattern {
        /// The setting.
        key: &'static str,
        /// The entry.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A `connect_to` entry for a host the proxy never contacts.
    #[error("upstream.connect_to: '{0}' matches neither upstream.allowed_hosts nor intercept.passthrough_hosts, so it would never be used")]
    UnusedConnectTo(String),
    /// A passthrough pattern also matches allowed (signed) hosts.
    #[error("intercept.passthrough_hosts: '{0}' overlaps upstream.allowed_hosts: Twilio traffic must be signed, never passed through")]
    PassthroughOverlaps(String),
    /// The log filter does not parse.
    #[error("log.level '{value}' is not a valid filter (such as info, debug or pkcv_proxy=debug): {reason}")]
    LogLevel {
        /// What it holds.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A SID has the wrong shape.
    #[error("{context}: '{value}' is not {what} ({prefix} followed by 32 hex digits)")]
    NotASid {
        /// Where it was found.
        context: String,
        /// What it holds.
        value: String,
        /// What it should be, for a person.
        what: &'static str,
        /// The prefix it should have.
        prefix: &'static str,
    },
    /// A `[[clients]]` entry that cannot be used.
    #[error("[[clients]] {name}: {problem}")]
    Client {
        /// The client's name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A placeholder SID from the example config, not yet replaced.
    #[error("{context}: '{value}' is the example's placeholder: replace it with {what} from your Twilio Console")]
    Placeholder {
        /// Where it was found.
        context: String,
        /// What it holds.
        value: String,
        /// What belongs there.
        what: &'static str,
    },
    /// One account SID configured twice.
    #[error("account {0} is configured twice")]
    DuplicateAccount(String),
    /// Both `[pkcs11] pin_file` and `pin_env`.
    #[error("[pkcs11] sets both pin_file and pin_env: keep one")]
    PinSources,
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Load(Box::new(err))
    }
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
    /// `[pkcs11]`: the HSM module and PIN for `private_key = "pkcs11:…"` accounts.
    pub pkcs11: RawPkcs11,
    /// `[[accounts]]`
    pub accounts: Vec<AccountConfig>,
    /// `[[clients]]`: who may use the proxy (empty: anyone who can connect).
    pub clients: Vec<ClientConfig>,
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
    /// Time a client gets to send a request head, in seconds.
    pub header_read_timeout_secs: u64,
    /// Time a client gets to finish the TLS handshake inside a `CONNECT` tunnel, in seconds.
    pub tls_handshake_timeout_secs: u64,
    /// After SIGTERM/SIGINT, time in-flight requests and tunnels get to finish, in seconds.
    pub shutdown_grace_secs: u64,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`); `""` disables it.
    pub admin_listen: String,
    /// Client connections held at once (tunnels included); beyond, a new one is closed.
    pub max_connections: u64,
    /// Requests being signed or forwarded at once; beyond, 503 with `Retry-After`.
    pub max_in_flight: u64,
    /// Request body bytes held at once across all requests.
    pub max_buffered_bytes: u64,
    /// A keep-alive connection with no request in progress is closed after this, in seconds.
    pub idle_timeout_secs: u64,
    /// A client connection to which nothing could be written for this long (a client that
    /// does not read its response) is closed, and its upstream connection discarded, in
    /// milliseconds.
    pub response_write_timeout_ms: u64,
    /// Threads serving connections (the async runtime's workers); 0: one per core.
    pub worker_threads: u64,
    /// Where a running proxy reports what it signs with (default
    /// `accounts_dir/.pkcv-proxy-loaded.json`).
    pub status_file: Option<PathBuf>,
    /// A second listener speaking TLS that asks for client certificates; `""` disables it.
    pub tls_listen: String,
    /// Its certificate chain (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The CA (PEM) that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 10 * 1024 * 1024,
            reload_interval_ms: 2_000,
            body_read_timeout_ms: 60_000,
            header_read_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            shutdown_grace_secs: 30,
            admin_listen: "127.0.0.1:9090".into(),
            max_connections: 10_000,
            max_in_flight: 1_024,
            max_buffered_bytes: 256 * 1024 * 1024,
            idle_timeout_secs: 60,
            response_write_timeout_ms: 30_000,
            worker_threads: 0,
            status_file: None,
            tls_listen: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
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
    /// Time allowed between two chunks of a response body.
    pub response_idle_timeout_ms: u64,
    /// Offer HTTP/2 to Twilio (off: HTTP/1.1, as the official SDKs speak).
    pub http2: bool,
    /// Requests (over HTTP/1.1: connections) in progress to one host at most.
    pub max_connections_per_host: u64,
    /// Connections to all upstream hosts together, busy and idle; 0: what the open-files
    /// limit leaves after `server.max_connections` and a reserve.
    pub max_connections_total: u64,
    /// An idle pooled upstream connection is closed after this, in milliseconds.
    pub pool_idle_timeout_ms: u64,
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
            response_idle_timeout_ms: 60_000,
            http2: false,
            max_connections_per_host: 64,
            max_connections_total: 0,
            pool_idle_timeout_ms: 90_000,
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
    /// Sign with PEM keys on the signing pool instead of inline on the request's task.
    pub pem_on_pool: bool,
    /// Signing threads; 0 means one per core.
    pub pool_threads: u64,
    /// Signatures waiting for a signing thread at most; beyond, 503.
    pub pool_queue: u64,
}

impl Default for RawSigning {
    fn default() -> Self {
        RawSigning {
            algorithm: Algorithm::Rs256,
            ttl_secs: MAX_TTL_SECS,
            pem_on_pool: false,
            pool_threads: 0,
            pool_queue: 256,
        }
    }
}

/// `[pkcs11]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPkcs11 {
    /// The PKCS#11 library; a URI's `module-path` overrides it.
    pub module: Option<PathBuf>,
    /// A file holding the user PIN (owner-readable only).
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// The first wait before reconnecting a lost token, in milliseconds.
    pub reconnect_min_ms: u64,
    /// The longest wait between reconnection attempts, in seconds.
    pub reconnect_max_secs: u64,
    /// Where the SHA-256 of what is signed is computed: `auto`, `token` or `proxy`.
    pub digest: Digest,
}

impl Default for RawPkcs11 {
    fn default() -> Self {
        RawPkcs11 {
            module: None,
            pin_file: None,
            pin_env: None,
            reconnect_min_ms: 250,
            reconnect_max_secs: 30,
            digest: Digest::Auto,
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
}

impl PrivateKey {
    /// The PEM file, if the key is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            PrivateKey::File(path) => Some(path),
            PrivateKey::Pkcs11(_) => None,
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
            (None, Some(_)) => {
                return Err(format!(
                    "account {}: private_key takes only a pkcs11: URI (a PEM file goes in private_key_file)",
                    raw.account_sid
                ))
            }
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

fn expect_sid(
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

/// One `[[clients]]` entry: a client allowed to use the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Its name: the `Proxy-Authorization` Basic username, or its certificate's SAN.
    pub name: String,
    /// The SHA-256 (hex) of its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// A file holding its secret (not readable by others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// If non-empty, the only accounts it may have requests signed for.
    #[serde(default)]
    pub accounts: Vec<String>,
}

impl ClientConfig {
    /// Checks the name, the secret's form and the account SIDs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |problem| ConfigError::Client {
            name: self.name.chars().take(64).collect(),
            problem,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 253
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
        if !name_ok {
            return Err(invalid("the name must be 1–253 letters, digits or . _ - : / @ (a Basic username or a certificate's DNS or URI name)"));
        }
        if self.secret_sha256.is_some() && self.secret_file.is_some() {
            return Err(invalid("set secret_sha256 or secret_file, not both"));
        }
        let has_secret = self.secret_sha256.is_some() || self.secret_file.is_some();
        if has_secret && self.name.contains(':') {
            // Basic auth splits `name:secret` at the first ':': such a name could never log
            // in, or would log in as another client.
            return Err(invalid(
                "a name with ':' is for a client certificate (spiffe://…) and takes no secret",
            ));
        }
        let digest_ok =
            |hex: &String| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if self
            .secret_sha256
            .as_ref()
            .is_some_and(|hex| !digest_ok(hex))
        {
            return Err(invalid(
                "secret_sha256 must be 64 hex digits (printf %s SECRET | sha256sum)",
            ));
        }
        for account in &self.accounts {
            expect_sid(account, "AC", "an Account SID", || {
                format!("[[clients]] {} accounts", self.name)
            })?;
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
    /// Request head read deadline.
    pub header_read_timeout: Duration,
    /// TLS handshake deadline inside tunnels.
    pub tls_handshake_timeout: Duration,
    /// Drain time after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The admin listener, if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Client connections held at once.
    pub max_connections: usize,
    /// Requests being signed or forwarded at once.
    pub max_in_flight: usize,
    /// Request body bytes held at once.
    pub max_buffered_bytes: u64,
    /// Idle keep-alive connection timeout.
    pub idle_timeout: Duration,
    /// How long writing to a client may make no progress.
    pub response_write_timeout: Duration,
    /// The async runtime's worker threads (resolved: never 0).
    pub worker_threads: usize,
    /// The status file, if any (explicit, or in `accounts_dir`).
    pub status_file: Option<PathBuf>,
    /// The mutual-TLS listener, if enabled.
    pub tls: Option<TlsListenerSettings>,
}

/// The mutual-TLS listener: clients prove who they are with a certificate.
#[derive(Debug, Clone)]
pub struct TlsListenerSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its certificate chain.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA client certificates must chain to.
    pub client_ca_file: PathBuf,
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
    /// Response-body idle timeout.
    pub response_idle_timeout: Duration,
    /// Whether HTTP/2 is offered upstream.
    pub http2: bool,
    /// Requests in progress to one host at most.
    pub max_connections_per_host: usize,
    /// Connections to all hosts together; 0 until `App::build` derives it from the
    /// open-files limit (0 there: no cap).
    pub max_connections_total: usize,
    /// Idle pooled connection lifetime.
    pub pool_idle_timeout: Duration,
}

/// How tokens are minted.
#[derive(Debug, Clone, Copy)]
pub struct SigningSettings {
    /// The JWS algorithm.
    pub algorithm: Algorithm,
    /// Token lifetime (≤ 300 s).
    pub ttl_secs: u64,
    /// Whether PEM keys sign on the signing pool.
    pub pem_on_pool: bool,
    /// Signing threads (0: one per core).
    pub pool_threads: usize,
    /// Queue length in front of them.
    pub pool_queue: usize,
}

impl SigningSettings {
    /// How many signing threads run: `pool_threads`, or one per core.
    pub fn threads(&self) -> usize {
        match self.pool_threads {
            0 => cores(),
            threads => threads,
        }
    }
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
    /// `[pkcs11]`, with one session per signing thread.
    pub pkcs11: Pkcs11Settings,
    /// `[log]`
    pub log: RawLog,
    /// `[intercept]`, if enabled.
    pub intercept: Option<InterceptSettings>,
    /// Hosts tunnelled untouched on `CONNECT` (empty unless configured).
    pub passthrough_hosts: Vec<HostPattern>,
    /// `[[clients]]`: who may use the proxy; none means anyone who can connect.
    pub clients: Vec<ClientConfig>,
    /// `[[accounts]]` as the config file has them (`accounts_dir`'s files are merged in by
    /// [`crate::keys`], which reads them afresh on every reload).
    pub accounts: Vec<AccountConfig>,
    /// `accounts_dir`, if set.
    pub accounts_dir: Option<PathBuf>,
    /// What it was built from, for `check-config`.
    pub raw: RawConfig,
}

impl Config {
    /// Reads `file` (if given) and `PKCV_…` variables over the defaults, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_raw(figment(file)?.extract()?)
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
        let raw = expand_paths(raw)?;
        let server = server_settings(&raw.server, raw.accounts_dir.as_deref())?;
        let upstream = upstream_settings(&raw.upstream)?;
        let signing = signing_settings(&raw.signing)?;
        let pkcs11 = pkcs11_settings(&raw.pkcs11, &signing)?;
        validate_log(&raw.log)?;
        let intercept = intercept_settings(&raw.intercept)?;
        let passthrough_hosts = passthrough_hosts(&raw.intercept, &upstream.hosts)?;
        check_connect_to(&upstream, &passthrough_hosts)?;
        validate_accounts(&raw.accounts)?;
        validate_clients(&raw.clients)?;
        Ok(Config {
            server,
            upstream,
            signing,
            pkcs11,
            log: raw.log.clone(),
            intercept,
            passthrough_hosts,
            accounts: raw.accounts.clone(),
            clients: raw.clients.clone(),
            accounts_dir: raw.accounts_dir.clone(),
            raw,
        })
    }
}

/// The defaults, `file` over them (if given) and `PKCV_…` variables over that.
fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::FileMissing(file.to_path_buf()));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    // PKCV_CONFIG names the file itself (see the CLI); it is not a config key.
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])))
}

/// `${CREDENTIALS_DIRECTORY}` in a path setting, as systemd's `LoadCredential=` provides it:
/// expanded from the environment, and an error when it is unset (a unit that forgot
/// `LoadCredential=` must not fall back to a path relative to the working directory).
pub fn expand_credentials(path: &Path) -> Result<PathBuf, ConfigError> {
    crate::files::expand_credentials(path)
        .map_err(|_| ConfigError::NoCredentialsDirectory(path.to_path_buf()))
}

/// `[pkcs11]`'s path settings with `${CREDENTIALS_DIRECTORY}` expanded.
fn expand_pkcs11_paths(raw: &mut RawPkcs11) -> Result<(), ConfigError> {
    for path in [&mut raw.module, &mut raw.pin_file].into_iter().flatten() {
        *path = expand_credentials(path)?;
    }
    Ok(())
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

fn server_settings(
    raw: &RawServer,
    accounts_dir: Option<&Path>,
) -> Result<ServerSettings, ConfigError> {
    let listen = parse_address("server.listen", &raw.listen)?;
    let admin_listen = match raw.admin_listen.trim() {
        "" => None,
        address => Some(parse_address("server.admin_listen", address)?),
    };
    if admin_listen.is_some_and(|admin| admin == listen && admin.port() != 0) {
        return Err(ConfigError::SameAddress(listen));
    }
    let max_body_bytes = in_range(
        "server.max_body_bytes",
        raw.max_body_bytes,
        1..=u64::MAX,
        "at least 1",
    )?;
    let max_buffered_bytes = in_range(
        "server.max_buffered_bytes",
        raw.max_buffered_bytes,
        max_body_bytes..=u64::MAX,
        "at least server.max_body_bytes",
    )?;
    let limits = |key, value| in_range(key, value, 1..=1_000_000, "1–1000000").map(|v| v as usize);
    let reload = in_range(
        "server.reload_interval_ms",
        raw.reload_interval_ms,
        100..=u64::MAX,
        "at least 100",
    )?;
    let header_read = in_range(
        "server.header_read_timeout_secs",
        raw.header_read_timeout_secs,
        1..=3600,
        "1–3600",
    )?;
    let tls_handshake = in_range(
        "server.tls_handshake_timeout_secs",
        raw.tls_handshake_timeout_secs,
        1..=300,
        "1–300",
    )?;
    let idle = in_range(
        "server.idle_timeout_secs",
        raw.idle_timeout_secs,
        1..=86_400,
        "1–86400",
    )?;
    let grace = in_range(
        "server.shutdown_grace_secs",
        raw.shutdown_grace_secs,
        0..=3600,
        "0–3600",
    )?;
    let status_file = raw
        .status_file
        .clone()
        .or_else(|| accounts_dir.map(|dir| dir.join(STATUS_FILE_NAME)));
    Ok(ServerSettings {
        listen,
        max_body_bytes,
        reload_interval: Duration::from_millis(reload),
        body_read_timeout: millis("server.body_read_timeout_ms", raw.body_read_timeout_ms)?,
        header_read_timeout: Duration::from_secs(header_read),
        tls_handshake_timeout: Duration::from_secs(tls_handshake),
        shutdown_grace: Duration::from_secs(grace),
        admin_listen,
        max_connections: limits("server.max_connections", raw.max_connections)?,
        max_in_flight: limits("server.max_in_flight", raw.max_in_flight)?,
        max_buffered_bytes,
        idle_timeout: Duration::from_secs(idle),
        response_write_timeout: millis(
            "server.response_write_timeout_ms",
            raw.response_write_timeout_ms,
        )?,
        worker_threads: worker_threads(raw.worker_threads)?,
        status_file,
        tls: tls_listener(raw, listen, admin_listen)?,
    })
}

/// A duration in milliseconds, at least 1.
fn millis(key: &'static str, value: u64) -> Result<Duration, ConfigError> {
    in_range(key, value, 1..=u64::MAX, "at least 1").map(Duration::from_millis)
}

/// The cores this process may use: what `0` means for the thread counts.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// `server.worker_threads`, 0 meaning one per core.
fn worker_threads(configured: u64) -> Result<usize, ConfigError> {
    match in_range("server.worker_threads", configured, 0..=1024, "0–1024")? {
        0 => Ok(cores()),
        threads => Ok(threads as usize),
    }
}

/// The mutual-TLS listener: all of its settings, or none.
fn tls_listener(
    raw: &RawServer,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<Option<TlsListenerSettings>, ConfigError> {
    let named = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
    let files = (
        named(&raw.tls_cert_file),
        named(&raw.tls_key_file),
        named(&raw.client_ca_file),
    );
    let address = raw.tls_listen.trim();
    if address.is_empty() {
        if files.0.is_some() || files.1.is_some() || files.2.is_some() {
            return Err(ConfigError::TlsListener("server.tls_cert_file, tls_key_file and client_ca_file are set but server.tls_listen is not"));
        }
        return Ok(None);
    }
    let tls_listen = parse_address("server.tls_listen", address)?;
    let taken = tls_listen == listen || Some(tls_listen) == admin;
    if taken && tls_listen.port() != 0 {
        return Err(ConfigError::TlsListener(
            "server.tls_listen must differ from listen and admin_listen",
        ));
    }
    match files {
        (Some(cert_file), Some(key_file), Some(client_ca_file)) => Ok(Some(TlsListenerSettings {
            listen: tls_listen,
            cert_file,
            key_file,
            client_ca_file,
        })),
        _ => Err(ConfigError::TlsListener(
            "server.tls_listen needs tls_cert_file, tls_key_file and client_ca_file",
        )),
    }
}

fn parse_address(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::NotAnAddress {
            key,
            value: value.to_owned(),
        })
}

/// Parses every entry of a host-pattern list, refusing what is not a plain DNS name under
/// a registrable domain.
fn host_patterns(key: &'static str, patterns: &[String]) -> Result<Vec<HostPattern>, ConfigError> {
    patterns
        .iter()
        .map(|pattern| {
            let unsafe_pattern = |problem| ConfigError::UnsafeHostPattern {
                key,
                value: pattern.clone(),
                problem,
            };
            if pattern.ends_with('.') {
                return Err(unsafe_pattern("ends with a dot: write the name without it"));
            }
            let parsed =
                HostPattern::parse(pattern).ok_or_else(|| ConfigError::NotAHostPattern {
                    key,
                    value: pattern.clone(),
                })?;
            let name = pattern.strip_prefix("*.").unwrap_or(pattern);
            if name.parse::<std::net::IpAddr>().is_ok() || numeric_tld(name) {
                return Err(unsafe_pattern("is an IP address: name hosts by DNS name"));
            }
            // A single label (`*.com`) is refused as too broad where the wildcard is checked.
            if name.contains('.') && is_public_suffix(name) {
                return Err(unsafe_pattern(
                    "is a public suffix (like com or co.uk): it would match every site under it",
                ));
            }
            Ok(parsed)
        })
        .collect()
}

/// Whether the last label is a number (`127.1`, `2130706433`, `0x7f.1`, the `1` of
/// `*.0.0.1`): no top-level domain is, but a resolver reads such a name as an IPv4 address.
fn numeric_tld(name: &str) -> bool {
    let last = name
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || hex
}

/// Whether `name` is itself on the public suffix list (`co.uk`, `github.io`), not a name
/// registered under one.
fn is_public_suffix(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    psl::suffix(name.as_bytes())
        .is_some_and(|suffix| suffix.is_known() && suffix.as_bytes() == name.as_bytes())
}

fn upstream_settings(raw: &RawUpstream) -> Result<UpstreamSettings, ConfigError> {
    let hosts = host_policy(raw)?;
    let mut connect_to = Vec::with_capacity(raw.connect_to.len());
    for (host, address) in &raw.connect_to {
        let pattern = host_patterns("upstream.connect_to", std::slice::from_ref(host))?.remove(0);
        let is_host_port = address
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
        if !is_host_port {
            return Err(ConfigError::NotADialAddress {
                host: host.clone(),
                address: address.clone(),
            });
        }
        connect_to.push((pattern, address.clone()));
    }
    // Exact names win over patterns.
    connect_to.sort_by_key(|(pattern, _)| matches!(pattern, HostPattern::Subdomains(_)));
    let connect = in_range(
        "upstream.connect_timeout_ms",
        raw.connect_timeout_ms,
        1..=u64::MAX,
        "at least 1",
    )?;
    let request = in_range(
        "upstream.request_timeout_ms",
        raw.request_timeout_ms,
        1..=u64::MAX,
        "at least 1",
    )?;
    let response_idle = in_range(
        "upstream.response_idle_timeout_ms",
        raw.response_idle_timeout_ms,
        1..=u64::MAX,
        "at least 1",
    )?;
    Ok(UpstreamSettings {
        hosts,
        extra_ca_file: raw.extra_ca_file.clone(),
        connect_to,
        connect_timeout: Duration::from_millis(connect),
        request_timeout: Duration::from_millis(request),
        response_idle_timeout: Duration::from_millis(response_idle),
        http2: raw.http2,
        max_connections_per_host: in_range(
            "upstream.max_connections_per_host",
            raw.max_connections_per_host,
            1..=100_000,
            "1–100000",
        )? as usize,
        max_connections_total: in_range(
            "upstream.max_connections_total",
            raw.max_connections_total,
            0..=1_000_000,
            "0–1000000",
        )? as usize,
        pool_idle_timeout: millis("upstream.pool_idle_timeout_ms", raw.pool_idle_timeout_ms)?,
    })
}

/// The allow-list and the default host, which must be on it.
fn host_policy(raw: &RawUpstream) -> Result<HostPolicy, ConfigError> {
    let allowed = host_patterns("upstream.allowed_hosts", &raw.allowed_hosts)?;
    // `*.com` would make the proxy send API-key credentials to any .com host.
    if let Some(broad) = allowed
        .iter()
        .find(|p| matches!(p, HostPattern::Subdomains(suffix) if suffix.matches('.').count() < 2))
    {
        return Err(ConfigError::TooBroad(broad.to_string()));
    }
    if allowed.is_empty() {
        return Err(ConfigError::NoAllowedHosts);
    }
    let default_host = crate::route::canonical_host(&raw.default_host)
        .filter(|host| !numeric_tld(host))
        .ok_or_else(|| ConfigError::NotAHost(raw.default_host.clone()))?;
    let hosts = HostPolicy::new(allowed, default_host);
    if !hosts.is_allowed(hosts.default_host()) {
        return Err(ConfigError::DefaultHostNotAllowed(
            hosts.default_host().to_owned(),
        ));
    }
    Ok(hosts)
}

fn signing_settings(raw: &RawSigning) -> Result<SigningSettings, ConfigError> {
    let ttl_secs = in_range("signing.ttl_secs", raw.ttl_secs, 1..=MAX_TTL_SECS, "1–300")?;
    Ok(SigningSettings {
        algorithm: raw.algorithm,
        ttl_secs,
        pem_on_pool: raw.pem_on_pool,
        pool_threads: in_range("signing.pool_threads", raw.pool_threads, 0..=256, "0–256")?
            as usize,
        pool_queue: in_range(
            "signing.pool_queue",
            raw.pool_queue,
            1..=1_000_000,
            "1–1000000",
        )? as usize,
    })
}

fn pkcs11_settings(
    raw: &RawPkcs11,
    signing: &SigningSettings,
) -> Result<Pkcs11Settings, ConfigError> {
    if raw.pin_file.is_some() && raw.pin_env.is_some() {
        return Err(ConfigError::PinSources);
    }
    let first = in_range(
        "pkcs11.reconnect_min_ms",
        raw.reconnect_min_ms,
        10..=60_000,
        "10–60000",
    )?;
    let max = in_range(
        "pkcs11.reconnect_max_secs",
        raw.reconnect_max_secs,
        1..=3_600,
        "1–3600",
    )?;
    Ok(Pkcs11Settings {
        module: raw.module.clone(),
        pin_file: raw.pin_file.clone(),
        pin_env: raw.pin_env.clone(),
        sessions: signing.threads(),
        retry: Retry {
            first: Duration::from_millis(first),
            max: Duration::from_secs(max).max(Duration::from_millis(first)),
        },
        digest: raw.digest,
    })
}

fn validate_log(raw: &RawLog) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&raw.level)
        .map(drop)
        .map_err(|err| ConfigError::LogLevel {
            value: raw.level.clone(),
            reason: err.to_string(),
        })
}

fn intercept_settings(raw: &RawIntercept) -> Result<Option<InterceptSettings>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    // An empty path is as good as none: say which key is missing, not "No such file".
    let named = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
    match (named(&raw.ca_cert_file), named(&raw.ca_key_file)) {
        (Some(ca_cert_file), Some(ca_key_file)) => Ok(Some(InterceptSettings {
            ca_cert_file,
            ca_key_file,
        })),
        (None, None) => Err(ConfigError::InterceptNeedsCa(
            "intercept.ca_cert_file and intercept.ca_key_file",
        )),
        (None, _) => Err(ConfigError::InterceptNeedsCa("intercept.ca_cert_file")),
        (_, None) => Err(ConfigError::InterceptNeedsCa("intercept.ca_key_file")),
    }
}

/// The passthrough patterns, none of which may overlap the allow-list: a host both allowed
/// and passed through would reach Twilio unsigned.
fn passthrough_hosts(
    raw: &RawIntercept,
    hosts: &HostPolicy,
) -> Result<Vec<HostPattern>, ConfigError> {
    let passthrough = host_patterns("intercept.passthrough_hosts", &raw.passthrough_hosts)?;
    for pass in &passthrough {
        if hosts.is_allowed(&pass.example())
            || hosts.allowed().iter().any(|a| pass.matches(&a.example()))
        {
            return Err(ConfigError::PassthroughOverlaps(pass.to_string()));
        }
    }
    Ok(passthrough)
}

/// Every `connect_to` entry must be for a host the proxy may contact.
fn check_connect_to(
    upstream: &UpstreamSettings,
    passthrough: &[HostPattern],
) -> Result<(), ConfigError> {
    for (pattern, _) in &upstream.connect_to {
        let example = pattern.example();
        let used = upstream.hosts.is_allowed(&example)
            || passthrough.iter().any(|pass| pass.matches(&example));
        if !used {
            return Err(ConfigError::UnusedConnectTo(pattern.to_string()));
        }
    }
    Ok(())
}

fn validate_clients(clients: &[ClientConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for client in clients {
        client.validate()?;
        if !seen.insert(client.name.as_str()) {
            return Err(ConfigError::Client {
                name: client.name.clone(),
                problem: "configured twice",
            });
        }
    }
    Ok(())
}

fn validate_accounts(accounts: &[AccountConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for account in accounts {
        account.validate()?;
        if !seen.insert(account.account_sid.as_str()) {
            return Err(ConfigError::DuplicateAccount(account.account_sid.clone()));
        }
    }
    Ok(())
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
    fn an_account_has_exactly_one_key_and_private_key_takes_only_pkcs11_uris() {
        let account = |keys: &str| {
            format!(
                "[[accounts]]\naccount_sid = \"ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4\"\n\
                 credential_sid = \"CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d\"\n{keys}"
            )
        };
        let uri = r#"private_key = "pkcs11:token=pkcv;object=main;type=private""#;
        let config = from_toml(&account(uri)).unwrap();
        match &config.accounts[0].private_key {
            PrivateKey::Pkcs11(uri) => assert_eq!(uri.object.as_deref(), Some("main")),
            other => panic!("{other:?}"),
        }
        // Written back, it reads the same.
        let written = toml::to_string(&config.raw).unwrap();
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
            refused(file).contains("takes only a pkcs11: URI"),
            "{}",
            refused(file)
        );
        let pin = r#"private_key = "pkcs11:object=k?pin-value=8642""#;
        assert!(refused(pin).contains("pin-value") && !refused(pin).contains("8642"));
        let both_pins = "[pkcs11]\npin_file = \"p\"\npin_env = \"P\"";
        assert!(matches!(from_toml(both_pins), Err(ConfigError::PinSources)));
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
