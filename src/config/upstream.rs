//! `[upstream]` and `[intercept]`: which hosts the proxy reaches, how, and which it tunnels
//! untouched.

use std::path::PathBuf;
use std::time::Duration;

use super::millis;
use super::raw::{RawIntercept, RawUpstream};
use super::{in_range, ConfigError};
use crate::route::{HostPattern, HostPolicy};

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
    /// The corporate egress proxy, if any.
    pub proxy: Option<crate::egress::EgressSettings>,
}

impl UpstreamSettings {
    /// How every outbound connection is opened: `connect_to`, the connect timeout and the
    /// egress proxy (whose credentials are read now).
    pub(crate) fn dialer(&self) -> Result<crate::egress::Dialer, crate::egress::EgressLoadError> {
        crate::egress::Dialer::new(&self.connect_to, self.connect_timeout, self.proxy.as_ref())
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

pub(super) fn upstream_settings(raw: &RawUpstream) -> Result<UpstreamSettings, ConfigError> {
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
        proxy: egress_settings(raw)?,
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

/// `[upstream] proxy`, `proxy_auth_file`/`proxy_auth_env` (one of them) and `no_proxy`.
fn egress_settings(
    raw: &RawUpstream,
) -> Result<Option<crate::egress::EgressSettings>, ConfigError> {
    let auth = raw.proxy_auth_file.is_some() || raw.proxy_auth_env.is_some();
    if auth && raw.proxy.as_deref().unwrap_or_default().is_empty() && !raw.proxy_from_env {
        return Err(crate::egress::EgressConfigError::AuthWithoutProxy.into());
    }
    Ok(crate::egress::settings(
        raw.proxy.as_deref(),
        raw.proxy_auth_file.as_deref(),
        raw.proxy_auth_env.as_deref(),
        &raw.no_proxy,
    )?)
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

pub(super) fn intercept_settings(
    raw: &RawIntercept,
) -> Result<Option<InterceptSettings>, ConfigError> {
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
pub(super) fn passthrough_hosts(
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
pub(super) fn check_connect_to(
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
