//! The mutual-TLS listener (`server.tls_listen`), for base-URL clients that cannot send proxy
//! credentials: a client certificate that chains to `client_ca_file` proves who the client
//! is, and its SAN (a DNS name or a URI, such as a SPIFFE ID) is looked up among
//! `[[clients]]` by name. Such a client needs no secret. A connection without a certificate
//! is refused in the handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsListenerSettings;
use crate::files::{self, FileError, Shown};

/// Why the mutual-TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// A file could not be read, or others may read the key.
    #[error("server.tls_listen: {0}")]
    File(#[from] FileError),
    /// A file holds no usable PEM.
    #[error("server.tls_listen: {path} holds no PEM {what}")]
    Pem {
        /// The file.
        path: Shown,
        /// What it should hold.
        what: &'static str,
    },
    /// rustls refused the certificates or key.
    #[error("server.tls_listen: {0}")]
    Tls(#[from] rustls::Error),
    /// The client CA cannot verify certificates.
    #[error("server.tls_listen: client_ca_file cannot verify client certificates: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS server config: the listener's certificate, client certificates required.
fn server_config(settings: &TlsListenerSettings) -> Result<Arc<rustls::ServerConfig>, MtlsError> {
    let chain = certificates(&settings.cert_file, "certificates")?;
    let key_pem = files::read_private(&settings.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| MtlsError::Pem {
        path: settings.key_file.as_path().into(),
        what: "private key",
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(&settings.client_ca_file, "CA certificates")? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, MtlsError> {
    let pem = files::read_bounded(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| MtlsError::Pem {
            path: path.into(),
            what,
        })?;
    if certs.is_empty() {
        return Err(MtlsError::Pem {
            path: path.into(),
            what,
        });
    }
    Ok(certs)
}

/// Accepts mutual-TLS connections within the handshake deadline.
pub(crate) struct MtlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    pub(crate) fn new(
        settings: &TlsListenerSettings,
        timeout: std::time::Duration,
    ) -> Result<MtlsAcceptor, MtlsError> {
        Ok(MtlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(server_config(settings)?),
            timeout,
        })
    }

    /// Completes the handshake; the stream and the names its client certificate carries.
    pub(crate) async fn accept<IO>(
        &self,
        stream: IO,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, Vec<String>)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let handshake = self.acceptor.accept(stream);
        let stream = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the TLS handshake timed out")
            })??;
        let names = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(certificate_names)
            .unwrap_or_default();
        Ok((stream, names))
    }
}

/// The names a verified client certificate carries: its DNS and URI SANs, in order.
pub(crate) fn certificate_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let Ok(Some(san)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}
