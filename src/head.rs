//! Request heads checked before hyper parses them, so that a malformed request gets the
//! proxy's Twilio-style JSON error instead of hyper's bare `400`/`431` or a silent close.
//!
//! hyper answers a head it cannot parse itself, with no hook. So the connection's bytes pass
//! through [`HeadCheck`] first: whenever a new request head is due (the connection is new,
//! or the previous request has ended), it gathers the head up to its blank line and checks it
//! the way hyper would, and more strictly where smuggling lives (`Content-Length` and
//! `Transfer-Encoding`). A good head is handed on byte for byte. A bad one is replaced by a
//! small marker request (a header carrying a per-process token the client never sees, so it
//! cannot be forged, and `connection: close`), after which nothing more is read; the server
//! answers the marker with the JSON error (`79023` 400, `79024` 431) and the connection
//! closes.
//!
//! Once a `CONNECT` head has passed, the stream is a tunnel and is never looked at again.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::ProxyError;
use crate::keepalive::Activity;

/// The largest request head accepted: far above any Twilio request, far below hyper's own.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The most header fields accepted (hyper's own limit).
const MAX_HEADERS: usize = 100;

/// The header of the marker request that stands in for a refused head.
const MARKER: &str = "x-pkcv-proxy-refused-head";

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a well-formed HTTP/1.1 head.
    Malformed(&'static str),
    /// Longer than [`MAX_HEAD_BYTES`], or more than 100 header fields.
    TooLarge(&'static str),
}

impl Refusal {
    fn code(self) -> (u8, &'static str) {
        match self {
            Refusal::Malformed(reason) => (b'M', reason),
            Refusal::TooLarge(reason) => (b'L', reason),
        }
    }

    /// The error the client gets.
    pub(crate) fn error(self) -> ProxyError {
        match self {
            Refusal::Malformed(reason) => ProxyError::MalformedRequest(reason),
            Refusal::TooLarge(reason) => ProxyError::HeadTooLarge(reason),
        }
    }
}

/// The reasons a marker can carry, so the server reads back a `&'static str`.
const REASONS: &[&str] = &[
    "not an HTTP/1.1 request",
    "an HTTP/2 connection preface on the HTTP/1.1 port",
    "a TLS handshake on the plain HTTP port",
    "an invalid request line or header field",
    "a header field folded over lines (obs-fold)",
    "conflicting Content-Length headers",
    "a Content-Length that is not a number",
    "a Transfer-Encoding other than chunked",
    "both Transfer-Encoding and Content-Length",
    "the request head is larger than 64 KiB",
    "more than 100 header fields",
    "a request target that is not a valid URI",
];

fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // Unguessable per process; were the RNG to fail, the worst a client could do by
        // forging the marker is to get itself a 400.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        hex::encode(bytes)
    })
}

/// The refusal a marker request carries, if `headers` hold a genuine one.
pub(crate) fn refusal(headers: &HeaderMap) -> Option<Refusal> {
    let value = headers.get(MARKER)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    if given != token() {
        return None;
    }
    let (kind, index) = rest.split_at_checked(1)?;
    let reason = *REASONS.get(index.parse::<usize>().ok()?)?;
    match kind {
        "M" => Some(Refusal::Malformed(reason)),
        "L" => Some(Refusal::TooLarge(reason)),
        _ => None,
    }
}

fn marker_request(refusal: Refusal) -> Bytes {
    let (kind, reason) = refusal.code();
    let index = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
    Bytes::from(format!(
        "GET / HTTP/1.1\r\n{MARKER}: {} {}{index}\r\nconnection: close\r\n\r\n",
        token(),
        kind as char
    ))
}

/// Checks a complete head (through its blank line).
fn check(head: &[u8]) -> Result<bool, Refusal> {
    if head.starts_with(b"PRI * HTTP/2") {
        return Err(Refusal::Malformed(REASONS[1]));
    }
    if head.first() == Some(&0x16) {
        return Err(Refusal::Malformed(REASONS[2]));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::Malformed(REASONS[0])),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge(REASONS[10])),
        Err(httparse::Error::Version) => return Err(Refusal::Malformed(REASONS[0])),
        Err(_) if folded(head) => return Err(Refusal::Malformed(REASONS[4])),
        Err(_) => return Err(Refusal::Malformed(REASONS[3])),
    }
    // HTTP/1.0 heads are fine: Python's http.client sends its `CONNECT` as HTTP/1.0.
    if !matches!(request.version, Some(0 | 1)) {
        return Err(Refusal::Malformed(REASONS[0]));
    }
    // hyper parses the target with `http`'s URI parser and answers a bare 400 when it
    // fails: the same parser here, so such a target gets the JSON error instead.
    if http::Uri::try_from(request.path.unwrap_or_default()).is_err() {
        return Err(Refusal::Malformed(REASONS[11]));
    }
    check_framing(request.headers)?;
    Ok(request.method == Some("CONNECT"))
}

/// A header line that begins with white space continues the one before it (obs-fold).
fn folded(head: &[u8]) -> bool {
    head.windows(2)
        .any(|pair| pair[0] == b'\n' && (pair[1] == b' ' || pair[1] == b'\t'))
}

/// One body length, stated one way: what request smuggling feeds on is refused.
fn check_framing(fields: &[httparse::Header<'_>]) -> Result<(), Refusal> {
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = field.value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::Malformed(REASONS[6]));
            }
            if length.is_some_and(|seen| seen != value) {
                return Err(Refusal::Malformed(REASONS[5]));
            }
            length = Some(value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !field.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::Malformed(REASONS[7]));
            }
            chunked = true;
        }
    }
    if chunked && length.is_some() {
        return Err(Refusal::Malformed(REASONS[8]));
    }
    Ok(())
}

/// Where the stream stands.
#[derive(Debug)]
enum Mode {
    /// Gathering a head, not yet handed on.
    Gathering,
    /// Handing bytes on as they come; a new head is due once this many requests have ended.
    Passing { head_due_after: u64 },
    /// A tunnel: never looked at again.
    Tunnel,
    /// A refused head: the marker, then nothing more.
    Refusing,
}

/// A connection's stream with its request heads checked before they are handed on.
#[derive(Debug)]
pub(crate) struct HeadCheck<T> {
    io: T,
    activity: Activity,
    mode: Mode,
    /// Bytes read and not yet handed on.
    held: BytesMut,
    /// Bytes checked (or the marker) and ready to hand on.
    ready: Bytes,
}

impl<T> HeadCheck<T> {
    pub(crate) fn new(io: T, activity: Activity) -> HeadCheck<T> {
        HeadCheck {
            io,
            activity,
            mode: Mode::Gathering,
            held: BytesMut::new(),
            ready: Bytes::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> HeadCheck<T> {
    /// Reads more into `held`: `Ok(true)` when something arrived, `Ok(false)` at the end.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let mut chunk = [0u8; 8192];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                self.held.extend_from_slice(buf.filled());
                Poll::Ready(Ok(!buf.filled().is_empty()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Gathers a head; decides what is handed on next.
    fn gather(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(end) = head_end(&self.held) {
                self.mode = match check(&self.held[..end]) {
                    Ok(true) => Mode::Tunnel,
                    Ok(false) => Mode::Passing {
                        head_due_after: self.activity.requests_ended() + 1,
                    },
                    Err(refusal) => {
                        self.mode = Mode::Refusing;
                        self.ready = marker_request(refusal);
                        self.held.clear();
                        return Poll::Ready(Ok(()));
                    }
                };
                self.ready = self.held.split().freeze();
                return Poll::Ready(Ok(()));
            }
            if self.held.len() > MAX_HEAD_BYTES {
                self.mode = Mode::Refusing;
                self.ready = marker_request(Refusal::TooLarge(REASONS[9]));
                self.held.clear();
                return Poll::Ready(Ok(()));
            }
            match self.fill(cx) {
                Poll::Ready(Ok(true)) => continue,
                // The end before a whole head: hand on what there is, hyper ends the
                // connection as it always does.
                Poll::Ready(Ok(false)) => {
                    self.mode = Mode::Tunnel;
                    self.ready = self.held.split().freeze();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn head_is_due(&self) -> bool {
        match self.mode {
            Mode::Passing { head_due_after } => {
                !self.activity.in_request() && self.activity.requests_ended() >= head_due_after
            }
            _ => false,
        }
    }
}

/// The end of a head: the index after its blank line (CRLF or bare LF, as hyper allows).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadCheck<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.ready.is_empty() {
            if this.head_is_due() {
                this.mode = Mode::Gathering;
            }
            match this.mode {
                Mode::Gathering => match this.gather(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                },
                // After the marker (which asks for `connection: close`) nothing more is read:
                // hyper answers it and closes. An end of stream here would make hyper drop
                // the connection before answering.
                Mode::Refusing => return Poll::Pending,
                Mode::Passing { .. } | Mode::Tunnel => {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
            }
        }
        let n = this.ready.len().min(buf.remaining());
        buf.put_slice(&this.ready[..n]);
        this.ready.advance(n);
        Poll::Ready(Ok(()))
    }
}

crate::keepalive::write_through!(HeadCheck);

/// Whether a refusal of a malformed head may be logged at WARN now: at most one a second,
/// so a client spraying garbage cannot flood the log.
pub(crate) fn warn_allowed() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::token::unix_now();
    LAST.swap(now, Ordering::Relaxed) != now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(head: &[u8]) -> Option<Refusal> {
        check(head).err()
    }

    #[test]
    fn heads_are_checked_as_hyper_would_and_stricter_on_framing() {
        let ok = b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(check(ok), Ok(false));
        assert_eq!(
            check(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Ok(true)
        );
        for (head, reason) in [
            (
                &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
                REASONS[5],
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", REASONS[6]),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                REASONS[7],
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                REASONS[8],
            ),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", REASONS[4]),
            (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", REASONS[3]),
            (b"GET /a\x01 HTTP/1.1\r\n\r\n", REASONS[3]),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", REASONS[1]),
            (b"\x16\x03\x01\x00\xa5\r\n\r\n", REASONS[2]),
            (b"GET / HTTP/9.9\r\n\r\n", REASONS[0]),
            (b"GET http://[bad/ HTTP/1.1\r\n\r\n", REASONS[11]),
            (b"GET {x} HTTP/1.1\r\n\r\n", REASONS[11]),
            (b"GET http:///x HTTP/1.1\r\n\r\n", REASONS[11]),
        ] {
            assert_eq!(
                refused(head),
                Some(Refusal::Malformed(reason)),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        let many: Vec<u8> = [
            b"GET / HTTP/1.1\r\n".to_vec(),
            (0..150)
                .flat_map(|i| format!("X-{i}: 1\r\n").into_bytes())
                .collect(),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(refused(&many), Some(Refusal::TooLarge(REASONS[10])));
    }

    #[test]
    fn markers_round_trip_and_cannot_be_forged() {
        for refusal in [
            Refusal::Malformed(REASONS[5]),
            Refusal::TooLarge(REASONS[9]),
        ] {
            let marker = marker_request(refusal);
            let mut fields = [httparse::EMPTY_HEADER; 8];
            let mut request = httparse::Request::new(&mut fields);
            assert!(request.parse(&marker).unwrap().is_complete());
            let mut headers = HeaderMap::new();
            for field in request.headers.iter() {
                headers.insert(
                    http::HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(field.value).unwrap(),
                );
            }
            assert_eq!(super::refusal(&headers), Some(refusal));
        }
        let mut forged = HeaderMap::new();
        forged.insert(MARKER, http::HeaderValue::from_static("0000 M5"));
        assert_eq!(super::refusal(&forged), None);
    }
}
