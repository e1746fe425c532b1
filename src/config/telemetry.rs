//! `[telemetry]`: trace context towards Twilio, and span export over OTLP/HTTP (the `otlp`
//! cargo feature; a binary built without it refuses `otlp_endpoint` rather than ignore it).

use super::{ConfigError, RawTelemetry};

/// The `service.name` exported spans carry unless `otlp_service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "pkcv-proxy";

/// `[telemetry]`, validated.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Forward the client's `traceparent`/`tracestate` to Twilio (off: they are removed).
    pub propagate_upstream: bool,
    /// Span export over OTLP/HTTP, when `otlp_endpoint` is set.
    pub otlp: Option<OtlpSettings>,
}

/// Where and as what spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's full URL (`http://127.0.0.1:4318/v1/traces`): absolute, `http` or
    /// `https`, no userinfo.
    pub endpoint: http::Uri,
    /// `service.name`.
    pub service_name: String,
}

pub(super) fn telemetry_settings(raw: &RawTelemetry) -> Result<TelemetrySettings, ConfigError> {
    let otlp = match &raw.otlp_endpoint {
        None => None,
        Some(_) if !cfg!(feature = "otlp") => return Err(ConfigError::OtlpNotBuilt),
        Some(endpoint) => Some(OtlpSettings {
            endpoint: otlp_endpoint(endpoint)?,
            service_name: service_name(raw.otlp_service_name.as_deref())?,
        }),
    };
    Ok(TelemetrySettings {
        propagate_upstream: raw.propagate_upstream,
        otlp,
    })
}

/// An absolute `http://` or `https://` URL with a host and no userinfo (credentials in a
/// URL end up in logs and `check-config` output; a collector that needs them is out of
/// scope).
fn otlp_endpoint(value: &str) -> Result<http::Uri, ConfigError> {
    let refuse = |problem| ConfigError::OtlpEndpoint {
        value: shown(value),
        problem,
    };
    const ABSOLUTE: &str =
        "must be an absolute http:// or https:// URL such as http://127.0.0.1:4318/v1/traces";
    let uri: http::Uri = value.parse().map_err(|_| refuse(ABSOLUTE))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(refuse(ABSOLUTE));
    }
    let Some(authority) = uri.authority() else {
        return Err(refuse("names no host"));
    };
    if authority.as_str().contains('@') {
        return Err(refuse(
            "must not carry a user or password (userinfo@): credentials do not belong in a URL",
        ));
    }
    if authority.host().is_empty() {
        return Err(refuse("names no host"));
    }
    Ok(uri)
}

/// The value as an error may show it: anything before an `@` in the authority (a password)
/// is left out.
fn shown(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => value.to_owned(),
    }
}

fn service_name(value: Option<&str>) -> Result<String, ConfigError> {
    match value {
        None => Ok(DEFAULT_SERVICE_NAME.to_owned()),
        Some(name)
            if !name.is_empty()
                && name.len() <= 128
                && name.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(name.to_owned())
        }
        Some(_) => Err(ConfigError::OtlpServiceName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawTelemetry {
        RawTelemetry {
            otlp_endpoint: Some(endpoint.to_owned()),
            ..RawTelemetry::default()
        }
    }

    #[test]
    fn no_endpoint_no_export() {
        let settings = telemetry_settings(&RawTelemetry::default()).unwrap();
        assert!(settings.otlp.is_none());
        assert!(!settings.propagate_upstream);
    }

    /// A binary without the feature refuses the setting and says how to get it.
    #[cfg(not(feature = "otlp"))]
    #[test]
    fn without_the_feature_an_endpoint_is_an_error_naming_it() {
        let err = telemetry_settings(&raw("http://127.0.0.1:4318/v1/traces")).unwrap_err();
        assert!(matches!(err, ConfigError::OtlpNotBuilt), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("telemetry.otlp_endpoint") && text.contains("--features otlp"),
            "{text}"
        );
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn endpoints_are_absolute_http_urls_without_userinfo() {
        let settings = telemetry_settings(&raw("http://127.0.0.1:4318/v1/traces")).unwrap();
        let otlp = settings.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.service_name, DEFAULT_SERVICE_NAME);
        assert!(telemetry_settings(&raw("https://otel.example:4318/v1/traces")).is_ok());
        for (bad, needle) in [
            ("127.0.0.1:4318/v1/traces", "absolute http"),
            ("/v1/traces", "absolute http"),
            ("ftp://otel.example/v1/traces", "absolute http"),
            ("http://user:s3cret@otel.example/v1/traces", "userinfo"),
            ("not a url", "absolute http"),
            ("http:///v1/traces", "absolute http"),
        ] {
            let err = telemetry_settings(&raw(bad)).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        let named = RawTelemetry {
            otlp_service_name: Some("proxy-eu".into()),
            ..raw("http://127.0.0.1:4318/v1/traces")
        };
        let otlp = telemetry_settings(&named).unwrap().otlp.unwrap();
        assert_eq!(otlp.service_name, "proxy-eu");
        let unnamed = RawTelemetry {
            otlp_service_name: Some(String::new()),
            ..raw("http://127.0.0.1:4318/v1/traces")
        };
        assert!(telemetry_settings(&unnamed).is_err());
    }

    #[test]
    fn a_password_in_an_endpoint_is_never_shown() {
        assert_eq!(
            shown("http://u:s3cret@otel.example/v1/traces"),
            "http://…@otel.example/v1/traces"
        );
        assert_eq!(shown("http://otel.example/a@b"), "http://otel.example/a@b");
    }
}
