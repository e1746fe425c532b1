//! RSA key pairs for PKCV: generated with aws-lc-rs (e = 65537), private key as PKCS#8 PEM
//! written owner-only and never over an existing file, public key as SPKI PEM for upload.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;

use crate::config::{Config, PrivateKey, TransitKey};
use crate::remote::{PublicKey, RemoteLoadError};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;

/// A generated key pair in PEM.
pub struct GeneratedKey {
    /// PKCS#8 `PRIVATE KEY` PEM. Secret.
    pub private_pem: String,
    /// SPKI `PUBLIC KEY` PEM, what Twilio's `PublicKeys` endpoint takes.
    pub public_pem: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

/// Why a key pair could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// Only 2048, 3072 and 4096 bits are offered.
    #[error("unsupported key size {0}: use 2048, 3072 or 4096")]
    Size(u32),
    /// The generator failed.
    #[error("RSA key generation failed")]
    Generate,
    /// Writing failed (including: the file exists).
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Generates an RSA key pair of `bits`.
pub fn generate(bits: u32) -> Result<GeneratedKey, KeygenError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => return Err(KeygenError::Size(other)),
    };
    let key = KeyPair::generate(size).map_err(|_| KeygenError::Generate)?;
    let private_der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
        .map_err(|_| KeygenError::Generate)?;
    let public_der = key
        .public_key()
        .as_der()
        .map_err(|_| KeygenError::Generate)?;
    Ok(GeneratedKey {
        private_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", private_der.as_ref().to_vec())),
        public_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", public_der.as_ref().to_vec())),
    })
}

/// Writes `contents` to a new file at `path`, readable only by its owner (0600 on Unix).
/// Fails if the file exists: a private key is never overwritten silently.
pub fn write_new_private(path: &Path, contents: &str) -> Result<(), KeygenError> {
    let error = |source| KeygenError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// Where a new key is made, when not as PEM files: `keygen`, `subaccount create` and
/// `keys rotate` take one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCustody {
    /// Inside the HSM, as the URI names it (`--pkcs11`).
    Pkcs11(Box<crate::pkcs11::Pkcs11Uri>),
    /// A transit key of this name (`--vault-transit`).
    VaultTransit(String),
    /// An AWS KMS key under this alias (`--aws-kms alias/NAME`).
    AwsKms(String),
}

/// A key made (or found) in a key service.
#[derive(Debug, Clone)]
pub struct MadeKey {
    /// How the config names it: the transit key with its version pinned, the KMS key by
    /// its ID (an alias can be repointed; the ID cannot).
    pub private_key: PrivateKey,
    /// Its public half, to register with Twilio.
    pub public_key: PublicKey,
    /// Whether it was created now (else it existed and is used, never overwritten).
    pub created: bool,
}

/// Makes the key `custody` names in its service, or finds it there: an existing key is
/// used, never overwritten, and must be RSA-2048.
pub async fn in_service(custody: &KeyCustody, config: &Config) -> Result<MadeKey, RemoteLoadError> {
    match custody {
        KeyCustody::VaultTransit(name) => {
            let service = crate::vault::VaultService::for_config(config)?;
            let (public_key, version, created) =
                service
                    .create_key(name)
                    .await
                    .map_err(|source| RemoteLoadError::Service {
                        key: format!("vault-transit:{name}"),
                        source,
                    })?;
            Ok(MadeKey {
                private_key: PrivateKey::VaultTransit(TransitKey {
                    name: name.clone(),
                    version: Some(version),
                }),
                public_key,
                created,
            })
        }
        #[cfg(feature = "aws-kms")]
        KeyCustody::AwsKms(alias) => {
            let (public_key, created) = crate::aws_kms::create_key(config, alias).await?;
            // The alias, not the key ID: the proxy pins the public key it loads and verifies
            // every signature against it, so an alias repointed later is refused, not used.
            Ok(MadeKey {
                private_key: PrivateKey::AwsKms(alias.clone()),
                public_key,
                created,
            })
        }
        #[cfg(not(feature = "aws-kms"))]
        KeyCustody::AwsKms(_) => Err(RemoteLoadError::NotBuilt("aws-kms")),
        KeyCustody::Pkcs11(_) => Err(RemoteLoadError::Settings(
            "an HSM key is made by pkcs11::keygen".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::Algorithm;
    use crate::token::TokenMinter;

    #[test]
    fn generated_keys_load_and_are_not_overwritten() {
        let key = generate(2048).unwrap();
        assert!(key.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        TokenMinter::from_pem(
            key.private_pem.as_bytes(),
            "CR00000000000000000000000000000001",
            Algorithm::Rs256,
        )
        .unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_new_private(&path, &key.private_pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(write_new_private(&path, "x").is_err());
        assert!(matches!(generate(1024), Err(KeygenError::Size(1024))));
    }
}
