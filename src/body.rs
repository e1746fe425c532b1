//! The request body: hashed chunk by chunk as it arrives and forwarded as the same `Bytes`.
//!
//! The signature covers the body hash, so the body must be complete before the request can
//! leave; it is held as the list of chunks the client sent (no copy into one buffer) and sent
//! upstream with an exact `Content-Length`, chunked client bodies included. The limit is
//! enforced as chunks arrive, so an oversized body is refused without being stored.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::canonical::{BodyHasher, HexDigest};
use crate::error::ProxyError;

/// Chunks smaller than this are copied together rather than kept one by one.
const COALESCE_BELOW: usize = 4 * 1024;

/// A complete body held as the chunks it arrived in.
#[derive(Debug, Default, Clone)]
pub struct BufferedBody {
    chunks: VecDeque<Bytes>,
    len: u64,
}

impl BufferedBody {
    /// A body of one chunk.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let chunks = if bytes.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([bytes])
        };
        BufferedBody { chunks, len }
    }

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

/// Reads `body` to the end, hashing each chunk, refusing more than `limit` bytes.
///
/// `declared_len` is the client's `Content-Length`, if any: a larger one is refused before a
/// single byte is read.
pub async fn buffer<B>(
    body: B,
    declared_len: Option<u64>,
    limit: u64,
) -> Result<(BufferedBody, Option<HexDigest>), ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if declared_len.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut hasher = BodyHasher::default();
    let mut chunks = VecDeque::new();
    // Tiny chunks (a hostile client can send a body one byte per chunk) are gathered into one
    // buffer, so the chunk list stays small; chunks of ordinary size are kept as they came.
    let mut small = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ProxyError::BodyRead(err.to_string()))?;
        // Trailers are hop-by-hop here: they cannot be signed, so they are not forwarded.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if hasher.len() + chunk.len() as u64 > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        hasher.update(&chunk);
        if chunk.len() >= COALESCE_BELOW {
            if !small.is_empty() {
                chunks.push_back(small.split().freeze());
            }
            chunks.push_back(chunk);
        } else {
            small.extend_from_slice(&chunk);
            if small.len() >= COALESCE_BELOW {
                chunks.push_back(small.split().freeze());
            }
        }
    }
    if !small.is_empty() {
        chunks.push_back(small.freeze());
    }
    let len = hasher.len();
    Ok((BufferedBody { chunks, len }, hasher.finish()))
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
        }
    }

    #[tokio::test]
    async fn chunks_are_kept_and_hashed() {
        let (body, hash) = buffer(chunked(&[b"ab", b"", b"c"]), None, 10)
            .await
            .unwrap();
        assert_eq!(body.len(), 3);
        assert_eq!(hash, body_hash(b"abc"));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abc");
    }

    #[tokio::test]
    async fn tiny_chunks_are_gathered_and_large_ones_kept() {
        let tiny: Vec<&'static [u8]> = vec![b"x"; 10_000];
        let (body, hash) = buffer(chunked(&tiny), None, 1 << 20).await.unwrap();
        assert_eq!(body.len(), 10_000);
        assert!(body.chunks.len() <= 3, "{} chunks kept", body.chunks.len());
        assert_eq!(hash, body_hash(&[b'x'; 10_000]));

        static BIG: [u8; 8192] = [7; 8192];
        let (body, _) = buffer(chunked(&[b"ab", &BIG, b"c"]), None, 1 << 20)
            .await
            .unwrap();
        assert_eq!(body.chunks.len(), 3);
        assert_eq!(
            body.chunks[1].as_ptr(),
            BIG.as_ptr(),
            "a large chunk is forwarded, not copied"
        );
    }

    #[tokio::test]
    async fn limits() {
        let err = buffer(Full::new(Bytes::from_static(b"0123456789A")), None, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::BodyTooLarge { limit: 10 }));
        let err = buffer(Full::new(Bytes::new()), Some(11), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::BodyTooLarge { .. }));
        let (body, hash) = buffer(Full::new(Bytes::from_static(b"0123456789")), Some(10), 10)
            .await
            .unwrap();
        assert_eq!((body.len(), hash.is_some()), (10, true));
        let (body, hash) = buffer(Full::new(Bytes::new()), None, 10).await.unwrap();
        assert!(body.is_empty() && hash.is_none());
    }
}
