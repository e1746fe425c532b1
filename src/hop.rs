//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: they are
//! removed before a request is signed and forwarded, and from responses on the way back.

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
}
