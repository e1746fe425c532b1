//! Target `route`: [`resolve`] and [`in_tunnel`] — which host a request goes to.
//!
//! Input: literal lines — the request target, then any of `host: VALUE` (a `Host` header),
//! `allow: PATTERN` (the allow-list, by default `twilio.com` and `*.twilio.com`),
//! `default: HOST` (by default `api.twilio.com`) and `tunnel: HOST` (also route the request
//! as if inside a `CONNECT` tunnel to HOST); or structured: a policy, a target in absolute,
//! origin, authority or asterisk form (parsed as HTTP/1 sends it, or built from HTTP/2's
//! pseudo-headers), `Host` headers and a tunnel host, from pools of real and hostile hosts.
//!
//! The policy is built the way the proxy builds it, through [`Config::from_raw`], so only
//! policies a configuration can hold are tried.
//!
//! Properties, whenever a route is returned:
//!
//! - its host is allowed by the policy, canonical (lower case, no port, no trailing dot,
//!   what [`canonical_host`] returns), and never an IP literal (including the numeric forms
//!   `inet_aton` accepts, such as `2130706433`) unless the policy lists it exactly;
//! - it is what the target says: an absolute-form target's own host and port 80 or 443, an
//!   allowed `Host` header, a dotted first path segment (the rest of the path kept), or the
//!   default host only when the first segment has no dot — never a silent re-aim;
//! - an origin-form target without a dotted first segment is always routed;
//! - an allowed `Host` whose port is no port (`:99999`, `:abc`) is refused, not routed;
//! - inside a tunnel, the route is the tunnel's host and any host the request names is it;
//! - every allow-list pattern survives printing and parsing again, and matches its example.

use std::net::IpAddr;
use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use http::header::{HeaderMap, HeaderValue, HOST};
use http::Uri;
use pkcv_proxy::config::{Config, RawConfig};
use pkcv_proxy::route::TargetForm;
use pkcv_proxy::route::{canonical_host, in_tunnel, resolve, HostPattern, HostPolicy, Route};

use crate::Input;
use crate::{gen, stats};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "http://",
    "https://",
    "HTTP://",
    "ftp://",
    "api.twilio.com",
    "twilio.com",
    "accounts.twilio.com",
    "evil.com",
    ":443",
    ":80",
    ":8443",
    ":",
    "@",
    "[::1]",
    "127.0.0.1",
    ".",
    "..",
    "/",
    "//",
    "%2E",
    "%2F",
    "?",
    "#",
    "*",
    "\nhost: ",
    "\nallow: ",
    "\nallow: *.",
    "\ndefault: ",
    "\ntunnel: ",
    "xn--",
    "-",
];

/// Hosts, real and hostile.
const HOSTS: &[&str] = &[
    "api.twilio.com",
    "twilio.com",
    "accounts.twilio.com",
    "API.Twilio.COM.",
    "api.dublin.ie1.twilio.com",
    "evil.com",
    "eviltwilio.com",
    "twilio.com.evil.net",
    "example.com",
    "localhost",
    "127.0.0.1",
    "10.0.0.1",
    "0.0.1",
    "0.1",
    "1",
    "2130706433",
    "0x7f.1",
    "[::1]",
    "::1",
    "[::ffff:127.0.0.1]",
    "a..b",
    "-a.twilio.com",
    "a-.twilio.com",
    "xn--caf-dma.twilio.com",
    "api.twilio.com.",
    "api.twilio.com..",
    ".twilio.com",
    "",
    "*.twilio.com",
    "*",
    "api_twilio.com",
    "api.twilio.com%2Eevil.com",
    "API.TWILIO.COM",
    "user@api.twilio.com",
    "api.twilio.com@evil.com",
];

const PATHS: &[&str] = &[
    "",
    "2010-04-01/Accounts.json",
    "v1/Credentials/PublicKeys",
    "accounts.twilio.com/v1/Credentials",
    "api.twilio.com",
    "evil.com/x",
    "%2E%2E/x",
    "../x",
    "./api.twilio.com/x",
    "/evil.com/x",
    "127.0.0.1/x",
    "API.TWILIO.COM./v1",
];

const PORTS: &[&str] = &[
    "", "", ":80", ":443", ":8443", ":", ":0443", ":65536", ":0", ":00080", ":443:443", ":+443",
];

const SCHEMES: &[&str] = &["http", "https", "HTTP", "hTtPs", "ftp", "ws", "h"];

/// One routing case.
#[derive(Debug, Default)]
pub struct Case {
    /// The request target as sent on an HTTP/1 request line.
    pub target: Vec<u8>,
    /// Or, for HTTP/2, `:scheme`, `:authority` and `:path`.
    pub parts: Option<(String, String, String)>,
    /// `Host` header values.
    pub hosts: Vec<Vec<u8>>,
    /// `upstream.allowed_hosts` (empty: the default).
    pub allowed: Vec<String>,
    /// `upstream.default_host` (`None`: the default).
    pub default_host: Option<String>,
    /// The `CONNECT` tunnel's host, if routed as inside one.
    pub tunnel: Option<String>,
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    match Input::new(input) {
        Input::Literal(bytes) => check_case(&literal(bytes)),
        Input::Structured(mut u) => {
            if let Ok(case) = structured(&mut u) {
                check_case(&case);
            }
        }
    }
}

fn literal(bytes: &[u8]) -> Case {
    let mut lines = gen::lines(bytes);
    let mut case = Case {
        target: lines.next().unwrap_or_default().to_vec(),
        ..Case::default()
    };
    for line in lines {
        let text = |key: &[u8]| {
            line.strip_prefix(key)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        };
        if let Some(value) = line.strip_prefix(b"host: ") {
            case.hosts.push(value.to_vec());
        } else if let Some(pattern) = text(b"allow: ") {
            case.allowed.push(pattern);
        } else if let Some(host) = text(b"default: ") {
            case.default_host = Some(host);
        } else if let Some(host) = text(b"tunnel: ") {
            case.tunnel = Some(host);
        }
    }
    case
}

fn structured(u: &mut Unstructured<'_>) -> Result<Case> {
    let mut case = Case::default();
    if u.ratio(1u8, 2)? {
        for _ in 0..u.int_in_range(1..=3)? {
            case.allowed.push(pattern(u)?);
        }
        case.default_host = Some(match u.int_in_range(0u8..=3)? {
            0 => gen::word_or_text(u, HOSTS, 4, 8)?,
            _ => example(u.choose(&case.allowed)?),
        });
    }
    let host = host(u)?;
    let port = *u.choose(PORTS)?;
    let path = if u.ratio(1u8, 2)? {
        (*u.choose(PATHS)?).to_owned()
    } else {
        gen::text(u, HOSTS, 12)?
    };
    let query = gen::text(u, &[], 8)?;
    match u.int_in_range(0u8..=6)? {
        0 | 1 => {
            let scheme = gen::word_or_text(u, SCHEMES, 8, 3)?;
            let user = if u.ratio(1u8, 8)? { "user:pw@" } else { "" };
            case.target = format!("{scheme}://{user}{host}{port}/{path}?{query}").into_bytes();
        }
        2 | 3 => {
            let prefix = if u.ratio(1u8, 2)? {
                format!("/{}", host)
            } else {
                String::new()
            };
            case.target = format!("{prefix}/{path}?{query}").into_bytes();
        }
        4 => case.target = format!("{host}{port}").into_bytes(),
        5 => {
            let scheme = gen::word_or_text(u, SCHEMES, 8, 3)?;
            case.parts = Some((scheme, format!("{host}{port}"), format!("/{path}?{query}")));
        }
        _ => case.target = gen::bytes(u, DICTIONARY, 24)?,
    }
    for _ in 0..u.int_in_range(0..=2)? {
        let value = if u.ratio(3u8, 4)? {
            format!("{}{}", host_word(u)?, u.choose(PORTS)?).into_bytes()
        } else {
            gen::bytes(u, HOSTS, 8)?
        };
        case.hosts.push(value);
    }
    if u.ratio(1u8, 3)? {
        case.tunnel = Some(host_word(u)?);
    }
    Ok(case)
}

fn host_word(u: &mut Unstructured<'_>) -> Result<String> {
    let word = gen::word_or_text(u, HOSTS, 6, 8)?;
    gen::flip_case(u, &word)
}

fn host(u: &mut Unstructured<'_>) -> Result<String> {
    host_word(u)
}

fn pattern(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => format!("*.{}", host_word(u)?),
        1 => gen::text(u, HOSTS, 6)?,
        _ => {
            (*u.choose(&["twilio.com", "*.twilio.com", "api.twilio.com", "127.0.0.1"])?).to_owned()
        }
    })
}

/// A host the pattern (as written) matches, when it parses.
fn example(pattern: &str) -> String {
    HostPattern::parse(pattern).map_or_else(|| pattern.to_owned(), |p| p.example())
}

/// The policy the proxy would build from this allow-list, if a configuration may hold it.
fn policy(case: &Case) -> Option<HostPolicy> {
    static DEFAULT: LazyLock<HostPolicy> = LazyLock::new(|| {
        Config::from_raw(RawConfig::default())
            .expect("the default config is valid")
            .upstream
            .hosts
    });
    if case.allowed.is_empty() && case.default_host.is_none() {
        return Some(DEFAULT.clone());
    }
    let mut raw = RawConfig::default();
    if !case.allowed.is_empty() {
        raw.upstream.allowed_hosts = case.allowed.clone();
    }
    if let Some(default_host) = &case.default_host {
        raw.upstream.default_host = default_host.clone();
    }
    Config::from_raw(raw)
        .ok()
        .map(|config| config.upstream.hosts)
}

/// Every property for one case.
pub fn check_case(case: &Case) {
    for pattern in &case.allowed {
        check_pattern(pattern);
    }
    let Some(policy) = policy(case) else {
        return;
    };
    stats::count("route.policy-valid");
    let uri = match &case.parts {
        Some((scheme, authority, path)) => Uri::builder()
            .scheme(scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(path.as_str())
            .build(),
        None => Uri::try_from(case.target.as_slice()).map_err(http::Error::from),
    };
    let Ok(uri) = uri else {
        return;
    };
    stats::count("route.target-parsed");
    let mut headers = HeaderMap::new();
    for host in &case.hosts {
        if let Ok(value) = HeaderValue::from_bytes(host) {
            headers.append(HOST, value);
        }
    }
    match resolve(&uri, &headers, &policy) {
        Ok(route) => check_route(&uri, &headers, &policy, &route),
        Err(err) => {
            stats::count("route.refused");
            assert!(
                uri.scheme().is_some()
                    || first_segment(uri.path()).0.contains('.')
                    || headers.get_all(HOST).iter().count() > 1
                    || pasted_url(uri.path())
                    || malformed_host_port(&headers, |host| policy.is_allowed(host)),
                "origin-form {uri} without a host prefix is refused: {err}"
            );
        }
    }
    if let Some(tunnel) = case.tunnel.as_deref().and_then(canonical_host) {
        if policy.is_allowed(&tunnel) {
            check_tunnel(&uri, &headers, &tunnel);
        }
    }
}

fn check_pattern(text: &str) {
    let Some(pattern) = HostPattern::parse(text) else {
        return;
    };
    let printed = pattern.to_string();
    assert_eq!(
        HostPattern::parse(&printed).as_ref(),
        Some(&pattern),
        "pattern {text:?} prints as {printed:?}, which parses differently"
    );
    assert!(
        pattern.matches(&pattern.example()),
        "pattern {text:?} does not match its own example"
    );
}

fn check_route(uri: &Uri, headers: &HeaderMap, policy: &HostPolicy, route: &Route<'_>) {
    let host = route.host.as_str();
    let context = || {
        format!(
            "{uri} (Host {:?}) → {route:?} under {policy:?}",
            headers.get_all(HOST)
        )
    };
    assert!(policy.is_allowed(host), "off the allow-list: {}", context());
    assert!(
        headers.get_all(HOST).iter().count() <= 1,
        "two Hosts: {}",
        context()
    );
    assert_eq!(
        canonical_host(host).as_deref(),
        Some(host),
        "not canonical: {}",
        context()
    );
    assert!(
        !host.is_empty()
            && !host.contains(':')
            && !host.ends_with('.')
            && !host
                .bytes()
                .any(|b| b.is_ascii_uppercase() || !b.is_ascii()),
        "not canonical: {}",
        context()
    );
    let listed = || {
        policy
            .allowed()
            .contains(&HostPattern::Exact(host.to_owned()))
    };
    if is_ip_literal(host) && !listed() {
        panic!("an IP literal the policy does not list: {}", context());
    }
    assert_eq!(
        route.query,
        uri.query().unwrap_or(""),
        "query: {}",
        context()
    );
    check_form(uri, headers, policy, route, &context);
}

/// The route is what the target says, for each of the ways a client names a host.
fn check_form(
    uri: &Uri,
    headers: &HeaderMap,
    policy: &HostPolicy,
    route: &Route<'_>,
    context: &dyn Fn() -> String,
) {
    let host_header = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| canonical_host(strip_port(v)))
        .filter(|h| policy.is_allowed(h));
    let (first, rest) = first_segment(uri.path());
    stats::count(match route.form {
        TargetForm::Absolute => "route.routed-absolute",
        TargetForm::HostHeader => "route.routed-host-header",
        TargetForm::PathPrefix => "route.routed-path-prefix",
        _ => "route.routed-default",
    });
    match route.form {
        TargetForm::Absolute => {
            let scheme = uri
                .scheme_str()
                .unwrap_or_else(|| panic!("no scheme: {}", context()));
            assert!(
                scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"),
                "scheme: {}",
                context()
            );
            let authority = uri.authority().map_or("", |a| a.as_str());
            assert!(
                matches!(port(authority), Ok(None | Some(80 | 443))),
                "port: {}",
                context()
            );
            let named = uri.host().and_then(canonical_host);
            assert_eq!(named.as_deref(), Some(route.host.as_str()), "{}", context());
            assert_eq!(route.path, uri.path(), "path: {}", context());
        }
        form => {
            assert!(
                uri.scheme().is_none(),
                "{form:?} for an absolute target: {}",
                context()
            );
            assert!(
                !pasted_url(uri.path()),
                "a pasted URL routed: {}",
                context()
            );
            assert!(
                !malformed_host_port(headers, |host| policy.is_allowed(host)),
                "an allowed Host with a port that is no port routed: {}",
                context()
            );
            let expect = match (host_header, first.contains('.')) {
                (Some(host), _) => (TargetForm::HostHeader, host, uri.path()),
                (None, true) => (
                    TargetForm::PathPrefix,
                    canonical_host(first).unwrap_or_default(),
                    rest,
                ),
                (None, false) => (
                    TargetForm::Default,
                    policy.default_host().to_owned(),
                    uri.path(),
                ),
            };
            assert_eq!(
                (form, route.host.clone(), route.path),
                expect,
                "{}",
                context()
            );
        }
    }
}

/// A whole URL pasted as the path (`/https://api.twilio.com/…`), which is refused.
fn pasted_url(path: &str) -> bool {
    let start = path.trim_start_matches('/').as_bytes();
    let start = start[..start.len().min(8)].to_ascii_lowercase();
    start.starts_with(b"http:/") || start.starts_with(b"https:/")
}

/// The first path segment, and the rest of the path (at least `/`).
fn first_segment(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    }
}

/// The port an authority names (after any `user@`, outside `[…]`): `Err` unless digits
/// that fit in 16 bits.
fn port(authority: &str) -> std::result::Result<Option<u16>, ()> {
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    let after_brackets = host_port
        .rsplit_once(']')
        .map_or(host_port, |(_, rest)| rest);
    match after_brackets.rsplit_once(':') {
        None => Ok(None),
        Some((_, digits)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().map(Some).map_err(drop)
        }
        Some(_) => Err(()),
    }
}

/// `host:port` → `host`, where the port is digits and the host has no other `:`.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// A `Host` whose name passes `allowed` but whose port is not digits that fit in 16 bits
/// (`:99999`, `:abc`, an empty `:`): refused (79012), never routed with the port dropped.
fn malformed_host_port(headers: &HeaderMap, allowed: impl Fn(&str) -> bool) -> bool {
    let Some(value) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((name, port)) = value.rsplit_once(':') else {
        return false;
    };
    let is_port =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    !name.contains(':') && !is_port && canonical_host(name).is_some_and(|host| allowed(&host))
}

/// An IP address as a resolver would read it: `IpAddr`, or one to four numeric labels in
/// decimal, octal or `0x` hex (`inet_aton`'s forms: `2130706433`, `127.1`, `0x7f.0.0.1`).
pub fn is_ip_literal(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() <= 4
        && labels.iter().all(|label| {
            let hex = label
                .strip_prefix("0x")
                .or_else(|| label.strip_prefix("0X"));
            match hex {
                Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
                None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
            }
        })
}

fn check_tunnel(uri: &Uri, headers: &HeaderMap, tunnel: &str) {
    let Ok(route) = in_tunnel(uri, headers, tunnel) else {
        stats::count("route.tunnel-refused");
        return;
    };
    assert!(
        uri.host().is_some() || !malformed_host_port(headers, |host| host == tunnel),
        "tunnel to {tunnel}: a Host port that is no port accepted: {:?}",
        headers.get(HOST)
    );
    stats::count("route.tunnel-routed");
    assert_eq!(route.host, tunnel, "tunnel to {tunnel}: {uri} → {route:?}");
    assert!(
        headers.get_all(HOST).iter().count() <= 1,
        "tunnel: two Hosts"
    );
    assert_eq!(route.form, TargetForm::Tunnel);
    let named = uri.host().map(str::to_owned).or_else(|| {
        headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(named) = named {
        assert_eq!(
            canonical_host(strip_port(&named)).as_deref(),
            Some(tunnel),
            "tunnel to {tunnel} accepted a request naming {named:?}"
        );
    }
}
