//! `[signing]` and `[pkcs11]`: how tokens are minted and where HSM keys are reached.

use std::time::Duration;

use super::raw::{RawPkcs11, RawSigning};
use super::{cores, expand_credentials, in_range, ConfigError};
use crate::pkcs11::Pkcs11Settings;
use crate::signing_key::Algorithm;
use crate::signing_key::Retry;
use crate::token::MAX_TTL_SECS;

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

pub(super) fn signing_settings(raw: &RawSigning) -> Result<SigningSettings, ConfigError> {
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

pub(super) fn pkcs11_settings(
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

/// `[pkcs11]`'s path settings with `${CREDENTIALS_DIRECTORY}` expanded.
pub(super) fn expand_pkcs11_paths(raw: &mut RawPkcs11) -> Result<(), ConfigError> {
    for path in [&mut raw.module, &mut raw.pin_file].into_iter().flatten() {
        *path = expand_credentials(path)?;
    }
    Ok(())
}
