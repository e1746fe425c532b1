//! The stand-in's own canonicalizer: a port of twilio-java's `RequestCanonicalizer`, run on
//! the raw request the stand-in received.
//!
//! It deliberately shares no code with the proxy's `normalize`/`canonical` modules: the
//! proxy's output is checked against an independent reading of the rules, the one Twilio
//! documents. twilio-java:
//!
//! - path: `new URI(path).normalize().getPath()` (dot segments removed, escapes decoded),
//!   `URLEncoder.encode(…, "UTF-8")`, then `+`→`%20`, `*`→`%2A`, `%7E`→`~`, `%2F`→`/`;
//! - query: the raw query with `+`→`%20`, `*`→`%2A`, `%7E`→`~`, split on `&`, sorted, joined;
//! - headers: lower-case names; each signed header's values sorted and joined with `,`;
//!   `Host` loses a trailing `:443` or `:80`;
//! - body: hex SHA-256 of a non-empty body, else nothing.

use sha2::{Digest, Sha256};

/// The raw parts of a received request that the canonical string is built from.
#[derive(Debug, Clone)]
pub struct ReceivedRequest<'a> {
    /// Method as received.
    pub method: &'a str,
    /// Raw path as received.
    pub path: &'a str,
    /// Raw query as received (no `?`).
    pub query: &'a str,
    /// Every header as received: lower-case name, value.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: &'a [u8],
}

/// The canonical string under twilio-java's rules, or `None` where twilio-java would throw
/// (an invalid escape in the path).
pub fn java_canonical_request(
    request: &ReceivedRequest<'_>,
    signed_headers: &[&str],
) -> Option<String> {
    let mut out = String::new();
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&java_path(request.path)?);
    out.push('\n');
    let replaced = java_replace(request.query, false);
    let mut pieces: Vec<&str> = replaced.split('&').collect();
    pieces.sort_unstable();
    out.push_str(&pieces.join("&"));
    out.push('\n');
    for name in signed_headers {
        let name = name.trim().to_ascii_lowercase();
        let mut values: Vec<String> = request
            .headers
            .iter()
            .filter(|(header, _)| *header == name)
            .map(|(_, value)| {
                if name == "host" && (value.ends_with(":443") || value.ends_with(":80")) {
                    value.split(':').next().unwrap_or_default().to_owned()
                } else {
                    value.clone()
                }
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        values.sort();
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    if !request.body.is_empty() {
        out.push_str(&hex::encode(Sha256::digest(request.body)));
    }
    Some(out)
}

/// Hex SHA-256 of a string.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn java_path(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return Some("/".into());
    }
    let normalized = remove_dot_segments(raw);
    let decoded = java_decode(&normalized)?;
    let mut encoded = String::with_capacity(decoded.len() * 3);
    // java.net.URLEncoder: these pass, space is '+', everything else is %XX of its UTF-8.
    for byte in decoded.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                encoded.push(*byte as char)
            }
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    Some(java_replace(&encoded, true))
}

/// `java.net.URI#normalize` on a path: `.` and `..` segments go, empty segments stay.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            other => {
                out.push(other);
                trailing = false;
            }
        }
    }
    let mut joined = out.join("/");
    if trailing && !joined.is_empty() {
        joined.push('/');
    }
    if absolute {
        joined.insert(0, '/');
    }
    joined
}

/// `URI#getPath`: percent-escapes decoded as UTF-8 (lossy, as Java's decoder is).
fn java_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// twilio-java's `replace`, copied from the AWS SDK.
fn java_replace(text: &str, replace_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("%7E") {
            out.push('~');
            rest = &rest[3..];
        } else if replace_slash && rest.starts_with("%2F") {
            out.push('/');
            rest = &rest[3..];
        } else if c == '+' {
            out.push_str("%20");
            rest = &rest[1..];
        } else if c == '*' {
            out.push_str("%2A");
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_path_rules() {
        assert_eq!(java_path("").unwrap(), "/");
        assert_eq!(java_path("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(java_path("/a b/c~d*e").unwrap(), "/a%20b/c~d%2Ae");
        assert_eq!(java_path("/x%2Fy%7e").unwrap(), "/x/y~");
        assert_eq!(java_path("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(java_path("/%21").unwrap(), "/%21");
        assert!(java_path("/%zz").is_none());
    }

    #[test]
    fn java_query_rules() {
        assert_eq!(java_replace("a=b+c*d%7Ee%2F", false), "a=b%20c%2Ad~e%2F");
    }
}
