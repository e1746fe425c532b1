//! [`ConfigError`]: every way a configuration can be refused, each naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::load_error;

/// A configuration that cannot be used. Each message names the setting and what it takes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--config` names a file that is not there.
    #[error("config file {} does not exist", crate::files::Shown::from(.0.as_path()))]
    FileMissing(PathBuf),
    /// The file cannot be read, is not a regular file, or is larger than any config file.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The file is not UTF-8 text.
    #[error("config file {} is not UTF-8 text", crate::files::Shown::from(.0.as_path()))]
    NotText(PathBuf),
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
    /// `[telemetry] otlp_endpoint` is not an absolute http(s) URL without credentials.
    #[error("telemetry.otlp_endpoint '{value}' {problem}")]
    OtlpEndpoint {
        /// What it holds (without any userinfo).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `[telemetry] otlp_service_name` is empty or not plain text.
    #[error("telemetry.otlp_service_name must be 1 to 128 visible ASCII characters")]
    OtlpServiceName,
    /// `[telemetry] otlp_endpoint` is set in a binary built without span export.
    #[error("telemetry.otlp_endpoint is set, but this pkcv-proxy was built without span export: build it with `cargo build --release --features otlp` (docs/operations.md, \"Span export over OTLP\"), or remove the setting")]
    OtlpNotBuilt,
    /// `[upstream] proxy` and its companions (egress through a corporate proxy).
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressConfigError),
    /// `[vault]` or `[aws_kms]` does not fit together.
    #[error("[{section}] {problem}")]
    KeyService {
        /// The section.
        section: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Load(Box::new(err))
    }
}
