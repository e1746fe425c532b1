//! A small JSON-over-HTTP(S) client for key services, over the hyper and rustls the proxy
//! already uses, dialled like every other outbound connection (the egress proxy of
//! `[upstream] proxy` unless `no_proxy` matches). Answers are read to at most
//! [`MAX_ANSWER_BYTES`]; no header value is ever logged.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;

use super::ServiceError;
use crate::egress::Dialer;

/// The most bytes of a key service's answer that are read.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A key service's answer: its status and its JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub json: serde_json::Value,
}

/// A client for one service's base URL.
#[derive(Clone)]
pub(crate) struct JsonClient {
    client: Client<HttpsConnector<DialService>, Full<Bytes>>,
    base: String,
}

impl std::fmt::Debug for JsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl JsonClient {
    /// A client for `base` (`http://` or `https://host[:port]`, no path), trusting the public
    /// web roots plus the certificates in `ca_file`.
    pub(crate) fn new(
        base: &str,
        ca_file: Option<&Path>,
        dialer: Dialer,
    ) -> Result<JsonClient, String> {
        let uri: Uri = base.parse().map_err(|_| format!("'{base}' is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("'{base}' is not an http:// or https:// URL"));
        }
        let connector = https_connector(ca_file, dialer)?;
        Ok(JsonClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// One request: `path` under the base URL, the given headers, a JSON body if any.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ServiceError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let body = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|err| ServiceError::Failed(format!("cannot build the request: {err}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| ServiceError::Unreachable(chain(&err)))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| ServiceError::Unreachable(format!("reading the answer: {err}")))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Answer { status, json })
    }
}

/// hyper's HTTPS connector over the proxy's [`Dialer`]: rustls with the public web roots
/// plus the certificates in `ca_file`, plain HTTP where the URL says `http://`.
pub(crate) fn https_connector(
    ca_file: Option<&Path>,
    dialer: Dialer,
) -> Result<HttpsConnector<DialService>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let pem = crate::files::read_bounded(path).map_err(|err| err.to_string())?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificates found", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| format!("{}: {err}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| err.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(DialService(dialer)))
}

/// An error and its causes, each said once.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The proxy's [`Dialer`] as hyper's TCP connector.
#[derive(Clone)]
pub(crate) struct DialService(Dialer);

impl Service<Uri> for DialService {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_ascii_lowercase();
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default_port);
            let stream = dialer.connect(&host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
