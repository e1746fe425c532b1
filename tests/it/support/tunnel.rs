//! `CONNECT` tunnels from the client's side: a harness with interception on, a raw
//! `CONNECT`, and a TLS client that trusts the interception CA.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{enable_interception, Harness, TestAccount};

/// A harness with interception on (a fresh CA, accounts A and B); the CA's folder and
/// certificate file.
pub async fn intercepting_harness(
    tweak: impl FnOnce(&mut pkcv_proxy::config::RawConfig),
) -> (Harness, tempfile::TempDir, std::path::PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut ca_file = None;
    let h = Harness::start_with(&[TestAccount::a(), TestAccount::b()], |raw| {
        ca_file = Some(enable_interception(raw, ca_dir.path()));
        tweak(raw);
    })
    .await;
    (h, ca_dir, ca_file.unwrap())
}

/// Sends `CONNECT target` on a new connection to the proxy; returns the stream and status.
pub async fn connect(h: &Harness, target: &str) -> (TcpStream, u16, String) {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "proxy closed the connection: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    // An error carries a JSON body with Content-Length; read it.
    let mut body = String::new();
    if let Some(len) = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length: ")
            .map(|v| v.trim().parse::<usize>().unwrap())
    }) {
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.unwrap();
        body = String::from_utf8(buf).unwrap();
    }
    (stream, status, body)
}

/// A TLS client trusting the interception CA, offering `alpn` (none when empty).
pub fn client_tls(ca_file: &std::path::Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
