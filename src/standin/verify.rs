//! PKCV verification as Twilio performs it: the API key, the JWT and the request hash.
//!
//! The clock is a parameter, so recorded SDK tokens can be checked at the instant they were
//! minted and again 301 s later.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::canonical::{java_canonical_request, sha256_hex, ReceivedRequest};

/// Twilio's limit on a token's lifetime.
const MAX_LIFETIME_SECS: u64 = 300;

/// A public key registered with the stand-in, as uploaded to Twilio.
#[derive(Clone)]
pub struct Credential {
    /// The account that owns it.
    pub account_sid: String,
    /// The key.
    pub key: DecodingKey,
}

/// An API key: its account and secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The account that owns it.
    pub account_sid: String,
    /// Its secret.
    pub secret: String,
}

/// What the stand-in knows: public keys by credential SID, API keys by key SID.
#[derive(Clone, Default)]
pub struct Registry {
    /// `CR…` → credential.
    pub credentials: HashMap<String, Credential>,
    /// `SK…` → API key.
    pub api_keys: HashMap<String, ApiKey>,
}

impl Registry {
    /// Registers a public key (PEM, SPKI or PKCS#1) as `credential_sid` of `account_sid`.
    pub fn add_public_key_pem(
        &mut self,
        credential_sid: &str,
        account_sid: &str,
        pem: &[u8],
    ) -> Result<(), jsonwebtoken::errors::Error> {
        let key = DecodingKey::from_rsa_pem(pem)?;
        self.credentials.insert(
            credential_sid.to_owned(),
            Credential {
                account_sid: account_sid.to_owned(),
                key,
            },
        );
        Ok(())
    }

    /// Registers an API key.
    pub fn add_api_key(&mut self, api_key_sid: &str, account_sid: &str, secret: &str) {
        self.api_keys.insert(
            api_key_sid.to_owned(),
            ApiKey {
                account_sid: account_sid.to_owned(),
                secret: secret.to_owned(),
            },
        );
    }
}

/// Why the stand-in refused a request: Twilio's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// Twilio's error code.
    pub code: u32,
    /// What was wrong.
    pub message: String,
}

fn reject<T>(code: u32, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        code,
        message: message.into(),
    })
}

/// Claims of a verified token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    /// API key SID.
    pub iss: String,
    /// Account SID.
    pub sub: String,
    /// Expiry.
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Signed header names.
    pub hrh: String,
    /// Request hash.
    pub rqh: String,
}

/// Verifies a `Twilio-Client-Validation` token's header, signature, time window and
/// `sub`, with the clock at `now`. The request-dependent checks are in [`verify_request`].
pub fn verify_token(registry: &Registry, token: &str, now: u64) -> Result<TokenClaims, Rejection> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(header) => header,
        Err(err) => return reject(20152, format!("invalid token header: {err}")),
    };
    if header.cty.as_deref() != Some("twilio-pkrv;v=1") {
        return reject(20152, "cty must be twilio-pkrv;v=1");
    }
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return reject(20152, "alg must be RS256 or PS256");
    }
    if header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
        return reject(20152, "typ must be JWT");
    }
    let Some(kid) = header.kid.as_deref() else {
        return reject(20152, "kid is required");
    };
    let Some(credential) = registry.credentials.get(kid) else {
        return reject(20151, format!("no public key {kid} is registered"));
    };
    let mut validation = Validation::new(header.alg);
    // Time is checked below against the given clock, not the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<TokenClaims>(token, &credential.key, &validation) {
        Ok(data) => data.claims,
        Err(err) => return reject(20151, format!("token not accepted: {err}")),
    };
    if claims.sub != credential.account_sid {
        return reject(
            20153,
            format!("sub {} does not own credential {kid}", claims.sub),
        );
    }
    if claims.exp <= now {
        return reject(20154, "token expired");
    }
    if claims.nbf > now {
        return reject(20154, "token not yet valid");
    }
    if claims.exp.saturating_sub(claims.nbf) > MAX_LIFETIME_SECS
        || claims.exp - now > MAX_LIFETIME_SECS
    {
        return reject(20157, "token lifetime exceeds 300 seconds");
    }
    Ok(claims)
}

/// The outcome of a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The account the request acts as (`sub`).
    pub account_sid: String,
    /// The API key (`iss`).
    pub api_key_sid: String,
    /// The hash the stand-in computed (equal to `rqh`).
    pub request_hash: String,
}

/// Verifies a received request end to end: API key and secret, token, `iss`, `hrh` and
/// `rqh` recomputed from the raw request.
pub fn verify_request(
    registry: &Registry,
    request: &ReceivedRequest<'_>,
    now: u64,
) -> Result<Verified, Rejection> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(authorization) = header("authorization") else {
        return reject(20003, "Authentication Error - No credentials provided");
    };
    let (username, password) = basic_credentials(authorization).ok_or_else(|| Rejection {
        code: 20003,
        message: "Authentication Error - invalid Basic credentials".into(),
    })?;
    if username.starts_with("AC") {
        return reject(20003, "Authentication Error - this account enforces Public Key Client Validation: use an API key");
    }
    let Some(api_key) = registry.api_keys.get(&username) else {
        return reject(20003, "Authentication Error - unknown API key");
    };
    if api_key.secret != password {
        return reject(20003, "Authentication Error - invalid API key secret");
    }
    let Some(token) = header("twilio-client-validation") else {
        return reject(20151, "Twilio-Client-Validation header is missing");
    };
    let claims = verify_token(registry, token, now)?;
    if claims.iss != username {
        return reject(
            20153,
            format!("iss {} is not the request's API key {username}", claims.iss),
        );
    }
    if claims.sub != api_key.account_sid {
        return reject(
            20153,
            format!("API key {username} does not belong to {}", claims.sub),
        );
    }
    let signed: Vec<&str> = claims.hrh.split(';').collect();
    if !signed.contains(&"authorization") || !signed.contains(&"host") {
        return reject(70156, "hrh must include authorization and host");
    }
    let Some(canonical) = java_canonical_request(request, &signed) else {
        return reject(70156, "the request path cannot be canonicalized");
    };
    let request_hash = sha256_hex(&canonical);
    if request_hash != claims.rqh {
        return reject(70156, "request hash (rqh) does not match the request");
    }
    Ok(Verified {
        account_sid: claims.sub,
        api_key_sid: claims.iss,
        request_hash,
    })
}

fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
