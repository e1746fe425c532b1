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

/// Where a chunked body stands: hyper's own decoder's states (`proto::h1::decode`), so
/// that the body ends, or breaks, at the very byte where hyper's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// How far a body got in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// All of them are body; it goes on.
    More,
    /// It ends after this many.
    Ends(usize),
    /// The byte at this index breaks the framing (hyper fails the body there).
    Broken(usize),
}

impl Chunk {
    /// Scans `bytes`, the next of a chunked body, from this state. `size` is the chunk size
    /// read so far.
    fn scan(&mut self, size: &mut u64, bytes: &[u8]) -> Scan {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Data(left) = *self {
                let take = usize::try_from(left).unwrap_or(usize::MAX);
                let take = take.min(bytes.len() - at);
                at += take;
                let left = left - take as u64;
                *self = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let byte = bytes[at];
            let next = self.step(size, byte);
            match next {
                Some(next) => *self = next,
                None => return Scan::Broken(at),
            }
            at += 1;
            if *self == Chunk::End {
                return Scan::Ends(at);
            }
        }
        Scan::More
    }

    /// One byte outside chunk data; `None` where hyper's decoder fails.
    fn step(self, size: &mut u64, byte: u8) -> Option<Chunk> {
        let hex = (byte as char).to_digit(16).map(u64::from);
        Some(match (self, byte) {
            (Chunk::Start | Chunk::Size, _) if hex.is_some() => {
                *size = size.checked_mul(16)?.checked_add(hex?)?;
                Chunk::Size
            }
            (Chunk::Size | Chunk::SizeLws, b'\t' | b' ') => Chunk::SizeLws,
            (Chunk::Size | Chunk::SizeLws, b';') => Chunk::Extension,
            (Chunk::Size | Chunk::SizeLws | Chunk::Extension, b'\r') => Chunk::SizeLf,
            (Chunk::Extension, b'\n') => return None,
            (Chunk::Extension, _) => Chunk::Extension,
            (Chunk::SizeLf, b'\n') if *size == 0 => Chunk::EndCr,
            (Chunk::SizeLf, b'\n') => Chunk::Data(std::mem::take(size)),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndCr, _) => Chunk::Trailer,
            (Chunk::EndLf, b'\n') => Chunk::End,
            _ => return None,
        })
    }
}

/// Where the stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A head is due: gathering it, not yet handed on.
    Head,
    /// Handing on a body of this many more bytes.
    Length(u64),
    /// Handing on a chunked body (and the chunk size read so far).
    Chunked(Chunk, u64),
    /// A tunnel: never looked at again.
    Tunnel,
    /// A refused head: the marker, then nothing more.
    Refusing,
    /// A body whose framing broke was handed on up to the breaking byte: the end of the
    /// stream next, so that nothing after it is ever read as a head.
    Ending,
}

/// What to do next with a connection's bytes (see [`Framer::step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Hand these on.
    HandOn(Bytes),
    /// Read more from the client first.
    NeedMore,
    /// Read straight from the client from now on (a tunnel, or the client's end of stream).
    PassThrough,
    /// Hand on nothing more, and keep the stream open: a refused head's marker was handed
    /// on and the server answers it, then closes.
    Stop,
    /// End the stream now.
    End,
}

/// The connection's bytes cut into requests, without I/O: every request head is checked
/// before it is handed on, and each body is handed on exactly as far as its head frames
/// it, so that whatever follows — a pipelined request, in the same read or not — is a head
/// and is checked in turn.
#[derive(Debug)]
pub struct Framer {
    mode: Mode,
    /// Inside an intercepted tunnel: an HTTP/2 preface may open the stream (h2 has its own
    /// framing), and a `CONNECT` is just a request (refused by the proxy), never a tunnel.
    in_tunnel: bool,
    /// No head has been handed on yet.
    first: bool,
    /// The client's stream has ended.
    ended: bool,
    /// Bytes received and not yet handed on.
    held: BytesMut,
    /// The refusal whose marker was handed on, if any.
    refused: Option<Refusal>,
    /// How many of the client's bytes were handed on (a marker not counted).
    consumed: usize,
    /// How far `held` was searched for a head's end without finding it, so that a head
    /// arriving a byte at a time is not searched again from its start at every byte.
    searched: usize,
}

impl Framer {
    /// A framer for a new connection (`in_tunnel`: inside an intercepted `CONNECT` tunnel).
    pub fn new(in_tunnel: bool) -> Framer {
        Framer {
            mode: Mode::Head,
            in_tunnel,
            first: true,
            ended: false,
            held: BytesMut::new(),
            refused: None,
            consumed: 0,
            searched: 0,
        }
    }

    /// How many of the client's bytes were handed on (a refused head's marker not counted).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Bytes from the client.
    pub fn received(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
    }

    /// The client's stream has ended.
    pub fn end_of_stream(&mut self) {
        self.ended = true;
    }

    /// The head that was refused, if one was (its marker is what was handed on last).
    pub fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    /// What to do next.
    pub fn step(&mut self) -> Next {
        let next = self.decide();
        if let (Next::HandOn(bytes), None) = (&next, self.refused) {
            self.consumed += bytes.len();
        }
        next
    }

    fn decide(&mut self) -> Next {
        match self.mode {
            Mode::Head => self.head(),
            Mode::Length(left) => {
                if self.held.is_empty() {
                    return self.more();
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX);
                let take = take.min(self.held.len());
                let left = left - take as u64;
                self.mode = if left == 0 {
                    Mode::Head
                } else {
                    Mode::Length(left)
                };
                Next::HandOn(self.held.split_to(take).freeze())
            }
            Mode::Chunked(mut state, mut size) => {
                if self.held.is_empty() {
                    return self.more();
                }
                let scan = state.scan(&mut size, &self.held);
                let (take, mode) = match scan {
                    Scan::More => (self.held.len(), Mode::Chunked(state, size)),
                    Scan::Ends(at) => (at, Mode::Head),
                    Scan::Broken(at) => (at + 1, Mode::Ending),
                };
                self.mode = mode;
                Next::HandOn(self.held.split_to(take).freeze())
            }
            Mode::Tunnel if !self.held.is_empty() => Next::HandOn(self.held.split().freeze()),
            Mode::Tunnel => Next::PassThrough,
            Mode::Refusing => Next::Stop,
            Mode::Ending => Next::End,
        }
    }

    /// Nothing held: more from the client, or (once it has ended) its end handed on.
    fn more(&mut self) -> Next {
        if self.ended {
            self.mode = Mode::Tunnel;
            return Next::PassThrough;
        }
        Next::NeedMore
    }

    /// Gathers a head; decides what is handed on next.
    fn head(&mut self) -> Next {
        // A blank line may straddle the end of the last search: back up three bytes.
        let from = self.searched.saturating_sub(3);
        let Some(end) = head_end(&self.held[from..]).map(|end| from + end) else {
            self.searched = self.held.len();
            if self.held.len() > MAX_HEAD_BYTES {
                return self.refuse(Refusal::TooLarge(REASONS[9]));
            }
            if self.ended && !self.held.is_empty() {
                // The end before a whole head: hand on what there is, and hyper ends the
                // connection as it always does.
                self.mode = Mode::Tunnel;
                return Next::HandOn(self.held.split().freeze());
            }
            return self.more();
        };
        self.searched = 0;
        let first = std::mem::replace(&mut self.first, false);
        if first && self.in_tunnel && self.held.starts_with(H2_PREFACE_START) {
            self.mode = Mode::Tunnel;
            return Next::HandOn(self.held.split().freeze());
        }
        match check(&self.held[..end]) {
            Ok(head) => {
                self.mode = match head.body {
                    _ if head.connect && !self.in_tunnel => Mode::Tunnel,
                    BodyLength::Length(0) => Mode::Head,
                    BodyLength::Length(n) => Mode::Length(n),
                    BodyLength::Chunked => Mode::Chunked(Chunk::Start, 0),
                };
                Next::HandOn(self.held.split_to(end).freeze())
            }
            Err(refusal) => self.refuse(refusal),
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> Next {
        self.mode = Mode::Refusing;
        self.refused = Some(refusal);
        self.held.clear();
        Next::HandOn(marker_request(refusal))
    }
}

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
mod tests {
    use super::*;

    #[test]
    fn a_warn_limit_writes_one_line_a_second_and_counts_the_rest() {
        let limit = WarnLimit::new();
        assert_eq!(limit.allow_at(100), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow_at(100), None);
        }
        assert_eq!(limit.allow_at(101), Some(5));
        assert_eq!(limit.allow_at(102), Some(0));
    }

    fn refused(head: &[u8]) -> Option<Refusal> {
        check(head).err()
    }

    #[test]
    fn heads_are_checked_as_hyper_would_and_stricter_on_framing() {
        let ok = b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            check(ok),
            Ok(Head {
                connect: false,
                body: BodyLength::Length(3)
            })
        );
        assert_eq!(
            check(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").map(|h| h.connect),
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

    /// Everything the framer hands on for `input` (fed in pieces of `step` bytes), and how
    /// it ends.
    fn frame(input: &[u8], step: usize, in_tunnel: bool) -> (Vec<u8>, Next) {
        let mut framer = Framer::new(in_tunnel);
        let mut out = Vec::new();
        let mut pieces = input.chunks(step.max(1));
        loop {
            match framer.step() {
                Next::HandOn(bytes) => out.extend_from_slice(&bytes),
                Next::NeedMore => match pieces.next() {
                    Some(piece) => framer.received(piece),
                    None => framer.end_of_stream(),
                },
                Next::PassThrough => {
                    // From here the stream is read straight from the client.
                    out.extend(pieces.flatten());
                    return (out, Next::PassThrough);
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn every_head_after_a_body_is_checked() {
        let good = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\n\r\n";
        let bad = b"POST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for step in [1, 2, 7, 4096] {
            let (out, end) = frame(good, step, false);
            assert_eq!((out.as_slice(), end), (&good[..], Next::PassThrough));
            let input = [&good[..], bad].concat();
            let (out, end) = frame(&input, step, false);
            assert_eq!(end, Next::Stop, "step {step}");
            assert!(out.starts_with(good));
            assert_eq!(
                &out[good.len()..],
                &marker_request(Refusal::Malformed(REASONS[8]))[..]
            );
        }
        // A blank line of LF then CRLF ends a head for httparse, so it does here: the head
        // after it is checked, not handed on as part of the first.
        let mixed = b"GET /a HTTP/1.1\r\nHost: a\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, end) = frame(mixed, 4096, false);
        assert_eq!(end, Next::Stop);
        assert!(out.starts_with(b"GET /a HTTP/1.1\r\nHost: a\n\r\nGET / HTTP/1.1\r\n"));
        // A chunk size hyper fails on: handed on through that byte, then the end.
        let broken = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        let (out, end) = frame(broken, 3, false);
        assert_eq!(end, Next::End);
        assert!(
            out.ends_with(b"\r\n\r\nz"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // Inside a tunnel an h2 preface opens the stream to h2; elsewhere it is refused.
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(
            frame(preface, 5, true),
            (preface.to_vec(), Next::PassThrough)
        );
        assert_eq!(frame(preface, 5, false).1, Next::Stop);
        // A head of 64 KiB and one byte is refused even when it arrives whole.
        let long = [
            b"GET / HTTP/1.1\r\nX: ".to_vec(),
            vec![b'a'; MAX_HEAD_BYTES],
            b"\r\n\r\n".to_vec(),
        ]
        .concat();
        let (out, end) = frame(&long, 1 << 20, false);
        assert_eq!(end, Next::Stop);
        assert_eq!(out, marker_request(Refusal::TooLarge(REASONS[9])));
    }
}
