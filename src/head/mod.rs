//! Request heads checked before hyper parses them, so that a malformed request gets the
//! proxy's Twilio-style JSON error instead of hyper's bare `400`/`431` or a silent close.
//!
//! hyper answers a head it cannot parse itself, with no hook. So the connection's bytes pass
//! through [`HeadCheck`] first, which cuts them into requests the way hyper will
//! ([`Framer`]): it gathers each head up to its blank line and checks it the way hyper would,
//! and more strictly where smuggling lives (`Content-Length` and `Transfer-Encoding`); it
//! then hands on the body exactly as far as that head frames it (a length, or chunks read
//! with hyper's own decoder's states), so the next bytes are the next head and are checked
//! in turn — pipelined requests, in the same read or sent while the previous one is in
//! flight, included. A good head is handed on byte for byte. A bad one is replaced by a
//! small marker request (a header carrying a per-process token the client never sees, so it
//! cannot be forged, and `connection: close`), after which nothing more is read; the server
//! answers the marker with the JSON error (`79023` 400, `79024` 431) and the connection
//! closes. A body whose chunked framing breaks is handed on up to the breaking byte (hyper
//! fails it there) and the stream then ends.
//!
//! The same rules hold on the plain port and on HTTP/1.1 inside intercepted tunnels. Once a
//! `CONNECT` head has passed on the plain port, the stream is a tunnel (or, if the
//! `CONNECT` is refused, closed after the answer) and is never looked at again; inside a
//! tunnel, an HTTP/2 preface hands the stream to h2, whose parsed headers meet the same
//! rules in [`check_fields`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::ProxyError;

/// The largest request head accepted: far above any Twilio request, far below hyper's own.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The most header fields accepted (hyper's own limit).
const MAX_HEADERS: usize = 100;

/// The header of the marker request that stands in for a refused head.
const MARKER: &str = "x-pkcv-proxy-refused-head";

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
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
    "a Content-Length too large to read",
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

/// How the body after a head is framed, read the way hyper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    /// `Content-Length` bytes (none without the header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A head that passed: whether it opens a tunnel, and how its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    connect: bool,
    body: BodyLength,
}

/// Checks a complete head (through its blank line).
fn check(head: &[u8]) -> Result<Head, Refusal> {
    if head.starts_with(b"PRI * HTTP/2") {
        return Err(Refusal::Malformed(REASONS[1]));
    }
    if head.first() == Some(&0x16) {
        return Err(Refusal::Malformed(REASONS[2]));
    }
    if head.len() > MAX_HEAD_BYTES {
        return Err(Refusal::TooLarge(REASONS[9]));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        // A head that httparse ends before its blank line would hand on the rest unchecked.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => return Err(Refusal::Malformed(REASONS[3])),
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
    let fields = request.headers.iter().map(|f| (f.name, f.value));
    let body = check_framing(fields, request.version == Some(0))?;
    Ok(Head {
        connect: request.method == Some("CONNECT"),
        body,
    })
}

/// A header line that begins with white space continues the one before it (obs-fold).
fn folded(head: &[u8]) -> bool {
    head.windows(2)
        .any(|pair| pair[0] == b'\n' && (pair[1] == b' ' || pair[1] == b'\t'))
}

/// One body length, stated one way: what request smuggling feeds on is refused. The length
/// returned is the one hyper reads for a head that passes.
fn check_framing<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
    http_1_0: bool,
) -> Result<BodyLength, Refusal> {
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("content-length") {
            let value = value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::Malformed(REASONS[6]));
            }
            if length.is_some_and(|seen| seen != value) {
                return Err(Refusal::Malformed(REASONS[5]));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // hyper refuses `Transfer-Encoding` on HTTP/1.0 with a bare 400.
            if http_1_0 || chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::Malformed(REASONS[7]));
            }
            chunked = true;
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(Refusal::Malformed(REASONS[8])),
        (true, None) => Ok(BodyLength::Chunked),
        (false, None) => Ok(BodyLength::Length(0)),
        // hyper's own ceiling is u64::MAX - 2; one that does not fit gets its bare 400.
        (false, Some(digits)) => std::str::from_utf8(digits)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .filter(|&n| n < u64::MAX - 2)
            .map(BodyLength::Length)
            .ok_or(Refusal::Malformed(REASONS[12])),
    }
}

/// The head rules for a request whose head arrived parsed (HTTP/2 inside a tunnel, where
/// h2 has already kept the header list to [`MAX_HEAD_BYTES`]): at most 100 fields, and the
/// same `Content-Length`/`Transfer-Encoding` rules as HTTP/1.1.
pub(crate) fn check_fields(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.len() > MAX_HEADERS {
        return Err(Refusal::TooLarge(REASONS[10]));
    }
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if size > MAX_HEAD_BYTES {
        return Err(Refusal::TooLarge(REASONS[9]));
    }
    let fields = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    check_framing(fields, false).map(drop)
}

mod framer;
pub use framer::{Framer, Next};

/// How an HTTP/2 connection preface begins (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// A connection's stream with its request heads checked before they are handed on.
#[derive(Debug)]
pub(crate) struct HeadCheck<T> {
    io: T,
    framer: Framer,
    /// Bytes checked (or the marker) and ready to hand on.
    ready: Bytes,
}

impl<T> HeadCheck<T> {
    /// The client's stream on the plain port (`in_tunnel` false) or inside an intercepted
    /// tunnel (true).
    pub(crate) fn new(io: T, in_tunnel: bool) -> HeadCheck<T> {
        HeadCheck {
            io,
            framer: Framer::new(in_tunnel),
            ready: Bytes::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> HeadCheck<T> {
    /// Reads more from the client into the framer.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().is_empty() {
                    self.framer.end_of_stream();
                } else {
                    self.framer.received(buf.filled());
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The end of a head: the index after its blank line. Lines end in CRLF or a bare LF, as
/// httparse (and so hyper) allows, mixed too: the blank line is an LF followed by CRLF or LF.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(2)
        .enumerate()
        .find_map(|(at, pair)| match pair {
            b"\n\n" => Some(at + 2),
            b"\n\r" if bytes.get(at + 2) == Some(&b'\n') => Some(at + 3),
            _ => None,
        })
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadCheck<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.ready.is_empty() {
            match this.framer.step() {
                Next::HandOn(bytes) => this.ready = bytes,
                Next::NeedMore => match this.fill(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                },
                Next::PassThrough => return Pin::new(&mut this.io).poll_read(cx, buf),
                // After the marker (which asks for `connection: close`) nothing more is read:
                // hyper answers it and closes. An end of stream here would make hyper drop
                // the connection before answering.
                Next::Stop => return Poll::Pending,
                Next::End => return Poll::Ready(Ok(())),
            }
        }
        let n = this.ready.len().min(buf.remaining());
        buf.put_slice(&this.ready[..n]);
        this.ready.advance(n);
        Poll::Ready(Ok(()))
    }
}

crate::keepalive::write_through!(HeadCheck);

/// Log lines an unauthenticated peer can cause, each kind at most once a second, so a peer
/// spraying garbage cannot flood the log; the next line that is written says how many were
/// left out since the last one.
#[derive(Debug)]
pub(crate) struct WarnLimit {
    /// The second (Unix time) of the last line written.
    last: AtomicU64,
    /// Lines left out since then.
    suppressed: AtomicU64,
}

/// Refusals of malformed heads.
pub(crate) static MALFORMED_HEADS: WarnLimit = WarnLimit::new();
/// 407s: requests without valid client credentials.
pub(crate) static PROXY_AUTH: WarnLimit = WarnLimit::new();
/// Failed handshakes on the mutual-TLS listener.
pub(crate) static TLS_HANDSHAKES: WarnLimit = WarnLimit::new();
/// Client connections closed because the client read nothing for `response_write_timeout_ms`.
pub(crate) static WRITE_TIMEOUTS: WarnLimit = WarnLimit::new();

impl WarnLimit {
    const fn new() -> WarnLimit {
        WarnLimit {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one written)` when a line may be written now;
    /// `None` (and one more left out) when not.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(crate::token::unix_now())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        if self.last.swap(now, Ordering::Relaxed) == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
