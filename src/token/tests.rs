use super::*;
use crate::canonical::body_hash;

const CR: &str = "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d";

/// A private copy (0600) of a fixture key: git checks files out world-readable, and the
/// proxy refuses a private key others can read.
fn fixture(name: &str) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let copy = dir.path().join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if source.exists() && !copy.exists() {
        std::fs::copy(&source, &copy).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    copy
}

#[test]
fn loads_pkcs1_and_refuses_weak_or_foreign_keys() {
    let signer =
        TokenMinter::from_pem_file(&fixture("rsa-2048-pkcs1.pem"), CR, Algorithm::Rs256).unwrap();
    assert!(format!("{signer:?}").contains("bits: 2048"));
    assert_eq!(signer.to_string(), "PEM file, RSA-2048, signing RS256");

    let err = TokenMinter::from_pem_file(&fixture("rsa-1024-pkcs1.pem"), CR, Algorithm::Rs256)
        .unwrap_err();
    // aws-lc-rs itself refuses keys under 2048 bits; either way the message names the file.
    assert!(err.to_string().contains("rsa-1024-pkcs1.pem"), "{err}");
    assert!(
        matches!(
            err,
            TokenError::Key {
                source: KeyError::TooSmall { .. },
                ..
            }
        ),
        "{err}"
    );
    // A sentence for a person: no Rust identifiers from the crypto library.
    assert!(err.to_string().contains("at least 2048 bits"), "{err}");
    assert!(!err.to_string().contains("TooSmall"), "{err}");

    let err =
        TokenMinter::from_pem_file(&fixture("ec-p256.pem"), CR, Algorithm::Rs256).unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::Key {
                source: KeyError::NotRsa,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("is not an RSA private key (PKCV signs with RSA)"),
        "{err}"
    );

    let err = TokenMinter::from_pem(b"not pem", CR, Algorithm::Rs256).unwrap_err();
    assert_eq!(err, KeyError::NotPem);

    let err =
        TokenMinter::from_pem_file(&fixture("missing.pem"), CR, Algorithm::Rs256).unwrap_err();
    assert!(matches!(err, TokenError::File(_)), "{err}");
}

#[test]
fn token_has_the_sdk_layout_and_verifies() {
    let signer =
        TokenMinter::from_pem_file(&fixture("rsa-2048-pkcs1.pem"), CR, Algorithm::Ps256).unwrap();
    let hash = body_hash(b"x").unwrap();
    let token = signer
        .mint(&Claims {
            api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c",
            account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
            request_hash: &hash,
            issued_at: 1_000,
            ttl_secs: 9_999,
        })
        .unwrap();
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let claims = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    assert_eq!(
        std::str::from_utf8(&header).unwrap(),
        format!(r#"{{"alg":"PS256","cty":"twilio-pkrv;v=1","kid":"{CR}","typ":"JWT"}}"#)
    );
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    // A TTL above Twilio's maximum is clamped, never sent.
    assert_eq!(claims["exp"], 1_300);
    assert_eq!(claims["nbf"], 1_000);
    assert_eq!(claims["rqh"], hash.as_str());

    let spki = signer.public_key_spki_der();
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(&token, &public, &validation).unwrap();
}
