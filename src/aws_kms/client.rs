//! The AWS SDK's HTTP client, made of the proxy's own: hyper and rustls (aws-lc-rs) over the
//! [`Dialer`], so KMS traffic (and the credential chain's: STS, SSO, instance metadata) takes
//! `[upstream] proxy` unless `no_proxy` matches, and `connect_to` like every other
//! connection. The SDK gets no TLS stack of its own.
//!
//! Timeouts: the dialer's connect timeout bounds each connection; the whole call is bounded
//! by the SDK's operation timeout and, for signatures, by `sign_timeout_ms` in
//! [`crate::remote`].

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::body::SdkBody;
use http_body_util::Limited;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::egress::Dialer;
use crate::remote::http::{https_connector, DialService, MAX_ANSWER_BYTES};

/// One pool of connections for every KMS call of a set of settings.
#[derive(Clone)]
pub(crate) struct SdkHttpClient {
    client: Client<HttpsConnector<DialService>, SdkBody>,
}

impl std::fmt::Debug for SdkHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdkHttpClient(hyper + rustls over the proxy's dialer)")
    }
}

impl SdkHttpClient {
    /// A client dialling with `dialer`, trusting the public web roots.
    pub(crate) fn new(dialer: Dialer) -> Result<SdkHttpClient, String> {
        let connector = https_connector(None, dialer)?;
        Ok(SdkHttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for SdkHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|err| ConnectorError::user(err.into()))?;
            // Not connected, or the connection failed before the answer: unreachable.
            let response = client
                .request(request)
                .await
                .map_err(|err| ConnectorError::io(err.into()))?;
            let (parts, body) = response.into_parts();
            let body = SdkBody::from_body_1_x(Limited::new(body, MAX_ANSWER_BYTES));
            Response::try_from(http::Response::from_parts(parts, body))
                .map_err(|err| ConnectorError::other(err.into(), None))
        })
    }
}
