//! The configuration as written: serde shapes with their defaults, before validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{AccountConfig, ClientConfig};
use crate::pkcs11::Digest;
use crate::signing_key::Algorithm;
use crate::token::MAX_TTL_SECS;

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
    /// `[telemetry]`
    pub telemetry: RawTelemetry,
    /// `[vault]`: Vault (or OpenBao) for `private_key = "vault-transit:…"` accounts.
    pub vault: RawVault,
    /// `[aws_kms]`: AWS KMS for `private_key = "aws-kms:…"` accounts.
    pub aws_kms: RawAwsKms,
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
    /// A corporate HTTP proxy every upstream connection goes through (`http://host:port`,
    /// no credentials in the URL).
    pub proxy: Option<String>,
    /// A file holding the proxy's `user:password` (owner-readable only).
    pub proxy_auth_file: Option<PathBuf>,
    /// An environment variable holding the proxy's `user:password`.
    pub proxy_auth_env: Option<String>,
    /// Hosts (or `*.` patterns) reached directly, not through `proxy`.
    pub no_proxy: Vec<String>,
    /// Read the process's own `HTTPS_PROXY`/`NO_PROXY` (off: only `proxy` and `no_proxy`).
    pub proxy_from_env: bool,
}

/// `[telemetry]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTelemetry {
    /// Forward the client's `traceparent`/`tracestate` to Twilio (off: they are removed).
    pub propagate_upstream: bool,
    /// Export each request's span over OTLP/HTTP (protobuf) to this URL, such as
    /// `http://127.0.0.1:4318/v1/traces` (the full URL, path included). Only in a binary
    /// built with the `otlp` feature; elsewhere setting it is an error.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the exported spans carry (default `pkcv-proxy`).
    pub otlp_service_name: Option<String>,
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
            proxy: None,
            proxy_auth_file: None,
            proxy_auth_env: None,
            no_proxy: Vec::new(),
            proxy_from_env: false,
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

/// `[vault]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawVault {
    /// `http(s)://host:port` of the Vault or OpenBao server (default: `VAULT_ADDR`).
    pub address: Option<String>,
    /// Where the transit engine is mounted.
    pub mount: String,
    /// A Vault Enterprise namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// Extra CA certificates (PEM) to trust for the server.
    pub ca_file: Option<PathBuf>,
    /// A file holding the token (owner-readable only); read again when it changes.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token (default `VAULT_TOKEN`).
    pub token_env: Option<String>,
    /// Kubernetes auth: the Vault role to log in as.
    pub kubernetes_role: Option<String>,
    /// Kubernetes auth: the service-account token.
    pub kubernetes_token_file: PathBuf,
    /// Kubernetes auth: where the method is mounted.
    pub kubernetes_mount: String,
    /// One signature's deadline, retries included, in milliseconds.
    pub sign_timeout_ms: u64,
    /// At most this many signatures in flight to the server.
    pub max_concurrent: u64,
}

impl Default for RawVault {
    fn default() -> Self {
        RawVault {
            address: None,
            mount: "transit".into(),
            namespace: None,
            ca_file: None,
            token_file: None,
            token_env: None,
            kubernetes_role: None,
            kubernetes_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            kubernetes_mount: "kubernetes".into(),
            sign_timeout_ms: 2_000,
            max_concurrent: 32,
        }
    }
}

/// `[aws_kms]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAwsKms {
    /// The AWS region (default: the SDK's, from `AWS_REGION` or the profile).
    pub region: Option<String>,
    /// Another endpoint (a VPC endpoint; tests).
    pub endpoint_url: Option<String>,
    /// A named profile of the shared AWS config.
    pub profile: Option<String>,
    /// One signature's deadline, retries included, in milliseconds.
    pub sign_timeout_ms: u64,
    /// At most this many signatures in flight to KMS.
    pub max_concurrent: u64,
}

impl Default for RawAwsKms {
    fn default() -> Self {
        RawAwsKms {
            region: None,
            endpoint_url: None,
            profile: None,
            sign_timeout_ms: 2_000,
            max_concurrent: 32,
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
