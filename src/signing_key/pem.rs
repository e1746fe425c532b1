//! The in-process backend: an RSA key parsed once from a PEM file.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::{Algorithm, KeyError, MIN_RSA_BITS};
use super::{Backend, SignError, SignNow, SigningKey};

/// An RSA private key held in memory, parsed once: parsing costs more than signing.
pub struct PemKey {
    key: RsaKeyPair,
    public_spki: Vec<u8>,
    rng: SystemRandom,
}

impl PemKey {
    /// Parses a PEM private key (PKCS#8 or PKCS#1), RSA of at least 2048 bits.
    pub fn from_pem(pem: &[u8]) -> Result<PemKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem)?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())?,
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())?,
            _ => return Err(KeyError::NotRsa),
        };
        let bits = key.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(KeyError::TooSmall { bits: Some(bits) });
        }
        PemKey::new(key)
    }

    /// Wraps an already parsed key.
    pub fn new(key: RsaKeyPair) -> Result<PemKey, KeyError> {
        let public_spki = key
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Invalid("its public key cannot be encoded"))?
            .as_ref()
            .to_vec();
        Ok(PemKey {
            key,
            public_spki,
            rng: SystemRandom::new(),
        })
    }
}

impl SignNow for PemKey {
    fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let encoding = match algorithm {
            Algorithm::Rs256 => &RSA_PKCS1_SHA256,
            Algorithm::Ps256 => &RSA_PSS_SHA256,
        };
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(encoding, &self.rng, message, &mut signature)
            .map_err(|err| SignError::Failed(Box::new(err)))?;
        Ok(signature)
    }
}

impl SigningKey for PemKey {
    fn modulus_len(&self) -> usize {
        self.key.public_modulus_len()
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.public_spki
    }

    fn backend(&self) -> Backend {
        Backend::Pem
    }
}

impl std::fmt::Debug for PemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("PemKey")
            .field("bits", &(self.modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for PemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PEM file, RSA-{}", self.modulus_len() * 8)
    }
}
