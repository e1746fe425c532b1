//! `[vault]` and `[aws_kms]`: the key services that hold `vault-transit:` and `aws-kms:`
//! keys. Each holds where credentials are, never a credential.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawAwsKms, RawVault};
use super::{in_range, ConfigError};

/// How the proxy proves itself to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token from a file (read again when the file changes) or an environment variable.
    Token {
        /// The file, if set.
        file: Option<PathBuf>,
        /// The variable (default `VAULT_TOKEN`), when no file is set.
        env: String,
    },
    /// Kubernetes auth: the pod's service-account token exchanged for a Vault token, renewed
    /// before it expires.
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The service-account token file.
        token_file: PathBuf,
        /// Where the auth method is mounted.
        mount: String,
    },
}

/// `[vault]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// The server's base URL, if configured (else `VAULT_ADDR` when a key is loaded).
    pub address: Option<String>,
    /// The transit mount.
    pub mount: String,
    /// The namespace header, if any.
    pub namespace: Option<String>,
    /// Extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    pub auth: VaultAuth,
    /// One signature's deadline, retries included.
    pub sign_timeout: Duration,
    /// Signatures in flight at most.
    pub max_concurrent: usize,
}

/// `[aws_kms]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsSettings {
    /// The region, if set (else the SDK's chain).
    pub region: Option<String>,
    /// Another endpoint, if set.
    pub endpoint_url: Option<String>,
    /// A shared-config profile, if set.
    pub profile: Option<String>,
    /// One signature's deadline, retries included.
    pub sign_timeout: Duration,
    /// Signatures in flight at most.
    pub max_concurrent: usize,
}

fn segment_ok(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !value.split('/').any(|part| part.is_empty() || part == "..")
}

pub(super) fn vault_settings(raw: &RawVault) -> Result<VaultSettings, ConfigError> {
    let problem = |problem: String| ConfigError::KeyService {
        section: "vault",
        problem,
    };
    if let Some(address) = &raw.address {
        check_base_url(address).map_err(|p| problem(format!("address: {p}")))?;
    }
    if !segment_ok(&raw.mount) {
        return Err(problem(format!(
            "mount '{}' is not a Vault mount path",
            raw.mount
        )));
    }
    if let Some(namespace) = &raw.namespace {
        if !segment_ok(namespace) {
            return Err(problem(format!(
                "namespace '{namespace}' is not a Vault namespace path"
            )));
        }
    }
    let auth =
        match (&raw.kubernetes_role, &raw.token_file, &raw.token_env) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(problem(
                "sets kubernetes_role and a token (token_file/token_env): keep one way to log in"
                    .into(),
            )),
            (_, Some(_), Some(_)) => {
                return Err(problem(
                    "sets both token_file and token_env: keep one".into(),
                ))
            }
            (Some(role), None, None) => {
                if !segment_ok(role) || !segment_ok(&raw.kubernetes_mount) {
                    return Err(problem(format!(
                        "kubernetes_role '{role}' or kubernetes_mount '{}' is not a Vault name",
                        raw.kubernetes_mount
                    )));
                }
                VaultAuth::Kubernetes {
                    role: role.clone(),
                    token_file: raw.kubernetes_token_file.clone(),
                    mount: raw.kubernetes_mount.clone(),
                }
            }
            (None, file, env) => VaultAuth::Token {
                file: file.clone(),
                env: env.clone().unwrap_or_else(|| "VAULT_TOKEN".into()),
            },
        };
    let (sign_timeout, max_concurrent) = limits(
        ("vault.sign_timeout_ms", raw.sign_timeout_ms),
        ("vault.max_concurrent", raw.max_concurrent),
    )?;
    Ok(VaultSettings {
        address: raw.address.clone(),
        mount: raw.mount.clone(),
        namespace: raw.namespace.clone(),
        ca_file: raw.ca_file.clone(),
        auth,
        sign_timeout,
        max_concurrent,
    })
}

pub(super) fn aws_kms_settings(raw: &RawAwsKms) -> Result<AwsKmsSettings, ConfigError> {
    let problem = |problem: String| ConfigError::KeyService {
        section: "aws_kms",
        problem,
    };
    if let Some(url) = &raw.endpoint_url {
        check_base_url(url).map_err(|p| problem(format!("endpoint_url: {p}")))?;
    }
    if let Some(region) = &raw.region {
        let ok = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(problem(format!(
                "region '{region}' is not an AWS region such as eu-west-1"
            )));
        }
    }
    let (sign_timeout, max_concurrent) = limits(
        ("aws_kms.sign_timeout_ms", raw.sign_timeout_ms),
        ("aws_kms.max_concurrent", raw.max_concurrent),
    )?;
    Ok(AwsKmsSettings {
        region: raw.region.clone(),
        endpoint_url: raw.endpoint_url.clone(),
        profile: raw.profile.clone(),
        sign_timeout,
        max_concurrent,
    })
}

/// A key service's `sign_timeout_ms` (50–60000) and `max_concurrent` (1–4096), each with
/// its setting's name.
fn limits(
    (timeout_key, timeout_ms): (&'static str, u64),
    (concurrent_key, concurrent): (&'static str, u64),
) -> Result<(Duration, usize), ConfigError> {
    let timeout = in_range(timeout_key, timeout_ms, 50..=60_000, "50–60000")?;
    let concurrent = in_range(concurrent_key, concurrent, 1..=4096, "1–4096")?;
    Ok((
        Duration::from_millis(timeout),
        usize::try_from(concurrent).unwrap_or(32),
    ))
}

/// An `http(s)://host[:port]` URL without credentials, path, query or fragment.
pub(crate) fn check_base_url(value: &str) -> Result<(), String> {
    let uri: http::Uri = value.parse().map_err(|_| "is not a URL".to_owned())?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials do not belong in the URL".into());
    }
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("'{value}' is not an http:// or https:// URL"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("'{value}' names no host"));
    };
    if authority.host().is_empty() {
        return Err(format!("'{value}' names no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("'{value}' must be scheme://host[:port] only"));
    }
    Ok(())
}
