//! The private key behind an account's tokens, wherever it lives.
//!
//! A token costs one RSA signature over `header.payload`; [`SigningKey`] is that operation
//! and nothing else. Three kinds of backend implement it:
//!
//! - [`PemKey`]: a key parsed once from a PEM file into process memory. Sub-millisecond,
//!   never blocks, never goes away.
//! - [`DeviceKey`]: a key that never leaves a device (an HSM reached through PKCS#11, see
//!   [`crate::pkcs11`]). Each signature is a blocking call into the device, and the device can
//!   go away (restart, network) and come back.
//!
//! - network signers (a cloud KMS, Vault transit): each signature is a request to a service,
//!   awaited on the runtime ([`SignAwaited`]).
//!
//! The request path knows none of them. It asks two questions: how must the key be called
//! (the [`Key`] variant: inline, on the signing pool, or awaited — never a blocking call on an
//! async runtime thread), and is it [available](SigningKey::is_available) (else 503 `79053`
//! at once, without queueing).

mod device;
mod pem;

#[cfg(test)]
pub(crate) use device::testing;

pub use device::{BoxError, Device, DeviceError, DeviceKey, DeviceKeyInfo, Retry};
pub use pem::PemKey;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The smallest RSA modulus Twilio (and this proxy) accepts.
pub const MIN_RSA_BITS: usize = 2048;

/// The JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (what the SDKs use).
    #[default]
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
        }
    }
}

/// What is wrong with a private key's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No PEM private key block.
    #[error(
        "holds no PEM private key (expected PKCS#8 'PRIVATE KEY' or PKCS#1 'RSA PRIVATE KEY')"
    )]
    NotPem,
    /// A private key, but not RSA.
    #[error("is not an RSA private key (PKCV signs with RSA)")]
    NotRsa,
    /// Under 2048 bits.
    #[error("is an RSA key of {} bits; at least {MIN_RSA_BITS} bits are required", .bits.map_or_else(|| "fewer than 2048".to_owned(), |bits| bits.to_string()))]
    TooSmall {
        /// Its modulus size, where known.
        bits: Option<usize>,
    },
    /// An RSA key the crypto library refused.
    #[error("is not a usable RSA private key: {0}")]
    Invalid(&'static str),
}

impl From<aws_lc_rs::error::KeyRejected> for KeyError {
    /// aws-lc names its reasons like Rust identifiers (`TooSmall`, `WrongAlgorithm`); these
    /// are the sentences for a person.
    fn from(rejected: aws_lc_rs::error::KeyRejected) -> Self {
        match rejected.description_() {
            "TooSmall" => KeyError::TooSmall { bits: None },
            "WrongAlgorithm" => KeyError::NotRsa,
            "InvalidEncoding" => KeyError::Invalid("its encoding is invalid"),
            "InconsistentComponents" => KeyError::Invalid("its components do not belong together"),
            "TooLarge" => KeyError::Invalid("it is larger than supported (at most 8192 bits)"),
            "PublicKeyIsMissing" => KeyError::Invalid("its public half is missing"),
            _ => KeyError::Invalid("it was rejected"),
        }
    }
}

/// Which kind of backend signs: the `backend` label of the signing metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A PEM file parsed into memory.
    Pem,
    /// A PKCS#11 token (HSM).
    Pkcs11,
    /// AWS KMS.
    AwsKms,
    /// Vault's (or OpenBao's) transit engine.
    VaultTransit,
}

impl Backend {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Pem => "pem",
            Backend::Pkcs11 => "pkcs11",
            Backend::AwsKms => "aws-kms",
            Backend::VaultTransit => "vault-transit",
        }
    }
}

/// Why a signature was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The device or service holding the key is unreachable; it is being reconnected (a
    /// device) or will be tried again by the next request (a service).
    #[error("the key's device or service is unavailable")]
    Unavailable,
    /// The key service throttled the signature past the backend's deadline.
    #[error("the key service is throttling signatures")]
    Throttled,
    /// The key service refuses this key: access denied, key disabled or deleted, or not the
    /// key that was loaded. Retrying does not help until someone acts.
    #[error("the key service refuses the key: {0}")]
    Refused(String),
    /// The backend refused or failed this one signature.
    #[error("the signature failed: {0}")]
    Failed(#[source] BoxError),
}

/// What every private key tells about itself, wherever it lives. How it is asked for a
/// signature is its [`Key`] variant.
pub trait SigningKey: Send + Sync + std::fmt::Debug + std::fmt::Display {
    /// The modulus size in bytes, which is the signature's length.
    fn modulus_len(&self) -> usize;

    /// The public key as DER `SubjectPublicKeyInfo`, for upload to Twilio.
    fn public_key_spki_der(&self) -> &[u8];

    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Whether a signature can be asked for right now.
    fn is_available(&self) -> bool {
        true
    }

    /// What is wrong with the key now, if anything (its service refuses it, or did not
    /// answer): shown in `/readyz`.
    fn problem(&self) -> Option<String> {
        None
    }
}

/// A key whose signature is a function call: in memory, or a blocking call into a device.
pub trait SignNow: SigningKey {
    /// Signs `message` (the JWT's `header.payload`) with `algorithm`.
    fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// The future of a network signature.
pub type SignFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, SignError>> + Send + 'a>>;

/// A key in a network service (a cloud KMS, Vault transit): its signature is a request,
/// awaited on the runtime under the backend's own concurrency limit and deadline. It never
/// blocks a thread, so it needs no signing-pool thread either.
pub trait SignAwaited: SigningKey {
    /// Signs `message` (the JWT's `header.payload`) with `algorithm`.
    fn sign<'a>(&'a self, algorithm: Algorithm, message: &'a [u8]) -> SignFuture<'a>;

    /// Reads the key's public half from the service again: a key that is no longer the one
    /// loaded is refused from now on (and one that is back is accepted again).
    fn recheck(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// A private key, by how its signature must be called. The signing step
/// (`sign::RequestSigner`) matches on it exhaustively, so a new kind of key cannot be added
/// without deciding where it runs, and a key that may block cannot be called inline: only
/// [`Key::Inline`] hands out a [`SignNow`] that the step calls on a runtime thread.
#[derive(Clone)]
pub enum Key {
    /// Never blocks (a key in memory): signs on the connection's own thread.
    Inline(Arc<dyn SignNow>),
    /// May block its thread (a device): signs on the signing pool, never on a runtime thread.
    Blocking(Arc<dyn SignNow>),
    /// A network call: awaited on the runtime, never blocking a thread.
    Awaited(Arc<dyn SignAwaited>),
}

impl Key {
    /// What the key tells about itself.
    pub fn info(&self) -> &dyn SigningKey {
        match self {
            Key::Inline(key) | Key::Blocking(key) => key.as_ref(),
            Key::Awaited(key) => key.as_ref(),
        }
    }

    /// The modulus size in bytes, which is the signature's length.
    pub fn modulus_len(&self) -> usize {
        self.info().modulus_len()
    }

    /// The public key as DER `SubjectPublicKeyInfo`.
    pub fn public_key_spki_der(&self) -> &[u8] {
        self.info().public_key_spki_der()
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.info().backend()
    }

    /// Whether a signature can be asked for right now.
    pub fn is_available(&self) -> bool {
        self.info().is_available()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.info(), f)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.info(), f)
    }
}

/// Checks that `signature` over `message` verifies with the RSA public key (`modulus`,
/// `exponent`, big-endian): a key loaded from a device is trusted only after one signature
/// it made verifies.
pub fn verify_rsa(
    algorithm: Algorithm,
    modulus: &[u8],
    exponent: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    use aws_lc_rs::signature::{
        RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };
    let parameters = match algorithm {
        Algorithm::Rs256 => &RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Ps256 => &RSA_PSS_2048_8192_SHA256,
    };
    RsaPublicKeyComponents {
        n: modulus,
        e: exponent,
    }
    .verify(parameters, message, signature)
    .is_ok()
}

/// The DER `SubjectPublicKeyInfo` of the RSA public key (`modulus`, `exponent`, big-endian
/// unsigned): what a device returns as components, in the form Twilio takes.
pub fn rsa_spki_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
    let rsa_public_key = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_bigint_bytes(modulus, true);
            writer.next().write_bigint_bytes(exponent, true);
        });
    });
    yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_sequence(|writer| {
                writer
                    .next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(RSA_ENCRYPTION));
                writer.next().write_null();
            });
            writer
                .next()
                .write_bitvec_bytes(&rsa_public_key, rsa_public_key.len() * 8);
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair};

    const PEM: &str = include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem");

    #[test]
    fn spki_from_components_is_what_aws_lc_encodes() {
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(PEM.as_bytes()).unwrap();
        let parsed: rustls_pki_types::PrivatePkcs1KeyDer = der;
        let pair = RsaKeyPair::from_der(parsed.secret_pkcs1_der()).unwrap();
        let public = pair.public_key();
        let modulus = public.modulus().big_endian_without_leading_zero();
        let exponent = public.exponent().big_endian_without_leading_zero();
        let key = PemKey::from_pem(PEM.as_bytes()).unwrap();
        assert_eq!(rsa_spki_der(modulus, exponent), key.public_key_spki_der());

        let message = b"header.payload";
        for algorithm in [Algorithm::Rs256, Algorithm::Ps256] {
            let signature = key.sign(algorithm, message).unwrap();
            assert!(verify_rsa(
                algorithm, modulus, exponent, message, &signature
            ));
            assert!(!verify_rsa(
                algorithm, modulus, exponent, b"other", &signature
            ));
        }
        assert_eq!(key.to_string(), "PEM file, RSA-2048");
        let key = Key::Inline(Arc::new(key));
        assert!(key.is_available() && key.backend() == Backend::Pem);
    }
}
