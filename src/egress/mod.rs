//! Egress through a corporate HTTP proxy (`[upstream] proxy`).
//!
//! Where the only way out of a network is an HTTP proxy, every connection the proxy makes
//! upstream (Twilio hosts and `passthrough_hosts` alike) is opened as a `CONNECT host:443`
//! tunnel through it, unless `no_proxy` matches the host. The TLS to Twilio then runs end to
//! end inside the tunnel with the usual verification: the corporate proxy sees the host name
//! and the bytes' sizes, never a header, a body or a token.
//!
//! - Only `http://` proxies, for now: the hop to the corporate proxy itself is plain TCP.
//! - Credentials never sit in the URL: `proxy_auth_file` or `proxy_auth_env` hold
//!   `user:password`, sent as `Proxy-Authorization: Basic …` on each `CONNECT`, and shown
//!   nowhere (not in errors, logs, `Debug` output or `check-config`).
//! - Where `connect_to` maps a host, the `CONNECT` names the mapped address.
//! - The answer's head is read within the connect timeout and at most [`MAX_RESPONSE_HEAD`]
//!   bytes. A refusal or a `407` is 502 `79044`; a proxy that cannot be reached is 502
//!   `79045`; a proxy that does not answer in time is 504 `79041`, as any connect timeout.
//! - `proxy_from_env` reads the process's own `HTTPS_PROXY`/`NO_PROXY` (off by default, so
//!   variables set for the *apps*, which point at this proxy, never loop back into it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod dial;

pub(crate) use dial::{DialError, Dialer};

use crate::error::ProxyError;
use crate::route::HostPattern;

/// The most bytes of the corporate proxy's answer to `CONNECT` that are read.
pub(crate) const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// `[upstream] proxy` and its companions, validated. Holds where the credentials are, never
/// the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSettings {
    /// The proxy's `host:port`.
    pub address: String,
    /// A file holding `user:password`.
    pub auth_file: Option<PathBuf>,
    /// An environment variable holding `user:password`.
    pub auth_env: Option<String>,
    /// Hosts reached directly, not through the proxy.
    pub no_proxy: Vec<HostPattern>,
}

/// Why the egress settings cannot be used. No message carries a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressConfigError {
    /// Not an `http://host:port` URL.
    #[error("{key} '{shown}' is not an http://host:port URL ({problem}); only http:// proxies are supported for now")]
    NotAProxyUrl {
        /// The setting or variable.
        key: String,
        /// What it holds, with any credentials removed.
        shown: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Credentials in the URL.
    #[error("{key} holds credentials in the URL ('{shown}'): put user:password in upstream.proxy_auth_file or proxy_auth_env instead")]
    CredentialsInUrl {
        /// The setting or variable.
        key: String,
        /// The URL with its credentials removed.
        shown: String,
    },
    /// Both `proxy_auth_file` and `proxy_auth_env`.
    #[error("[upstream] sets both proxy_auth_file and proxy_auth_env: keep one")]
    AuthSources,
    /// Credentials but no proxy to send them to.
    #[error(
        "[upstream] sets proxy_auth_file or proxy_auth_env but neither proxy nor proxy_from_env"
    )]
    AuthWithoutProxy,
    /// The proxy is this proxy's own listener: every request would loop back into it.
    #[error("upstream.proxy {0} is this proxy's own server.listen: requests would loop back into it (is it the apps' HTTPS_PROXY?)")]
    Loop(String),
    /// A `no_proxy` entry that is not a host pattern.
    #[error("upstream.no_proxy: '{0}' is not a host name or *.host pattern")]
    NoProxyPattern(String),
}

/// The settings from what the config holds; `None` when no proxy is set.
pub(crate) fn settings(
    proxy: Option<&str>,
    auth_file: Option<&Path>,
    auth_env: Option<&str>,
    no_proxy: &[String],
) -> Result<Option<EgressSettings>, EgressConfigError> {
    if auth_file.is_some() && auth_env.is_some() {
        return Err(EgressConfigError::AuthSources);
    }
    let Some(proxy) = proxy.filter(|proxy| !proxy.is_empty()) else {
        return Ok(None);
    };
    let address = proxy_address("upstream.proxy", proxy)?;
    let no_proxy = no_proxy
        .iter()
        .map(|entry| {
            HostPattern::parse(entry)
                .ok_or_else(|| EgressConfigError::NoProxyPattern(entry.chars().take(100).collect()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(EgressSettings {
        address,
        auth_file: auth_file.map(Path::to_path_buf),
        auth_env: auth_env.map(str::to_owned),
        no_proxy,
    }))
}

/// `host:port` from `http://host:port` (a trailing `/` allowed); credentials, another scheme,
/// a path or a missing port are refused.
fn proxy_address(key: &str, url: &str) -> Result<String, EgressConfigError> {
    let shown = without_credentials(url);
    let refuse = |problem| EgressConfigError::NotAProxyUrl {
        key: key.to_owned(),
        shown: shown.clone(),
        problem,
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(refuse("it must start with http://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(EgressConfigError::CredentialsInUrl {
            key: key.to_owned(),
            shown,
        });
    }
    if authority.contains(['/', '?', '#']) {
        return Err(refuse("a proxy URL has no path"));
    }
    let parsed: http::uri::Authority = authority.parse().map_err(|_| refuse("no host"))?;
    if parsed.host().is_empty() {
        return Err(refuse("no host"));
    }
    if parsed.port_u16().is_none() {
        return Err(refuse("it needs a port, such as :3128"));
    }
    Ok(parsed.as_str().to_owned())
}

/// A URL with anything before an `@` in its authority replaced by `<redacted>`.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let shown = match rest[..end].rfind('@') {
        Some(at) => format!("<redacted>@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    let shown: String = shown.chars().take(200).collect();
    if scheme.is_empty() {
        shown
    } else {
        format!("{scheme}://{shown}")
    }
}

/// `proxy_from_env`: the process's `HTTPS_PROXY` (or `https_proxy`) when `proxy` is unset,
/// and `NO_PROXY` (or `no_proxy`) added to `no_proxy`. A URL without a scheme is taken as
/// `http://`; a `NO_PROXY` entry `example.com` or `.example.com` covers the host and every
/// name below it (as curl reads it), `*` turns the proxy off, and entries that are not host
/// names (addresses with a port, CIDR ranges) are left out. `env` reads one variable.
pub(crate) fn apply_env(
    proxy: &mut Option<String>,
    no_proxy: &mut Vec<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), EgressConfigError> {
    let read = |names: [&'static str; 2]| {
        names.into_iter().find_map(|name| {
            env(name)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (name, value.trim().to_owned()))
        })
    };
    if let Some((name, value)) = read(["NO_PROXY", "no_proxy"]) {
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                *proxy = None;
                return Ok(());
            }
            let base = entry.trim_start_matches("*.").trim_start_matches('.');
            if HostPattern::parse(base).is_some() {
                no_proxy.push(base.to_owned());
                no_proxy.push(format!("*.{base}"));
            } else {
                tracing::debug!(
                    variable = name,
                    entry,
                    "NO_PROXY entry is not a host name; left out"
                );
            }
        }
    }
    if proxy.as_deref().is_some_and(|proxy| !proxy.is_empty()) {
        return Ok(());
    }
    if let Some((name, value)) = read(["HTTPS_PROXY", "https_proxy"]) {
        let url = if value.contains("://") {
            value
        } else {
            format!("http://{value}")
        };
        // Checked here to name the variable; `settings` checks the result again.
        proxy_address(name, &url)?;
        *proxy = Some(url);
    }
    Ok(())
}

/// Why the proxy credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressLoadError {
    /// The file cannot be read (or others may read it).
    #[error("upstream.proxy_auth_file: {0}")]
    File(#[from] crate::files::FileError),
    /// The variable is unset or empty.
    #[error("upstream.proxy_auth_env: the environment variable {0} is not set or is empty")]
    Env(String),
    /// Not `user:password` (the value is not shown).
    #[error("{0}: does not hold user:password on one line")]
    Shape(&'static str),
}

/// The corporate proxy as the dialer uses it: where it is, the `Proxy-Authorization` value
/// (marked sensitive; never printed), and which hosts bypass it.
pub(crate) struct EgressProxy {
    address: String,
    authorization: Option<HeaderValue>,
    no_proxy: Vec<HostPattern>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("address", &self.address)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl EgressProxy {
    /// Reads the credentials, if any. Connects nowhere.
    pub(crate) fn load(settings: &EgressSettings) -> Result<EgressProxy, EgressLoadError> {
        let credentials = match (&settings.auth_file, &settings.auth_env) {
            (Some(file), _) => {
                let file = crate::files::expand_credentials(file)?;
                let bytes = crate::files::read_private(&file)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| EgressLoadError::Shape("upstream.proxy_auth_file"))?;
                Some((text, "upstream.proxy_auth_file"))
            }
            (None, Some(variable)) => {
                let value = std::env::var(variable)
                    .ok()
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| EgressLoadError::Env(variable.clone()))?;
                Some((value, "upstream.proxy_auth_env"))
            }
            (None, None) => None,
        };
        let authorization = credentials
            .map(|(text, source)| basic(text.trim_end_matches(['\r', '\n']), source))
            .transpose()?;
        Ok(EgressProxy {
            address: settings.address.clone(),
            authorization,
            no_proxy: settings.no_proxy.clone(),
        })
    }

    /// Whether connections to `host` go through the proxy (`no_proxy` does not match it).
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        !self.no_proxy.iter().any(|pattern| pattern.matches(host))
    }

    /// Opens a tunnel to `target` (`host:port`) through the proxy within `timeout`: the TCP
    /// connection to the proxy, the `CONNECT` and its answer.
    pub(crate) async fn open(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<TcpStream, EgressError> {
        tokio::time::timeout(timeout, self.tunnel(target))
            .await
            .map_err(|_| EgressError::Timeout)?
    }

    async fn tunnel(&self, target: &str) -> Result<TcpStream, EgressError> {
        let mut stream =
            TcpStream::connect(&self.address)
                .await
                .map_err(|err| EgressError::Unreachable {
                    proxy: self.address.clone(),
                    reason: err.to_string(),
                })?;
        stream
            .set_nodelay(true)
            .map_err(|err| self.broken(target, err.to_string()))?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(authorization) = &self.authorization {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(authorization.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        stream
            .write_all(&request)
            .await
            .map_err(|err| self.broken(target, err.to_string()))?;
        let head = read_head(&mut stream)
            .await
            .map_err(|problem| self.broken(target, problem))?;
        match head.status {
            200..=299 if head.extra => Err(self.broken(
                target,
                "it sent bytes after its 2xx, before the TLS handshake".into(),
            )),
            200..=299 => Ok(stream),
            407 => Err(EgressError::AuthRequired {
                proxy: self.address.clone(),
                target: target.to_owned(),
                sent_credentials: self.authorization.is_some(),
            }),
            status => Err(EgressError::Refused {
                proxy: self.address.clone(),
                target: target.to_owned(),
                status,
                reason: head.reason,
            }),
        }
    }

    fn broken(&self, target: &str, problem: String) -> EgressError {
        EgressError::Broken {
            proxy: self.address.clone(),
            target: target.to_owned(),
            problem,
        }
    }
}

/// `Basic base64(user:password)`, marked sensitive.
fn basic(credentials: &str, source: &'static str) -> Result<HeaderValue, EgressLoadError> {
    let well_formed = credentials
        .split_once(':')
        .is_some_and(|(user, _)| !user.is_empty())
        && !credentials.contains(['\r', '\n']);
    if !well_formed {
        return Err(EgressLoadError::Shape(source));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| EgressLoadError::Shape(source))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The status line of the proxy's answer, and whether bytes followed its head.
struct Head {
    status: u16,
    reason: String,
    extra: bool,
}

/// Reads the answer's head: at most [`MAX_RESPONSE_HEAD`] bytes (the caller bounds the
/// time). Bytes after the head (a refusal's body) are left unread or noted in `extra`.
async fn read_head(stream: &mut TcpStream) -> Result<Head, String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_RESPONSE_HEAD - buffer.len()).min(chunk.len());
        let read = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|err| err.to_string())?;
        if read == 0 {
            return Err("it closed the connection without answering the CONNECT".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let reason = response.reason.unwrap_or_default();
                return Ok(Head {
                    status: response.code.unwrap_or_default(),
                    reason: reason
                        .chars()
                        .take(100)
                        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
                        .collect(),
                    extra: length < buffer.len(),
                });
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_RESPONSE_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(format!(
                    "its answer's head is larger than {MAX_RESPONSE_HEAD} bytes"
                ))
            }
            Err(err) => return Err(format!("its answer is not HTTP ({err})")),
        }
    }
}

/// Why a tunnel through the corporate proxy could not be opened. No message carries a
/// credential.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EgressError {
    /// The TCP connection to the proxy failed (refused, no route, name not resolved).
    #[error("the egress proxy {proxy} (upstream.proxy) is unreachable: {reason}")]
    Unreachable {
        /// The proxy.
        proxy: String,
        /// Why.
        reason: String,
    },
    /// The proxy answered `407`.
    #[error("the egress proxy {proxy} answered CONNECT {target} with 407 Proxy Authentication Required: {}", if *.sent_credentials { "it refused the credentials in upstream.proxy_auth_file/proxy_auth_env" } else { "set upstream.proxy_auth_file or proxy_auth_env" })]
    AuthRequired {
        /// The proxy.
        proxy: String,
        /// What the `CONNECT` named.
        target: String,
        /// Whether credentials were sent.
        sent_credentials: bool,
    },
    /// The proxy refused the `CONNECT` with another status.
    #[error("the egress proxy {proxy} refused CONNECT {target}: {status} {reason}")]
    Refused {
        /// The proxy.
        proxy: String,
        /// What the `CONNECT` named.
        target: String,
        /// Its status.
        status: u16,
        /// Its reason phrase (printable, at most 100 characters).
        reason: String,
    },
    /// The exchange with the proxy broke off or made no sense.
    #[error("the egress proxy {proxy} did not open a tunnel to {target}: {problem}")]
    Broken {
        /// The proxy.
        proxy: String,
        /// What the `CONNECT` named.
        target: String,
        /// What went wrong.
        problem: String,
    },
    /// No tunnel within the connect timeout.
    #[error("the egress proxy did not open a tunnel in time")]
    Timeout,
}

impl EgressError {
    /// What the client is told for a request to `host`.
    pub(crate) fn to_proxy_error(&self, host: &str, timeout: Duration) -> ProxyError {
        match self {
            EgressError::Timeout => ProxyError::UpstreamTimeout {
                host: host.to_owned(),
                timeout,
            },
            EgressError::Unreachable { .. } => ProxyError::EgressUnreachable {
                host: host.to_owned(),
                reason: self.to_string(),
            },
            _ => ProxyError::EgressRefused {
                host: host.to_owned(),
                reason: self.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
