//! Target `proxy_auth`: client authentication, [`proxy_credentials`] and
//! [`Clients::authenticate`] over `Proxy-Authorization: Basic`.
//!
//! Input: literal lines — `client: NAME SECRET` (or `client: NAME` for a certificate-only
//! client; by default `billing` with secret `s3cret` and the certificate-only
//! `spiffe://cluster/ns/app`), every other line one `Proxy-Authorization` value; or
//! structured — up to three clients with names and secrets from pools and biased bytes
//! (kept when `ClientConfig::validate` accepts them), and up to two header values: a
//! client's own credentials, a wrong secret, a near miss or biased bytes.
//!
//! Properties:
//!
//! - neither function panics, whatever the bytes;
//! - the credentials are read exactly when there is one header and it is well-formed
//!   `Basic` (the same independent model as the `auth` target), and then the name is the
//!   bytes before the first `:` and the secret every byte after it;
//! - a request authenticates exactly when those credentials name a configured client whose
//!   secret's SHA-256 is the one configured, and then as that client;
//! - every configured client with a secret can authenticate with `name:secret`;
//! - no error message shows the credentials.

use arbitrary::{Result, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, PROXY_AUTHORIZATION};
use pkcv_proxy::clients::{proxy_credentials, Clients};
use pkcv_proxy::config::ClientConfig;
use sha2::{Digest, Sha256};

use crate::auth::{assert_secret_hidden, basic_credentials};
use crate::Input;
use crate::{gen, stats};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "Basic ",
    "basic ",
    "Bearer ",
    "client: ",
    "client: billing s3cret",
    "\n",
    " ",
    "\t",
    ":",
    "=",
    "==",
    "YmlsbGluZzpzM2NyZXQ=",
    "c3BpZmZlOi8vY2x1c3Rlci9ucy9hcHA6",
    "spiffe://",
    "@",
];

const NAMES: &[&str] = &[
    "billing",
    "ops",
    "spiffe://cluster/ns/app",
    "a:b",
    "user@example.com",
    "x",
    "a.b-c_d",
    "",
    "a b",
    "Billing",
    "é",
];

const SECRETS: &[&str] = &["s3cret", "", ":", "a:b", " padded ", "é", "\0"];

/// A client as configured, with its secret in the clear (`None`: certificate only).
struct Client {
    name: String,
    secret: Option<Vec<u8>>,
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    match Input::new(input) {
        Input::Literal(bytes) => {
            let (clients, headers) = literal(bytes);
            check_case(&clients, &headers);
        }
        Input::Structured(mut u) => {
            if let Ok((clients, headers)) = structured(&mut u) {
                check_case(&clients, &headers);
            }
        }
    }
}

fn literal(bytes: &[u8]) -> (Vec<Client>, Vec<Vec<u8>>) {
    let mut clients = Vec::new();
    let mut headers = Vec::new();
    if bytes.is_empty() {
        return (default_clients(), headers);
    }
    for line in gen::lines(bytes) {
        match line.strip_prefix(b"client: ") {
            Some(client) => {
                let mut parts = client.splitn(2, |b| *b == b' ');
                let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
                clients.push(Client {
                    name: name.into_owned(),
                    secret: parts.next().map(<[u8]>::to_vec),
                });
            }
            None => headers.push(line.to_vec()),
        }
    }
    if clients.is_empty() {
        clients = default_clients();
    }
    (clients, headers)
}

fn default_clients() -> Vec<Client> {
    vec![
        Client {
            name: "billing".into(),
            secret: Some(b"s3cret".to_vec()),
        },
        Client {
            name: "spiffe://cluster/ns/app".into(),
            secret: None,
        },
    ]
}

fn structured(u: &mut Unstructured<'_>) -> Result<(Vec<Client>, Vec<Vec<u8>>)> {
    let mut clients = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = gen::word_or_text(u, NAMES, 5, 8)?;
        let secret = if u.ratio(1u8, 4)? {
            None
        } else if u.ratio(1u8, 2)? {
            Some(u.choose(SECRETS)?.as_bytes().to_vec())
        } else {
            Some(gen::bytes(u, SECRETS, 8)?)
        };
        clients.push(Client { name, secret });
    }
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        headers.push(header(u, &clients)?);
    }
    Ok((clients, headers))
}

fn header(u: &mut Unstructured<'_>, clients: &[Client]) -> Result<Vec<u8>> {
    let (name, secret) = match clients.get(u.choose_index(clients.len() + 1)?) {
        Some(client) if u.ratio(3u8, 4)? => (
            client.name.clone(),
            client.secret.clone().unwrap_or_default(),
        ),
        _ => (
            gen::word_or_text(u, NAMES, 3, 6)?,
            gen::bytes(u, SECRETS, 6)?,
        ),
    };
    let mut credentials = name.into_bytes();
    credentials.push(b':');
    credentials.extend(secret);
    if u.ratio(1u8, 8)? {
        credentials.push(*u.choose(b"x: ")?);
    }
    Ok(match u.int_in_range(0u8..=7)? {
        0 => gen::bytes(u, DICTIONARY, 12)?,
        1 => format!("Bearer {}", STANDARD.encode(&credentials)).into_bytes(),
        2 => format!("basic\t{}", STANDARD.encode(&credentials)).into_bytes(),
        3 => {
            let encoded = STANDARD.encode(&credentials);
            format!("Basic {}", encoded.trim_end_matches('=')).into_bytes()
        }
        _ => format!("Basic {}", STANDARD.encode(&credentials)).into_bytes(),
    })
}

fn digest(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// The clients a configuration may hold: valid names, no name twice.
fn configs(clients: &[Client]) -> Vec<(ClientConfig, Option<&[u8]>)> {
    let mut configs: Vec<(ClientConfig, Option<&[u8]>)> = Vec::new();
    for client in clients {
        let config = ClientConfig {
            name: client.name.clone(),
            secret_sha256: client.secret.as_deref().map(digest),
            secret_file: None,
            accounts: Vec::new(),
        };
        if config.validate().is_ok() && configs.iter().all(|(c, _)| c.name != config.name) {
            configs.push((config, client.secret.as_deref()));
        }
    }
    configs
}

fn header_map(values: &[Vec<u8>]) -> (HeaderMap, Vec<&[u8]>) {
    let mut headers = HeaderMap::new();
    let mut sent = Vec::new();
    for value in values {
        if let Ok(header) = HeaderValue::from_bytes(value) {
            headers.append(PROXY_AUTHORIZATION, header);
            sent.push(value.as_slice());
        }
    }
    (headers, sent)
}

/// The name and secret a header value must be read as; an independent model.
fn model(sent: &[&[u8]]) -> Option<(String, Vec<u8>)> {
    let [one] = sent else {
        return None;
    };
    let decoded = basic_credentials(one)?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let name = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((name, decoded[colon + 1..].to_vec()))
}

fn check_case(clients: &[Client], values: &[Vec<u8>]) {
    let configs = configs(clients);
    let (headers, sent) = header_map(values);
    let shown: Vec<String> = sent
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let expected = model(&sent);
    match (proxy_credentials(&headers), &expected) {
        (Ok(read), Some(want)) => assert_eq!(&read, want, "credentials of {shown:?}"),
        (Ok(read), None) => panic!("read {shown:?} as {read:?}"),
        (Err(err), Some(want)) => panic!("refused {shown:?} ({want:?}): {err}"),
        (Err(err), None) => shown
            .iter()
            .for_each(|value| assert_secret_hidden(&err.to_string(), value)),
    }
    let loaded = Clients::load(
        &configs
            .iter()
            .map(|(config, _)| config.clone())
            .collect::<Vec<_>>(),
    )
    .expect("clients with digests load");
    let proven = expected.as_ref().and_then(|(name, secret)| {
        configs
            .iter()
            .find(|(c, _)| c.name == *name && c.secret_sha256 == Some(digest(secret)))
    });
    match (loaded.authenticate(&headers), proven) {
        (Ok(client), Some((config, _))) => {
            stats::count("proxy_auth.authenticated");
            assert_eq!(client.name, config.name, "{shown:?}");
        }
        (Ok(client), None) => panic!("{shown:?} authenticated as {client:?}"),
        (Err(err), Some((config, _))) => {
            panic!("{shown:?} refused for client {:?}: {err}", config.name)
        }
        (Err(err), None) => {
            stats::count("proxy_auth.refused");
            shown
                .iter()
                .for_each(|value| assert_secret_hidden(&err.to_string(), value));
        }
    }
    check_every_client_can_log_in(&configs, &loaded);
}

/// Each client with a secret authenticates with `Basic base64(name:secret)`.
fn check_every_client_can_log_in(configs: &[(ClientConfig, Option<&[u8]>)], loaded: &Clients) {
    for (config, secret) in configs {
        let Some(secret) = secret else {
            continue;
        };
        let mut credentials = config.name.clone().into_bytes();
        credentials.push(b':');
        credentials.extend_from_slice(secret);
        let value = format!("Basic {}", STANDARD.encode(&credentials));
        let (headers, _) = header_map(&[value.into_bytes()]);
        match loaded.authenticate(&headers) {
            Ok(client) if client.name == config.name => {}
            // With a `:` in the name, the credentials may even prove another client.
            Ok(client) => panic!(
                "client {:?} logging in with its own name and secret is taken for {:?}",
                config.name, client.name
            ),
            Err(err) => panic!(
                "client {:?} cannot log in with its own name and secret: {err}",
                config.name
            ),
        }
    }
}
