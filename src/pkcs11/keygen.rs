//! Generating a key pair inside a token: the private half is created sensitive and
//! non-extractable, so it never exists outside the HSM; only the public half comes out, as
//! PEM for upload to Twilio.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};

use super::{module, Pkcs11Error, Pkcs11Settings, Pkcs11Uri};
use crate::signing_key::rsa_spki_der;

/// Generates an RSA key pair of `bits` in the token `uri` names, labelled with its `object`
/// (and its `id`, or a random one), and returns the public key as SPKI PEM. Refuses a label
/// the token already holds.
pub fn generate(
    uri: &Pkcs11Uri,
    settings: &Pkcs11Settings,
    bits: u32,
) -> Result<String, Pkcs11Error> {
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(Pkcs11Error::Size(bits));
    }
    let label = uri
        .object
        .clone()
        .ok_or_else(|| Pkcs11Error::Unnamed(uri.to_string()))?;
    let module = module::load(settings.module_for(uri)?)?;
    let pin = settings.pin_for(uri)?;
    let (slot, token) = module::find_token(&module, uri)?;
    let session = module.open_rw_session(slot)?;
    module::login(&session, &pin, &token)?;
    if !session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])?
        .is_empty()
    {
        return Err(Pkcs11Error::LabelExists { token, label });
    }
    let id = match &uri.id {
        Some(id) => id.clone(),
        None => {
            // A fresh CKA_ID per key: an RNG failure must not give every key the same id.
            let mut id = vec![0u8; 8];
            aws_lc_rs::rand::fill(&mut id).map_err(|_| Pkcs11Error::Random)?;
            id
        }
    };
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::ModulusBits(u64::from(bits).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let (public, _private) = session.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &public_template,
        &private_template,
    )?;
    public_pem(&session, public)
}

fn public_pem(
    session: &cryptoki::session::Session,
    public: ObjectHandle,
) -> Result<String, Pkcs11Error> {
    let (modulus, exponent) =
        super::key::rsa_components(session, public)?.ok_or(Pkcs11Error::NewPublicKeyUnreadable)?;
    let der = rsa_spki_der(&modulus, &exponent);
    Ok(pem::encode(&pem::Pem::new("PUBLIC KEY", der)))
}
