//! Twilio SIDs: two upper-case letters naming the resource type, then 32 hex digits.
//!
//! The proxy decides how to sign from SID prefixes alone (`AC` account, `SK` API key,
//! `CR` public-key credential), so the shape check lives in one place.

/// The length of every Twilio SID.
pub(crate) const SID_LEN: usize = 34;

/// True when `s` is a SID with `prefix` (e.g. `"SK"`): the prefix then 32 hex digits.
pub(crate) fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == SID_LEN
        && s.starts_with(prefix)
        && s.as_bytes()[prefix.len()..]
            .iter()
            .all(u8::is_ascii_hexdigit)
}

/// The account SID a Twilio path addresses (`/2010-04-01/Accounts/AC…/…` or `…/AC….json`).
///
/// Only the segment right after an `Accounts` segment counts, so a SID elsewhere in the
/// path (a `ParentAccountSid` resource, say) never selects a signing key.
pub(crate) fn account_in_path(path: &str) -> Option<&str> {
    let mut segments = path.split('/');
    while let Some(segment) = segments.next() {
        if segment == "Accounts" {
            let next = segments.next()?;
            let sid = next.split('.').next().unwrap_or(next);
            return is_sid(sid, "AC").then_some(sid);
        }
    }
    None
}

/// `N` random bytes from the system RNG as hex.
pub(crate) fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // aws-lc's system RNG does not fail on supported platforms; were it to, the result is
    // all zeros, which the callers (identifiers for tests and the demo) tolerate.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4";

    #[test]
    fn sid_shapes() {
        assert!(is_sid("SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c", "SK"));
        assert!(!is_sid("SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3", "SK"));
        assert!(!is_sid("SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3z", "SK"));
        assert!(!is_sid(AC, "SK"));
        assert!(is_sid(AC, "AC"));
    }

    #[test]
    fn account_from_path() {
        assert_eq!(
            account_in_path(&format!("/2010-04-01/Accounts/{AC}/Messages.json")),
            Some(AC)
        );
        assert_eq!(
            account_in_path(&format!("/2010-04-01/Accounts/{AC}.json")),
            Some(AC)
        );
        assert_eq!(
            account_in_path(&format!("/2010-04-01/Accounts/{AC}")),
            Some(AC)
        );
        assert_eq!(account_in_path("/2010-04-01/Accounts.json"), None);
        assert_eq!(account_in_path("/v1/Credentials/PublicKeys"), None);
        assert_eq!(
            account_in_path("/2010-04-01/Accounts/not-a-sid/Messages.json"),
            None
        );
    }
}
