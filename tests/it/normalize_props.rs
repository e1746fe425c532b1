//! Properties of normalization: it is idempotent, and the request it produces has one
//! canonical form under twilio-java's, twilio-python's and twilio-node's rules.
//!
//! twilio-node diverges from the other two on inputs no normalization can reconcile, so its
//! property is checked where twilio-node is self-consistent: it leaves `!'()` bare in paths
//! (Java encodes them), collapses repeated query keys into one object property, cuts values
//! at a second `=`, and sorts decoded `key=value` strings before encoding them, which orders
//! differently from the encoded form once characters like `/` or non-ASCII are involved.
//! Those are twilio-node's known differences, the same ones `computed_by` records in the
//! vectors.

use std::sync::LazyLock;

use pkcv_proxy::canonical::CanonicalRequest;
use pkcv_proxy::normalize::{normalize_path, normalize_query};
use pkcv_standin::canonical::{java_canonical_request, ReceivedRequest};
use proptest::prelude::*;

use crate::support::TestAccount;

/// Account A's credentials, as the vectors' requests carry them.
static AUTH: LazyLock<String> = LazyLock::new(|| TestAccount::a().basic_auth());
const HOST: &str = "api.twilio.com";

fn ours(path: &str, query: &str) -> String {
    CanonicalRequest {
        method: "GET",
        path,
        query,
        authorization: &AUTH,
        host: HOST,
        body_hash: None,
    }
    .to_canonical_string()
}

fn java(path: &str, query: &str) -> String {
    let request = ReceivedRequest {
        method: "GET",
        path,
        query,
        headers: vec![
            ("authorization".into(), AUTH.as_str().into()),
            ("host".into(), HOST.into()),
        ],
        body: b"",
    };
    java_canonical_request(&request, &["authorization", "host"]).expect("java rejects the path")
}

/// twilio-python signs the path and query as sent, sorting `query.split('&')`.
fn python(path: &str, query: &str) -> String {
    let mut pieces: Vec<&str> = query.split('&').collect();
    pieces.sort();
    format!(
        "GET\n{path}\n{}\nauthorization:{}\nhost:{HOST}\n\nauthorization;host\n",
        pieces.join("&"),
        *AUTH
    )
}

/// `encodeURIComponent`: everything but `A-Za-z0-9-_.!~*'()` is %XX of its UTF-8.
fn encode_uri_component(text: &str) -> String {
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

fn decode_uri_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// twilio-node's `customEncode`.
fn node_encode(text: &str) -> String {
    encode_uri_component(&decode_uri_component(text))
        .replace('*', "%2A")
        .replace("%7E", "~")
}

/// twilio-node's canonical request over its decoded parameter object.
fn node(path: &str, params: &[(String, String)]) -> String {
    let collapsed = regex_free_collapse(path);
    let path: Vec<String> = collapsed.split('/').map(node_encode).collect();
    let mut pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    let query: Vec<String> = pairs
        .iter()
        .map(|pair| {
            let mut it = pair.split('=');
            let (k, v) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            format!("{}={}", node_encode(k), node_encode(v))
        })
        .collect();
    format!(
        "GET\n{}\n{}\nauthorization:{}\nhost:{HOST}\n\nauthorization;host\n",
        path.join("/"),
        query.join("&"),
        *AUTH
    )
}

fn regex_free_collapse(path: &str) -> String {
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
fn client_encode(text: &str, style: u8) -> String {
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

fn any_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~é☃\u{1F600}]{0,24}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normalizing_twice_changes_nothing(path in any_text(), query in any_text()) {
        if let Ok(once) = normalize_path(&format!("/{path}")) {
            prop_assert_eq!(normalize_path(&once).unwrap(), once);
        }
        if let Ok(once) = normalize_query(&query) {
            prop_assert_eq!(normalize_query(&once).unwrap(), once);
        }
    }

    #[test]
    fn java_and_python_agree_on_the_normalized_request(path in any_text(), query in any_text()) {
        let (Ok(path), Ok(query)) = (normalize_path(&format!("/{path}")), normalize_query(&query)) else {
            return Ok(());
        };
        let canonical = ours(&path, &query);
        prop_assert_eq!(&java(&path, &query), &canonical);
        prop_assert_eq!(&python(&path, &query), &canonical);
    }

    #[test]
    fn node_agrees_where_it_is_self_consistent(
        segments in proptest::collection::vec("[A-Za-z0-9 ._~*+é☃-]{1,8}", 1..4),
        params in proptest::collection::btree_map("[A-Za-z0-9 ._~*+-]{1,8}", "[A-Za-z0-9 ._~*+-]{0,8}", 0..5),
        style in 0u8..30,
    ) {
        // Segments made only of dots are dot segments, removed before Node sees the path.
        prop_assume!(segments.iter().all(|s| !s.trim_matches('.').is_empty()));
        let raw_path: String = segments.iter().map(|s| format!("/{}", client_encode(s, style))).collect();
        let params: Vec<(String, String)> = params.into_iter().collect();
        let raw_query = params
            .iter()
            .map(|(k, v)| format!("{}={}", client_encode(k, style), client_encode(v, style)))
            .collect::<Vec<_>>()
            .join("&");
        let path = normalize_path(&raw_path).unwrap();
        let query = normalize_query(&raw_query).unwrap();
        prop_assert_eq!(node(&path, &params), ours(&path, &query));
    }
}

#[test]
fn node_differs_on_bare_sub_delims_as_documented() {
    let path = normalize_path("/a!b").unwrap();
    assert_eq!(path, "/a%21b");
    assert_ne!(node(&path, &[]), ours(&path, ""));
    assert_eq!(java(&path, ""), ours(&path, ""));
}
