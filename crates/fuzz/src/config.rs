//! Target `config`: TOML text through figment into [`RawConfig`], then [`Loaded::from_raw`].
//!
//! Input: literal — the TOML text (invalid UTF-8 replaced); or structured — a document built
//! from the real sections and keys with values from pools of valid, borderline and invalid
//! settings (hosts, patterns, addresses, SIDs, numbers at the edges of their ranges, log
//! filters), now and then an unknown key or a biased string.
//!
//! Properties:
//!
//! - reading and validating any text never panics, and a refusal renders as a non-empty
//!   message without figment's internals (its `default.` profile prefix);
//! - a configuration that validates has a non-empty allow-list of canonical patterns, no
//!   wildcard over fewer than two labels, a canonical `default_host` on its own allow-list,
//!   passthrough patterns that match no host an allowed pattern matches, a TTL of 1–300 s,
//!   `max_buffered_bytes` ≥ `max_body_bytes`, well-formed and distinct account SIDs, and
//!   each account's key is a file or a parsed `pkcs11:` URI (never both);
//! - no refusal repeats a PIN given as a URI's `pin-value` (every `pin-value=` in a read error
//!   is followed by `<redacted>`);
//! - the same text read as an `accounts_dir` file (and, when it has one, its first
//!   `[[accounts]]` table alone) is refused without repeating a PIN given as a `pin-value`,
//!   whatever the refusal (account-file errors redact every one, not only read errors');
//! - its effective `RawConfig` ([`Loaded::effective`]) written back as TOML reads and validates again to the same allow-list,
//!   default host, passthrough list and TTL.

use arbitrary::{Result, Unstructured};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use pkcv_proxy::config::{Config, ConfigError, Loaded, RawConfig};
use pkcv_proxy::route::{canonical_host, HostPattern};

use crate::route::is_ip_literal;
use crate::Input;
use crate::{gen, stats};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "\n[server]\n",
    "\n[upstream]\n",
    "\n[upstream.connect_to]\n",
    "\n[signing]\n",
    "\n[log]\n",
    "\n[intercept]\n",
    "\n[pkcs11]\n",
    "private_key = ",
    "\"pkcs11:",
    ";object=",
    "?pin-value=",
    "&pin-source=file:",
    "\n[[accounts]]\n",
    "allowed_hosts = ",
    "default_host = ",
    "passthrough_hosts = ",
    "enabled = true\n",
    "\"*.twilio.com\"",
    "\"twilio.com\"",
    "\"api.twilio.com\"",
    "[\"*.com\"]",
    "ttl_secs = ",
    "level = ",
    " = ",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "\\u0000",
    "\\",
    "0",
    "-1",
    "300",
    "301",
    "9223372036854775807",
    "1e3",
    "inf",
    "nan",
    "true",
    "\n",
];

/// `(section, [(key, kind)])`: the keys of each section and the pool their values come from.
const SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    ("", &[("accounts_dir", Kind::Path)]),
    (
        "[server]",
        &[
            ("listen", Kind::Address),
            ("admin_listen", Kind::Address),
            ("max_body_bytes", Kind::Number),
            ("max_buffered_bytes", Kind::Number),
            ("reload_interval_ms", Kind::Number),
            ("body_read_timeout_ms", Kind::Number),
            ("header_read_timeout_secs", Kind::Number),
            ("shutdown_grace_secs", Kind::Number),
            ("max_connections", Kind::Number),
            ("max_in_flight", Kind::Number),
            ("idle_timeout_secs", Kind::Number),
            ("worker_threads", Kind::Number),
            ("status_file", Kind::Path),
            ("tls_handshake_timeout_secs", Kind::Number),
            ("tls_listen", Kind::Address),
            ("tls_cert_file", Kind::Path),
            ("tls_key_file", Kind::Path),
            ("client_ca_file", Kind::Path),
        ],
    ),
    (
        "[upstream]",
        &[
            ("default_host", Kind::Host),
            ("allowed_hosts", Kind::Patterns),
            ("extra_ca_file", Kind::Path),
            ("connect_to", Kind::ConnectTo),
            ("connect_timeout_ms", Kind::Number),
            ("request_timeout_ms", Kind::Number),
            ("response_idle_timeout_ms", Kind::Number),
            ("http2", Kind::Bool),
            ("max_connections_per_host", Kind::Number),
        ],
    ),
    (
        "[signing]",
        &[
            ("algorithm", Kind::Algorithm),
            ("ttl_secs", Kind::Number),
            ("pem_on_pool", Kind::Bool),
            ("pool_threads", Kind::Number),
            ("pool_queue", Kind::Number),
        ],
    ),
    ("[log]", &[("format", Kind::Format), ("level", Kind::Level)]),
    (
        "[intercept]",
        &[
            ("enabled", Kind::Bool),
            ("ca_cert_file", Kind::Path),
            ("ca_key_file", Kind::Path),
            ("passthrough_hosts", Kind::Patterns),
        ],
    ),
    (
        "[pkcs11]",
        &[
            ("module", Kind::Path),
            ("pin_file", Kind::Path),
            ("pin_env", Kind::ClientName),
            ("reconnect_min_ms", Kind::Number),
            ("reconnect_max_secs", Kind::Number),
            ("digest", Kind::HashIn),
        ],
    ),
    (
        "[[accounts]]",
        &[
            ("account_sid", Kind::Sid),
            ("credential_sid", Kind::Sid),
            ("private_key_file", Kind::KeySource),
            ("api_key_sids", Kind::Sids),
        ],
    ),
    (
        "[[clients]]",
        &[
            ("name", Kind::ClientName),
            ("secret_sha256", Kind::Digest),
            ("accounts", Kind::Sids),
        ],
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Path,
    Address,
    Number,
    Host,
    Patterns,
    ConnectTo,
    Algorithm,
    Format,
    Level,
    Bool,
    Sid,
    Sids,
    ClientName,
    Digest,
    /// `[pkcs11] digest`: where the hash is computed.
    HashIn,
    /// `private_key_file = PATH` or `private_key = "pkcs11:…"` (now and then both).
    KeySource,
}

/// A PIN that must never appear in an error message.
const PIN: &str = "S3CRETPIN";

/// `private_key` values: valid URIs, and every way to get one wrong.
const URIS: &[&str] = &[
    "pkcs11:token=pkcv;object=main-account;type=private",
    "pkcs11:object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
    "pkcs11:token=The%20Token;id=%01%02;serial=;slot-id=3",
    "pkcs11:object=k?pin-value=S3CRETPIN",
    "pkcs11:object=k;object=k",
    "pkcs11:object=%zz",
    "pkcs11:object=%ff",
    "pkcs11:colour=red",
    "pkcs11:type=cert;object=k",
    "pkcs11:slot-id=-1",
    "pkcs11:object",
    "pkcs11:",
    "file:/k.pem",
    "keys/pkcv-private.pem",
];

const HOSTS: &[&str] = &[
    "twilio.com",
    "*.twilio.com",
    "api.twilio.com",
    "accounts.twilio.com",
    "*.api.twilio.com",
    "API.Twilio.COM.",
    "*.com",
    "*",
    "*.*.twilio.com",
    "com",
    "example.com",
    "*.example.com",
    "127.0.0.1",
    "*.0.1",
    "localhost",
    "",
    "a..b",
    "*.twilio.com.",
    "any.twilio.com",
];
const ADDRESSES: &[&str] = &[
    "127.0.0.1:8080",
    "127.0.0.1:9090",
    "0.0.0.0:0",
    "127.0.0.1:0",
    "[::1]:8080",
    "localhost:8080",
    "",
    "127.0.0.1",
    "127.0.0.1:65536",
    "10.0.0.5:443",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "99",
    "100",
    "300",
    "301",
    "3600",
    "3601",
    "86400",
    "1000000",
    "1000001",
    "10485760",
    "268435456",
    "9223372036854775807",
];
/// Numbers of the wrong type or sign.
const BAD_NUMBERS: &[&str] = &["-1", "\"5\"", "1.5", "1e3", "inf", "0x10"];
const SIDS: &[&str] = &[
    "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
    "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d",
    "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c",
    "AC1",
    "ACA1B2C3D4A1B2C3D4A1B2C3D4A1B2C3D4",
    "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3dz",
];
const LEVELS: &[&str] = &[
    "info",
    "debug",
    "info,pkcv_proxy=debug",
    "info,,=",
    "[span{field=value}]=trace",
    "[{x=1}]",
    "warn,[{a=/.*/}]",
    "pkcv_proxy[request]=debug",
    "=",
    "off",
];

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    match Input::new(input) {
        Input::Literal(bytes) => check_text(&String::from_utf8_lossy(bytes)),
        Input::Structured(mut u) => {
            if let Ok(text) = document(&mut u) {
                check_text(&text);
            }
        }
    }
}

/// A document with each section at most once (`[[accounts]]` up to twice) and each key at
/// most once in it, so that most documents are valid TOML and reach validation.
fn document(u: &mut Unstructured<'_>) -> Result<String> {
    let mut text = String::new();
    for (header, keys) in SECTIONS {
        // An account needs all of its keys; other sections none.
        let (times, keep) = if header.starts_with("[[") {
            (2, (11u8, 12))
        } else {
            (1, (1, 3))
        };
        for _ in 0..times {
            if !u.ratio(1u8, 2 * times)? {
                continue;
            }
            text.push_str(header);
            text.push('\n');
            for (key, kind) in *keys {
                if !u.ratio(keep.0, keep.1)? {
                    continue;
                }
                if matches!(kind, Kind::KeySource) {
                    text.push_str(&key_source(u)?);
                    continue;
                }
                let key = if u.ratio(1u8, 40)? {
                    gen::text(u, &[key], 3)?
                } else {
                    (*key).to_owned()
                };
                text.push_str(&format!("{key} = {}\n", value(u, *kind)?));
            }
        }
    }
    Ok(text)
}

/// An account's key lines: a file, a URI, or (rarely) both.
fn key_source(u: &mut Unstructured<'_>) -> Result<String> {
    let file = format!("private_key_file = {}\n", value(u, Kind::Path)?);
    let uri = format!("private_key = {}\n", toml_string(u.choose(URIS)?));
    Ok(match u.int_in_range(0u8..=8)? {
        0..=3 => file,
        4..=7 => uri,
        _ => file + &uri,
    })
}

/// A TOML value for `kind`: from its pool, or now and then a biased string.
fn value(u: &mut Unstructured<'_>, kind: Kind) -> Result<String> {
    if u.ratio(1u8, 16)? {
        return Ok(toml_string(&gen::text(u, HOSTS, 8)?));
    }
    let quoted = |u: &mut Unstructured<'_>, pool: &[&str]| -> Result<String> {
        Ok(toml_string(u.choose(pool)?))
    };
    Ok(match kind {
        Kind::Path | Kind::KeySource => quoted(u, &["accounts", "k.pem", "", "/run/x"])?,
        Kind::Address => quoted(u, ADDRESSES)?,
        Kind::Number if u.ratio(1u8, 12)? => (*u.choose(BAD_NUMBERS)?).to_owned(),
        Kind::Number => (*u.choose(NUMBERS)?).to_owned(),
        Kind::Host => quoted(u, HOSTS)?,
        Kind::Patterns | Kind::Sids => {
            let pool = if matches!(kind, Kind::Sids) {
                SIDS
            } else {
                HOSTS
            };
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                items.push(quoted(u, pool)?);
            }
            format!("[{}]", items.join(", "))
        }
        Kind::ConnectTo => format!(
            "{{ {} = {} }}",
            quoted(u, HOSTS)?,
            quoted(u, &["127.0.0.1:1", "nowhere", ":1", "h:99999"])?
        ),
        Kind::Algorithm => quoted(u, &["RS256", "PS256", "RS256", "PS256", "HS256", "rs256"])?,
        Kind::Format => quoted(u, &["human", "json", "human", "json", "xml"])?,
        Kind::HashIn => quoted(u, &["auto", "token", "proxy", "Token", "sha256"])?,
        Kind::Level => quoted(u, LEVELS)?,
        Kind::Bool => (*u.choose(&["true", "false", "true", "false", "1"])?).to_owned(),
        Kind::Sid => quoted(u, SIDS)?,
        Kind::ClientName => quoted(u, &["billing", "spiffe://cluster/ns/app", "a:b", "", "a b"])?,
        Kind::Digest => quoted(
            u,
            &[
                "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
                "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0",
                "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B",
                "2bb80d",
                "",
            ],
        )?,
    })
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads `text` the way `Loaded::load` reads a file (without the environment).
pub fn load(text: &str) -> std::result::Result<Loaded, ConfigError> {
    let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(text))
        .extract()?;
    stats::count("config.read");
    Loaded::from_raw(raw)
}

/// Every property for one text.
pub fn check_text(text: &str) {
    check_account_file(text);
    if let Some((_, table)) = text.split_once("[[accounts]]\n") {
        check_account_file(table.split("\n[").next().unwrap_or(table));
    }
    let loaded = match load(text) {
        Ok(loaded) => loaded,
        Err(err) => {
            stats::count("config.refused");
            check_message(text, &err.to_string(), matches!(err, ConfigError::Load(_)));
            return;
        }
    };
    stats::count("config.valid");
    let config = &loaded.config;
    check_valid(config, &loaded.effective, text);
    let Ok(written) = toml::to_string(&loaded.effective) else {
        return;
    };
    stats::count("config.written-back");
    let again = load(&written).unwrap_or_else(|err| {
        panic!("{text:?} validates, but written back as {written:?} it does not: {err}")
    });
    assert_eq!(
        summary(&again.config),
        summary(config),
        "{text:?} written back as {written:?} reads differently"
    );
}

/// `text` as an account file of `accounts_dir`.
fn check_account_file(text: &str) {
    let file = std::path::Path::new("accounts/AC.toml");
    let Err(err) = pkcv_proxy::keys::dir::parse_account(file, text.as_bytes()) else {
        stats::count("config.account-file-valid");
        return;
    };
    stats::count("config.account-file-refused");
    let message = err.to_string();
    assert!(!message.trim().is_empty(), "{text:?}: an empty error");
    if text.matches(PIN).count() == 1 && text.contains(&format!("pin-value={PIN}")) {
        assert!(!message.contains(PIN), "{text:?}: the PIN in {message:?}");
        stats::count("config.account-file-pin-kept");
    }
}

/// A refusal is said for a person: some text, and none of figment's internals (its
/// `default` profile in key paths).
fn check_message(text: &str, message: &str, read_error: bool) {
    assert!(!message.trim().is_empty(), "{text:?}: an empty error");
    // A PIN written as a URI's pin-value is never repeated, even where a read error quotes
    // the line it is on. (Validation errors quote the value of the setting they refuse,
    // which for `private_key` is never the URI.)
    for (at, _) in message.match_indices("pin-value=").filter(|_| read_error) {
        assert!(
            message[at + "pin-value=".len()..].starts_with("<redacted>"),
            "{text:?}: a pin-value in {message:?}"
        );
    }
    if read_error && text.matches(PIN).count() == 1 && text.contains(&format!("pin-value={PIN}")) {
        assert!(!message.contains(PIN), "{text:?}: the PIN in {message:?}");
    }
    assert!(
        !message.contains("for key \"default.") && !message.starts_with("default."),
        "{text:?}: figment's internals in {message:?}"
    );
}

fn summary(config: &Config) -> (Vec<HostPattern>, String, Vec<HostPattern>, u64) {
    (
        config.upstream.hosts.allowed().to_vec(),
        config.upstream.hosts.default_host().to_owned(),
        config.passthrough_hosts.clone(),
        config.signing.ttl_secs,
    )
}

fn check_valid(config: &Config, raw: &RawConfig, text: &str) {
    let hosts = &config.upstream.hosts;
    let allowed = hosts.allowed();
    assert!(!allowed.is_empty(), "{text:?}: empty allow-list");
    for pattern in allowed.iter().chain(&config.passthrough_hosts) {
        let (name, wildcard) = match pattern {
            HostPattern::Exact(name) => (name.as_str(), false),
            HostPattern::Subdomains(suffix) => (
                suffix
                    .strip_prefix('.')
                    .unwrap_or_else(|| panic!("{text:?}: suffix {suffix:?} without its dot")),
                true,
            ),
        };
        assert_eq!(
            canonical_host(name).as_deref(),
            Some(name),
            "{text:?}: {pattern:?}"
        );
        // An IP literal, or a wildcard that matches some (`*.0.1` matches 127.0.0.1).
        let numeric = is_ip_literal(&if wildcard {
            format!("0.{name}")
        } else {
            name.to_owned()
        });
        if numeric && allowed.contains(pattern) {
            panic!("{text:?}: allowed pattern {pattern} is or matches an IP literal");
        }
        if wildcard && allowed.contains(pattern) {
            assert!(
                name.split('.').count() >= 2,
                "{text:?}: wildcard {pattern} over fewer than two labels"
            );
        }
    }
    let default_host = hosts.default_host();
    assert_eq!(
        canonical_host(default_host).as_deref(),
        Some(default_host),
        "{text:?}"
    );
    assert!(
        allowed.iter().any(|p| p.matches(default_host)),
        "{text:?}: default host {default_host} is not on its allow-list"
    );
    for pass in &config.passthrough_hosts {
        for allow in allowed {
            assert!(
                !overlap(pass, allow),
                "{text:?}: passthrough {pass} overlaps allowed {allow}"
            );
        }
    }
    check_settings(config, raw, text);
}

/// True when some host matches both patterns.
fn overlap(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (HostPattern::Exact(x), other) | (other, HostPattern::Exact(x)) => other.matches(x),
        (HostPattern::Subdomains(x), HostPattern::Subdomains(y)) => {
            x.ends_with(y.as_str()) || y.ends_with(x.as_str())
        }
    }
}

fn check_settings(config: &Config, raw: &RawConfig, text: &str) {
    assert!(
        (1..=300).contains(&config.signing.ttl_secs),
        "{text:?}: ttl"
    );
    let server = &config.server;
    assert!(
        server.max_body_bytes >= 1 && server.max_buffered_bytes >= server.max_body_bytes,
        "{text:?}: body limits"
    );
    if let Some(admin) = server.admin_listen {
        assert!(
            admin != server.listen || admin.port() == 0,
            "{text:?}: admin = listen"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for account in &config.accounts {
        assert!(account.validate().is_ok(), "{text:?}: {account:?}");
        if let pkcv_proxy::config::PrivateKey::Pkcs11(uri) = &account.private_key {
            assert!(uri.as_str().starts_with("pkcs11:"), "{text:?}: {uri}");
            let query = uri.as_str().split_once('?').map_or("", |(_, query)| query);
            assert!(
                !query.split('&').any(|a| a.starts_with("pin-value=")),
                "{text:?}: {uri}"
            );
        }
        assert!(
            seen.insert(account.account_sid.as_str()),
            "{text:?}: account {} twice",
            account.account_sid
        );
    }
    if raw.intercept.enabled {
        assert!(
            config.intercept.is_some(),
            "{text:?}: interception without a CA"
        );
    }
    for client in &raw.clients {
        let has_secret = client.secret_sha256.is_some() || client.secret_file.is_some();
        if has_secret && client.name.contains(':') {
            panic!(
                "{text:?}: client {:?} has a secret but a name no Basic username can carry",
                client.name
            );
        }
    }
}
