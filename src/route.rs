//! Which Twilio host a request is for — and the allow-list that keeps this from ever being an
//! open proxy.
//!
//! Three kinds of client reach the proxy:
//!
//! 1. `HTTP_PROXY` users send absolute-form targets (`GET http://api.twilio.com/… HTTP/1.1`):
//!    the URI's host is the upstream. Only ports 80 and 443 are accepted.
//! 2. Sidecars that map `api.twilio.com` to loopback send origin-form with that `Host`: an
//!    allowed `Host` is the upstream.
//! 3. Clients whose base URL is the proxy name the host in the first path segment
//!    (`/accounts.twilio.com/v1/…`). Twilio paths begin with a version (`2010-04-01`, `v1`),
//!    so a first segment with a dot is always a host name: routed if allowed, refused if not.
//!    Anything else goes to `default_host`.
//!
//! Whatever the form, a host that does not match `allowed_hosts` is refused with 403 before
//! any connection is made. The upstream is always HTTPS on 443, whatever scheme the client used.

use http::header::{HeaderMap, HOST};
use http::Uri;

use crate::error::ProxyError;

/// One entry of `allowed_hosts`: `twilio.com` (exactly that host) or `*.twilio.com` (any
/// name below it, at any depth, such as `api.dublin.ie1.twilio.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot.
    Subdomains(String),
}

impl HostPattern {
    /// Parses a pattern; `None` if it is not a host name or `*.` followed by one.
    pub fn parse(pattern: &str) -> Option<Self> {
        match pattern.strip_prefix("*.") {
            Some(base) => Some(HostPattern::Subdomains(format!(
                ".{}",
                canonical_host(base)?
            ))),
            None => Some(HostPattern::Exact(canonical_host(pattern)?)),
        }
    }

    /// A host this pattern matches (the host itself, or one name below the suffix).
    pub fn example(&self) -> String {
        match self {
            HostPattern::Exact(host) => host.clone(),
            HostPattern::Subdomains(suffix) => format!("any{suffix}"),
        }
    }

    /// True when `host` (already canonical) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The hosts the proxy may contact, and where requests that name none go.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    allowed: Vec<HostPattern>,
    default_host: String,
}

impl HostPolicy {
    /// A policy; `default_host` must itself be allowed (checked by the config).
    pub fn new(allowed: Vec<HostPattern>, default_host: String) -> Self {
        HostPolicy {
            allowed,
            default_host,
        }
    }

    /// True when `host` (canonical) may be contacted.
    pub fn is_allowed(&self, host: &str) -> bool {
        self.matching(host).is_some()
    }

    /// The first allowed pattern `host` (canonical) matches: a bounded name for metrics,
    /// where the host itself could be any of unboundedly many.
    pub fn matching(&self, host: &str) -> Option<&HostPattern> {
        self.allowed.iter().find(|pattern| pattern.matches(host))
    }

    /// The host used when a request names none.
    pub fn default_host(&self) -> &str {
        &self.default_host
    }

    /// The allowed patterns.
    pub fn allowed(&self) -> &[HostPattern] {
        &self.allowed
    }

    fn allow(&self, host: &str) -> Result<String, ProxyError> {
        match canonical_host(host) {
            Some(host) if self.is_allowed(&host) => Ok(host),
            _ => Err(ProxyError::HostNotAllowed(printable(host))),
        }
    }
}

/// How the client named the upstream host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `GET http://host/path` (a client using `HTTP_PROXY`).
    Absolute,
    /// Origin-form with an allowed `Host` header.
    HostHeader,
    /// Origin-form with the host as the first path segment.
    PathPrefix,
    /// Origin-form naming no host: `default_host`.
    Default,
    /// Inside an intercepted `CONNECT` tunnel: the tunnel's host.
    Tunnel,
}

/// Where a request goes: an allowed host, and the path and query still to normalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The upstream host, lower case, without port.
    pub host: String,
    /// The raw path, with any host prefix removed.
    pub path: &'a str,
    /// The raw query, without `?` (empty if none).
    pub query: &'a str,
    /// How the host was named.
    pub form: TargetForm,
}

/// Decides where a request goes.
pub fn resolve<'a>(
    uri: &'a Uri,
    headers: &HeaderMap,
    policy: &HostPolicy,
) -> Result<Route<'a>, ProxyError> {
    single_host(headers)?;
    let query = uri.query().unwrap_or("");
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(ProxyError::BadTarget(
                "only http:// and https:// targets are proxied",
            ));
        }
        let authority = uri.authority().ok_or(ProxyError::BadTarget(
            "the absolute-form target has no host",
        ))?;
        if let Some(port) = authority_port(authority)? {
            if port != 80 && port != 443 {
                return Err(ProxyError::PortNotAllowed(port.to_string()));
            }
        }
        let host = policy.allow(authority.host())?;
        return Ok(Route {
            host,
            path: uri.path(),
            query,
            form: TargetForm::Absolute,
        });
    }

    // `/https://api.twilio.com/…`: a whole URL pasted where the proxy's base URL goes.
    let first = uri.path().trim_start_matches('/');
    let scheme = first.get(..8).unwrap_or(first).to_ascii_lowercase();
    if scheme.starts_with("http:/") || scheme.starts_with("https:/") {
        return Err(ProxyError::UrlAsPath);
    }

    if let Some(host) = headers.get(HOST).and_then(|value| value.to_str().ok()) {
        let (name, port) = split_port(host);
        if let Some(host) = canonical_host(name).filter(|host| policy.is_allowed(host)) {
            // The port itself is ignored (the upstream is always 443), but one that is no
            // port at all is refused rather than quietly dropped.
            check_host_port(port)?;
            return Ok(Route {
                host,
                path: uri.path(),
                query,
                form: TargetForm::HostHeader,
            });
        }
    }

    let path = uri.path();
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (first, remainder) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if first.contains('.') {
        let host = policy.allow(first)?;
        return Ok(Route {
            host,
            path: remainder,
            query,
            form: TargetForm::PathPrefix,
        });
    }
    Ok(Route {
        host: policy.default_host.clone(),
        path,
        query,
        form: TargetForm::Default,
    })
}

/// The route of a request inside a `CONNECT` tunnel to `host` (already allowed): it goes to
/// the tunnel's host, and a request that names another one (in its target or, over
/// HTTP/1.1, its `Host`) is refused as misdirected rather than quietly re-aimed.
pub fn in_tunnel<'a>(
    uri: &'a Uri,
    headers: &HeaderMap,
    host: &str,
) -> Result<Route<'a>, ProxyError> {
    single_host(headers)?;
    let named = match uri.host() {
        Some(named) => Some(named),
        None => match headers.get(HOST).and_then(|value| value.to_str().ok()) {
            Some(value) => {
                let (name, port) = split_port(value);
                if canonical_host(name).as_deref() == Some(host) {
                    check_host_port(port)?;
                }
                Some(name)
            }
            None => None,
        },
    };
    if let Some(named) = named {
        if canonical_host(split_port(named).0).as_deref() != Some(host) {
            return Err(ProxyError::Misdirected(host.to_owned()));
        }
    }
    Ok(Route {
        host: host.to_owned(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        form: TargetForm::Tunnel,
    })
}

/// One `Host` at most: with two, which one the proxy signs and which one a server reads
/// could differ (RFC 9112 §3.2 asks for a 400).
fn single_host(headers: &HeaderMap) -> Result<(), ProxyError> {
    if headers.get_all(HOST).iter().nth(1).is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    Ok(())
}

/// The port an authority names: `None` when it names none, an error when what follows the
/// `:` is not a port (`:99999`, `:+443`, an empty `:`), which `http`'s parser lets through.
pub fn authority_port(authority: &http::uri::Authority) -> Result<Option<u16>, ProxyError> {
    let text = authority.as_str();
    let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    let Some((_, port)) = host_and_port.rsplit_once(':') else {
        return Ok(None);
    };
    if port.contains(']') {
        // The colon was inside a bracketed IPv6 literal: no port.
        return Ok(None);
    }
    let parsed = (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then(|| port.parse::<u16>().ok())
        .flatten();
    match parsed {
        Some(port) => Ok(Some(port)),
        None => Err(ProxyError::PortNotAllowed(printable(port))),
    }
}

/// `host:port` → (`host`, `Some(port)`), whatever follows the `:`; a value with more than
/// one `:` (a bracketed IPv6 literal) is left whole and never matches a host name.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// A `Host` port is ignored (`Host: api.twilio.com:8080` is the sidecar form), but it must
/// be one: digits that fit in 16 bits.
fn check_host_port(port: Option<&str>) -> Result<(), ProxyError> {
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => Err(
            ProxyError::BadTarget("the Host header's port is not a number"),
        ),
        Some(port) if port.parse::<u16>().is_err() => Err(ProxyError::BadTarget(
            "the Host header's port is above 65535",
        )),
        _ => Ok(()),
    }
}

/// A DNS host name in lower case without a trailing dot, or `None` if `host` is not one.
pub fn canonical_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid.then(|| host.to_ascii_lowercase())
}

/// A host name as it may appear in an error message: bounded and printable.
fn printable(host: &str) -> String {
    host.chars()
        .take(100)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy() -> HostPolicy {
        HostPolicy::new(
            vec![
                HostPattern::parse("twilio.com").unwrap(),
                HostPattern::parse("*.twilio.com").unwrap(),
            ],
            "api.twilio.com".into(),
        )
    }

    fn route(
        target: &str,
        host: Option<&str>,
    ) -> Result<(String, String, String, TargetForm), ProxyError> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        }
        let route = resolve(&uri, &headers, &policy())?;
        Ok((
            route.host,
            route.path.to_owned(),
            route.query.to_owned(),
            route.form,
        ))
    }

    #[test]
    fn patterns() {
        let p = policy();
        for ok in ["twilio.com", "api.twilio.com", "api.dublin.ie1.twilio.com"] {
            assert!(p.is_allowed(ok), "{ok}");
        }
        for bad in [
            "eviltwilio.com",
            "twilio.com.evil.net",
            "example.com",
            "127.0.0.1",
            "com",
        ] {
            assert!(!p.is_allowed(bad), "{bad}");
        }
        assert_eq!(
            HostPattern::parse("*.Twilio.COM.").unwrap().to_string(),
            "*.twilio.com"
        );
        assert!(HostPattern::parse("*").is_none());
        assert!(HostPattern::parse("a b").is_none());
    }

    #[test]
    fn absolute_form() {
        let (host, path, query, form) =
            route("http://API.twilio.com/2010-04-01/Accounts.json?a=1", None).unwrap();
        assert_eq!(
            (host.as_str(), path.as_str(), query.as_str()),
            ("api.twilio.com", "/2010-04-01/Accounts.json", "a=1")
        );
        assert_eq!(form, TargetForm::Absolute);
        assert!(route("https://api.twilio.com:443/x", None).is_ok());
        assert!(route("http://api.twilio.com:80/x", Some("evil.com")).is_ok());
        assert!(matches!(
            route("http://api.twilio.com:8443/x", None),
            Err(ProxyError::PortNotAllowed(port)) if port == "8443"
        ));
        // What `http` parses but is no port at all is refused the same way.
        for target in [
            "http://api.twilio.com:99999/x",
            "http://api.twilio.com:65979/x",
            "http://api.twilio.com:/x",
        ] {
            if let Ok(uri) = target.parse::<Uri>() {
                let refused = resolve(&uri, &HeaderMap::new(), &policy());
                assert!(
                    matches!(refused, Err(ProxyError::PortNotAllowed(_))),
                    "{target}: {refused:?}"
                );
            }
        }
        assert!(matches!(
            route("http://example.com/x", None),
            Err(ProxyError::HostNotAllowed(_))
        ));
        assert!(matches!(
            route("ftp://api.twilio.com/x", None),
            Err(ProxyError::BadTarget(_))
        ));
    }

    #[test]
    fn tunnel_requests_must_name_the_tunnel_host() {
        let uri: Uri = "/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert!(in_tunnel(&uri, &headers, "api.twilio.com").is_ok());
        headers.insert(HOST, HeaderValue::from_static("API.twilio.com:443"));
        assert!(in_tunnel(&uri, &headers, "api.twilio.com").is_ok());
        headers.insert(HOST, HeaderValue::from_static("api.twilio.com:abc"));
        assert!(matches!(
            in_tunnel(&uri, &headers, "api.twilio.com"),
            Err(ProxyError::BadTarget(_))
        ));
        headers.insert(HOST, HeaderValue::from_static("accounts.twilio.com"));
        assert!(matches!(
            in_tunnel(&uri, &headers, "api.twilio.com"),
            Err(ProxyError::Misdirected(_))
        ));
        let h2: Uri = "https://accounts.twilio.com/x".parse().unwrap();
        assert!(matches!(
            in_tunnel(&h2, &HeaderMap::new(), "api.twilio.com"),
            Err(ProxyError::Misdirected(_))
        ));
    }

    #[test]
    fn a_url_pasted_as_the_path_is_refused_with_a_hint() {
        for target in [
            "/https://api.twilio.com/2010-04-01/Accounts.json",
            "/http://api.twilio.com/x",
            "/HTTPS:/api.twilio.com/x",
        ] {
            for host in [None, Some("api.twilio.com"), Some("localhost:8080")] {
                let refused = route(target, host).unwrap_err();
                assert!(
                    matches!(refused, ProxyError::UrlAsPath),
                    "{target} {host:?}"
                );
                assert_eq!(refused.code(), 79026);
                assert!(refused.to_string().contains("HTTPS_PROXY"));
            }
        }
        assert!(route("/api.twilio.com/2010-04-01/Accounts.json", None).is_ok());
    }

    #[test]
    fn origin_form() {
        let r = route("/2010-04-01/Accounts.json", Some("api.twilio.com")).unwrap();
        assert_eq!(
            (r.0.as_str(), r.3),
            ("api.twilio.com", TargetForm::HostHeader)
        );
        let r = route("/v1/Content", Some("content.twilio.com:8080")).unwrap();
        assert_eq!(
            (r.0.as_str(), r.3),
            ("content.twilio.com", TargetForm::HostHeader)
        );

        let r = route(
            "/accounts.twilio.com/v1/Credentials/PublicKeys?PageSize=20",
            Some("127.0.0.1:8080"),
        )
        .unwrap();
        assert_eq!(
            r,
            (
                "accounts.twilio.com".into(),
                "/v1/Credentials/PublicKeys".into(),
                "PageSize=20".into(),
                TargetForm::PathPrefix
            )
        );
        let r = route("/accounts.twilio.com", Some("localhost")).unwrap();
        assert_eq!(r.1, "/");

        let r = route("/2010-04-01/Accounts.json", Some("localhost:8080")).unwrap();
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.3),
            (
                "api.twilio.com",
                "/2010-04-01/Accounts.json",
                TargetForm::Default
            )
        );
        let r = route("/2010-04-01/Accounts.json", None).unwrap();
        assert_eq!(r.3, TargetForm::Default);

        assert!(matches!(
            route("/example.com/x", Some("localhost")),
            Err(ProxyError::HostNotAllowed(_))
        ));
        assert!(matches!(
            route("/a..b/x", Some("localhost")),
            Err(ProxyError::HostNotAllowed(_))
        ));
        // A malformed port in an allowed Host is refused, not routed to 443 regardless.
        for host in [
            "api.twilio.com:99999",
            "api.twilio.com:abc",
            "api.twilio.com:",
            "api.twilio.com:+443",
        ] {
            let refused = route("/2010-04-01/Accounts.json", Some(host));
            assert!(
                matches!(&refused, Err(err @ ProxyError::BadTarget(_)) if err.code() == 79012),
                "{host}: {refused:?}"
            );
        }
        assert!(route("/x", Some("api.twilio.com:65535")).is_ok());
        // A disallowed Host header falls through to the other rules; it is never contacted.
        let r = route("/2010-04-01/Accounts.json", Some("evil.com")).unwrap();
        assert_eq!(r.0, "api.twilio.com");
    }
}
