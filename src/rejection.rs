//! Twilio's own rejections (its 401s and 403s), read, counted and explained.
//!
//! Twilio says *why* it refused a request only in the JSON body (`{"code": 20151, …}`). For
//! an upstream 401 or 403, the body is copied (at most its first [`INSPECT_AT_MOST`] bytes)
//! as it streams to the client unchanged; when it ends, Twilio's `code` is read from the
//! copy, counted in `pkcv_proxy_twilio_rejections_total{code, account}`, logged at warn (once
//! per code per account per minute, with the advice from [`TWILIO_CODES`]) and kept as the
//! account's last rejection for `/readyz`. Every other response is passed through with no
//! copy at all.

use std::collections::HashMap;
use std::io::Read as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How much of a rejection's body is copied (and, gzipped, how much is decoded) to find its
/// code: Twilio's error bodies are a few hundred bytes.
pub const INSPECT_AT_MOST: usize = 8 * 1024;

/// How often the same code for the same account is logged at warn.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One of Twilio's error codes on the road between the proxy and Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwilioCode {
    /// The code.
    pub code: u32,
    /// Twilio's name for it.
    pub name: &'static str,
    /// What it usually means behind pkcv-proxy.
    pub meaning: &'static str,
    /// What to do.
    pub action: &'static str,
}

/// Twilio's codes that name a problem of the PKCV setup, from Twilio's error dictionary.
/// `explain`, the rejection log and `doctor` all read their advice from here.
pub const TWILIO_CODES: &[TwilioCode] = &[
    TwilioCode { code: 20003, name: "Authenticate", meaning: "the client's API key SID/secret are wrong or the key was deleted", action: "check the app's API key; `pkcv-proxy keys list`" },
    TwilioCode { code: 20151, name: "Authentication Failed", meaning: "the JWT did not verify: the private key is not the one registered as credential_sid (or the credential was deleted)", action: "run `pkcv-proxy doctor`; re-register the public key or fix credential_sid" },
    TwilioCode { code: 20152, name: "Invalid Header", meaning: "cty/alg/kid/typ not as Twilio requires", action: "a proxy bug: report it with `pkcv-proxy sign` output" },
    TwilioCode { code: 20153, name: "Invalid Issuer Or Subject", meaning: "the API key (iss) does not belong to the account (sub), or either is suspended", action: "check which account the key belongs to; api_key_sids" },
    TwilioCode { code: 20154, name: "Invalid Claim Set", meaning: "hrh/rqh missing", action: "a proxy bug: report it" },
    TwilioCode { code: 20155, name: "Expiration Time In The Future", meaning: "this machine's clock is ahead of Twilio's", action: "fix NTP; see pkcv_proxy_clock_skew_seconds" },
    TwilioCode { code: 20156, name: "Expired or Invalid Expiration", meaning: "this machine's clock is behind, or the request sat in a queue past the token's lifetime", action: "fix NTP; check queueing (max_in_flight)" },
    TwilioCode { code: 20157, name: "Expiration Time Exceeds Maximum", meaning: "ttl_secs above 300", action: "lower [signing] ttl_secs" },
    TwilioCode { code: 20160, name: "Invalid Token", meaning: "the header is not a JWT (something between the proxy and Twilio rewrote it)", action: "check middleboxes" },
    TwilioCode { code: 70052, name: "PKCV Required For Account", meaning: "a request reached Twilio without the header (not through the proxy, or passthrough_hosts)", action: "find the app that bypasses the proxy" },
    TwilioCode { code: 70053, name: "PKCV Not Enabled For Account", meaning: "the account does not have PKCV enabled but received a token", action: "enable PKCV for the account, or don't route it through the proxy" },
    TwilioCode { code: 70102, name: "Public key length unsupported", meaning: "uploading a public key failed", action: "use `pkcv-proxy keygen` (RSA-2048, X.509 PEM)" },
    TwilioCode { code: 70104, name: "Public key unparsable", meaning: "uploading a public key failed", action: "use `pkcv-proxy keygen` (RSA-2048, X.509 PEM)" },
    TwilioCode { code: 70154, name: "Public key invalid", meaning: "uploading a public key failed", action: "use `pkcv-proxy keygen` (RSA-2048, X.509 PEM)" },
    TwilioCode { code: 70155, name: "Request Is Missing Required HTTP Headers", meaning: "a header named in hrh was dropped on the way", action: "check middleboxes" },
    TwilioCode { code: 70156, name: "Request Hash Is Invalid", meaning: "the request Twilio received is not the one signed (canonicalization, or a middlebox changed it)", action: "run `pkcv-proxy sign` on that request; report it" },
];

/// The entry for `code`, when it is one of [`TWILIO_CODES`].
pub fn twilio_code(code: u32) -> Option<&'static TwilioCode> {
    TWILIO_CODES.iter().find(|entry| entry.code == code)
}

/// What a rejection is counted as: a code of the table, or why it is not one.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CodeLabel {
    /// A code of [`TWILIO_CODES`].
    Known(u32),
    /// A code Twilio gave that is not in the table.
    Other,
    /// The body is compressed in a way that could not be read within the bound.
    Encoded,
    /// The body carries no code that could be read.
    Unknown,
}

impl std::fmt::Display for CodeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeLabel::Known(code) => write!(f, "{code}"),
            CodeLabel::Other => f.write_str("other"),
            CodeLabel::Encoded => f.write_str("encoded"),
            CodeLabel::Unknown => f.write_str("unknown"),
        }
    }
}

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        write!(encoder, "{self}")
    }
}

/// `pkcv_proxy_twilio_rejections_total`'s labels: bounded by the table plus three, and by
/// the configured accounts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    code: CodeLabel,
    account: String,
}

/// Twilio's code in a rejection body: the label it is counted under, and the number Twilio
/// gave (also for `other`).
pub fn read_code(content_encoding: Option<&str>, body: &[u8]) -> (CodeLabel, Option<u32>) {
    let decoded;
    let text: &[u8] = match content_encoding.map(str::trim) {
        None | Some("") => body,
        Some(encoding) if encoding.eq_ignore_ascii_case("identity") => body,
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            match gunzip_within_bound(body) {
                Some(bytes) => {
                    decoded = bytes;
                    &decoded
                }
                None => return (CodeLabel::Encoded, None),
            }
        }
        Some(_) => return (CodeLabel::Encoded, None),
    };
    match code_in(text) {
        Some(code) if twilio_code(code).is_some() => (CodeLabel::Known(code), Some(code)),
        Some(code) => (CodeLabel::Other, Some(code)),
        None => (CodeLabel::Unknown, None),
    }
}

/// At most [`INSPECT_AT_MOST`] bytes of `body` gunzipped; what decoded before a truncated
/// end still counts. `None` when nothing decodes.
fn gunzip_within_bound(body: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::new();
    let limit = u64::try_from(INSPECT_AT_MOST).unwrap_or(u64::MAX);
    let mut decoder = flate2::read::GzDecoder::new(body).take(limit);
    // A copy cut at the bound ends mid-stream: keep what decoded up to there.
    let complete = decoder.read_to_end(&mut decoded).is_ok();
    (complete || !decoded.is_empty()).then_some(decoded)
}

/// The numeric `code` of a JSON object; from a copy cut short (not valid JSON), the first
/// `"code": <digits>` in it.
fn code_in(text: &[u8]) -> Option<u32> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(text) {
        return json
            .get("code")
            .and_then(serde_json::Value::as_u64)
            .and_then(|code| u32::try_from(code).ok());
    }
    let text = std::str::from_utf8(text)
        .ok()
        .or_else(|| std::str::from_utf8(&text[..text.len().saturating_sub(3)]).ok())?;
    let after = &text[text.find("\"code\"")? + "\"code\"".len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The last rejection of one account, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRejection {
    /// What it was counted as.
    pub label: CodeLabel,
    /// Twilio's code, when there was one.
    pub code: Option<u32>,
    /// The HTTP status (401 or 403).
    pub status: u16,
    /// When, in Unix seconds.
    pub at_unix: u64,
}

#[derive(Debug, Clone)]
struct AccountRejections {
    last: LastRejection,
    warned: HashMap<CodeLabel, Instant>,
}

/// The rejection counters, the last rejection of each account and the warn rate limit.
#[derive(Debug, Default)]
pub struct Rejections {
    counter: Family<RejectionLabels, Counter>,
    // Read-mostly and written only on a rejection: a copy-on-write map, no lock.
    accounts: ArcSwap<HashMap<String, AccountRejections>>,
}

impl Rejections {
    /// Registers the counter family.
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "pkcv_proxy_twilio_rejections",
            "Twilio's own 401/403 answers, by Twilio's code (a PKCV code, or other/encoded/unknown) and account; `pkcv-proxy explain CODE` says what to do",
            self.counter.clone(),
        );
    }

    /// Counts one rejection of `account`, remembers it, and logs it unless this code was
    /// logged for this account within the last minute.
    pub fn record(&self, account: &str, status: u16, label: CodeLabel, code: Option<u32>) {
        self.counter
            .get_or_create(&RejectionLabels {
                code: label,
                account: account.to_owned(),
            })
            .inc();
        let now = Instant::now();
        let last = LastRejection {
            label,
            code,
            status,
            at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        };
        let previous = self.accounts.rcu(|accounts| {
            let mut accounts = HashMap::clone(accounts);
            let entry = accounts
                .entry(account.to_owned())
                .or_insert_with(|| AccountRejections {
                    last: last.clone(),
                    warned: HashMap::new(),
                });
            entry.last = last.clone();
            let due = entry
                .warned
                .get(&label)
                .is_none_or(|at| now.duration_since(*at) >= WARN_EVERY);
            if due {
                entry.warned.insert(label, now);
            }
            accounts
        });
        let due = previous
            .get(account)
            .and_then(|entry| entry.warned.get(&label))
            .is_none_or(|at| now.duration_since(*at) >= WARN_EVERY);
        if due {
            warn(account, status, label, code);
        }
    }

    /// The last rejection of every account that had one, by account SID.
    pub fn last(&self) -> Vec<(String, LastRejection)> {
        let mut last: Vec<(String, LastRejection)> = self
            .accounts
            .load()
            .iter()
            .map(|(account, entry)| (account.clone(), entry.last.clone()))
            .collect();
        last.sort_by(|a, b| a.0.cmp(&b.0));
        last
    }

    /// `/readyz`'s details: the last rejection of each account, with the table's advice.
    pub fn readyz_details(&self) -> serde_json::Value {
        let details: Vec<serde_json::Value> = self
            .last()
            .into_iter()
            .map(|(account, last)| {
                let entry = last.code.and_then(twilio_code);
                serde_json::json!({
                    "account": account,
                    "code": last.label.to_string(),
                    "twilio_code": last.code,
                    "status": last.status,
                    "at": last.at_unix,
                    "name": entry.map(|e| e.name),
                    "advice": entry.map(|e| e.action),
                })
            })
            .collect();
        serde_json::Value::Array(details)
    }
}

fn warn(account: &str, status: u16, label: CodeLabel, code: Option<u32>) {
    let entry = code.and_then(twilio_code);
    let (name, meaning, action) = entry.map_or(
        (
            "not a PKCV code",
            "see Twilio's error dictionary",
            "run `pkcv-proxy doctor`",
        ),
        |e| (e.name, e.meaning, e.action),
    );
    let code_shown = code.map_or_else(|| label.to_string(), |code| code.to_string());
    tracing::warn!(
        account,
        status,
        code = %code_shown,
        "Twilio rejected a request of {account} with {code_shown} ({name}): {meaning}; {action} (logged once a minute per code and account; `pkcv-proxy explain {code_shown}`)"
    );
}

/// Wraps an upstream response's body: a 401 or 403 is copied (bounded) for its code as it
/// streams; any other passes through untouched.
pub(crate) fn inspect<B>(
    response: Response<B>,
    account: &str,
    rejections: &Arc<Rejections>,
) -> Response<Inspected<B>> {
    let status = response.status();
    let tap = (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN).then(|| {
        Box::new(Tap {
            account: account.to_owned(),
            status: status.as_u16(),
            encoding: response
                .headers()
                .get(CONTENT_ENCODING)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            copy: Vec::new(),
            rejections: rejections.clone(),
        })
    });
    response.map(|body| Inspected { body, tap })
}

/// A response body, with a bounded copy taken of a rejection's.
#[derive(Debug)]
pub(crate) struct Inspected<B> {
    body: B,
    tap: Option<Box<Tap>>,
}

/// The copy of one rejection's body. It is read and recorded when dropped: at the body's
/// end, at the bound, or when the client goes away first.
#[derive(Debug)]
struct Tap {
    account: String,
    status: u16,
    encoding: Option<String>,
    copy: Vec<u8>,
    rejections: Arc<Rejections>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let (label, code) = read_code(self.encoding.as_deref(), &self.copy);
        self.rejections
            .record(&self.account, self.status, label, code);
    }
}

impl<B> Body for Inspected<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(tap) = this.tap.as_mut() {
            let done = match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let room = INSPECT_AT_MOST.saturating_sub(tap.copy.len());
                        tap.copy.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    // The end known from the length: recorded before the client has it all.
                    tap.copy.len() >= INSPECT_AT_MOST || this.body.is_end_stream()
                }
                Poll::Ready(_) => true,
                Poll::Pending => false,
            };
            if done {
                // Recorded now (see `Tap`'s drop), not when the client finishes reading.
                this.tap = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn codes_are_read_plain_gzipped_cut_short_or_not_at_all() {
        let body = br#"{"code": 20151, "message": "Authentication Failed", "status": 401}"#;
        assert_eq!(
            read_code(None, body),
            (CodeLabel::Known(20151), Some(20151))
        );
        assert_eq!(
            read_code(Some("gzip"), &gzip(body)),
            (CodeLabel::Known(20151), Some(20151))
        );
        assert_eq!(
            read_code(None, br#"{"code": 21211}"#),
            (CodeLabel::Other, Some(21211))
        );
        assert_eq!(read_code(None, b"<html>"), (CodeLabel::Unknown, None));
        assert_eq!(read_code(Some("br"), body), (CodeLabel::Encoded, None));
        assert_eq!(
            read_code(Some("gzip"), b"not gzip"),
            (CodeLabel::Encoded, None)
        );
        // Cut at the bound: the code still counts when it came first.
        assert_eq!(
            read_code(None, br#"{"code":70156,"message":"aaaa"#),
            (CodeLabel::Known(70156), Some(70156))
        );
        // A gzip bomb decodes only up to the bound.
        let mut bomb = br#"{"code": 20003, "message": ""#.to_vec();
        bomb.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        let (label, _) = read_code(Some("gzip"), &gzip(&bomb)[..INSPECT_AT_MOST]);
        assert_eq!(label, CodeLabel::Known(20003));
    }

    #[tokio::test]
    async fn a_rejection_is_streamed_unchanged_counted_and_remembered() {
        let rejections = Arc::new(Rejections::default());
        let mut registry = prometheus_client::registry::Registry::default();
        rejections.register(&mut registry);
        let text = r#"{"code": 20155, "message": "Expiration Time In The Future"}"#;
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let body = inspect(response, "AC1", &rejections).into_body();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, text.as_bytes());
        let mut encoded = String::new();
        prometheus_client::encoding::text::encode(&mut encoded, &registry).unwrap();
        assert!(
            encoded.contains(r#"pkcv_proxy_twilio_rejections_total{code="20155",account="AC1"} 1"#),
            "{encoded}"
        );
        let last = rejections.last();
        assert_eq!(last[0].0, "AC1");
        assert_eq!(last[0].1.label, CodeLabel::Known(20155));
    }

    #[tokio::test]
    async fn other_responses_are_not_copied() {
        let rejections = Arc::new(Rejections::default());
        let response = Response::new(Full::new(Bytes::from(r#"{"code": 20003}"#)));
        let inspected = inspect(response, "AC1", &rejections);
        assert!(inspected.body().tap.is_none());
        inspected.into_body().collect().await.unwrap();
        assert!(rejections.last().is_empty());
    }
}
