//! What the admin port's `/metrics` serves, in the Prometheus (OpenMetrics) text format.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: label sets are
//! Rust types, so every label's values are bounded by construction (`host` is the matched
//! `allowed_hosts` pattern, never the requested name; `method` is one of a fixed set), there
//! is no global registry and no background thread. One [`Metrics`] is made by the
//! assembly path and shared by reference; recording is a few atomic operations.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::rejection::Rejections;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The methods counted by name; anything else is `other`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum MethodLabel {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
    /// `CONNECT`
    Connect,
    /// Anything else.
    Other,
}

impl From<&Method> for MethodLabel {
    fn from(method: &Method) -> Self {
        match *method {
            Method::GET => MethodLabel::Get,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::PATCH => MethodLabel::Patch,
            Method::DELETE => MethodLabel::Delete,
            Method::HEAD => MethodLabel::Head,
            Method::OPTIONS => MethodLabel::Options,
            Method::CONNECT => MethodLabel::Connect,
            _ => MethodLabel::Other,
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            MethodLabel::Get => "GET",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Head => "HEAD",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Connect => "CONNECT",
            MethodLabel::Other => "other",
        })
    }
}

/// `pkcv_proxy_requests_total`'s labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The `allowed_hosts` pattern the request matched (`none` when it matched none).
    pub host: String,
    /// The method.
    pub method: MethodLabel,
    /// The status the client got.
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLoadLabels {
    backend: &'static str,
    result: &'static str,
}
/// The values of the static labels, exported at 0 from the start so `rate()` and alerts
/// have a series before the first event. Labels with open sets (account, host, status,
/// Twilio's codes) are never listed ahead.
///
/// Every 790xx code a request can be refused with (`ProxyError::code`), and 79051 (a
/// connection closed at `max_connections`); the admin port's own 79090/79091 are not counted.
const REJECTION_CODES: &[u32] = &[
    79001, 79002, 79003, 79004, 79005, 79006, 79007, 79008, 79010, 79011, 79012, 79013, 79014,
    79015, 79016, 79017, 79018, 79019, 79020, 79021, 79022, 79023, 79024, 79026, 79030, 79031,
    79040, 79041, 79042, 79043, 79044, 79045, 79050, 79051, 79052, 79053, 79054, 79055, 79056,
    79060, 79061,
];
/// `pkcv_proxy_key_reloads_total`'s results.
const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];
/// The signing backends (`signing_key::Backend::as_str`).
const BACKENDS: [&str; 4] = ["pem", "pkcs11", "aws-kms", "vault-transit"];
/// `pkcv_proxy_account_loads_total`'s results.
const ACCOUNT_LOAD_RESULTS: [&str; 3] = ["loaded", "unchanged", "failed"];

/// Bounded by the configured accounts and three reasons.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignErrorLabels {
    account: String,
    reason: &'static str,
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histogram,
    sign_duration: Family<BackendLabels, Histogram>,
    sign_errors: Family<SignErrorLabels, Counter>,
    upstream_duration: Histogram,
    rejected: Family<CodeLabels, Counter>,
    key_reloads: Family<ResultLabels, Counter>,
    account_loads: Family<AccountLoadLabels, Counter>,
    accounts_loaded: Gauge,
    runtime_workers: Gauge,
    key_last_reload: Gauge<f64, AtomicU64>,
    connections_open: Gauge,
    requests_in_flight: Gauge,
    tunnels_open: Gauge,
    clock_skew: Gauge<f64, AtomicU64>,
    upstream_connections_opened: Counter,
    rejections: std::sync::Arc<Rejections>,
    client_write_timeouts: Counter,
}

/// Durations from 50 µs (an RSA signature) to about 13 s (a slow upstream), doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero (each static label value too), and `build_info`
    /// set.
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            requests: Family::default(),
            request_duration: duration_histogram(),
            sign_duration: Family::new_with_constructor(duration_histogram),
            sign_errors: Family::default(),
            upstream_duration: duration_histogram(),
            rejected: Family::default(),
            key_reloads: Family::default(),
            account_loads: Family::default(),
            accounts_loaded: Gauge::default(),
            runtime_workers: Gauge::default(),
            key_last_reload: Gauge::default(),
            connections_open: Gauge::default(),
            requests_in_flight: Gauge::default(),
            tunnels_open: Gauge::default(),
            clock_skew: Gauge::default(),
            upstream_connections_opened: Counter::default(),
            rejections: std::sync::Arc::default(),
            client_write_timeouts: Counter::default(),
            registry: Registry::default(),
        };
        for &code in REJECTION_CODES {
            drop(metrics.rejected.get_or_create(&CodeLabels { code }));
        }
        for result in RELOAD_RESULTS {
            drop(metrics.key_reloads.get_or_create(&ResultLabels { result }));
        }
        for backend in BACKENDS {
            drop(
                metrics
                    .sign_duration
                    .get_or_create(&BackendLabels { backend }),
            );
            for result in ACCOUNT_LOAD_RESULTS {
                drop(
                    metrics
                        .account_loads
                        .get_or_create(&AccountLoadLabels { backend, result }),
                );
            }
        }
        let mut registry = Registry::default();
        metrics.register_into(&mut registry);
        metrics.registry = registry;
        metrics
    }

    fn register_into(&self, registry: &mut Registry) {
        registry.register(
            "pkcv_proxy_requests",
            "Requests answered, by matched allowed_hosts pattern, method and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "pkcv_proxy_request_duration",
            "Time from a request's arrival to its response head, end to end",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        registry.register_with_unit(
            "pkcv_proxy_sign_duration",
            "Time to canonicalize, hash and sign one request, by signing backend",
            Unit::Seconds,
            self.sign_duration.clone(),
        );
        registry.register(
            "pkcv_proxy_sign_errors",
            "Requests that could not be signed, by account and reason (unavailable: its HSM or key service cannot be reached; throttled: its key service throttled past the deadline; refused: its key service refuses the key; queue_full: the signing queue was full; failed)",
            self.sign_errors.clone(),
        );
        registry.register_with_unit(
            "pkcv_proxy_upstream_duration",
            "Time from sending a signed request to Twilio's response head",
            Unit::Seconds,
            self.upstream_duration.clone(),
        );
        registry.register(
            "pkcv_proxy_rejected",
            "Requests the proxy answered with its own error, by 790xx code (79051: connections closed at max_connections)",
            self.rejected.clone(),
        );
        registry.register(
            "pkcv_proxy_key_reloads",
            "Account and key reloads, by result",
            self.key_reloads.clone(),
        );
        registry.register(
            "pkcv_proxy_account_loads",
            "What each load or reload did with each configured account, by backend and result (loaded: its key loaded now; unchanged: its live key kept, no new HSM login; failed: kept at its previous version or left out, see /readyz)",
            self.account_loads.clone(),
        );
        registry.register(
            "pkcv_proxy_runtime_workers",
            "Threads serving connections (server.worker_threads)",
            self.runtime_workers.clone(),
        );
        registry.register(
            "pkcv_proxy_accounts_loaded",
            "Accounts the proxy signs for now",
            self.accounts_loaded.clone(),
        );
        registry.register_with_unit(
            "pkcv_proxy_key_last_reload_timestamp",
            "When the accounts were last loaded, in Unix seconds",
            Unit::Seconds,
            self.key_last_reload.clone(),
        );
        self.rejections.register(registry);
        self.register_gauges(registry);
    }

    fn register_gauges(&self, registry: &mut Registry) {
        registry.register(
            "pkcv_proxy_connections_open",
            "Client connections open, tunnels included",
            self.connections_open.clone(),
        );
        registry.register(
            "pkcv_proxy_requests_in_flight",
            "Requests being signed or forwarded",
            self.requests_in_flight.clone(),
        );
        registry.register(
            "pkcv_proxy_tunnels_open",
            "CONNECT tunnels open",
            self.tunnels_open.clone(),
        );
        registry.register_with_unit(
            "pkcv_proxy_clock_skew",
            "Local clock minus the Date of Twilio's last response (tokens are refused beyond 300 s)",
            Unit::Seconds,
            self.clock_skew.clone(),
        );
        registry.register(
            "pkcv_proxy_upstream_connections_opened",
            "TCP connections opened to Twilio (each one a TLS handshake)",
            self.upstream_connections_opened.clone(),
        );
        registry.register(
            "pkcv_proxy_client_write_timeouts",
            "Client connections closed because the client read nothing for server.response_write_timeout_ms (its upstream connection discarded)",
            self.client_write_timeouts.clone(),
        );
        registry.register(
            "pkcv_proxy_build",
            "The proxy's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }

    /// The text `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Writing to a String cannot fail; say so rather than serve half a page.
            text.clear();
            let _ = writeln!(text, "# encoding failed");
        }
        text
    }

    /// Twilio's own rejections: counted, logged, the last per account kept.
    pub fn rejections(&self) -> &std::sync::Arc<Rejections> {
        &self.rejections
    }

    /// One request answered.
    pub fn request(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// One refusal (or connection closed at the cap) with this 790xx code.
    pub fn rejected(&self, code: u32) {
        self.rejected.get_or_create(&CodeLabels { code }).inc();
    }

    /// A request of `account` that could not be signed, and why.
    pub fn sign_failed(&self, account: &str, reason: &'static str) {
        self.sign_errors
            .get_or_create(&SignErrorLabels {
                account: account.to_owned(),
                reason,
            })
            .inc();
    }

    /// How long signing took, by backend (`pem` or `pkcs11`).
    pub fn signed(&self, backend: &'static str, elapsed: Duration) {
        self.sign_duration
            .get_or_create(&BackendLabels { backend })
            .observe(elapsed.as_secs_f64());
    }

    /// How long Twilio took to answer.
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    /// A reload's outcome; on success, how many accounts are loaded now.
    pub fn reloaded(&self, accounts: Option<usize>, now_unix: u64) {
        let result = if accounts.is_some() {
            "success"
        } else {
            "failure"
        };
        self.key_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(accounts) = accounts {
            self.accounts_loaded.set(gauge_value(accounts));
            // Unix seconds fit an f64 exactly for the next 285 million years.
            self.key_last_reload.set(now_unix as f64);
        }
    }

    /// How many threads the async runtime serving connections has.
    pub fn serving_on(&self, workers: usize) {
        self.runtime_workers.set(gauge_value(workers));
    }

    /// What a load did with one account: `loaded` (its key loaded now, by backend),
    /// `unchanged` (its live key kept), `failed` (kept at its previous version or left out).
    pub fn account_loaded(&self, backend: &'static str, result: &'static str) {
        self.account_loads
            .get_or_create(&AccountLoadLabels { backend, result })
            .inc();
    }

    /// The accounts loaded at start-up, and when.
    pub fn loaded(&self, accounts: usize, now_unix: u64) {
        self.accounts_loaded.set(gauge_value(accounts));
        self.key_last_reload.set(now_unix as f64);
    }

    /// Local clock minus Twilio's, in seconds.
    pub fn clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
    }

    /// A new TCP connection to Twilio.
    pub fn upstream_connection_opened(&self) {
        self.upstream_connections_opened.inc();
    }

    /// A client connection closed because it read nothing for `response_write_timeout_ms`.
    pub fn client_write_timed_out(&self) {
        self.client_write_timeouts.inc();
    }

    /// Counts an open client connection until the guard drops.
    pub fn connection_open(&self) -> GaugeGuard {
        GaugeGuard::new(&self.connections_open)
    }

    /// Counts a request in flight until the guard drops.
    pub fn request_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(&self.requests_in_flight)
    }

    /// Counts an open tunnel until the guard drops.
    pub fn tunnel_open(&self) -> GaugeGuard {
        GaugeGuard::new(&self.tunnels_open)
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Holds a gauge one higher for as long as it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_label_values_are_exported_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        let mut expected: Vec<String> = REJECTION_CODES
            .iter()
            .map(|code| format!(r#"pkcv_proxy_rejected_total{{code="{code}"}} 0"#))
            .collect();
        for result in RELOAD_RESULTS {
            expected.push(format!(
                r#"pkcv_proxy_key_reloads_total{{result="{result}"}} 0"#
            ));
        }
        for backend in BACKENDS {
            expected.push(format!(
                r#"pkcv_proxy_sign_duration_seconds_count{{backend="{backend}"}} 0"#
            ));
        }
        for line in expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_static_label_lists_are_complete() {
        // (The backends are checked against `signing_key::Backend` in tests/it/operations.rs:
        // naming it here would make metrics depend on the signing layer.)
        // Every code the error mapping names (the admin port's own aside).
        let source = include_str!("error.rs");
        let mapping = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        for code in mapping
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| n.len() == 5 && n.starts_with("790"))
        {
            let code: u32 = code.parse().unwrap();
            assert!(
                REJECTION_CODES.contains(&code) || matches!(code, 79090 | 79091),
                "{code} is in error.rs but not in REJECTION_CODES"
            );
        }
        // server::CONNECTION_CAP_CODE, counted for connections closed at the cap.
        assert!(REJECTION_CODES.contains(&79051));
    }

    #[test]
    fn names_types_and_units_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.request(
            &RequestLabels {
                host: "*.twilio.com".into(),
                method: MethodLabel::from(&Method::GET),
                status: 200,
            },
            Duration::from_millis(3),
        );
        metrics.rejected(79010);
        metrics.signed("pem", Duration::from_micros(300));
        metrics.reloaded(Some(2), 1_700_000_000);
        metrics.reloaded(None, 1_700_000_001);
        let in_flight = metrics.request_in_flight();
        let text = metrics.encode();
        for line in [
            "# TYPE pkcv_proxy_requests counter",
            r#"pkcv_proxy_requests_total{host="*.twilio.com",method="GET",status="200"} 1"#,
            "# TYPE pkcv_proxy_request_duration_seconds histogram",
            "# UNIT pkcv_proxy_request_duration_seconds seconds",
            r#"pkcv_proxy_sign_duration_seconds_count{backend="pem"} 1"#,
            r#"pkcv_proxy_rejected_total{code="79010"} 1"#,
            r#"pkcv_proxy_key_reloads_total{result="success"} 1"#,
            r#"pkcv_proxy_key_reloads_total{result="failure"} 1"#,
            "pkcv_proxy_accounts_loaded 2",
            "pkcv_proxy_key_last_reload_timestamp_seconds 1700000000.0",
            "pkcv_proxy_requests_in_flight 1",
            "pkcv_proxy_connections_open 0",
            "pkcv_proxy_upstream_connections_opened_total 0",
            concat!(
                r#"pkcv_proxy_build_info{version=""#,
                env!("CARGO_PKG_VERSION"),
                r#""} 1"#
            ),
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(in_flight);
        assert!(metrics
            .encode()
            .lines()
            .any(|l| l == "pkcv_proxy_requests_in_flight 0"));
    }
}
