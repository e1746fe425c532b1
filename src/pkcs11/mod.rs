//! Key custody in an HSM: signing through PKCS#11, so the private key never exists on the
//! proxy's disk or in its memory.
//!
//! An account names its key with an RFC 7512 URI ([`Pkcs11Uri`]) instead of a file. At load
//! time [`key::load`] finds the token and the key, checks it (exactly one match, RSA ≥ 2048,
//! may sign, a test signature verifies against its public key) and opens one logged-in
//! session per signing thread. From then on the key is a [`crate::signing_key::DeviceKey`]:
//! each signature is one blocking `C_Sign` on the signing pool, and a token that goes away is
//! reconnected with backoff while its account answers 503 `79053`.
//!
//! PKCS#11 modules are initialized once per process (`C_Initialize` may not run twice), so
//! loaded modules live in [`module`]'s process-wide table and are shared by every account
//! and every reload.

pub mod key;
pub mod keygen;
pub mod module;
pub mod uri;

pub use uri::{Pkcs11Uri, UriError};

use std::path::{Path, PathBuf};

use cryptoki::types::AuthPin;

/// Where the module and the PIN come from (`[pkcs11]`); a URI's `module-path` and
/// `pin-source` override them for its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Settings {
    /// The PKCS#11 library (`.so`).
    pub module: Option<PathBuf>,
    /// A file holding the user PIN (owner-readable only).
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Sessions per key: one per signing thread.
    pub sessions: usize,
    /// The first and the longest wait between reconnection attempts.
    pub retry: crate::signing_key::Retry,
    /// Where the SHA-256 of the signing input is computed.
    pub digest: Digest,
}

/// Where the SHA-256 of what is signed is computed (`[pkcs11] digest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    /// In the token where it offers `CKM_SHA256_RSA_PKCS` (`…_PSS`), else in the proxy.
    #[default]
    Auto,
    /// In the token: `CKM_SHA256_RSA_PKCS` / `CKM_SHA256_RSA_PKCS_PSS`, required.
    Token,
    /// In the proxy: `CKM_RSA_PKCS` over a DigestInfo / `CKM_RSA_PKCS_PSS` over the hash
    /// (for tokens whose hashing mechanisms are missing, slow or restricted).
    Proxy,
}

/// Why an HSM key could not be used (each a start-up or reload error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// Neither `[pkcs11] module` nor `module-path`.
    #[error("no PKCS#11 module: set [pkcs11] module, or module-path in the URI")]
    NoModule,
    /// The library could not be loaded or initialized.
    #[error("cannot load the PKCS#11 module {}: {reason}", .path.display())]
    Module {
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No PIN source.
    #[error(
        "no PIN for the token: set [pkcs11] pin_file or pin_env, or pin-source=file:… in the URI"
    )]
    NoPin,
    /// The PIN file could not be read.
    #[error("PIN file: {0}")]
    PinFile(#[from] crate::files::FileError),
    /// The PIN variable is unset or empty.
    #[error("PIN variable {0} is not set (or empty)")]
    PinEnv(String),
    /// No token matches the URI.
    #[error("no token matches {uri} (tokens present: {present})")]
    NoToken {
        /// The URI.
        uri: String,
        /// The labels of the tokens there are.
        present: String,
    },
    /// Several tokens match.
    #[error("{count} tokens match {uri}: add serial= or slot-id= to name one")]
    SeveralTokens {
        /// The URI.
        uri: String,
        /// How many.
        count: usize,
    },
    /// The token refused the PIN.
    #[error("token {token} refused the login: {reason}")]
    Login {
        /// The token's label.
        token: String,
        /// Why.
        reason: String,
    },
    /// The URI names no object.
    #[error("{0} names no key: add object=LABEL (or id=…)")]
    Unnamed(String),
    /// The URI's `type` is not `private`.
    #[error("{0} names a non-private object: private_key takes type=private (or no type)")]
    NotPrivate(String),
    /// No private key matches.
    #[error("no private key in token {token} matches {uri}")]
    NoKey {
        /// The token's label.
        token: String,
        /// The URI.
        uri: String,
    },
    /// Several private keys match.
    #[error("{count} private keys in token {token} match {uri}: add id= to name one")]
    SeveralKeys {
        /// The token's label.
        token: String,
        /// The URI.
        uri: String,
        /// How many.
        count: usize,
    },
    /// The key is not RSA.
    #[error("{uri} is not an RSA key (CKA_KEY_TYPE {key_type}); PKCV signs with RSA")]
    NotRsa {
        /// The URI.
        uri: String,
        /// Its `CKA_KEY_TYPE`.
        key_type: String,
    },
    /// The key is under 2048 bits.
    #[error(
        "{uri} is an RSA key of {bits} bits; at least {} bits are required",
        crate::signing_key::MIN_RSA_BITS
    )]
    TooSmall {
        /// The URI.
        uri: String,
        /// Its size.
        bits: usize,
    },
    /// `CKA_SIGN` is false.
    #[error("{0} may not sign (CKA_SIGN is false)")]
    CannotSign(String),
    /// The key needs a PIN for every use (`CKA_ALWAYS_AUTHENTICATE`).
    #[error("{0} requires a login for each signature (CKA_ALWAYS_AUTHENTICATE), which an unattended proxy cannot give")]
    AlwaysAuthenticate(String),
    /// Its public half could not be read.
    #[error("{0}: the public key (modulus and exponent) cannot be read from the token")]
    NoPublicKey(String),
    /// The token offers no mechanism for the configured algorithm (and `digest`).
    #[error(
        "token {token} does not offer {wanted} for {algorithm} ([pkcs11] digest = \"{digest}\")"
    )]
    NoMechanism {
        /// The token's label.
        token: String,
        /// What was looked for.
        wanted: &'static str,
        /// The JWS algorithm.
        algorithm: &'static str,
        /// The `digest` setting.
        digest: &'static str,
    },
    /// The test signature did not verify against the key's public half.
    #[error("{0}: a test signature does not verify against the key's public key")]
    CheckFailed(String),
    /// Key generation: the label is taken.
    #[error("token {token} already holds an object labelled {label}: refusing to add a second")]
    LabelExists {
        /// The token's label.
        token: String,
        /// The label.
        label: String,
    },
    /// Key generation: an unsupported size.
    #[error("unsupported key size {0}: use 2048, 3072 or 4096")]
    Size(u32),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {0}")]
    Call(#[from] cryptoki::error::Error),
    /// The key's sessions could not be opened.
    #[error("opening the key's sessions: {0}")]
    Open(#[source] crate::signing_key::DeviceError),
    /// The key's first signature failed.
    #[error("test signature: {0}")]
    TestSignature(#[source] crate::signing_key::SignError),
    /// No random bytes for a new key's id.
    #[error("the system's random number generator failed")]
    Random,
    /// A key pair was made but its public half cannot be read back.
    #[error("the new public key cannot be read")]
    NewPublicKeyUnreadable,
    /// A blocking task was lost (the runtime is shutting down).
    #[error("the HSM task did not finish: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl Pkcs11Settings {
    /// The module for `uri`: its `module-path`, else `[pkcs11] module`.
    pub fn module_for<'a>(&'a self, uri: &'a Pkcs11Uri) -> Result<&'a Path, Pkcs11Error> {
        uri.module_path
            .as_deref()
            .or(self.module.as_deref())
            .ok_or(Pkcs11Error::NoModule)
    }

    /// The user PIN for `uri`: its `pin-source`, else `[pkcs11] pin_file`, else `pin_env`.
    /// Read when a key is loaded and kept (zeroized on drop) to log in again after a
    /// reconnect.
    pub fn pin_for(&self, uri: &Pkcs11Uri) -> Result<AuthPin, Pkcs11Error> {
        self.read_pin(uri).map(AuthPin::from)
    }

    /// A digest of the PIN `uri` would log in with (not the PIN): a reload compares it to
    /// tell an unchanged HSM account from one whose PIN changed. `None` when there is none.
    pub fn pin_digest(&self, uri: &Pkcs11Uri) -> Option<[u8; 32]> {
        use sha2::Digest as _;
        let pin = self.read_pin(uri).ok()?;
        let digest = sha2::Sha256::digest(pin.as_bytes()).into();
        let mut bytes = pin.into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
        Some(digest)
    }

    fn read_pin(&self, uri: &Pkcs11Uri) -> Result<String, Pkcs11Error> {
        if let Some(file) = uri.pin_file.as_deref().or(self.pin_file.as_deref()) {
            let file = crate::files::expand_credentials(file)?;
            let bytes = crate::files::read_private(&file)?;
            let text = String::from_utf8_lossy(&bytes);
            return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let Some(variable) = &self.pin_env {
            return std::env::var(variable)
                .ok()
                .filter(|pin| !pin.is_empty())
                .ok_or_else(|| Pkcs11Error::PinEnv(variable.clone()));
        }
        Err(Pkcs11Error::NoPin)
    }
}
