//! Target `normalize`: [`normalize_path`] and [`normalize_query`], then the canonical request.
//!
//! Input: literal `path?query` text (split at the first `?`), or structured: a free-form
//! path and query from biased strings, or (as in the property tests) a path and parameters
//! a client encoded in one of several styles, which twilio-node must sign alike.
//!
//! Properties, for every path and query:
//!
//! - normalizing never panics; an error names the right part, and an invalid-escape error's
//!   offset points at the first `%` not followed by two hex digits;
//! - the normalized path starts with `/`, has no empty, `.` or `..` segment, and uses only
//!   `A-Z a-z 0-9 - . _ ~` and `%XX` with upper-case hex; the query likewise, plus `&` and `=`,
//!   with no empty piece;
//! - normalization is idempotent;
//! - it keeps the meaning: the decoded path segments are the raw path's after dot-segment
//!   removal, and the query decodes (as a form, by `form_urlencoded`) to the same pairs;
//! - the normalized request canonicalizes identically under the proxy's rules, twilio-java's
//!   (the stand-in's port), twilio-python's, and twilio-node's wherever twilio-node is
//!   self-consistent (see `tests/it/normalize_props.rs` for its known differences); and
//!   the `rqh` hash is the SHA-256 of that canonical string.

use arbitrary::{Result, Unstructured};
use pkcv_proxy::normalize::{normalize_path, normalize_query, NormalizeError, Part};
use pkcv_standin::canonical::sha256_hex;

use crate::Input;
use crate::{gen, models, stats};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "%",
    "%2F",
    "%2f",
    "%2E",
    "%2e%2E",
    "%25",
    "+",
    "%2B",
    "%20",
    "..",
    "/./",
    "/../",
    "//",
    "&",
    "&&",
    "=",
    "==",
    "?",
    "%C3%A9",
    "%c3%a9",
    "é",
    "☃",
    "😀",
    "%FF",
    "%C3",
    "%E2%98",
    "*",
    "~",
    "%7E",
    "%7e",
    "!",
    "'",
    "(",
    ")",
    "#",
    "%3D",
    "%26",
    "%00",
    "%0D%0A",
    "\r",
    "\n",
    "\0",
    "Accounts",
    "Messages.json",
    "PageSize=50",
    "To=%2B1",
];

/// Words for structured paths and queries.
const WORDS: &[&str] = &[
    "2010-04-01",
    "Accounts",
    "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
    "Messages.json",
    "v1",
    "PageSize",
    "To",
    "FriendlyName",
    "DateSent>",
    "Main Line",
];

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    match Input::new(input) {
        Input::Literal(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let (path, query) = text.split_once('?').unwrap_or((&text, ""));
            check_request(path, query);
        }
        Input::Structured(mut u) => {
            let _ = structured(&mut u);
        }
    }
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1u8, 3)? {
        return client_encoded(u);
    }
    let path = gen::text(u, WORDS, 40)?;
    let path = if u.ratio(3u8, 4)? {
        format!("/{path}")
    } else {
        path
    };
    let query = gen::text(u, WORDS, 40)?;
    check_request(&path, &query);
    Ok(())
}

/// The property tests' case: text a client encoded in one of 30 styles; it must normalize,
/// and twilio-node must sign it as the proxy does.
fn client_encoded(u: &mut Unstructured<'_>) -> Result<()> {
    const SEGMENT: &[&str] = &[
        "a", "Z", "0", " ", ".", "_", "~", "*", "+", "-", "é", "☃", "x", "9",
    ];
    let style = u.int_in_range(0u8..=29)?;
    let mut raw_path = String::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let segment = concat(u, SEGMENT, 1..=8)?;
        if segment.trim_matches('.').is_empty() {
            continue;
        }
        raw_path.push('/');
        raw_path.push_str(&models::client_encode(&segment, style));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let key = concat(u, SEGMENT, 1..=8)?;
        let value = concat(u, SEGMENT, 0..=8)?;
        if params.iter().all(|(k, _)| *k != key) {
            params.push((key, value));
        }
    }
    let raw_query = params
        .iter()
        .map(|(k, v)| {
            let (k, v) = (
                models::client_encode(k, style),
                models::client_encode(v, style),
            );
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&");
    let (path, query) = check_request(&raw_path, &raw_query);
    let path = path.unwrap_or_else(|| panic!("client-encoded path {raw_path:?} is refused"));
    let query = query.unwrap_or_else(|| panic!("client-encoded query {raw_query:?} is refused"));
    let node_params =
        node_params(&path, &query).unwrap_or_else(|| panic!("node cannot read {path:?}?{query:?}"));
    assert_eq!(node_params.len(), params.len(), "{raw_query:?} → {query:?}");
    Ok(())
}

fn concat(
    u: &mut Unstructured<'_>,
    alphabet: &[&str],
    len: std::ops::RangeInclusive<usize>,
) -> Result<String> {
    let mut out = String::new();
    for _ in 0..u.int_in_range(len)? {
        out.push_str(u.choose(alphabet)?);
    }
    Ok(out)
}

/// Every property for one raw path and query; the normalized forms where they normalize.
pub fn check_request(raw_path: &str, raw_query: &str) -> (Option<String>, Option<String>) {
    let path = check_path(raw_path);
    let query = check_query(raw_query);
    if let (Some(path), Some(query)) = (&path, &query) {
        check_canonical(path, query);
    }
    (path, query)
}

fn check_path(raw: &str) -> Option<String> {
    let once = match normalize_path(raw) {
        Ok(once) => once,
        Err(err) => {
            stats::count("normalize.path-refused");
            check_path_error(raw, &err);
            return None;
        }
    };
    stats::count("normalize.path-ok");
    assert!(once.starts_with('/'), "{raw:?} → {once:?}: no leading /");
    assert_alphabet(&once, b"/", raw);
    let mut segments: Vec<&str> = once[1..].split('/').collect();
    if segments.last() == Some(&"") {
        segments.pop();
    }
    for segment in segments {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{raw:?} → {once:?}: segment {segment:?} left"
        );
    }
    let twice = normalize_path(&once)
        .unwrap_or_else(|err| panic!("{raw:?} → {once:?}, which is refused: {err}"));
    assert_eq!(twice, once, "normalize_path is not idempotent on {raw:?}");
    let (segments, trailing) = model_path(raw);
    let decoded: Vec<String> = once[1..]
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(strict_decode(s.as_bytes(), false).unwrap()).unwrap())
        .collect();
    assert_eq!(decoded, segments, "{raw:?} → {once:?} changed the path");
    let expect_trailing = trailing || segments.is_empty();
    assert_eq!(
        once.ends_with('/'),
        expect_trailing,
        "{raw:?} → {once:?}: trailing slash"
    );
    Some(once)
}

/// RFC 3986 §5.2.4 over the decoded path: the segments left, and whether it ends in `/`.
fn model_path(raw: &str) -> (Vec<String>, bool) {
    let decoded = String::from_utf8(strict_decode(raw.as_bytes(), false).unwrap()).unwrap();
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.split('/') {
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            other => stack.push(other),
        }
    }
    (stack.into_iter().map(str::to_owned).collect(), trailing)
}

fn check_query(raw: &str) -> Option<String> {
    let once = match normalize_query(raw) {
        Ok(once) => once,
        Err(err) => {
            stats::count("normalize.query-refused");
            check_query_error(raw, &err);
            return None;
        }
    };
    stats::count("normalize.query-ok");
    assert_alphabet(&once, b"&=", raw);
    let raw_pieces: Vec<&str> = raw.split('&').filter(|p| !p.is_empty()).collect();
    let pieces: Vec<&str> = if once.is_empty() {
        Vec::new()
    } else {
        once.split('&').collect()
    };
    assert_eq!(pieces.len(), raw_pieces.len(), "{raw:?} → {once:?}: pieces");
    for (raw_piece, piece) in raw_pieces.iter().zip(&pieces) {
        assert!(!piece.is_empty(), "{raw:?} → {once:?}: empty piece");
        assert!(
            piece.matches('=').count() <= 1,
            "{raw:?} → {once:?}: '=' in a value"
        );
        assert_eq!(
            raw_piece.contains('='),
            piece.contains('='),
            "{raw:?} → {once:?}: a key lost or gained its '='"
        );
    }
    let twice = normalize_query(&once)
        .unwrap_or_else(|err| panic!("{raw:?} → {once:?}, which is refused: {err}"));
    assert_eq!(twice, once, "normalize_query is not idempotent on {raw:?}");
    let before: Vec<_> = form_urlencoded::parse(raw.as_bytes()).collect();
    let after: Vec<_> = form_urlencoded::parse(once.as_bytes()).collect();
    assert_eq!(before, after, "{raw:?} → {once:?} changed the form's pairs");
    Some(once)
}

/// Only unreserved bytes, `extra`, and `%XX` with upper-case hex.
fn assert_alphabet(normalized: &str, extra: &[u8], raw: &str) {
    let bytes = normalized.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = &bytes[i + 1..(i + 3).min(bytes.len())];
            assert!(
                hex.len() == 2
                    && hex
                        .iter()
                        .all(|h| h.is_ascii_digit() || h.is_ascii_uppercase()),
                "{raw:?} → {normalized:?}: escape at {i} is not %XX upper-case"
            );
            assert!(hex.iter().all(u8::is_ascii_hexdigit));
            i += 3;
            continue;
        }
        assert!(
            b.is_ascii_alphanumeric() || b"-._~".contains(&b) || extra.contains(&b),
            "{raw:?} → {normalized:?}: byte {:?} left bare",
            b as char
        );
        i += 1;
    }
}

/// Percent-decoding that refuses a bad escape (`Err(offset)`); `+` is a space in forms.
fn strict_decode(raw: &[u8], plus_is_space: bool) -> std::result::Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(i)?;
                let text = std::str::from_utf8(hex).map_err(|_| i)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(i);
                }
                out.push(u8::from_str_radix(text, 16).map_err(|_| i)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn check_path_error(raw: &str, err: &NormalizeError) {
    let decoded = strict_decode(raw.as_bytes(), false);
    match (err, decoded) {
        (NormalizeError::InvalidPercentEncoding { part, offset }, Err(first)) => {
            assert_eq!(*part, Part::Path, "{raw:?}: {err:?}");
            assert_eq!(*offset, first, "{raw:?}: {err:?} names the wrong offset");
        }
        (NormalizeError::NotUtf8 { part }, Ok(bytes)) => {
            assert_eq!(*part, Part::Path, "{raw:?}: {err:?}");
            assert!(String::from_utf8(bytes).is_err(), "{raw:?}: {err:?}");
        }
        (err, decoded) => panic!("path {raw:?}: {err:?}, but decoding gives {decoded:?}"),
    }
}

fn check_query_error(raw: &str, err: &NormalizeError) {
    match err {
        NormalizeError::InvalidPercentEncoding { part, offset } => {
            assert_eq!(*part, Part::Query, "{raw:?}: {err:?}");
            let first = strict_decode(raw.as_bytes(), true).err();
            assert_eq!(
                Some(*offset),
                first,
                "{raw:?}: {err:?} names the wrong offset"
            );
        }
        NormalizeError::NotUtf8 { part } => {
            assert_eq!(*part, Part::Query, "{raw:?}: {err:?}");
            let some_piece_not_utf8 = raw.split(['&', '=']).any(|piece| {
                strict_decode(piece.as_bytes(), true)
                    .is_ok_and(|bytes| String::from_utf8(bytes).is_err())
            });
            assert!(
                some_piece_not_utf8,
                "{raw:?}: {err:?}, but every piece is UTF-8"
            );
        }
        other => panic!("query {raw:?}: unexpected error {other:?}"),
    }
}

fn check_canonical(path: &str, query: &str) {
    stats::count("normalize.java-python-compared");
    let canonical = models::ours(path, query);
    assert_eq!(
        models::java(path, query).as_deref(),
        Some(canonical.as_str()),
        "twilio-java canonicalizes {path:?}?{query:?} differently"
    );
    assert_eq!(
        models::python(path, query),
        canonical,
        "twilio-python canonicalizes {path:?}?{query:?} differently"
    );
    assert_eq!(
        models::request(path, query).hash().as_str(),
        sha256_hex(&canonical),
        "rqh is not the SHA-256 of the canonical request"
    );
    if let Some(params) = node_params(path, query) {
        check_node(path, query, &params, &canonical);
    }
}

/// The parameter object twilio-node would be given, where twilio-node is self-consistent:
/// no `!'()` anywhere (it leaves them bare), one `key=value` per key with no `=` inside (it
/// collapses repeated keys and cuts values at a second `=`), and no `%` in a decoded key or
/// value (its `customEncode` decodes a parameter once more, or throws).
fn node_params(path: &str, query: &str) -> Option<Vec<(String, String)>> {
    let decoded_path = models::decode_uri_component(path)?;
    if decoded_path.contains(['!', '\'', '(', ')']) {
        return None;
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=')?;
        let (key, value) = (
            models::decode_uri_component(key)?,
            models::decode_uri_component(value)?,
        );
        let unsafe_for_node = |text: &str| text.contains(['=', '!', '\'', '(', ')', '%']);
        if unsafe_for_node(&key) || unsafe_for_node(&value) || params.iter().any(|(k, _)| *k == key)
        {
            return None;
        }
        params.push((key, value));
    }
    Some(params)
}

/// twilio-node sorts decoded `key=value` strings before encoding them: where that orders
/// differently from the encoded pieces (`/`, non-ASCII), only the set of pieces must agree.
fn check_node(path: &str, query: &str, params: &[(String, String)], canonical: &str) {
    let node = models::node(path, params)
        .unwrap_or_else(|| panic!("twilio-node cannot encode {path:?}?{query:?}"));
    let mut decoded_order: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    decoded_order.sort();
    let mut encoded_order: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    encoded_order.sort_unstable();
    let same_order = decoded_order
        .iter()
        .zip(&encoded_order)
        .all(|(decoded, encoded)| models::decode_uri_component(encoded).as_ref() == Some(decoded));
    if same_order {
        stats::count("normalize.node-compared-whole");
        assert_eq!(
            node, canonical,
            "twilio-node canonicalizes {path:?}?{query:?} differently"
        );
    } else {
        stats::count("normalize.node-compared-pieces");
        assert_eq!(
            sorted_query_line(&node),
            sorted_query_line(canonical),
            "twilio-node encodes the pieces of {path:?}?{query:?} differently"
        );
    }
}

/// The canonical request with the pieces of its query line sorted.
fn sorted_query_line(canonical: &str) -> Vec<String> {
    canonical
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            if i != 2 {
                return line.to_owned();
            }
            let mut pieces: Vec<&str> = line.split('&').collect();
            pieces.sort_unstable();
            pieces.join("&")
        })
        .collect()
}
