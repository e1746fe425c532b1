//! A private key in a PKCS#11 token: found, checked, and signing through pooled sessions.
//!
//! RS256 signs with `CKM_SHA256_RSA_PKCS`, or with `CKM_RSA_PKCS` over a SHA-256 DigestInfo
//! where the token lacks the hashing mechanism; PS256 with `CKM_SHA256_RSA_PKCS_PSS` (or
//! `CKM_RSA_PKCS_PSS` over the hash), MGF1-SHA256 and a 32-byte salt. PKCS#1 v1.5 is
//! deterministic, so an RS256 token from the HSM equals the PEM backend's for the same key.

use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::AuthPin;
use sha2::{Digest as _, Sha256};

use super::uri::ObjectType;
use super::{module, Digest, Pkcs11Error, Pkcs11Settings, Pkcs11Uri};
use crate::signing_key::{
    rsa_spki_der, verify_rsa, Backend, Device, DeviceError, DeviceKey, DeviceKeyInfo, Key, SignNow,
};
use crate::signing_key::{Algorithm, MIN_RSA_BITS};

/// The DER prefix of a SHA-256 `DigestInfo` (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// An RSA public key's modulus and exponent, big-endian.
type RsaComponents = (Vec<u8>, Vec<u8>);

/// How the token makes the configured algorithm's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// The token hashes: `CKM_SHA256_RSA_PKCS` or `CKM_SHA256_RSA_PKCS_PSS`.
    Hashing,
    /// The proxy hashes: `CKM_RSA_PKCS` over a DigestInfo, or `CKM_RSA_PKCS_PSS` over the
    /// hash.
    Raw,
}

/// A key in a token, as a [`Device`]: each connection is a logged-in session and the key's
/// handle in it.
pub struct Pkcs11Device {
    module: Pkcs11,
    uri: Pkcs11Uri,
    pin: AuthPin,
    scheme: Scheme,
}

/// A session and the key's handle in it (handles are per session and change when the token
/// restarts, so each connection looks the key up again).
pub struct KeySession {
    session: Session,
    key: ObjectHandle,
}

/// Loads and checks the key `uri` names: the token and key are found exactly once, the key
/// is RSA ≥ 2048 and may sign, and a test signature verifies against its public key.
pub fn load(
    uri: &Pkcs11Uri,
    settings: &Pkcs11Settings,
    algorithm: Algorithm,
) -> Result<Key, Pkcs11Error> {
    if uri.object.is_none() && uri.id.is_none() {
        return Err(Pkcs11Error::Unnamed(uri.to_string()));
    }
    if uri
        .object_type
        .is_some_and(|kind| kind != ObjectType::Private)
    {
        return Err(Pkcs11Error::NotPrivate(uri.to_string()));
    }
    let module = module::load(settings.module_for(uri)?)?;
    let pin = settings.pin_for(uri)?;
    let (slot, token) = module::find_token(&module, uri)?;
    let session = module.open_ro_session(slot)?;
    module::login(&session, &pin, &token)?;
    let key = find_key(&session, uri, &token)?;
    let (modulus, exponent) = check_key(&session, key, uri)?;
    let scheme = scheme(&module, slot, algorithm, settings.digest, &token)?;
    let device = Pkcs11Device {
        module,
        uri: uri.clone(),
        pin,
        scheme,
    };
    let info = DeviceKeyInfo {
        description: format!(
            "PKCS#11 token {token}, object {} ({})",
            uri.object_name(),
            scheme.mechanism(algorithm)
        ),
        backend: Backend::Pkcs11,
        modulus_len: modulus.len(),
        public_spki: rsa_spki_der(&modulus, &exponent),
    };
    let key = DeviceKey::open(device, info, settings.sessions, settings.retry)
        .map_err(Pkcs11Error::Open)?;
    // Trust the key only once the token has signed with it and the signature verifies.
    let probe = b"pkcv-proxy key check";
    let signature = key
        .sign(algorithm, probe)
        .map_err(Pkcs11Error::TestSignature)?;
    if !verify_rsa(algorithm, &modulus, &exponent, probe, &signature) {
        return Err(Pkcs11Error::CheckFailed(uri.to_string()));
    }
    drop(session);
    Ok(Key::Blocking(Arc::new(key)))
}

/// The one private key matching the URI's object attributes.
fn find_key(session: &Session, uri: &Pkcs11Uri, token: &str) -> Result<ObjectHandle, Pkcs11Error> {
    let mut keys = session.find_objects(&key_template(uri))?;
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(Pkcs11Error::NoKey {
            token: token.to_owned(),
            uri: uri.to_string(),
        }),
        count => Err(Pkcs11Error::SeveralKeys {
            token: token.to_owned(),
            uri: uri.to_string(),
            count,
        }),
    }
}

fn key_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

/// Checks what the proxy needs of the key and returns its public modulus and exponent.
fn check_key(
    session: &Session,
    key: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<RsaComponents, Pkcs11Error> {
    let attributes = session.get_attributes(
        key,
        &[
            AttributeType::KeyType,
            AttributeType::Sign,
            AttributeType::AlwaysAuthenticate,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
        ],
    )?;
    let (mut key_type, mut sign, mut always_authenticate) = (None, false, false);
    let (mut modulus, mut exponent) = (None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(kind) => key_type = Some(kind),
            Attribute::Sign(value) => sign = value,
            Attribute::AlwaysAuthenticate(value) => always_authenticate = value,
            Attribute::Modulus(value) => modulus = Some(value),
            Attribute::PublicExponent(value) => exponent = Some(value),
            _ => {}
        }
    }
    match key_type {
        Some(KeyType::RSA) => {}
        other => {
            return Err(Pkcs11Error::NotRsa {
                uri: uri.to_string(),
                key_type: other.map_or_else(|| "unknown".to_owned(), |kind| kind.to_string()),
            })
        }
    }
    if !sign {
        return Err(Pkcs11Error::CannotSign(uri.to_string()));
    }
    if always_authenticate {
        return Err(Pkcs11Error::AlwaysAuthenticate(uri.to_string()));
    }
    let (modulus, exponent) = match (modulus, exponent) {
        (Some(modulus), Some(exponent)) => (modulus, exponent),
        // Some tokens keep the exponent only on the public key object.
        _ => public_half(session, uri)?,
    };
    let modulus = strip_leading_zeros(modulus);
    let bits = modulus.len() * 8;
    if bits < MIN_RSA_BITS {
        return Err(Pkcs11Error::TooSmall {
            uri: uri.to_string(),
            bits,
        });
    }
    Ok((modulus, exponent))
}

/// The modulus and exponent from the public key object with the same label and ID.
fn public_half(session: &Session, uri: &Pkcs11Uri) -> Result<RsaComponents, Pkcs11Error> {
    let mut template = key_template(uri);
    template[0] = Attribute::Class(ObjectClass::PUBLIC_KEY);
    let missing = || Pkcs11Error::NoPublicKey(uri.to_string());
    let handle = *session
        .find_objects(&template)?
        .first()
        .ok_or_else(missing)?;
    rsa_components(session, handle)?.ok_or_else(missing)
}

/// An RSA key object's modulus and public exponent, if it holds both.
pub(super) fn rsa_components(
    session: &Session,
    object: ObjectHandle,
) -> Result<Option<RsaComponents>, Pkcs11Error> {
    let (mut modulus, mut exponent) = (None, None);
    for attribute in session.get_attributes(
        object,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )? {
        match attribute {
            Attribute::Modulus(value) => modulus = Some(value),
            Attribute::PublicExponent(value) => exponent = Some(value),
            _ => {}
        }
    }
    Ok(modulus.zip(exponent))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

impl Scheme {
    /// The PKCS#11 mechanism this scheme signs `algorithm` with, and its name.
    fn mechanism_type(self, algorithm: Algorithm) -> (MechanismType, &'static str) {
        match (algorithm, self) {
            (Algorithm::Rs256, Scheme::Hashing) => {
                (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS")
            }
            (Algorithm::Rs256, Scheme::Raw) => (MechanismType::RSA_PKCS, "CKM_RSA_PKCS"),
            (Algorithm::Ps256, Scheme::Hashing) => (
                MechanismType::SHA256_RSA_PKCS_PSS,
                "CKM_SHA256_RSA_PKCS_PSS",
            ),
            (Algorithm::Ps256, Scheme::Raw) => (MechanismType::RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"),
        }
    }

    fn mechanism(self, algorithm: Algorithm) -> &'static str {
        self.mechanism_type(algorithm).1
    }
}

/// How `algorithm` is signed in this token: as `digest` says, and for `auto` hashing in the
/// token where it offers that.
fn scheme(
    module: &Pkcs11,
    slot: cryptoki::slot::Slot,
    algorithm: Algorithm,
    digest: Digest,
    token: &str,
) -> Result<Scheme, Pkcs11Error> {
    // Only the mechanisms the proxy would sign with are asked about: listing them all makes
    // cryptoki log an ERROR for every one it has no name for (~30 with SoftHSM2), which
    // buries real errors.
    let offers = |scheme: Scheme| -> Result<bool, Pkcs11Error> {
        match module.get_mechanism_info(slot, scheme.mechanism_type(algorithm).0) {
            Ok(info) => Ok(info.sign()),
            Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => Ok(false),
            Err(err) => Err(err.into()),
        }
    };
    let (chosen, digest_name) = match digest {
        Digest::Auto if offers(Scheme::Hashing)? => (Scheme::Hashing, "auto"),
        Digest::Auto => (Scheme::Raw, "auto"),
        Digest::Token => (Scheme::Hashing, "token"),
        Digest::Proxy => (Scheme::Raw, "proxy"),
    };
    if offers(chosen)? {
        return Ok(chosen);
    }
    Err(Pkcs11Error::NoMechanism {
        token: token.to_owned(),
        wanted: chosen.mechanism(algorithm),
        algorithm: algorithm.as_str(),
        digest: digest_name,
    })
}

impl Device for Pkcs11Device {
    type Session = KeySession;

    fn connect(&self) -> Result<KeySession, DeviceError> {
        let lost = |err: Pkcs11Error| DeviceError::Lost(Box::new(err));
        // Slots are looked up again: their numbers can change when a token comes back.
        let (slot, token) = module::find_token(&self.module, &self.uri).map_err(lost)?;
        let session = self
            .module
            .open_ro_session(slot)
            .map_err(|err| lost(err.into()))?;
        module::login(&session, &self.pin, &token).map_err(lost)?;
        let key = find_key(&session, &self.uri, &token).map_err(lost)?;
        Ok(KeySession { session, key })
    }

    fn sign(
        &self,
        session: &mut KeySession,
        algorithm: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, DeviceError> {
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        };
        let signed = match (algorithm, self.scheme) {
            (Algorithm::Rs256, Scheme::Hashing) => {
                session
                    .session
                    .sign(&Mechanism::Sha256RsaPkcs, session.key, message)
            }
            (Algorithm::Rs256, Scheme::Raw) => {
                let mut digest_info = SHA256_DIGEST_INFO.to_vec();
                digest_info.extend_from_slice(&Sha256::digest(message));
                session
                    .session
                    .sign(&Mechanism::RsaPkcs, session.key, &digest_info)
            }
            (Algorithm::Ps256, Scheme::Hashing) => {
                session
                    .session
                    .sign(&Mechanism::Sha256RsaPkcsPss(pss), session.key, message)
            }
            (Algorithm::Ps256, Scheme::Raw) => session.session.sign(
                &Mechanism::RsaPkcsPss(pss),
                session.key,
                &Sha256::digest(message),
            ),
        };
        signed.map_err(classify)
    }
}

/// Whether a failed call means the session or token is gone (reconnect) or only that this
/// signature failed.
fn classify(error: Error) -> DeviceError {
    match &error {
        Error::Pkcs11(
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError,
            _,
        ) => DeviceError::Lost(Box::new(error)),
        _ => DeviceError::Failed(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_info_prefix_is_sha256s() {
        // RFC 8017 §9.2 note 1: 30 31 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20.
        assert_eq!(
            hex::encode(SHA256_DIGEST_INFO),
            "3031300d060960864801650304020105000420"
        );
    }

    #[test]
    fn lost_and_failed_calls_are_told_apart() {
        use cryptoki::context::Function;
        let lost = classify(Error::Pkcs11(RvError::DeviceRemoved, Function::Sign));
        assert!(matches!(lost, DeviceError::Lost(_)));
        let failed = classify(Error::Pkcs11(RvError::DataLenRange, Function::Sign));
        assert!(matches!(failed, DeviceError::Failed(_)));
    }
}
