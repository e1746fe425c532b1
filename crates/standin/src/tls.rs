//! A throwaway CA and server certificate for the stand-in's HTTPS listener.
//!
//! Clients trust the stand-in by adding the CA (`extra_ca_file`, `--cacert`,
//! `REQUESTS_CA_BUNDLE`), exactly as they would trust a private CA in production; nothing
//! in the proxy weakens certificate checks to reach it.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names the stand-in answers for by default.
pub const DEFAULT_NAMES: &[&str] = &[
    "twilio.com",
    "*.twilio.com",
    "*.dublin.ie1.twilio.com",
    "localhost",
];

/// A CA certificate (PEM) and a rustls server config with a leaf it signed.
pub struct StandInTls {
    /// The CA certificate to trust, PEM.
    pub ca_pem: String,
    /// The server config (ALPN `h2`, `http/1.1`).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the result.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Makes a fresh CA and a leaf for `names` (DNS names, wildcards allowed) and 127.0.0.1.
pub fn generate(names: &[&str]) -> Result<StandInTls, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        "pkcv-proxy Twilio stand-in test CA (not trusted by anyone else)",
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    leaf_params.distinguished_name = DistinguishedName::new();
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    let chain = vec![CertificateDer::from(leaf.der().to_vec()), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok(StandInTls {
        ca_pem: ca.pem(),
        server_config: server_config(chain, key)?,
    })
}

/// A TLS server presenting `chain` (leaf first), offering HTTP/2 and HTTP/1.1 by ALPN, as
/// Twilio's edge does.
fn server_config(
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
