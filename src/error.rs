//! Every error the proxy answers a client with, and its one mapping to the wire.
//!
//! Clients are Twilio SDKs, so an error must look like Twilio's own: a JSON object with
//! `code`, `message`, `more_info` and `status`. SDKs turn that into a `TwilioRestException`
//! the user can read. The codes are the proxy's own (790xx), stable, and documented in the
//! README; none collides with a Twilio error code.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// Where a person finds out more about an error: the explanation built into the binary
/// (the same table as `docs/error-codes.md`), so it exists wherever the proxy runs.
pub(crate) fn more_info(code: u32) -> String {
    format!("run `pkcv-proxy explain {code}`, or see docs/error-codes.md")
}

/// Which part of the request target a [`NormalizeError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The path.
    Path,
    /// The query string.
    Query,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Path => "path",
            Part::Query => "query",
        })
    }
}

/// Why a path or query cannot be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the {part} at byte {offset}: '%' must be followed by two hex digits")]
    InvalidPercentEncoding {
        /// Path or query.
        part: Part,
        /// Byte offset of the `%`.
        offset: usize,
    },
    /// The decoded bytes are not UTF-8.
    #[error("the {part} decodes to bytes that are not valid UTF-8")]
    NotUtf8 {
        /// Path or query.
        part: Part,
    },
}

/// An error the proxy answers a request with instead of forwarding it.
///
/// No variant carries a secret: the `Display` text is sent to the client and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The request had no `Authorization` header.
    #[error("Authorization is required: send HTTP Basic auth with an API key SID (SK...) and its secret")]
    MissingAuthorization,
    /// The `Authorization` header is not well-formed HTTP Basic auth.
    #[error("Authorization is not valid HTTP Basic auth: {0}")]
    MalformedAuthorization(&'static str),
    /// The Basic username is an Account SID, i.e. Auth Token authentication.
    #[error("Public Key Client Validation requires API keys: authenticate with an API key SID (SK...) and secret, not the Account SID and Auth Token")]
    AuthTokenNotAllowed,
    /// The Basic username is neither an Account SID nor an API key SID.
    #[error("the Basic auth username must be an API key SID (SK followed by 32 hex digits)")]
    NotAnApiKey,
    /// The path names an account this proxy holds no signing key for.
    #[error("account {0} is not configured on this proxy")]
    AccountNotConfigured(String),
    /// The API key is not on the account's `api_key_sids` list.
    #[error("API key {api_key} is not allowed to sign for account {account}")]
    ApiKeyNotAllowed {
        /// The API key SID from the request.
        api_key: String,
        /// The account it tried to sign as.
        account: String,
    },
    /// No rule picks a signing account for this request.
    #[error("cannot tell which account signs this request: list the API key under one account's api_key_sids or use a path with /Accounts/AC.../")]
    AmbiguousAccount,
    /// No account is configured at all.
    #[error("no accounts are configured on this proxy")]
    NoAccounts,
    /// The target host is not on the allow-list.
    #[error("host {0} is not an allowed Twilio host")]
    HostNotAllowed(String),
    /// A target names a port other than 80 or 443 (or one that is not a port at all).
    #[error("port {0} is not allowed: only Twilio's standard ports 80 and 443")]
    PortNotAllowed(String),
    /// The path is itself a URL: a full URL pasted after the proxy's address.
    #[error("the path is a whole URL: to use the proxy, set HTTP_PROXY/HTTPS_PROXY to it, or put the Twilio host first in the path (http://proxy:8080/api.twilio.com/2010-04-01/...)")]
    UrlAsPath,
    /// The request has more than one `Host` header (RFC 9112 §3.2).
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// A method Twilio's REST API does not use.
    #[error("method {0} is not forwarded: Twilio's REST API uses GET, POST, PUT, PATCH, DELETE, HEAD and OPTIONS")]
    MethodNotForwarded(String),
    /// Twilio answered with a protocol switch or something that is not a valid response.
    #[error("{host} answered with {what}, which the proxy does not pass on")]
    BadUpstreamResponse {
        /// The upstream host.
        host: String,
        /// What it answered.
        what: String,
    },
    /// The request target cannot be routed (bad scheme, no host, bad host name).
    #[error("bad request target: {0}")]
    BadTarget(&'static str),
    /// The path or query cannot be normalized.
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    /// The method is not supported by this proxy (e.g. CONNECT without interception).
    #[error("method {0} is not supported by this proxy")]
    MethodNotSupported(String),
    /// A request inside a `CONNECT` tunnel names another host than the tunnel's.
    #[error("this connection is a tunnel to {0}: send requests for other hosts through their own CONNECT")]
    Misdirected(String),
    /// A header the proxy must sign or forward is not valid.
    #[error("invalid header: {0}")]
    BadHeader(&'static str),
    /// The body is larger than `max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The client's body could not be read to the end.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The client did not send its whole body in time.
    #[error("the request body did not arrive within {} ms", .timeout.as_millis())]
    BodyTimeout {
        /// The timeout that expired.
        timeout: std::time::Duration,
    },
    /// No certificate could be issued for an intercepted host.
    #[error("cannot intercept {0}: no certificate could be issued")]
    Interception(String),
    /// Minting the token failed.
    #[error("could not sign the request")]
    Signing,
    /// The account's key is in a device (HSM) or key service that is unreachable right now.
    #[error("the signing key of account {0} is unavailable (its HSM or key service cannot be reached): retry shortly")]
    KeyUnavailable(String),
    /// The account's key service throttled signatures beyond the backend's deadline.
    #[error("the key service of account {0} is throttling signatures: retry shortly")]
    KeyThrottled(String),
    /// The account's key service refuses its key: access denied, disabled, deleted, or no
    /// longer the key that was loaded. The client is told which account; the service's own
    /// words go to the operator only (log, `/readyz`).
    #[error("the key service refuses the signing key of account {account}: the proxy's operator finds why in its /readyz and log")]
    KeyRefused {
        /// The account.
        account: String,
    },
    /// `[[clients]]` are configured and the request did not prove to be one.
    #[error("proxy authentication required: {0}")]
    ProxyAuthentication(&'static str),
    /// The client may not have requests signed for this account.
    #[error("client {client} may not have requests signed for account {account}")]
    ClientNotAllowed {
        /// The client.
        client: String,
        /// The account the request would be signed for.
        account: String,
    },
    /// The request head is not well-formed HTTP/1.1.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// The request head is too large.
    #[error("request head too large: {0}")]
    HeadTooLarge(&'static str),
    /// A limit on work in progress is reached: try again shortly.
    #[error("the proxy is overloaded ({0}): retry shortly")]
    Overloaded(&'static str),
    /// Every connection to the host allowed by `max_connections_per_host` stayed busy.
    #[error(
        "every connection to {host} is busy (upstream.max_connections_per_host): retry shortly"
    )]
    UpstreamBusy {
        /// The upstream host.
        host: String,
    },
    /// `max_connections_total` upstream connections are open and none of them is idle.
    #[error("{max} connections to Twilio hosts are open and busy (upstream.max_connections_total), none could be made to {host}: retry shortly")]
    UpstreamConnectionsExhausted {
        /// The upstream host a connection was wanted for.
        host: String,
        /// The cap.
        max: usize,
    },
    /// The upstream connection (TCP or TLS) failed.
    #[error("could not connect to {host}: {reason}")]
    UpstreamConnect {
        /// The upstream host.
        host: String,
        /// Why, without secrets.
        reason: String,
    },
    /// The upstream did not answer in time.
    #[error("{host} did not answer within {} ms", .timeout.as_millis())]
    UpstreamTimeout {
        /// The upstream host.
        host: String,
        /// The timeout that expired.
        timeout: std::time::Duration,
    },
    /// The corporate egress proxy (`upstream.proxy`) refused the `CONNECT` (a `407` included)
    /// or did not answer it sensibly.
    #[error("could not reach {host} through the egress proxy: {reason}")]
    EgressRefused {
        /// The upstream host.
        host: String,
        /// Why, without secrets.
        reason: String,
    },
    /// The corporate egress proxy (`upstream.proxy`) could not be reached.
    #[error("could not reach {host}: {reason}")]
    EgressUnreachable {
        /// The upstream host.
        host: String,
        /// Why, without secrets.
        reason: String,
    },
    /// The upstream exchange failed after connecting.
    #[error("request to {host} failed: {reason}")]
    Upstream {
        /// The upstream host.
        host: String,
        /// Why, without secrets.
        reason: String,
    },
}

impl ProxyError {
    /// The HTTP status the client receives.
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            MissingAuthorization
            | MalformedAuthorization(_)
            | AuthTokenNotAllowed
            | NotAnApiKey => StatusCode::UNAUTHORIZED,
            AccountNotConfigured(_)
            | ApiKeyNotAllowed { .. }
            | HostNotAllowed(_)
            | PortNotAllowed(_) => StatusCode::FORBIDDEN,
            AmbiguousAccount | BadTarget(_) | Normalize(_) | BadHeader(_) | BodyRead(_)
            | DuplicateHost | UrlAsPath => StatusCode::BAD_REQUEST,
            MethodNotForwarded(_) => StatusCode::METHOD_NOT_ALLOWED,
            BadUpstreamResponse { .. } => StatusCode::BAD_GATEWAY,
            NoAccounts => StatusCode::SERVICE_UNAVAILABLE,
            MethodNotSupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Interception(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Signing => StatusCode::INTERNAL_SERVER_ERROR,
            UpstreamConnect { .. }
            | Upstream { .. }
            | EgressRefused { .. }
            | EgressUnreachable { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Overloaded(_)
            | UpstreamBusy { .. }
            | UpstreamConnectionsExhausted { .. }
            | KeyUnavailable(_)
            | KeyThrottled(_)
            | KeyRefused { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyAuthentication(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            MalformedRequest(_) => StatusCode::BAD_REQUEST,
            HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ClientNotAllowed { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The proxy's stable error code (documented in the README).
    pub fn code(&self) -> u32 {
        use ProxyError::*;
        match self {
            MissingAuthorization => 79001,
            MalformedAuthorization(_) => 79002,
            AuthTokenNotAllowed => 79003,
            NotAnApiKey => 79004,
            AccountNotConfigured(_) => 79005,
            ApiKeyNotAllowed { .. } => 79006,
            AmbiguousAccount => 79007,
            NoAccounts => 79008,
            HostNotAllowed(_) => 79010,
            PortNotAllowed(_) => 79011,
            BadTarget(_) => 79012,
            Normalize(NormalizeError::InvalidPercentEncoding { .. }) => 79013,
            Normalize(NormalizeError::NotUtf8 { .. }) => 79014,
            MethodNotSupported(_) => 79015,
            DuplicateHost => 79018,
            UrlAsPath => 79026,
            MethodNotForwarded(_) => 79019,
            BadUpstreamResponse { .. } => 79043,
            EgressRefused { .. } => 79044,
            EgressUnreachable { .. } => 79045,
            BadHeader(_) => 79016,
            Misdirected(_) => 79017,
            BodyTooLarge { .. } => 79020,
            BodyRead(_) => 79021,
            BodyTimeout { .. } => 79022,
            Interception(_) => 79031,
            Signing => 79030,
            UpstreamConnect { .. } => 79040,
            UpstreamTimeout { .. } => 79041,
            Upstream { .. } => 79042,
            Overloaded(_) => 79050,
            UpstreamBusy { .. } => 79052,
            UpstreamConnectionsExhausted { .. } => 79054,
            KeyUnavailable(_) => 79053,
            KeyThrottled(_) => 79055,
            KeyRefused { .. } => 79056,
            ProxyAuthentication(_) => 79060,
            MalformedRequest(_) => 79023,
            HeadTooLarge(_) => 79024,
            ClientNotAllowed { .. } => 79061,
        }
    }

    /// True when the request was fine but Twilio could not be reached or did not answer.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamConnect { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::Upstream { .. }
                | ProxyError::EgressRefused { .. }
                | ProxyError::EgressUnreachable { .. }
        )
    }

    /// The Twilio-style JSON response. This is the only place an error meets the wire.
    pub fn to_response<B>(&self) -> Response<B>
    where
        B: From<Full<Bytes>>,
    {
        let status = self.status();
        let body = TwilioErrorBody {
            code: self.code(),
            message: self.to_string(),
            more_info: more_info(self.code()),
            status: status.as_u16(),
        };
        let json = serde_json::to_vec(&body).expect("a struct of strings and integers serializes");
        let mut response = Response::new(B::from(Full::new(Bytes::from(json))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, ProxyError::ProxyAuthentication(_)) {
            response.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"pkcv-proxy\""),
            );
        }
        if matches!(
            self,
            ProxyError::MissingAuthorization | ProxyError::MalformedAuthorization(_)
        ) {
            // Twilio's own challenge: clients that send credentials only when challenged
            // (the JDK's `Authenticator`, .NET's credential cache) answer it with the API key.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        if matches!(
            self,
            ProxyError::Overloaded(_)
                | ProxyError::UpstreamBusy { .. }
                | ProxyError::UpstreamConnectionsExhausted { .. }
                | ProxyError::KeyUnavailable(_)
                | ProxyError::KeyThrottled(_)
        ) {
            // Overload passes in moments; a client that honours this comes back then.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The JSON shape Twilio uses for errors.
#[derive(Serialize)]
struct TwilioErrorBody {
    code: u32,
    message: String,
    more_info: String,
    status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_is_twilio_shaped() {
        let response: Response<Full<Bytes>> = ProxyError::AuthTokenNotAllowed.to_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["code"], 79003);
        assert_eq!(json["status"], 401);
        assert!(json["message"].as_str().unwrap().contains("API keys"));
        assert_eq!(
            json["more_info"],
            "run `pkcv-proxy explain 79003`, or see docs/error-codes.md"
        );
        // Refused credentials are not a challenge: nothing to answer with.
        assert!(!response_has_challenge(&ProxyError::AuthTokenNotAllowed));
    }

    fn response_has_challenge(error: &ProxyError) -> bool {
        let response: Response<Full<Bytes>> = error.to_response();
        match response.headers().get(header::WWW_AUTHENTICATE) {
            Some(value) => {
                assert_eq!(value, "Basic realm=\"Twilio API\"");
                true
            }
            None => false,
        }
    }

    #[test]
    fn missing_or_malformed_api_key_credentials_are_challenged_as_twilio_does() {
        assert!(response_has_challenge(&ProxyError::MissingAuthorization));
        let malformed = ProxyError::MalformedAuthorization("not Basic");
        assert!(response_has_challenge(&malformed));
        assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
    }
}
