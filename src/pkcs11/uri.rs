//! RFC 7512 PKCS#11 URIs: the form OpenSSL, p11-kit and GnuTLS use to name a key in a token,
//! e.g. `pkcs11:token=pkcv;object=main-account;type=private?pin-source=file:/run/pin`.
//!
//! Only what names a private key and how to reach it is kept: the token's identity
//! (`token`, `manufacturer`, `serial`, `model`, `slot-id`), the object's (`object`, `id`,
//! `type`) and the query's `module-path` and `pin-source`. `pin-value` is refused: a PIN never
//! sits in a config file. Unknown attributes are refused too, because an attribute the
//! proxy ignored would silently widen which key it picks.
//!
//! The grammar is two splits (`;` in the path, `&` in the query) over percent-decoding; the
//! decoding is `percent-encoding`'s. `pk11-uri-parser` was considered and not taken: its
//! errors echo the whole URI (a `pin-value` included) and it pulls in `regex`.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// The `type` attribute: which kind of object the URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=private`: the only kind that signs.
    Private,
    /// `type=public`.
    Public,
    /// `type=cert`, `secret-key` or `data`.
    Other,
}

/// A parsed `pkcs11:` URI naming a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    text: String,
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `serial`: the token's serial number.
    pub serial: Option<String>,
    /// `model`: the token's model.
    pub model: Option<String>,
    /// `slot-id`: the slot's number.
    pub slot_id: Option<u64>,
    /// `object`: the key's label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id`: the key's `CKA_ID`, raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`, if given.
    pub object_type: Option<ObjectType>,
    /// `module-path`: the PKCS#11 library, overriding `[pkcs11] module`.
    pub module_path: Option<PathBuf>,
    /// `pin-source=file:…` (or a bare path): where the PIN is read from.
    pub pin_file: Option<PathBuf>,
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not `pkcs11:…`.
    #[error("is not a PKCS#11 URI (it must start with `pkcs11:`)")]
    Scheme,
    /// `pin-value` was given.
    #[error("sets pin-value: a PIN never sits in a config file; use pin-source=file:…, or [pkcs11] pin_file or pin_env")]
    PinValue,
    /// An attribute this proxy does not know.
    #[error("has attribute `{0}`, which this proxy does not use (known: token, manufacturer, serial, model, slot-id, object, id, type; module-path, pin-source)")]
    Unknown(String),
    /// The same attribute twice.
    #[error("sets `{0}` twice")]
    Repeated(String),
    /// A component without `=`, an invalid escape, or a value that is not UTF-8.
    #[error("has a malformed `{0}` (expected name=value with valid %XX escapes)")]
    Malformed(String),
    /// A value that makes no sense for the attribute.
    #[error("has an invalid {attribute}: {reason}")]
    Invalid {
        /// The attribute.
        attribute: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl Pkcs11Uri {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        let rest = text.strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            text: text.to_owned(),
            token: None,
            manufacturer: None,
            serial: None,
            model: None,
            slot_id: None,
            object: None,
            id: None,
            object_type: None,
            module_path: None,
            pin_file: None,
        };
        for component in path.split(';').filter(|c| !c.is_empty()) {
            let (name, value) = split_attribute(component)?;
            uri.set_path_attribute(name, value)?;
        }
        for component in query.split('&').filter(|c| !c.is_empty()) {
            let (name, value) = split_attribute(component)?;
            uri.set_query_attribute(name, value)?;
        }
        Ok(uri)
    }

    /// The URI as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The object's label, or `id=…` in hex when only the ID names it: for messages and
    /// file names.
    pub fn object_name(&self) -> String {
        match (&self.object, &self.id) {
            (Some(label), _) => label.clone(),
            (None, Some(id)) => format!("id-{}", hex::encode(id)),
            (None, None) => "(unnamed)".to_owned(),
        }
    }

    fn set_path_attribute(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "token" => set(&mut self.token, name, text_value(name, raw)?),
            "manufacturer" => set(&mut self.manufacturer, name, text_value(name, raw)?),
            "serial" => set(&mut self.serial, name, text_value(name, raw)?),
            "model" => set(&mut self.model, name, text_value(name, raw)?),
            "object" => set(&mut self.object, name, text_value(name, raw)?),
            "id" => set(&mut self.id, name, percent_decode_str(raw).collect()),
            "slot-id" => {
                let slot = text_value(name, raw)?
                    .parse()
                    .map_err(|_| UriError::Invalid {
                        attribute: "slot-id",
                        reason: "it must be a decimal number",
                    })?;
                set(&mut self.slot_id, name, slot)
            }
            "type" => {
                let kind = match text_value(name, raw)?.as_str() {
                    "private" => ObjectType::Private,
                    "public" => ObjectType::Public,
                    "cert" | "secret-key" | "data" => ObjectType::Other,
                    _ => {
                        return Err(UriError::Invalid {
                            attribute: "type",
                            reason: "it must be private, public, cert, secret-key or data",
                        })
                    }
                };
                set(&mut self.object_type, name, kind)
            }
            _ => Err(UriError::Unknown(name.to_owned())),
        }
    }

    fn set_query_attribute(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "pin-value" => Err(UriError::PinValue),
            "module-path" => set(
                &mut self.module_path,
                name,
                PathBuf::from(text_value(name, raw)?),
            ),
            "pin-source" => {
                let source = text_value(name, raw)?;
                // RFC 7512 leaves the form to the application; `file:` URIs and bare paths
                // are what p11-kit and OpenSSL accept.
                let path = source
                    .strip_prefix("file://")
                    .or_else(|| source.strip_prefix("file:"))
                    .unwrap_or(&source);
                if path.is_empty() || source.contains("://") && !source.starts_with("file://") {
                    return Err(UriError::Invalid {
                        attribute: "pin-source",
                        reason: "only file:PATH is supported",
                    });
                }
                set(&mut self.pin_file, name, PathBuf::from(path))
            }
            _ => Err(UriError::Unknown(name.to_owned())),
        }
    }
}

/// The URI as written; nothing in it is secret (`pin-value` is refused).
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({:?})", self.text)
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Pkcs11Uri::parse(text)
    }
}

fn split_attribute(component: &str) -> Result<(&str, &str), UriError> {
    component
        .split_once('=')
        .ok_or_else(|| UriError::Malformed(component.chars().take(32).collect()))
}

fn text_value(name: &str, raw: &str) -> Result<String, UriError> {
    let valid_escapes = raw
        .split('%')
        .skip(1)
        .all(|after| after.len() >= 2 && after.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
    if !valid_escapes {
        return Err(UriError::Malformed(name.to_owned()));
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|_| UriError::Malformed(name.to_owned()))
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), UriError> {
    if slot.replace(value).is_some() {
        return Err(UriError::Repeated(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_openssl_and_p11_kit_write() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;\
             model=1.0;object=my-key;type=private;id=%69%95%3E%5C;serial=;slot-id=3\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/token_pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(uri.model.as_deref(), Some("1.0"));
        assert_eq!(uri.serial.as_deref(), Some(""));
        assert_eq!(uri.slot_id, Some(3));
        assert_eq!(uri.object.as_deref(), Some("my-key"));
        assert_eq!(uri.id.as_deref(), Some(&[0x69, 0x95, 0x3e, 0x5c][..]));
        assert_eq!(uri.object_type, Some(ObjectType::Private));
        assert_eq!(
            uri.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            uri.pin_file.as_deref(),
            Some(std::path::Path::new("/etc/token_pin"))
        );
        // An unescaped id is raw bytes too.
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:id=01").unwrap().id.as_deref(),
            Some(&b"01"[..])
        );
    }

    #[test]
    fn refuses_what_it_would_ignore_or_must_not_hold() {
        let refused = |text: &str| Pkcs11Uri::parse(text).unwrap_err();
        assert_eq!(refused("file:/k.pem"), UriError::Scheme);
        assert_eq!(
            refused("pkcs11:object=k?pin-value=1234"),
            UriError::PinValue
        );
        // The PIN is not echoed by the error.
        assert!(!refused("pkcs11:object=k?pin-value=1234")
            .to_string()
            .contains("1234"));
        assert!(matches!(
            refused("pkcs11:object=k;colour=red"),
            UriError::Unknown(_)
        ));
        assert!(matches!(
            refused("pkcs11:object=a;object=b"),
            UriError::Repeated(_)
        ));
        assert!(matches!(refused("pkcs11:object"), UriError::Malformed(_)));
        assert!(matches!(
            refused("pkcs11:object=%zz"),
            UriError::Malformed(_)
        ));
        assert!(matches!(
            refused("pkcs11:object=%ff"),
            UriError::Malformed(_)
        ));
        assert!(matches!(
            refused("pkcs11:type=key"),
            UriError::Invalid { .. }
        ));
        assert!(matches!(
            refused("pkcs11:slot-id=x"),
            UriError::Invalid { .. }
        ));
        assert!(matches!(
            refused("pkcs11:object=k?pin-source=https://example.com/pin"),
            UriError::Invalid { .. }
        ));
    }
}
