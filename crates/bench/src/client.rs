//! One simulated client: one keep-alive HTTP/1.1 connection, one request at a time, the way
//! an SDK with a connection pool of one behaves.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::upstream::HOST;

/// The request every client sends: a list of messages, as an SDK would fetch it.
const PATH: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json";

/// `SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c:not-a-real-secret`: the proxy only signs, and the
/// upstream checks nothing.
const AUTHORIZATION: &str =
    "Basic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzpub3QtYS1yZWFsLXNlY3JldA==";

/// Where the clients send their requests.
#[derive(Clone)]
pub(crate) enum Target {
    /// Straight to the upstream over TLS, trusting its CA.
    Direct { addr: SocketAddr, tls: TlsConnector },
    /// Plain HTTP to a forwarder: the proxy, which picks its default host (api.twilio.com),
    /// or nginx, which sets it; `name` is the report's mode.
    Proxy {
        addr: SocketAddr,
        host: HeaderValue,
        name: &'static str,
    },
}

/// A connection's sending half.
pub(crate) type Connection = SendRequest<Empty<Bytes>>;

impl Target {
    pub(crate) fn direct(addr: SocketAddr, ca: CertificateDer<'static>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target::Direct {
            addr,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    pub(crate) fn proxy(addr: SocketAddr) -> anyhow::Result<Self> {
        Target::forwarder(addr, "proxy")
    }

    /// Plain HTTP to another forwarder (nginx), reported as `name`.
    pub(crate) fn forwarder(addr: SocketAddr, name: &'static str) -> anyhow::Result<Self> {
        Ok(Target::Proxy {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            name,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Target::Direct { .. } => "direct",
            Target::Proxy { name, .. } => name,
        }
    }

    /// Opens a connection (TCP, TLS for direct) and completes the HTTP/1.1 handshake.
    pub(crate) async fn connect(&self) -> anyhow::Result<Connection> {
        let addr = match self {
            Target::Direct { addr, .. } | Target::Proxy { addr, .. } => *addr,
        };
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        match self {
            Target::Direct { tls, .. } => {
                let name = ServerName::try_from(HOST)?;
                handshake(TokioIo::new(tls.connect(name, tcp).await?)).await
            }
            Target::Proxy { .. } => handshake(TokioIo::new(tcp)).await,
        }
    }

    /// Sends one request, reads the whole response, and returns its status.
    pub(crate) async fn send(&self, connection: &mut Connection) -> anyhow::Result<StatusCode> {
        let host = match self {
            Target::Direct { .. } => HeaderValue::from_static(HOST),
            Target::Proxy { host, .. } => host.clone(),
        };
        let request = Request::get(PATH)
            .header(header::HOST, host)
            .header(header::AUTHORIZATION, AUTHORIZATION)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())?;
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

async fn handshake<T>(io: T) -> anyhow::Result<Connection>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender)
}
