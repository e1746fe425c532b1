//! Where a workflow's new key is made: PEM files, an HSM, or a key service.

use std::path::Path;

use super::{absolute, KeyCustody, Session, WorkflowError};
use crate::config::PrivateKey;
use crate::keygen;

impl Session {
    /// A new key pair for `account_sid`: made where `custody` says (an HSM or a key service;
    /// only its public half comes out), else as PEM files in `key_dir`. Returns where the
    /// private key is and the public key's PEM.
    pub(super) async fn new_key_pair(
        &self,
        key_dir: &Path,
        custody: Option<&KeyCustody>,
        account_sid: &str,
    ) -> Result<(PrivateKey, String), WorkflowError> {
        match custody {
            None => {}
            Some(KeyCustody::Pkcs11(uri)) => {
                let (uri, settings) = (uri.clone(), self.config.pkcs11.clone());
                let public = tokio::task::spawn_blocking(move || {
                    crate::pkcs11::keygen::generate(&uri, &settings, 2048).map(|pem| (uri, pem))
                })
                .await
                .map_err(|err| WorkflowError::Pkcs11(crate::pkcs11::Pkcs11Error::Task(err)))??;
                return Ok((PrivateKey::Pkcs11(public.0), public.1));
            }
            Some(in_service) => {
                let made = crate::keygen::in_service(in_service, &self.config).await?;
                self.say(&format!(
                    "          {} key {} ({})",
                    if made.created {
                        "created"
                    } else {
                        "using the existing"
                    },
                    made.private_key,
                    made.public_key.fingerprint()
                ));
                return Ok((made.private_key, made.public_key.to_pem()));
            }
        }
        std::fs::create_dir_all(key_dir).map_err(WorkflowError::file(key_dir))?;
        let key = keygen::generate(2048)?;
        // Unique per key pair: a rotation right after a create must not collide.
        let stamp = format!(
            "{}-{}",
            crate::token::unix_now(),
            crate::sid::random_hex::<4>()
        );
        let private = key_dir.join(format!("{account_sid}-{stamp}-private.pem"));
        keygen::write_new_private(&private, &key.private_pem)?;
        let public = key_dir.join(format!("{account_sid}-{stamp}-public.pem"));
        std::fs::write(&public, &key.public_pem).map_err(WorkflowError::file(&public))?;
        Ok((PrivateKey::File(absolute(&private)), key.public_pem))
    }
}
