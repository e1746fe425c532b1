//! Target `head`: [`Framer`] — a connection's bytes cut into requests, every head checked.
//!
//! Input: literal — the bytes a client sends on one connection (prefixed by `@tunnel\n`:
//! inside an intercepted tunnel); or structured: one to four requests, each with a head
//! built from pools of good and hostile framing fields (`Content-Length` right, wrong,
//! doubled or not a number; `Transfer-Encoding` chunked, `identity, chunked`, doubled or
//! beside a `Content-Length`; heads near and over 64 KiB; more than 100 fields), a body
//! framed as its head says (chunks with extensions and trailers) or not, sometimes an
//! HTTP/2 preface first, fed to the framer in pieces of a chosen size.
//!
//! Properties, against an independent model of HTTP/1.1 framing:
//!
//! - what is handed on is the client's bytes, byte for byte, up to some point, then at most
//!   a refusal marker; and the same whatever the size of the pieces they arrive in;
//! - every head handed on — the first, and every pipelined one after a body, in the same
//!   piece or not — obeys the rules: at most 64 KiB and 100 fields, one `Content-Length`
//!   value or one `Transfer-Encoding: chunked`, never both, none on HTTP/1.0;
//! - each body is handed on exactly as far as its head frames it (where the model reads a
//!   well-formed chunked body's end, the framer does too), so the next head is where the
//!   model says, and is checked;
//! - a refusal happens at a head, never inside a body, and a head that breaks a framing
//!   rule is always refused;
//! - inside a tunnel an HTTP/2 preface hands the stream on whole; a `CONNECT` is a request
//!   there, not a tunnel.

use arbitrary::{Result, Unstructured};
use pkcv_proxy::head::{Framer, Next};

use crate::{stats, Input};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "\n\n",
    "GET / HTTP/1.1\r\n",
    "POST /x HTTP/1.1\r\n",
    "CONNECT api.twilio.com:443 HTTP/1.1\r\n",
    " HTTP/1.0\r\n",
    "Host: api.twilio.com\r\n",
    "Content-Length: ",
    "Content-Length: 5\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: identity, chunked\r\n",
    "0\r\n\r\n",
    "5\r\nhello\r\n",
    ";ext=1",
    "X-T: 1\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "@tunnel\n",
];

/// The documented head limit.
const MAX_HEAD: usize = 64 * 1024;

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let (stream, in_tunnel, step) = match Input::new(input) {
        Input::Literal(bytes) => match bytes.strip_prefix(b"@tunnel\n") {
            Some(rest) => (rest.to_vec(), true, 0),
            None => (bytes.to_vec(), false, 0),
        },
        Input::Structured(mut u) => match structured(&mut u) {
            Ok(case) => case,
            Err(_) => return,
        },
    };
    check_stream(&stream, in_tunnel, step);
}

/// How a run of the framer over a stream ended.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    end: Next,
    consumed: usize,
    refused: bool,
}

fn run(stream: &[u8], in_tunnel: bool, step: usize) -> Run {
    let mut framer = Framer::new(in_tunnel);
    let mut out = Vec::new();
    let mut pieces = stream.chunks(step.max(1));
    for _ in 0..stream.len() * 4 + 64 {
        match framer.step() {
            Next::HandOn(bytes) => {
                assert!(!bytes.is_empty(), "an empty hand-on");
                out.extend_from_slice(&bytes);
            }
            Next::NeedMore => match pieces.next() {
                Some(piece) => framer.received(piece),
                None => framer.end_of_stream(),
            },
            Next::PassThrough => {
                let consumed = framer.consumed() + pieces.clone().map(<[u8]>::len).sum::<usize>();
                out.extend(pieces.flatten());
                return Run {
                    out,
                    end: Next::PassThrough,
                    consumed,
                    refused: false,
                };
            }
            end => {
                return Run {
                    out,
                    end,
                    consumed: framer.consumed(),
                    refused: framer.refused().is_some(),
                }
            }
        }
    }
    panic!("the framer did not finish {} bytes", stream.len());
}

/// Every property for one stream.
pub fn check_stream(stream: &[u8], in_tunnel: bool, step: usize) {
    let whole = run(stream, in_tunnel, stream.len());
    // Small pieces, but not so small that a 64 KiB head takes forever.
    let step = step.max(stream.len() / 256).max(1);
    let pieces = run(stream, in_tunnel, step);
    assert_eq!(
        (&whole.end, whole.consumed, whole.refused),
        (&pieces.end, pieces.consumed, pieces.refused),
        "fed whole and in pieces of {step}, the stream is cut differently"
    );
    let Run {
        out,
        end,
        consumed,
        refused,
    } = whole;
    assert!(consumed <= stream.len());
    assert_eq!(&out[..consumed], &stream[..consumed], "bytes changed");
    match end {
        Next::Stop => {
            assert!(refused, "stopped without a refusal");
            let marker = &out[consumed..];
            assert!(
                marker.starts_with(b"GET / HTTP/1.1\r\n")
                    && marker.ends_with(b"connection: close\r\n\r\n"),
                "not a marker: {:?}",
                String::from_utf8_lossy(marker)
            );
            stats::count("head.refused");
        }
        Next::PassThrough => {
            assert_eq!(consumed, stream.len(), "a pass-through lost bytes");
            assert_eq!(out.len(), stream.len());
        }
        Next::End => {
            assert_eq!(out.len(), consumed);
            stats::count("head.body-broken");
        }
        Next::HandOn(_) | Next::NeedMore => unreachable!("run returns only ends"),
    }
    walk(stream, in_tunnel, consumed, &end);
}

/// What the model reads in a head.
struct ModelHead {
    connect: bool,
    http_1_0: bool,
    lengths: Vec<Vec<u8>>,
    encodings: Vec<Vec<u8>>,
    fields: usize,
}

fn model_head(head: &[u8]) -> ModelHead {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    // Empty lines before the request line are skipped (RFC 9112 §2.2), as httparse does.
    let request_line = lines.find(|line| !line.is_empty()).unwrap_or_default();
    let mut model = ModelHead {
        connect: request_line.starts_with(b"CONNECT "),
        http_1_0: request_line.ends_with(b" HTTP/1.0"),
        lengths: Vec::new(),
        encodings: Vec::new(),
        fields: 0,
    };
    for line in lines.filter(|line| !line.is_empty()) {
        model.fields += 1;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].to_ascii_lowercase();
        let value = line[colon + 1..].trim_ascii().to_vec();
        match name.as_slice() {
            b"content-length" => model.lengths.push(value),
            b"transfer-encoding" => model.encodings.push(value),
            _ => {}
        }
    }
    model
}

/// The framing rules a head handed on must obey.
fn obeys_rules(head: &[u8], model: &ModelHead) -> std::result::Result<(), &'static str> {
    if head.len() > MAX_HEAD {
        return Err("over 64 KiB");
    }
    if model.fields > 100 {
        return Err("over 100 fields");
    }
    if !model.encodings.is_empty() {
        if model.encodings.len() > 1 || !model.encodings[0].eq_ignore_ascii_case(b"chunked") {
            return Err("a Transfer-Encoding other than one chunked");
        }
        if !model.lengths.is_empty() {
            return Err("Transfer-Encoding and Content-Length");
        }
        if model.http_1_0 {
            return Err("Transfer-Encoding on HTTP/1.0");
        }
    }
    if model.lengths.iter().any(|l| l != &model.lengths[0]) {
        return Err("conflicting Content-Lengths");
    }
    Ok(())
}

/// The end of a well-formed chunked body (strict RFC 9112 grammar: hex size, optional
/// `;extension`, CRLF, data, CRLF; trailer fields; CRLF) starting at `at`; `Err(true)`
/// when the stream ends first, `Err(false)` when it is not that strict form.
fn chunked_end(stream: &[u8], mut at: usize) -> std::result::Result<usize, bool> {
    let line = |at: usize| -> std::result::Result<(usize, usize), bool> {
        let rest = stream.get(at..).ok_or(true)?;
        let end = rest.windows(2).position(|w| w == b"\r\n").ok_or(true)?;
        Ok((at, at + end))
    };
    loop {
        let (start, end) = line(at)?;
        let text = &stream[start..end];
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let after = &text[digits..];
        if digits == 0 || digits > 15 || !(after.is_empty() || after.starts_with(b";")) {
            return Err(false);
        }
        // A bare CR or LF inside the line is no strict form (hyper fails it).
        if text.contains(&b'\r') || text.contains(&b'\n') {
            return Err(false);
        }
        let text = std::str::from_utf8(&text[..digits]).map_err(|_| false)?;
        let size = usize::from_str_radix(text, 16).map_err(|_| false)?;
        at = end + 2;
        if size == 0 {
            break;
        }
        let data_end = at.checked_add(size).ok_or(false)?;
        match stream.get(data_end..data_end + 2) {
            Some(b"\r\n") => at = data_end + 2,
            Some(_) => return Err(false),
            None => return Err(true),
        }
    }
    loop {
        let (start, end) = line(at)?;
        at = end + 2;
        if start == end {
            return Ok(at);
        }
        let field = &stream[start..end];
        if !field.contains(&b':') || field.contains(&b'\r') || field.contains(&b'\n') {
            return Err(false);
        }
    }
}

/// Walks the stream with the model and checks the framer's cut against it.
fn walk(stream: &[u8], in_tunnel: bool, consumed: usize, end: &Next) {
    let mut at = 0;
    let mut first = true;
    let mut requests = 0;
    while at < stream.len() {
        if in_tunnel && first && stream.starts_with(b"PRI * HTTP/2.0\r\n\r\n") {
            assert_eq!(
                end,
                &Next::PassThrough,
                "an h2 preface in a tunnel was not passed"
            );
            stats::count("head.h2-preface");
            return;
        }
        first = false;
        let rest = &stream[at..];
        // The blank line: lines end in CRLF or LF, so an LF, then an optional CR, then LF.
        let blank = (0..rest.len()).find_map(|at| match &rest[at..] {
            [b'\n', b'\n', ..] => Some(at + 2),
            [b'\n', b'\r', b'\n', ..] => Some(at + 3),
            _ => None,
        });
        let Some(head_len) = blank else {
            // A partial head at the end of the stream: handed on whole (hyper answers it),
            // or refused for its size.
            if rest.len() > MAX_HEAD {
                assert_eq!(
                    (end, consumed),
                    (&Next::Stop, at),
                    "a head over 64 KiB not refused"
                );
            }
            return;
        };
        let head = &rest[..head_len];
        let model = model_head(head);
        if at == consumed && end == &Next::Stop {
            // The refused head: it is one, at a boundary; nothing to add.
            stats::count(if requests > 0 {
                "head.refused-after-a-request"
            } else {
                "head.refused-first"
            });
            return;
        }
        assert!(
            at + head_len <= consumed,
            "the framer stopped inside a head at {consumed} (head at {at}): {end:?}"
        );
        if let Err(rule) = obeys_rules(head, &model) {
            panic!(
                "a head that breaks the rules ({rule}) was handed on at {at}: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(200)])
            );
        }
        requests += 1;
        if requests > 1 {
            stats::count("head.pipelined-passed");
        }
        at += head_len;
        if model.connect && !in_tunnel {
            assert_eq!(end, &Next::PassThrough, "a CONNECT did not open a tunnel");
            return;
        }
        let Some(body_end) = body_end(stream, at, &model) else {
            return;
        };
        if body_end > stream.len() {
            assert_eq!(consumed, stream.len(), "a body cut short was not handed on");
            return;
        }
        assert!(
            body_end <= consumed,
            "the framer stopped at {consumed}, inside a body that ends at {body_end}: {end:?}"
        );
        at = body_end;
    }
}

/// Where the model says the body after a head (ending at `at`) ends; `None` when it cannot
/// say (a chunked body not in the strict form, or cut short; a length that is no number).
fn body_end(stream: &[u8], at: usize, model: &ModelHead) -> Option<usize> {
    if !model.encodings.is_empty() {
        let end = chunked_end(stream, at).ok()?;
        stats::count("head.chunked-body");
        return Some(end);
    }
    let length = match model.lengths.first() {
        None => 0,
        Some(digits) => std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?,
    };
    at.checked_add(length)
}

fn structured(u: &mut Unstructured<'_>) -> Result<(Vec<u8>, bool, usize)> {
    let in_tunnel = u.ratio(1u8, 3)?;
    let mut stream = Vec::new();
    if in_tunnel && u.ratio(1u8, 8)? {
        stream.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }
    for _ in 0..u.int_in_range(1..=4)? {
        request(u, &mut stream)?;
    }
    let step = u.int_in_range(1..=64)?;
    Ok((stream, in_tunnel, step))
}

/// One request: a head with some framing fields, and a body.
fn request(u: &mut Unstructured<'_>, stream: &mut Vec<u8>) -> Result<()> {
    let method = *u.choose(&["GET", "POST", "PUT", "CONNECT"])?;
    let version = if u.ratio(1u8, 6)? { "1.0" } else { "1.1" };
    let target = if method == "CONNECT" {
        "api.twilio.com:443"
    } else {
        "/x"
    };
    let body: Vec<u8> = (0..u.int_in_range(0..=40)?)
        .map(|i| b'a' + i % 26)
        .collect();
    let mut head = format!("{method} {target} HTTP/{version}\r\nHost: api.twilio.com\r\n");
    let mut chunked = false;
    let mut length = None;
    for _ in 0..u.int_in_range(0..=3)? {
        match u.int_in_range(0u8..=9)? {
            0 | 1 => length = Some(body.len()),
            2 => head.push_str(&format!("Content-Length: {}\r\n", body.len() + 1)),
            3 => head.push_str("Content-Length: +5\r\n"),
            4 | 5 => chunked = true,
            6 => head.push_str("Transfer-Encoding: identity, chunked\r\n"),
            7 => head.push_str("Transfer-Encoding: chunked\r\n"),
            8 => {
                let pad = *u.choose(&[100usize, 60_000, 65_400, 66_000])?;
                head.push_str(&format!("X-Pad: {}\r\n", "p".repeat(pad)));
            }
            _ => {
                let fields = *u.choose(&[99usize, 100, 101])?;
                for i in 0..fields {
                    head.push_str(&format!("X-{i}: 1\r\n"));
                }
            }
        }
    }
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    stream.extend_from_slice(head.as_bytes());
    if chunked {
        for piece in body.chunks(u.int_in_range(1..=16)?) {
            let ext = if u.ratio(1u8, 4)? { ";a=b" } else { "" };
            stream.extend_from_slice(format!("{:x}{ext}\r\n", piece.len()).as_bytes());
            stream.extend_from_slice(piece);
            stream.extend_from_slice(b"\r\n");
        }
        stream.extend_from_slice(b"0\r\n");
        if u.ratio(1u8, 4)? {
            stream.extend_from_slice(b"X-Trailer: 1\r\n");
        }
        stream.extend_from_slice(b"\r\n");
    } else if length.is_some() || u.ratio(1u8, 4)? {
        stream.extend_from_slice(&body);
    }
    if u.ratio(1u8, 10)? {
        let garbage = u.int_in_range(0..=8)?;
        stream.extend_from_slice(u.bytes(garbage)?);
    }
    Ok(())
}
