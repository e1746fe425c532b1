//! The canonical request under each official SDK's rules, as `tests/it/normalize_props.rs`
//! models them: twilio-java through the stand-in's independent port
//! ([`pkcv_standin::canonical`]), twilio-python and twilio-node written out here (copied
//! from the property tests, which are test code and cannot be imported).

use pkcv_proxy::canonical::CanonicalRequest;
use pkcv_standin::canonical::{java_canonical_request, ReceivedRequest};

/// Account A's `Authorization` value from the SDK vectors (`tests/vectors/`).
pub const AUTH: &str =
    "Basic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzpub3QtYS1yZWFsLXNlY3JldA==";
/// The host every model signs.
pub const HOST: &str = "api.twilio.com";

/// The proxy's canonical request for a normalized path and query.
pub fn ours(path: &str, query: &str) -> String {
    request(path, query).to_canonical_string()
}

/// The proxy's [`CanonicalRequest`] for a normalized path and query.
pub fn request<'a>(path: &'a str, query: &'a str) -> CanonicalRequest<'a> {
    CanonicalRequest {
        method: "GET",
        path,
        query,
        authorization: AUTH,
        host: HOST,
        body_hash: None,
    }
}

/// twilio-java's canonical request (the stand-in's port); `None` where Java would throw.
pub fn java(path: &str, query: &str) -> Option<String> {
    let request = ReceivedRequest {
        method: "GET",
        path,
        query,
        headers: vec![
            ("authorization".into(), AUTH.into()),
            ("host".into(), HOST.into()),
        ],
        body: b"",
    };
    java_canonical_request(&request, &["authorization", "host"])
}

/// twilio-python signs the path and query as sent, sorting `query.split('&')`.
pub fn python(path: &str, query: &str) -> String {
    let mut pieces: Vec<&str> = query.split('&').collect();
    pieces.sort();
    format!(
        "GET\n{path}\n{}\nauthorization:{AUTH}\nhost:{HOST}\n\nauthorization;host\n",
        pieces.join("&"),
    )
}

/// `encodeURIComponent`: everything but `A-Za-z0-9-_.!~*'()` is %XX of its UTF-8.
pub fn encode_uri_component(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `decodeURIComponent`; `None` where it would throw (a bad escape, invalid UTF-8).
pub fn decode_uri_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(text.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// twilio-node's `customEncode`.
pub fn node_encode(text: &str) -> Option<String> {
    Some(
        encode_uri_component(&decode_uri_component(text)?)
            .replace('*', "%2A")
            .replace("%7E", "~"),
    )
}

/// twilio-node's canonical request over its decoded parameter object (one entry per key).
pub fn node(path: &str, params: &[(String, String)]) -> Option<String> {
    let collapsed = collapse_slashes(path);
    let path = collapsed
        .split('/')
        .map(node_encode)
        .collect::<Option<Vec<String>>>()?;
    let mut pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|pair| {
            let mut it = pair.split('=');
            let (k, v) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            Some(format!("{}={}", node_encode(k)?, node_encode(v)?))
        })
        .collect::<Option<Vec<String>>>()?;
    Some(format!(
        "GET\n{}\n{}\nauthorization:{AUTH}\nhost:{HOST}\n\nauthorization;host\n",
        path.join("/"),
        query.join("&"),
    ))
}

/// twilio-node's `path.replace(/\/+/g, '/')`.
fn collapse_slashes(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Form-encodes a decoded value the way some client might: `+` or `%20` for space, safe
/// characters sometimes escaped, hex digits in either case.
pub fn client_encode(text: &str, style: u8) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b' ' if style.is_multiple_of(2) => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_'
                if !style.is_multiple_of(3) =>
            {
                out.push(byte as char)
            }
            _ if style.is_multiple_of(5) => out.push_str(&format!("%{byte:02x}")),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
