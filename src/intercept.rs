//! `HTTPS_PROXY` interception: a local CA whose leaf certificates let the proxy terminate TLS
//! inside a `CONNECT` tunnel, so unmodified SDKs (which hard-code `https://…twilio.com`) can
//! be signed for with nothing but environment variables.
//!
//! This is the one place the proxy impersonates a server, so it is fenced in:
//!
//! - only hosts on the upstream allow-list are ever intercepted (the `CONNECT` is refused with
//!   403 before anything is dialled otherwise), and the CA made by `pkcv-proxy ca init` carries
//!   an X.509 name constraint limiting it to the permitted domains (default `twilio.com`), so a
//!   leaked CA key cannot be used against any other site by a client that enforces it;
//! - the CA has path length 0 and a limited lifetime; leaves live [`LEAF_LIFETIME`] and are
//!   reissued a day before they expire;
//! - the proxy refuses to start if the CA key file is readable by others (or by a group it
//!   does not run with), the same rule as for signing keys ([`crate::files`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::files;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// How long a leaf certificate is valid.
pub const LEAF_LIFETIME: Duration = Duration::days(7);

/// The most leaf certificates kept.
const MAX_LEAVES: usize = 1024;

/// A leaf is reissued when it has less than this left.
const LEAF_RENEW_BEFORE: Duration = Duration::days(1);

/// Why interception could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InterceptError {
    /// A CA file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CA file could not be read, or others may read the key.
    #[error("interception CA: {0}")]
    File(#[from] files::FileError),
    /// The CA certificate is not fit to intercept with.
    #[error("{}: {reason}", .path.display())]
    UnfitCa {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key could not be written.
    #[error(transparent)]
    KeyFile(#[from] crate::keygen::KeygenError),
    /// Certificate parsing or generation failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InterceptError + '_ {
    move |source| InterceptError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files `ca init` wrote.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The certificate clients trust (PEM, world-readable).
    pub cert_file: PathBuf,
    /// The private key (PEM, 0600).
    pub key_file: PathBuf,
}

/// Creates a new interception CA in `out_dir`, valid for `days`, limited to `permitted`
/// domains. Never overwrites an existing key.
pub fn init_ca(out_dir: &Path, permitted: &[String], days: i64) -> Result<CaFiles, InterceptError> {
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let cert_file = out_dir.join("pkcv-proxy-ca.pem");
    let key_file = out_dir.join("pkcv-proxy-ca-key.pem");

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "pkcv-proxy");
    // What it is, within the 64 characters X.509 allows a common name.
    name.push(
        DnType::CommonName,
        "pkcv-proxy local interception CA (Twilio PKCV only)",
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted
            .iter()
            .map(|d| GeneralSubtree::DnsName(d.clone()))
            .collect(),
        excluded_subtrees: Vec::new(),
    });
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    crate::keygen::write_new_private(&key_file, &key.serialize_pem())?;
    std::fs::write(&cert_file, cert.pem()).map_err(io_error(&cert_file))?;
    Ok(CaFiles {
        cert_file,
        key_file,
    })
}

struct Leaf {
    config: Arc<rustls::ServerConfig>,
    renew_at: OffsetDateTime,
}

/// The loaded CA and the leaf certificates it has issued, one TLS config per host.
pub struct Interceptor {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaves: ArcSwap<HashMap<String, Arc<Leaf>>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("leaves", &self.leaves.load().len())
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads the CA, refusing a key file that group or others can read.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Interceptor, InterceptError> {
        let key_pem = text(files::read_private(key_file)?, key_file)?;
        let cert_pem = text(files::read_bounded(cert_file)?, cert_file)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let ca_der = pem::parse(&cert_pem)
            .map(|pem| CertificateDer::from(pem.into_contents()))
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        check_ca(cert_file, &ca_der, &key)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)?;
        Ok(Interceptor {
            issuer,
            ca_der,
            leaves: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// The TLS server config presenting a leaf for `host`: cached, reissued before expiry.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, InterceptError> {
        self.server_config_at(host, OffsetDateTime::now_utc())
    }

    fn server_config_at(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<rustls::ServerConfig>, InterceptError> {
        if let Some(leaf) = self.leaves.load().get(host) {
            if leaf.renew_at > now {
                return Ok(leaf.config.clone());
            }
        }
        let leaf = Arc::new(self.issue(host, now)?);
        let config = leaf.config.clone();
        self.leaves.rcu(|leaves| {
            // Bounded: a client naming endless hosts under an allowed domain starts the
            // cache afresh instead of growing it.
            let mut leaves = if leaves.len() >= MAX_LEAVES {
                HashMap::new()
            } else {
                HashMap::clone(leaves)
            };
            leaves.insert(host.to_owned(), leaf.clone());
            leaves
        });
        tracing::debug!(host, "issued an interception certificate");
        Ok(config)
    }

    fn issue(&self, host: &str, now: OffsetDateTime) -> Result<Leaf, InterceptError> {
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + LEAF_LIFETIME;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Leaf {
            config: tls_server_config(chain, key)?,
            renew_at: now + LEAF_LIFETIME - LEAF_RENEW_BEFORE,
        })
    }
}

/// Refuses a CA the proxy should not impersonate servers with: not a CA, expired, not the
/// key's certificate, or allowed to sign further CAs. A CA without name constraints is
/// accepted (it may be the user's own) but warned about.
fn check_ca(path: &Path, der: &CertificateDer<'_>, key: &KeyPair) -> Result<(), InterceptError> {
    let unfit = |reason: String| InterceptError::UnfitCa {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| unfit(format!("not an X.509 certificate: {e}")))?;
    let constraints = cert
        .basic_constraints()
        .map_err(|e| unfit(e.to_string()))?
        .map(|ext| ext.value.clone());
    match constraints {
        Some(bc) if bc.ca => {
            if bc.path_len_constraint != Some(0) {
                return Err(unfit(
                    "the CA may sign further CAs (path length must be 0)".into(),
                ));
            }
        }
        _ => return Err(unfit("not a CA certificate".into())),
    }
    if !cert.validity().is_valid() {
        return Err(unfit("the certificate is expired or not yet valid".into()));
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(unfit(
            "the certificate does not belong to the CA key".into(),
        ));
    }
    if cert.name_constraints().ok().flatten().is_none() {
        tracing::warn!(path = %path.display(), "the interception CA has no name constraints: it could sign for any host");
    }
    Ok(())
}

/// A TLS server presenting `chain` (leaf first), offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A PEM file's contents as text.
fn text(bytes: Vec<u8>, path: &Path) -> Result<String, InterceptError> {
    String::from_utf8(bytes).map_err(|_| InterceptError::UnfitCa {
        path: path.to_path_buf(),
        reason: "not a PEM file (not text)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_init_load_and_leaf_cache() {
        let dir = tempfile::tempdir().unwrap();
        let files = init_ca(dir.path(), &["twilio.com".into()], 30).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key_file)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A second init never overwrites the key.
        assert!(init_ca(dir.path(), &["twilio.com".into()], 30).is_err());

        let interceptor = Interceptor::load(&files.cert_file, &files.key_file).unwrap();
        let first = interceptor.server_config("api.twilio.com").unwrap();
        let again = interceptor.server_config("api.twilio.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "leaves are cached");
        let other = interceptor.server_config("accounts.twilio.com").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // One rule for every private key: group-readable by the proxy's own group is
            // fine (a Kubernetes Secret at 0440), readable by others is not.
            std::fs::set_permissions(&files.key_file, std::fs::Permissions::from_mode(0o640))
                .unwrap();
            Interceptor::load(&files.cert_file, &files.key_file).unwrap();
            std::fs::set_permissions(&files.key_file, std::fs::Permissions::from_mode(0o604))
                .unwrap();
            let err = Interceptor::load(&files.cert_file, &files.key_file).unwrap_err();
            assert!(
                matches!(
                    err,
                    InterceptError::File(files::FileError::ReadableByOthers { mode: 0o604, .. })
                ),
                "{err}"
            );
        }
    }
}
