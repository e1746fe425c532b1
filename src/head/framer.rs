//! Cutting a byte stream into requests as hyper will: each head up to its blank line, then
//! exactly as much body as that head frames (a length, or chunks read with the states of
//! hyper's own decoder), so the next bytes are the next head.

use super::*;

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
