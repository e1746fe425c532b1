//! Minting the `Twilio-Client-Validation` JWT from a private key parsed once.
//!
//! Parsing an RSA key costs more than signing with it, so a [`Signer`] parses at load time
//! and keeps the parsed key; every request then pays for one RSA signature and nothing else.
//! `jsonwebtoken` re-parses the DER key on each `encode` (882 µs against ~353 µs for a sign
//! with a cached key, see BENCHMARKS.md), so minting is done here directly and
//! `jsonwebtoken` is kept for verifying.
//!
//! The header and claims are laid out byte for byte as twilio-python writes them
//! (`{"alg","cty","kid","typ"}`, then `{"hrh","rqh","iss","exp","nbf","sub"}`), so for RS256
//! (deterministic) the proxy's token equals the SDK's for the same request and instant.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RsaSignatureEncoding, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::{Deserialize, Serialize};

use crate::canonical::{HexDigest, SIGNED_HEADERS};

/// The content type Twilio requires in the JWT header.
pub const CONTENT_TYPE: &str = "twilio-pkrv;v=1";

/// The header that carries the token.
pub const HEADER_NAME: &str = "twilio-client-validation";

/// Twilio refuses tokens that live longer than this.
pub const MAX_TTL_SECS: u64 = 300;

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

    fn encoding(self) -> &'static RsaSignatureEncoding {
        match self {
            Algorithm::Rs256 => &RSA_PKCS1_SHA256,
            Algorithm::Ps256 => &RSA_PSS_SHA256,
        }
    }
}

/// Why a key could not be loaded or a token not minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key file could not be read.
    #[error("cannot read private key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM private key.
    #[error("{path} holds no PEM private key (expected PKCS#8 'PRIVATE KEY' or PKCS#1 'RSA PRIVATE KEY')")]
    NotPem {
        /// The file.
        path: String,
    },
    /// The key is not a usable RSA key.
    #[error("{path} is not a usable RSA private key: {reason}")]
    Unsupported {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key is smaller than 2048 bits.
    #[error("{path} is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required")]
    TooSmall {
        /// The file.
        path: String,
        /// Its modulus size.
        bits: usize,
    },
    /// The signature operation failed.
    #[error("RSA signing failed")]
    Sign,
}

/// What a token asserts about one request.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// `iss`: the API key SID (the request's Basic username).
    pub api_key_sid: &'a str,
    /// `sub`: the account SID.
    pub account_sid: &'a str,
    /// `rqh`: the canonical request hash.
    pub request_hash: &'a HexDigest,
    /// `nbf`: when the token was minted, in Unix seconds.
    pub issued_at: u64,
    /// `exp - nbf`.
    pub ttl_secs: u64,
}

/// A parsed private key bound to its credential SID, ready to mint tokens.
pub struct Signer {
    key: RsaKeyPair,
    algorithm: Algorithm,
    /// base64url of the JWT header, the same for every token of this key.
    encoded_header: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer")
            .field("algorithm", &self.algorithm)
            .field("bits", &(self.key.public_modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

/// What a person needs to know about a key: its size and the algorithm it signs with.
impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSA-{} key, signing {}",
            self.key.public_modulus_len() * 8,
            self.algorithm.as_str()
        )
    }
}

impl Signer {
    /// Loads a PEM private key (PKCS#8 or PKCS#1) for the credential `credential_sid`.
    pub fn from_pem_file(
        path: &Path,
        credential_sid: &str,
        algorithm: Algorithm,
    ) -> Result<Self, TokenError> {
        let display = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TokenError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_pem(&pem, credential_sid, algorithm).map_err(|err| match err {
            TokenError::NotPem { .. } => TokenError::NotPem { path: display },
            TokenError::Unsupported { reason, .. } => TokenError::Unsupported {
                path: display,
                reason,
            },
            TokenError::TooSmall { bits, .. } => TokenError::TooSmall {
                path: display,
                bits,
            },
            other => other,
        })
    }

    /// Parses a PEM private key held in memory.
    pub fn from_pem(
        pem: &[u8],
        credential_sid: &str,
        algorithm: Algorithm,
    ) -> Result<Self, TokenError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| TokenError::NotPem {
            path: String::new(),
        })?;
        let parsed = match &der {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => {
                return Err(TokenError::Unsupported {
                    path: String::new(),
                    reason: "not an RSA key".into(),
                })
            }
        };
        let key = parsed.map_err(|err| TokenError::Unsupported {
            path: String::new(),
            reason: err.to_string(),
        })?;
        let bits = key.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(TokenError::TooSmall {
                path: String::new(),
                bits,
            });
        }
        Ok(Self::new(key, credential_sid, algorithm))
    }

    /// Wraps an already parsed key.
    pub fn new(key: RsaKeyPair, credential_sid: &str, algorithm: Algorithm) -> Self {
        // Credential SIDs are validated as `CR` + hex before they get here; nothing to escape.
        let header = format!(
            r#"{{"alg":"{}","cty":"{CONTENT_TYPE}","kid":"{credential_sid}","typ":"JWT"}}"#,
            algorithm.as_str()
        );
        Signer {
            key,
            algorithm,
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            rng: SystemRandom::new(),
        }
    }

    /// The public key as DER `SubjectPublicKeyInfo`, for upload to Twilio or a stand-in.
    pub fn public_key_spki_der(&self) -> Result<Vec<u8>, TokenError> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        self.key
            .public_key()
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .map_err(|_| TokenError::Unsupported {
                path: String::new(),
                reason: "the public key cannot be encoded".into(),
            })
    }

    /// Mints a token. This is the one place a request is signed.
    pub fn mint(&self, claims: &Claims<'_>) -> Result<String, TokenError> {
        // SIDs are validated hex and the hash is hex digits: nothing in the JSON needs escaping.
        let payload = format!(
            r#"{{"hrh":"{SIGNED_HEADERS}","rqh":"{}","iss":"{}","exp":{},"nbf":{},"sub":"{}"}}"#,
            claims.request_hash,
            claims.api_key_sid,
            claims.issued_at + claims.ttl_secs.min(MAX_TTL_SECS),
            claims.issued_at,
            claims.account_sid,
        );
        let signature_len = self.key.public_modulus_len();
        let mut token = String::with_capacity(
            self.encoded_header.len() + payload.len() * 4 / 3 + signature_len * 4 / 3 + 8,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let mut signature = vec![0u8; signature_len];
        self.key
            .sign(
                self.algorithm.encoding(),
                &self.rng,
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError::Sign)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// Seconds since the Unix epoch from the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests;
