//! Who is asking: the API key SID from the request's HTTP Basic auth.
//!
//! Under PKCV, Twilio accepts only API keys, and the JWT's `iss` must be the same key SID the
//! request authenticates with. The proxy reads the username and nothing else: the secret is
//! forwarded untouched inside the `Authorization` value and never decoded into a variable.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, AUTHORIZATION};

use crate::error::ProxyError;
use crate::sid::{is_sid, SID_LEN};

/// The authenticated identity of a request.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyAuth {
    /// The API key SID (`SK…`), the Basic username.
    pub api_key_sid: String,
    /// The `Authorization` value to forward and sign, trimmed.
    pub authorization: String,
}

impl std::fmt::Debug for ApiKeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Authorization value carries the API key secret: never printed.
        f.debug_struct("ApiKeyAuth")
            .field("api_key_sid", &self.api_key_sid)
            .field("authorization", &"<redacted>")
            .finish()
    }
}

/// Reads the request's `Authorization` header as Basic auth with an API key.
pub fn api_key_auth(headers: &HeaderMap) -> Result<ApiKeyAuth, ProxyError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(ProxyError::MissingAuthorization)?;
    if values.next().is_some() {
        return Err(ProxyError::MalformedAuthorization(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ProxyError::MalformedAuthorization("the header is not visible ASCII"))?
        .trim();
    let api_key_sid = basic_username(value)?;
    Ok(ApiKeyAuth {
        api_key_sid,
        authorization: value.to_owned(),
    })
}

/// The username of a Basic credential, checked to be an API key SID.
fn basic_username(value: &str) -> Result<String, ProxyError> {
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or(ProxyError::MalformedAuthorization(
            "expected 'Basic <base64>'",
        ))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ProxyError::MalformedAuthorization(
            "only the Basic scheme is supported",
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| ProxyError::MalformedAuthorization("the credentials are not valid base64"))?;
    let colon =
        decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(ProxyError::MalformedAuthorization(
                "the credentials have no ':'",
            ))?;
    // Only the username is looked at; the secret stays inside `decoded`, dropped here.
    let username = std::str::from_utf8(&decoded[..colon]).map_err(|_| ProxyError::NotAnApiKey)?;
    if is_sid(username, "SK") {
        return Ok(username.to_owned());
    }
    if username.len() == SID_LEN && username.starts_with("AC") {
        return Err(ProxyError::AuthTokenNotAllowed);
    }
    Err(ProxyError::NotAnApiKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SK: &str = "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c";

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn api_key_is_accepted_and_value_trimmed() {
        let value = basic(&format!("{SK}:secret:with:colons"));
        let auth = api_key_auth(&headers(&format!("  {value} "))).unwrap();
        assert_eq!(auth.api_key_sid, SK);
        assert_eq!(auth.authorization, value);
        assert!(api_key_auth(&headers(&format!("basic {}", &value[6..]))).is_ok());
    }

    #[test]
    fn debug_never_shows_the_credentials() {
        let value = basic(&format!("{SK}:top-secret"));
        let auth = api_key_auth(&headers(&value)).unwrap();
        let printed = format!("{auth:?}");
        assert!(
            printed.contains(SK) && !printed.contains(&value[6..]),
            "{printed}"
        );
    }

    #[test]
    fn rejections() {
        assert!(matches!(
            api_key_auth(&HeaderMap::new()),
            Err(ProxyError::MissingAuthorization)
        ));
        let auth_token = basic("ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4:token");
        assert!(matches!(
            api_key_auth(&headers(&auth_token)),
            Err(ProxyError::AuthTokenNotAllowed)
        ));
        assert!(matches!(
            api_key_auth(&headers(&basic("alice:pw"))),
            Err(ProxyError::NotAnApiKey)
        ));
        assert!(matches!(
            api_key_auth(&headers("Bearer abc")),
            Err(ProxyError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            api_key_auth(&headers("Basic !!!")),
            Err(ProxyError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            api_key_auth(&headers(&format!("Basic {}", STANDARD.encode(SK)))),
            Err(ProxyError::MalformedAuthorization(_))
        ));
        let not_utf8 = format!("Basic {}", STANDARD.encode(b"\xff\xfe:pw"));
        assert!(matches!(
            api_key_auth(&headers(&not_utf8)),
            Err(ProxyError::NotAnApiKey)
        ));
        let mut twice = headers(&basic(&format!("{SK}:a")));
        twice.append(
            AUTHORIZATION,
            HeaderValue::from_str(&basic(&format!("{SK}:b"))).unwrap(),
        );
        assert!(matches!(
            api_key_auth(&twice),
            Err(ProxyError::MalformedAuthorization(_))
        ));
    }
}
