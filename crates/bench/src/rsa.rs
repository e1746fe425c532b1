//! The ceiling: how fast this machine signs with RSA-2048, one thread, aws-lc-rs.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// The repository's throwaway test key (the proxy signs with it during the run too).
pub(crate) const KEY_PEM: &str = include_str!("../../../tests/fixtures/rsa-2048-pkcs1.pem");

/// Signatures per timed batch.
const BATCH: usize = 16;

/// Per-signature times of timed batches.
#[derive(Debug, Default, Clone)]
pub(crate) struct SignTimes {
    batches: Vec<Duration>,
}

impl SignTimes {
    /// Times batches of signatures for about `duration`, on the calling thread.
    pub(crate) fn measure(&mut self, duration: Duration) -> anyhow::Result<()> {
        let key = key()?;
        let rng = SystemRandom::new();
        // About the size of the JWS signing input the proxy signs (header.payload, base64url).
        let message = [b'e'; 330];
        let mut signature = vec![0u8; key.public_modulus_len()];
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let start = Instant::now();
            for _ in 0..BATCH {
                key.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut signature)
                    .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
            }
            self.batches.push(start.elapsed() / BATCH as u32);
        }
        Ok(())
    }

    /// The median per-signature time over all batches so far.
    pub(crate) fn median(&self) -> Duration {
        let mut sorted = self.batches.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    /// Signatures timed.
    pub(crate) fn count(&self) -> usize {
        self.batches.len() * BATCH
    }
}

fn key() -> anyhow::Result<RsaKeyPair> {
    match PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes())? {
        PrivateKeyDer::Pkcs1(der) => Ok(RsaKeyPair::from_der(der.secret_pkcs1_der())
            .map_err(|err| anyhow::anyhow!("test key: {err}"))?),
        _ => anyhow::bail!("the test key is not PKCS#1 RSA"),
    }
}
