//! The canonical request and its hash, the `rqh` claim Twilio recomputes.
//!
//! The layout is twilio-java's `RequestCanonicalizer`, the reference Twilio points to:
//!
//! ```text
//! METHOD \n PATH \n SORTED_QUERY \n authorization:VALUE \n host:VALUE \n \n authorization;host \n BODY_HASH
//! ```
//!
//! `SORTED_QUERY` is the `key=value` pieces sorted bytewise and joined by `&`; `BODY_HASH` is
//! the hex SHA-256 of the body, or nothing at all for an empty body (not the hash of "").
//! The proxy signs exactly two headers, so `hrh` is a constant.
//!
//! The request given here must already be normalized ([`crate::normalize`]): this module
//! formats, it does not rewrite.

use sha2::{Digest, Sha256};

/// The signed headers, sorted and joined: the `hrh` claim.
pub const SIGNED_HEADERS: &str = "authorization;host";

/// A SHA-256 digest as 64 lower-case hex digits, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    fn from_digest(digest: &[u8; 32]) -> Self {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(digest, &mut hex).expect("32 bytes fill exactly 64 hex digits");
        HexDigest(hex)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hashes a body chunk by chunk as it arrives, so it is never copied into one buffer.
#[derive(Default, Clone)]
pub struct BodyHasher {
    sha: Sha256,
    len: u64,
}

impl BodyHasher {
    /// Adds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.len += chunk.len() as u64;
    }

    /// The bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body hash for the canonical request: `None` for an empty body.
    pub fn finish(self) -> Option<HexDigest> {
        (self.len > 0).then(|| HexDigest::from_digest(&self.sha.finalize().into()))
    }
}

/// The hash of a whole body held in memory.
pub fn body_hash(body: &[u8]) -> Option<HexDigest> {
    let mut hasher = BodyHasher::default();
    hasher.update(body);
    hasher.finish()
}

/// The parts of a normalized request that go into the canonical string.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalRequest<'a> {
    /// The method, upper case as sent.
    pub method: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The normalized query in wire order, without `?`.
    pub query: &'a str,
    /// The `Authorization` value as forwarded (trimmed).
    pub authorization: &'a str,
    /// The `Host` value as forwarded (no port).
    pub host: &'a str,
    /// The body hash, `None` for an empty body.
    pub body_hash: Option<HexDigest>,
}

impl CanonicalRequest<'_> {
    /// Feeds the canonical string to `sink` piece by piece, without building it.
    fn write(&self, mut sink: impl FnMut(&[u8])) {
        sink(self.method.as_bytes());
        sink(b"\n");
        sink(self.path.as_bytes());
        sink(b"\n");
        if !self.query.is_empty() {
            let mut pieces: Vec<&str> = self.query.split('&').collect();
            pieces.sort_unstable();
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    sink(b"&");
                }
                sink(piece.as_bytes());
            }
        }
        sink(b"\nauthorization:");
        sink(self.authorization.as_bytes());
        sink(b"\nhost:");
        sink(self.host.as_bytes());
        sink(b"\n\n");
        sink(SIGNED_HEADERS.as_bytes());
        sink(b"\n");
        if let Some(hash) = &self.body_hash {
            sink(hash.as_str().as_bytes());
        }
    }

    /// The `rqh` claim: hex SHA-256 of the canonical string, hashed as it is formatted.
    pub fn hash(&self) -> HexDigest {
        let mut sha = Sha256::new();
        self.write(|bytes| sha.update(bytes));
        HexDigest::from_digest(&sha.finalize().into())
    }

    /// The canonical string itself, for `pkcv-proxy sign` and tests.
    pub fn to_canonical_string(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write(|bytes| out.extend_from_slice(bytes));
        String::from_utf8(out).expect("every piece is a &str or ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_has_no_hash() {
        assert!(body_hash(b"").is_none());
        assert_eq!(
            body_hash(b"abc").unwrap().as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn chunked_hash_equals_whole_hash() {
        let mut hasher = BodyHasher::default();
        hasher.update(b"a");
        hasher.update(b"");
        hasher.update(b"bc");
        assert_eq!(hasher.len(), 3);
        assert_eq!(hasher.finish(), body_hash(b"abc"));
    }

    #[test]
    fn query_is_sorted_only_in_the_canonical_form() {
        let request = CanonicalRequest {
            method: "GET",
            path: "/x",
            query: "b=2&a=1&a",
            authorization: "Basic abc",
            host: "api.twilio.com",
            body_hash: None,
        };
        assert_eq!(
            request.to_canonical_string(),
            "GET\n/x\na&a=1&b=2\nauthorization:Basic abc\nhost:api.twilio.com\n\nauthorization;host\n"
        );
    }
}
