//! Fresh SIDs and secrets, as Twilio mints them: a two-letter type prefix and 32 hex digits.

/// A fresh random SID with `prefix` (`AC`, `SK`, `CR`, `SM`).
pub fn random_sid(prefix: &str) -> String {
    format!("{prefix}{}", random_hex::<16>())
}

/// `N` random bytes from the system RNG as hex.
pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // aws-lc's system RNG does not fail on supported platforms; were it to, the result is
    // all zeros, which a test double tolerates.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}
