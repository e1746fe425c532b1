//! Minting the `Twilio-Client-Validation` JWT from a private key parsed once.
//!
//! Parsing an RSA key costs more than signing with it, so a [`TokenMinter`] parses at load time
//! and keeps the parsed key; every request then pays for one RSA signature and nothing else.
//! `jsonwebtoken` re-parses the DER key on each `encode` (882 µs against ~353 µs for a sign
//! with a cached key, see BENCHMARKS.md), so minting is done here directly and
//! `jsonwebtoken` is kept for verifying.
//!
//! The header and claims are laid out byte for byte as twilio-python writes them
//! (`{"alg","cty","kid","typ"}`, then `{"hrh","rqh","iss","exp","nbf","sub"}`), so for RS256
//! (deterministic) the proxy's token equals the SDK's for the same request and instant.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::canonical::{HexDigest, SIGNED_HEADERS};
use crate::signing_key::{Algorithm, KeyError};
use crate::signing_key::{Key, PemKey, SignError};

/// The content type Twilio requires in the JWT header.
pub const CONTENT_TYPE: &str = "twilio-pkrv;v=1";

/// The header that carries the token.
pub const HEADER_NAME: &str = "twilio-client-validation";

/// Twilio refuses tokens that live longer than this.
pub const MAX_TTL_SECS: u64 = 300;

/// Room for the claims' JSON: `hrh` (18), `rqh` (64), two 34-character SIDs, two times of up
/// to 20 digits, and the names and punctuation (about 60).
const PAYLOAD_CAPACITY: usize = 288;

/// Why a key could not be loaded or a token not minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key file could not be read, or others may read it.
    #[error("private key: {0}")]
    File(#[from] crate::files::FileError),
    /// The key file's contents are not a usable key.
    #[error("private key {path} {source}")]
    Key {
        /// The file.
        path: crate::files::Shown,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The signature operation failed, or the key's device is unavailable.
    #[error("RSA signing: {0}")]
    Sign(#[source] SignError),
    /// An HSM key could not be loaded.
    #[error("PKCS#11 key: {0}")]
    Pkcs11(#[from] crate::pkcs11::Pkcs11Error),
    /// A key in a key service (AWS KMS, Vault transit) could not be loaded.
    #[error("key service: {0}")]
    Remote(#[from] crate::remote::RemoteLoadError),
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

/// A private key bound to its credential SID, ready to mint tokens: the JWT layout is here,
/// the signature is the [`Key`]'s, wherever that key lives. A clone shares the key.
#[derive(Clone)]
pub struct TokenMinter {
    key: Key,
    algorithm: Algorithm,
    /// base64url of the JWT header, the same for every token of this key.
    encoded_header: String,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (no backend's Debug does).
        f.debug_struct("TokenMinter")
            .field("algorithm", &self.algorithm)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What a person needs to know about a key: where it lives, its size and the algorithm.
impl std::fmt::Display for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, signing {}", self.key, self.algorithm.as_str())
    }
}

impl TokenMinter {
    /// Loads a PEM private key (PKCS#8 or PKCS#1) for the credential `credential_sid`.
    pub fn from_pem_file(
        path: &Path,
        credential_sid: &str,
        algorithm: Algorithm,
    ) -> Result<Self, TokenError> {
        let pem = crate::files::read_private(path)?;
        Self::from_pem(&pem, credential_sid, algorithm).map_err(|source| TokenError::Key {
            path: path.into(),
            source,
        })
    }

    /// Parses a PEM private key held in memory.
    pub fn from_pem(
        pem: &[u8],
        credential_sid: &str,
        algorithm: Algorithm,
    ) -> Result<Self, KeyError> {
        let key = PemKey::from_pem(pem)?;
        Ok(Self::new(
            Key::Inline(Arc::new(key)),
            credential_sid,
            algorithm,
        ))
    }

    /// Mints with `key`, from whichever backend.
    pub fn new(key: Key, credential_sid: &str, algorithm: Algorithm) -> Self {
        // Credential SIDs are validated as `CR` + hex before they get here; nothing to escape.
        let header = format!(
            r#"{{"alg":"{}","cty":"{CONTENT_TYPE}","kid":"{credential_sid}","typ":"JWT"}}"#,
            algorithm.as_str()
        );
        TokenMinter {
            key,
            algorithm,
            encoded_header: URL_SAFE_NO_PAD.encode(header),
        }
    }

    /// The key that signs.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The JWS algorithm the key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key as DER `SubjectPublicKeyInfo`, for upload to Twilio or a stand-in.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.key.public_key_spki_der().to_vec()
    }

    /// The token for `claims` up to its signature: what the key signs. Attaching the
    /// signature ([`Unsigned::finish`]) is the one way to a token.
    pub fn unsigned(&self, claims: &Claims<'_>) -> Unsigned {
        // SIDs are validated hex and the hash is hex digits: nothing in the JSON needs escaping.
        // Written into a buffer sized for it at once (about 240 bytes: two SIDs, a hash, two
        // times), not grown as `format!` would: one allocation for the claims, not several.
        let mut payload = String::with_capacity(PAYLOAD_CAPACITY);
        let _ = write!(
            payload,
            r#"{{"hrh":"{SIGNED_HEADERS}","rqh":"{}","iss":"{}","exp":{},"nbf":{},"sub":"{}"}}"#,
            claims.request_hash,
            claims.api_key_sid,
            claims.issued_at + claims.ttl_secs.min(MAX_TTL_SECS),
            claims.issued_at,
            claims.account_sid,
        );
        let signature_len = self.key.modulus_len();
        let mut token = String::with_capacity(
            self.encoded_header.len() + payload.len() * 4 / 3 + signature_len * 4 / 3 + 8,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        Unsigned { token }
    }

    /// Mints a token with a key that signs in a function call (in memory or a device),
    /// on the calling thread: for tests and tools, never the request path, which calls each
    /// kind of key where it must run (`sign::RequestSigner`).
    #[cfg(test)]
    pub fn mint(&self, claims: &Claims<'_>) -> Result<String, TokenError> {
        let unsigned = self.unsigned(claims);
        let signature = match &self.key {
            Key::Inline(key) | Key::Blocking(key) => key.sign(self.algorithm, unsigned.input()),
            Key::Awaited(_) => panic!("a network key cannot sign in a function call"),
        }
        .map_err(TokenError::Sign)?;
        Ok(unsigned.finish(&signature))
    }
}

/// `header.payload` of a token, waiting for its signature.
#[derive(Debug)]
pub struct Unsigned {
    token: String,
}

impl Unsigned {
    /// The JWS signing input: what the key signs.
    pub fn input(&self) -> &[u8] {
        self.token.as_bytes()
    }

    /// The token: the signing input, `.`, and the signature.
    pub fn finish(mut self, signature: &[u8]) -> String {
        self.token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut self.token);
        self.token
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
