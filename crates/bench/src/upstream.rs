//! The loopback HTTPS upstream: a stand-in for api.twilio.com that answers every request at
//! once with a fixed small JSON body and checks nothing (the proxy's signatures are verified
//! by the stand-in crate in the test suite; here verifying would only steal CPU from the
//! proxy on the same cores). It counts the TCP connections it accepts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The name the upstream's certificate is for, and the host the proxy signs for.
pub(crate) const HOST: &str = "api.twilio.com";

/// What every request gets: about the size of a short Twilio list page.
const BODY: &str = r#"{"messages":[],"end":0,"first_page_uri":"/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json?PageSize=50&Page=0","next_page_uri":null,"page":0,"page_size":50,"previous_page_uri":null,"start":0,"uri":"/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json?PageSize=50&Page=0"}"#;

/// A running upstream.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    /// The throwaway CA's certificate (PEM), for the proxy's `extra_ca_file`.
    pub(crate) ca_pem: String,
    /// The CA as a root, for the direct clients.
    pub(crate) ca_der: CertificateDer<'static>,
    counts: Arc<Counts>,
}

/// Connections accepted, and how many of them negotiated h2.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    h2: AtomicU64,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves until the process ends.
    /// Each answer waits `delay` first.
    pub(crate) async fn start(http1_only: bool, delay: Duration) -> anyhow::Result<Upstream> {
        let tls = Tls::generate()?;
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&tls, http1_only)?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        tokio::spawn(accept_loop(listener, acceptor, counts.clone(), delay));
        Ok(Upstream {
            addr,
            ca_pem: tls.ca_pem,
            ca_der: tls.ca_der,
            counts,
        })
    }

    /// TCP connections accepted so far.
    pub(crate) fn connections_accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Of those, the ones that negotiated HTTP/2.
    pub(crate) fn h2_connections(&self) -> u64 {
        self.counts.h2.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    counts: Arc<Counts>,
    delay: Duration,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                counts.h2.fetch_add(1, Ordering::Relaxed);
            }
            let service = service_fn(move |_: Request<Incoming>| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .expect("a fixed response is valid"),
                )
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

struct Tls {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Tls {
    /// A fresh CA and a leaf for api.twilio.com, both thrown away at exit.
    fn generate() -> Result<Tls, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "pkcv-bench throwaway upstream CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf_params = CertificateParams::new(vec![HOST.to_owned()])?;
        leaf_params.distinguished_name = DistinguishedName::new();
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
        Ok(Tls {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        })
    }
}

fn server_config(tls: &Tls, http1_only: bool) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(tls.chain.clone(), tls.key.clone_key())?;
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}
