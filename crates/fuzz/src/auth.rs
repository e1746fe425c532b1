//! Target `auth`: [`api_key_auth`], the client's `Authorization: Basic` header.
//!
//! Input: literal — each line one `Authorization` value (an empty input sends none); or
//! structured — zero to two values, each well-formed (`Basic` in any case, an `SK` SID with
//! hex in either case, any secret bytes, padding whitespace), a near miss (a SID a digit
//! short, `AC…`, `sk…`, no colon, unpadded or URL-safe base64) or biased bytes.
//!
//! Properties:
//!
//! - it never panics, whatever the bytes;
//! - it accepts exactly when there is one header and it is `Basic base64(SK + 32 hex : secret)`
//!   (visible ASCII, scheme case-insensitive, one space, strict padded base64; checked
//!   against a model with its own base64 decoder), and then the SID is the one encoded and
//!   the forwarded value is the header trimmed;
//! - a well-formed header with any secret is always accepted;
//! - neither the `Debug` of what it returns nor an error message shows the credentials.

use arbitrary::{Result, Unstructured};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use pkcv_proxy::auth::api_key_auth;

use crate::Input;
use crate::{gen, stats};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "Basic ",
    "basic ",
    "BASIC ",
    "Bearer ",
    " ",
    "\t",
    "=",
    "==",
    "+",
    "/",
    "-",
    "_",
    "U0sw",
    "QUNh",
    "U0sw ZjFl",
    "OnNlY3JldA==",
    "Og==",
    "\n",
    "\nBasic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzpub3QtYS1yZWFsLXNlY3JldA==",
];

const SCHEMES: &[&str] = &[
    "Basic", "basic", "BASIC", "bAsIc", "Basic\t", "Bearer", "Basi", "",
];
const SPACES: &[&str] = &["", "", " ", "\t", "  ", " \t"];

/// One header value, and the SID it must be read as if it is the only one.
struct Header {
    value: Vec<u8>,
    well_formed: Option<String>,
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    match Input::new(input) {
        Input::Literal(bytes) => {
            let values: Vec<Header> = if bytes.is_empty() {
                Vec::new()
            } else {
                gen::lines(bytes)
                    .map(|line| Header {
                        value: line.to_vec(),
                        well_formed: None,
                    })
                    .collect()
            };
            check_headers(&values);
        }
        Input::Structured(mut u) => {
            if let Ok(values) = structured(&mut u) {
                check_headers(&values);
            }
        }
    }
}

fn structured(u: &mut Unstructured<'_>) -> Result<Vec<Header>> {
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        headers.push(match u.int_in_range(0u8..=5)? {
            0..=2 => well_formed(u)?,
            3 | 4 => near_miss(u)?,
            _ => Header {
                value: gen::bytes(u, DICTIONARY, 16)?,
                well_formed: None,
            },
        });
    }
    Ok(headers)
}

/// `SK` and 32 hex digits in random case.
fn sid(u: &mut Unstructured<'_>, prefix: &str, digits: usize) -> Result<String> {
    let mut sid = prefix.to_owned();
    for _ in 0..digits {
        sid.push(*u.choose(gen::HEX)? as char);
    }
    Ok(sid)
}

fn well_formed(u: &mut Unstructured<'_>) -> Result<Header> {
    let sid = sid(u, "SK", 32)?;
    let mut credentials = sid.clone().into_bytes();
    credentials.push(b':');
    credentials.extend(gen::bytes(u, &[":", "secret"], 12)?);
    let scheme = *u.choose(&SCHEMES[..4])?;
    let value = format!(
        "{}{scheme} {}{}{}",
        u.choose(SPACES)?,
        u.choose(SPACES)?,
        STANDARD.encode(&credentials),
        u.choose(SPACES)?
    );
    Ok(Header {
        value: value.into_bytes(),
        well_formed: Some(sid),
    })
}

fn near_miss(u: &mut Unstructured<'_>) -> Result<Header> {
    let user = match u.int_in_range(0u8..=6)? {
        0 => sid(u, "SK", 31)?,
        1 => sid(u, "SK", 33)?,
        2 => sid(u, "AC", 32)?,
        3 => sid(u, "sk", 32)?,
        4 => format!("{}g", sid(u, "SK", 31)?),
        5 => format!("{}é", sid(u, "SK", 30)?),
        _ => sid(u, "SK", 32)?,
    };
    let separator = *u.choose(&[":", ":", "", ";"])?;
    let credentials = format!("{user}{separator}{}", gen::text(u, &[":"], 6)?);
    let encoded = match u.int_in_range(0u8..=3)? {
        0 => STANDARD_NO_PAD.encode(&credentials),
        1 => URL_SAFE.encode(&credentials),
        _ => STANDARD.encode(&credentials),
    };
    let scheme = *u.choose(SCHEMES)?;
    let space = *u.choose(&[" ", "  ", "\t", ""])?;
    Ok(Header {
        value: format!("{scheme}{space}{encoded}").into_bytes(),
        well_formed: None,
    })
}

fn check_headers(values: &[Header]) {
    let mut headers = HeaderMap::new();
    let mut sent: Vec<&Header> = Vec::new();
    for header in values {
        if let Ok(value) = HeaderValue::from_bytes(&header.value) {
            headers.append(AUTHORIZATION, value);
            sent.push(header);
        }
    }
    let expected = match sent.as_slice() {
        [one] => model(&one.value),
        _ => None,
    };
    if let [Header {
        well_formed: Some(sid),
        value,
    }] = sent.as_slice()
    {
        stats::count("auth.well-formed");
        assert_eq!(
            expected.as_ref(),
            Some(sid),
            "the model refuses well-formed {:?}",
            String::from_utf8_lossy(value)
        );
    }
    let shown = |value: &[u8]| String::from_utf8_lossy(value).into_owned();
    match (api_key_auth(&headers), expected) {
        (Ok(auth), Some(sid)) => {
            stats::count("auth.accepted");
            assert_eq!(auth.api_key_sid, sid, "SID of {:?}", shown(&sent[0].value));
            let trimmed = shown(&sent[0].value).trim().to_owned();
            assert_eq!(auth.authorization, trimmed, "forwarded value");
            assert_secret_hidden(&format!("{auth:?}"), &trimmed);
        }
        (Ok(auth), None) => panic!(
            "accepted {:?} as {auth:?}",
            sent.iter().map(|h| shown(&h.value)).collect::<Vec<_>>()
        ),
        (Err(err), Some(sid)) => {
            panic!("refused {:?} ({sid}): {err}", shown(&sent[0].value))
        }
        (Err(err), None) => {
            stats::count("auth.refused");
            for header in &sent {
                assert_secret_hidden(&err.to_string(), &shown(&header.value));
            }
        }
    }
}

/// The credentials (the base64 after the scheme) do not appear in `printed`. Checked for
/// credentials of 16 or more base64 characters, which no fixed wording contains (the
/// messages' longest run of such characters is `Authorization`).
pub(crate) fn assert_secret_hidden(printed: &str, value: &str) {
    if let Some((_, credentials)) = value.trim().split_once(' ') {
        let credentials = credentials.trim();
        let base64 = credentials
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if credentials.len() >= 16 && base64 {
            assert!(
                !printed.contains(credentials),
                "the credentials are shown: {printed}"
            );
        }
    }
}

/// The SID a header value must be read as, if it is acceptable; an independent model.
fn model(value: &[u8]) -> Option<String> {
    let decoded = basic_credentials(value)?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = &decoded[..colon];
    let is_sid =
        user.len() == 34 && user.starts_with(b"SK") && user[2..].iter().all(u8::is_ascii_hexdigit);
    is_sid.then(|| String::from_utf8(user.to_vec()).expect("ASCII"))
}

/// The decoded credentials of a well-formed `Basic` header value: visible ASCII (and tabs),
/// trimmed, the scheme in any case, one space, strict padded base64.
pub(crate) fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    if !value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
    {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64_decode(encoded.trim_matches([' ', '\t']).as_bytes())
}

/// RFC 4648 base64 with the standard alphabet, padding required, no stray bits.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let chunks = text.len() / 4;
    let mut out = Vec::with_capacity(chunks * 3);
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for c in &chunk[..4 - pad] {
            n = n << 6 | sextet(*c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        if bytes[3 - pad..].iter().any(|b| *b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}
