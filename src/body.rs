//! The request body: hashed chunk by chunk as it arrives and forwarded as the same `Bytes`.
//!
//! The signature covers the body hash, so the body must be complete before the request can
//! leave; it is held as the list of chunks the client sent (no copy into one buffer) and sent
//! upstream with an exact `Content-Length`, chunked client bodies included. The limit is
//! enforced as chunks arrive, so an oversized body is refused without being stored.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::canonical::{BodyHasher, HexDigest};
use crate::error::ProxyError;

/// Chunks smaller than this are copied together rather than kept one by one.
const COALESCE_BELOW: usize = 4 * 1024;

/// A complete body held as the chunks it arrived in. While it lives it holds its share of
/// the [`BodyBudget`]; clones (a retry) share that one share.
#[derive(Debug, Default, Clone)]
pub struct BufferedBody {
    chunks: VecDeque<Bytes>,
    len: u64,
    _reserved: Option<Arc<OwnedSemaphorePermit>>,
}

/// The bytes of request bodies the proxy holds at once, across all requests
/// (`server.max_buffered_bytes`): a body that would exceed it waits up to
/// [`BodyBudget::WAIT`] for room, then is refused with 503 so memory stays bounded under any
/// number of slow uploads.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    /// How long a body waits for room.
    pub const WAIT: Duration = Duration::from_secs(1);

    /// A budget of `max_bytes`.
    pub fn new(max_bytes: u64) -> BodyBudget {
        let permits = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Reserves `bytes` more, waiting until `deadline` at most.
    async fn reserve(
        &self,
        bytes: u64,
        deadline: Instant,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), ProxyError> {
        if bytes == 0 {
            return Ok(());
        }
        let overloaded =
            || ProxyError::Overloaded("max_buffered_bytes (request bodies held at once)");
        let bytes = u32::try_from(bytes).map_err(|_| overloaded())?;
        let acquiring = self.bytes.clone().acquire_many_owned(bytes);
        let permit = tokio::time::timeout_at(deadline, acquiring)
            .await
            .map_err(|_| overloaded())?
            .map_err(|_| overloaded())?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// A complete body and its hash, computed once as the chunks arrived. Only this module makes
/// one ([`buffer`] for a body that streams in, [`hashed`] for one already in memory), so a body
/// that reaches the signing step has been hashed exactly once, and a retry reuses that hash.
#[derive(Debug, Clone)]
pub struct HashedBody {
    body: BufferedBody,
    hash: Option<HexDigest>,
}

impl HashedBody {
    /// The body hash for the canonical request: `None` for an empty body.
    pub fn hash(&self) -> Option<HexDigest> {
        self.hash
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.body.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.body.len == 0
    }

    /// The chunks to send, exactly those that were hashed.
    pub(crate) fn into_body(self) -> BufferedBody {
        self.body
    }
}

/// A body already held in memory (the CLI's, the workflow's), hashed once.
pub fn hashed(bytes: Bytes) -> HashedBody {
    let mut hasher = BodyHasher::default();
    hasher.update(&bytes);
    let len = bytes.len() as u64;
    let chunks = if bytes.is_empty() {
        VecDeque::new()
    } else {
        VecDeque::from([bytes])
    };
    HashedBody {
        body: BufferedBody {
            chunks,
            len,
            _reserved: None,
        },
        hash: hasher.finish(),
    }
}

impl BufferedBody {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Body for BufferedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|chunk| chunk.len() as u64).sum())
    }
}

/// Reads `body` to the end, hashing each chunk, refusing more than `limit` bytes, and
/// holding each chunk's size from `budget` (when given) until the body is dropped.
///
/// `declared_len` is the client's `Content-Length`, if any: a larger one is refused before a
/// single byte is read, and the whole of it is reserved at once.
pub async fn buffer<B>(
    body: B,
    declared_len: Option<u64>,
    limit: u64,
    budget: Option<&BodyBudget>,
) -> Result<HashedBody, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if declared_len.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let deadline = Instant::now() + BodyBudget::WAIT;
    let mut reserved = None;
    if let (Some(budget), Some(len)) = (budget, declared_len) {
        budget.reserve(len, deadline, &mut reserved).await?;
    }
    let mut body = std::pin::pin!(body);
    let mut hasher = BodyHasher::default();
    let mut chunks = Chunks::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ProxyError::BodyRead(err.to_string()))?;
        // Trailers are hop-by-hop here: they cannot be signed, so they are not forwarded.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if hasher.len() + chunk.len() as u64 > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        if let (Some(budget), None) = (budget, declared_len) {
            budget
                .reserve(chunk.len() as u64, deadline, &mut reserved)
                .await?;
        }
        hasher.update(&chunk);
        chunks.push(chunk);
    }
    let len = hasher.len();
    let body = BufferedBody {
        chunks: chunks.finish(),
        len,
        _reserved: reserved.map(Arc::new),
    };
    Ok(HashedBody {
        body,
        hash: hasher.finish(),
    })
}

/// Reads and drops up to `max_bytes` more of `body`, for at most `time`: the rest of an
/// upload the proxy has already refused.
pub(crate) async fn discard<B>(body: B, max_bytes: u64, time: Duration)
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    let reading = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(chunk) = frame.into_data() {
                read += chunk.len() as u64;
                if read > max_bytes {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(time, reading).await;
}

/// The chunk list: tiny chunks (a hostile client can send a body one byte per chunk) are
/// gathered into one buffer, so the list stays small; chunks of ordinary size are kept as
/// they came, without a copy.
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    small: BytesMut,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if chunk.len() >= COALESCE_BELOW {
            if !self.small.is_empty() {
                self.chunks.push_back(self.small.split().freeze());
            }
            self.chunks.push_back(chunk);
        } else {
            self.small.extend_from_slice(&chunk);
            if self.small.len() >= COALESCE_BELOW {
                self.chunks.push_back(self.small.split().freeze());
            }
        }
    }

    fn finish(mut self) -> VecDeque<Bytes> {
        if !self.small.is_empty() {
            self.chunks.push_back(self.small.freeze());
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::body_hash;
    use http_body_util::Full;

    /// A client body that arrives in the given chunks, like a chunked upload.
    fn chunked(parts: &[&'static [u8]]) -> BufferedBody {
        let chunks: VecDeque<Bytes> = parts.iter().map(|part| Bytes::from_static(part)).collect();
        BufferedBody {
            len: chunks.iter().map(|c| c.len() as u64).sum(),
            chunks,
            _reserved: None,
        }
    }

    #[tokio::test]
    async fn chunks_are_kept_and_hashed() {
        let hashed = buffer(chunked(&[b"ab", b"", b"c"]), None, 10, None)
            .await
            .unwrap();
        assert_eq!(hashed.len(), 3);
        assert_eq!(hashed.hash(), body_hash(b"abc"));
        let collected = hashed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abc");
    }

    #[tokio::test]
    async fn tiny_chunks_are_gathered_and_large_ones_kept() {
        let tiny: Vec<&'static [u8]> = vec![b"x"; 10_000];
        let hashed = buffer(chunked(&tiny), None, 1 << 20, None).await.unwrap();
        assert_eq!(hashed.len(), 10_000);
        assert_eq!(hashed.hash(), body_hash(&[b'x'; 10_000]));
        let body = hashed.into_body();
        assert!(body.chunks.len() <= 3, "{} chunks kept", body.chunks.len());

        static BIG: [u8; 8192] = [7; 8192];
        let body = buffer(chunked(&[b"ab", &BIG, b"c"]), None, 1 << 20, None)
            .await
            .unwrap()
            .into_body();
        assert_eq!(body.chunks.len(), 3);
        assert_eq!(
            body.chunks[1].as_ptr(),
            BIG.as_ptr(),
            "a large chunk is forwarded, not copied"
        );
    }

    #[tokio::test]
    async fn limits() {
        let err = buffer(
            Full::new(Bytes::from_static(b"0123456789A")),
            None,
            10,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProxyError::BodyTooLarge { limit: 10 }));
        let err = buffer(Full::new(Bytes::new()), Some(11), 10, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::BodyTooLarge { .. }));
        let body = buffer(
            Full::new(Bytes::from_static(b"0123456789")),
            Some(10),
            10,
            None,
        )
        .await
        .unwrap();
        assert_eq!((body.len(), body.hash().is_some()), (10, true));
        let body = buffer(Full::new(Bytes::new()), None, 10, None)
            .await
            .unwrap();
        assert!(body.is_empty() && body.hash().is_none());
        let in_memory = hashed(Bytes::from_static(b"0123456789"));
        assert_eq!(in_memory.hash(), body_hash(b"0123456789"));
        assert!(hashed(Bytes::new()).hash().is_none());
    }

    #[tokio::test]
    async fn the_budget_bounds_bodies_held_at_once() {
        let budget = BodyBudget::new(10);
        let held = buffer(
            Full::new(Bytes::from_static(b"0123456")),
            Some(7),
            10,
            Some(&budget),
        )
        .await
        .unwrap();
        // 7 of 10 bytes are held: a second body of 7 waits, then is refused with 503.
        let started = std::time::Instant::now();
        let err = buffer(
            Full::new(Bytes::from_static(b"abcdefg")),
            None,
            10,
            Some(&budget),
        )
        .await
        .unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (503, 79050), "{err}");
        assert!(started.elapsed() >= BodyBudget::WAIT);
        // A clone (a retry) shares the reservation; dropping both frees it.
        let retry = held.clone();
        drop(held);
        drop(retry);
        let again = buffer(
            Full::new(Bytes::from_static(b"abcdefg")),
            None,
            10,
            Some(&budget),
        )
        .await
        .unwrap();
        assert_eq!(again.hash(), body_hash(b"abcdefg"));
    }
}
