//! The path and query rewritten into the one form every Twilio SDK canonicalizes alike.
//!
//! The official SDKs disagree on edge cases: twilio-java decodes and re-encodes the path and
//! turns a raw `+` in the query into `%20`, twilio-python signs the query bytes as sent, and
//! twilio-node leaves `!'()` bare. Twilio recomputes the hash on its side, so a request that
//! is canonicalized differently there fails with 70156. The proxy therefore rewrites what it
//! forwards into a fixed point of all of them, and signs exactly that:
//!
//! - every byte outside `A-Z a-z 0-9 - . _ ~` is `%XX` with upper-case hex, so re-encoding
//!   changes nothing and no `+`, `*` or `%7E` is left for an SDK to treat specially;
//! - the path is decoded first (a decoded `%2F` is a separator, as in twilio-java), repeated
//!   `/` collapse and dot segments are removed (RFC 3986 §5.2.4);
//! - the query is decoded as a form (`+` is a space) and keeps the client's order on the
//!   wire; only the canonical form sorts it ([`crate::canonical`]).
//!
//! Invalid `%` escapes and escapes that decode to invalid UTF-8 are refused with a 400 rather
//! than guessed at: Twilio decodes to UTF-8 strings, so such a request could never verify.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub use crate::error::{NormalizeError, Part};

/// Everything but RFC 3986's unreserved characters is encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Normalizes a request path (see the module docs). The result always starts with `/`.
pub fn normalize_path(raw: &str) -> Result<String, NormalizeError> {
    let decoded = decode(raw, false, Part::Path, 0)?;
    let mut segments: Vec<&str> = Vec::new();
    // A path ending in `/`, `/.` or `/..` keeps its trailing slash (RFC 3986 §5.2.4).
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for segment in &segments {
        out.push('/');
        out.extend(utf8_percent_encode(segment, ENCODE));
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Normalizes a query string (without the `?`). Empty pieces are dropped; a key without `=`
/// stays without it; the order of pieces is kept.
pub fn normalize_query(raw: &str) -> Result<String, NormalizeError> {
    let mut out = String::with_capacity(raw.len() + 8);
    let mut at = 0;
    for piece in raw.split('&') {
        let piece_at = at;
        at += piece.len() + 1;
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        let (key, value) = match piece.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (piece, None),
        };
        let key = decode(key, true, Part::Query, piece_at)?;
        out.extend(utf8_percent_encode(&key, ENCODE));
        if let Some(value) = value {
            let value_at = piece_at + piece.len() - value.len();
            out.push('=');
            out.extend(utf8_percent_encode(
                &decode(value, true, Part::Query, value_at)?,
                ENCODE,
            ));
        }
    }
    Ok(out)
}

/// Strict percent-decoding to a UTF-8 string.
///
/// Written out rather than taken from `percent-encoding`, whose decoder passes a malformed
/// escape through as literal text: the proxy refuses those instead.
///
/// `at` is where `input` starts in the path or query, so an error names the offset a person
/// can find in what they sent.
fn decode(
    input: &str,
    plus_is_space: bool,
    part: Part,
    at: usize,
) -> Result<String, NormalizeError> {
    let bytes = input.as_bytes();
    let needs_decoding = bytes.contains(&b'%') || (plus_is_space && bytes.contains(&b'+'));
    if !needs_decoding {
        return Ok(input.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
                match (hi, lo) {
                    // Two hex digits are at most 0xFF, so the cast is lossless.
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        return Err(NormalizeError::InvalidPercentEncoding {
                            part,
                            offset: at + i,
                        })
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| NormalizeError::NotUtf8 { part })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("/2010-04-01/Accounts.json", "/2010-04-01/Accounts.json"),
            ("//2010-04-01///Accounts.json", "/2010-04-01/Accounts.json"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../a", "/a"),
            ("/v1/Services/", "/v1/Services/"),
            ("/a%2Fb", "/a/b"),
            ("/a%2F..%2Fb", "/b"),
            ("/a%2e%2E/b", "/a../b"),
            ("/with space/x", "/with%20space/x"),
            ("/a+b*c~d", "/a%2Bb%2Ac~d"),
            ("/%7e%7E~", "/~~~"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/!'()", "/%21%27%28%29"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).unwrap(), want, "path {raw:?}");
        }
    }

    #[test]
    fn queries() {
        let cases = [
            ("", ""),
            ("&&", ""),
            ("PageSize=50", "PageSize=50"),
            ("To=+14155550100", "To=%2014155550100"),
            ("To=%2B14155550100", "To=%2B14155550100"),
            (
                "FriendlyName=Main Line*&Tag=a%7Eb",
                "FriendlyName=Main%20Line%2A&Tag=a~b",
            ),
            ("b=2&a=1", "b=2&a=1"),
            ("flag&x=", "flag&x="),
            ("a=b=c", "a=b%3Dc"),
            ("k=caf%c3%a9", "k=caf%C3%A9"),
            ("DateSent%3E=2026-01-01", "DateSent%3E=2026-01-01"),
            ("DateSent>=2026-01-01", "DateSent%3E=2026-01-01"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_query(raw).unwrap(), want, "query {raw:?}");
        }
    }

    #[test]
    fn invalid_escapes_are_refused() {
        assert_eq!(
            normalize_path("/a%2"),
            Err(NormalizeError::InvalidPercentEncoding {
                part: Part::Path,
                offset: 2
            })
        );
        assert_eq!(
            normalize_query("a=%zz"),
            Err(NormalizeError::InvalidPercentEncoding {
                part: Part::Query,
                offset: 2
            })
        );
        // Offsets count from the start of the query, across pieces, keys and values.
        assert_eq!(
            normalize_query("x=1&&b%=2"),
            Err(NormalizeError::InvalidPercentEncoding {
                part: Part::Query,
                offset: 6
            })
        );
        assert_eq!(
            normalize_query("x=1&b=2%4"),
            Err(NormalizeError::InvalidPercentEncoding {
                part: Part::Query,
                offset: 7
            })
        );
        assert_eq!(
            normalize_query("a=%ff"),
            Err(NormalizeError::NotUtf8 { part: Part::Query })
        );
        assert_eq!(
            normalize_path("/%c3"),
            Err(NormalizeError::NotUtf8 { part: Part::Path })
        );
    }
}
