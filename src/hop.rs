//! Headers that do not travel on. Hop-by-hop headers (RFC 9110 §7.6.1) describe one
//! connection, not the message: they are removed before a request is signed and forwarded,
//! and from responses on the way back. Headers that describe the client's own network
//! (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-URL`, `Via`) are removed before
//! forwarding too: an official SDK sends none, and Twilio has no business with them. So are
//! W3C `traceparent`/`tracestate`, unless `[telemetry] propagate_upstream` forwards them.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// Always hop-by-hop, listed in `Connection` or not. `Proxy-Authorization` is a credential
/// for this proxy and must never travel on.
const ALWAYS: [HeaderName; 7] = [
    CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Legacy names that are hop-by-hop in practice.
const LEGACY: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Removes every hop-by-hop header, including each name listed in `Connection`.
pub(crate) fn strip(headers: &mut HeaderMap) {
    // Names listed in Connection are read before Connection itself goes.
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(ALWAYS.iter()) {
        headers.remove(name);
    }
    for name in LEGACY {
        headers.remove(name);
    }
}

/// W3C Trace Context: the app's tracing, which a third party has no use for unless asked
/// (`[telemetry] propagate_upstream`).
const TRACE_CONTEXT: [&str; 2] = ["traceparent", "tracestate"];

/// Removes `traceparent` and `tracestate`.
pub(crate) fn strip_trace_context(headers: &mut HeaderMap) {
    for name in TRACE_CONTEXT {
        headers.remove(name);
    }
}

/// Headers that would tell Twilio about the client's internal network.
const CLIENT_NETWORK: [&str; 4] = ["forwarded", "x-real-ip", "x-original-url", "via"];

/// Removes the headers that describe the client's network or the proxies before this one.
pub(crate) fn strip_client_network(headers: &mut HeaderMap) {
    for name in CLIENT_NETWORK {
        headers.remove(name);
    }
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in forwarded {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_standard_listed_and_legacy() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, X-Secret-Hop , keep-alive"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("trailer", "x"),
            ("accept", "application/json"),
            ("user-agent", "twilio-python"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip(&mut headers);
        let left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(left, ["accept", "user-agent"]);
    }

    #[test]
    fn strips_what_describes_the_client_network() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("forwarded", "for=10.0.0.7"),
            ("x-forwarded-for", "10.0.0.7"),
            ("x-forwarded-host", "internal.example"),
            ("x-forwarded-proto", "http"),
            ("x-real-ip", "10.0.0.7"),
            ("x-original-url", "/internal"),
            ("via", "1.1 squid"),
            ("x-request-id", "keep"),
            ("accept", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_client_network(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-request-id"]);
    }
}
