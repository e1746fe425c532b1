//! PKCV verification as Twilio performs it: the API key, the JWT and the request hash.
//!
//! The clock is a parameter, so recorded SDK tokens can be checked at the instant they were
//! minted and again 301 s later.

use std::collections::BTreeMap;

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
    /// Its friendly name.
    pub friendly_name: String,
    /// The public key, PEM.
    pub public_key_pem: String,
    /// The key, parsed for verification.
    pub key: DecodingKey,
    /// When it was created (Unix seconds).
    pub created: u64,
}

/// An API key: its account, secret and type.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The account that owns it.
    pub account_sid: String,
    /// Its secret.
    pub secret: String,
    /// Its friendly name.
    pub friendly_name: String,
    /// A Main key may manage accounts and keys; a Standard key may not.
    pub main: bool,
    /// When it was created (Unix seconds).
    pub created: u64,
}

/// A Twilio account as the stand-in knows it.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its friendly name.
    pub friendly_name: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    /// The parent for a subaccount, itself for a main account.
    pub owner_account_sid: String,
    /// Whether requests must carry a valid PKCV token.
    pub enforces_pkcv: bool,
    /// When it was created (Unix seconds).
    pub created: u64,
}

/// What the stand-in knows: accounts, public keys by credential SID, API keys by key SID.
#[derive(Clone, Default)]
pub struct Registry {
    /// `AC…` → account.
    pub accounts: BTreeMap<String, Account>,
    /// `CR…` → credential.
    pub credentials: BTreeMap<String, Credential>,
    /// `SK…` → API key.
    pub api_keys: BTreeMap<String, ApiKey>,
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
        self.ensure_account(account_sid);
        self.credentials.insert(
            credential_sid.to_owned(),
            Credential {
                account_sid: account_sid.to_owned(),
                friendly_name: format!("credential {credential_sid}"),
                public_key_pem: String::from_utf8_lossy(pem).into_owned(),
                key,
                created: crate::clock::unix_now(),
            },
        );
        Ok(())
    }

    /// Registers a Main API key (it may manage accounts and keys).
    pub fn add_api_key(&mut self, api_key_sid: &str, account_sid: &str, secret: &str) {
        self.insert_api_key(api_key_sid, account_sid, secret, true);
    }

    /// Registers a Standard API key (it may not manage accounts or keys).
    pub fn add_standard_api_key(&mut self, api_key_sid: &str, account_sid: &str, secret: &str) {
        self.insert_api_key(api_key_sid, account_sid, secret, false);
    }

    fn insert_api_key(&mut self, api_key_sid: &str, account_sid: &str, secret: &str, main: bool) {
        self.ensure_account(account_sid);
        self.api_keys.insert(
            api_key_sid.to_owned(),
            ApiKey {
                account_sid: account_sid.to_owned(),
                secret: secret.to_owned(),
                friendly_name: format!("key {api_key_sid}"),
                main,
                created: crate::clock::unix_now(),
            },
        );
    }

    /// Makes sure a main account exists (enforcing PKCV, as accounts the stand-in serves do
    /// by default).
    pub fn ensure_account(&mut self, account_sid: &str) {
        self.accounts
            .entry(account_sid.to_owned())
            .or_insert_with(|| Account {
                friendly_name: format!("account {account_sid}"),
                status: "active".into(),
                owner_account_sid: account_sid.to_owned(),
                enforces_pkcv: true,
                created: crate::clock::unix_now(),
            });
    }

    /// Sets whether `account_sid` enforces PKCV.
    pub fn set_enforcement(&mut self, account_sid: &str, enforces: bool) {
        self.ensure_account(account_sid);
        if let Some(account) = self.accounts.get_mut(account_sid) {
            account.enforces_pkcv = enforces;
        }
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
    // Twilio's codes for the two ways a clock is off: the signer's is behind (or the token
    // waited too long), or it is ahead.
    if claims.exp <= now {
        return reject(20156, "Expired or Invalid Expiration: token expired");
    }
    if claims.nbf > now {
        return reject(20155, "Expiration Time In The Future: token not yet valid");
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
    /// The hash the stand-in computed (equal to `rqh`); empty for an unsigned request to an
    /// account that does not enforce PKCV.
    pub request_hash: String,
    /// Whether the request carried a valid PKCV token.
    pub signed: bool,
    /// Whether the API key is a Main key.
    pub main_key: bool,
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
    let account = registry.accounts.get(&api_key.account_sid);
    if account.is_some_and(|account| account.status == "closed") {
        return reject(20003, "Authentication Error - the account is closed");
    }
    let Some(token) = header("twilio-client-validation") else {
        if account.is_some_and(|account| !account.enforces_pkcv) {
            return Ok(Verified {
                account_sid: api_key.account_sid.clone(),
                api_key_sid: username,
                request_hash: String::new(),
                signed: false,
                main_key: api_key.main,
            });
        }
        return reject(20151, "Twilio-Client-Validation header is missing: this account enforces Public Key Client Validation");
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
        signed: true,
        main_key: api_key.main,
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
