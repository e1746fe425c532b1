//! Time, as the stand-in sees it: the system clock, or a fixed instant so that recorded
//! tokens (minted at a known moment) verify years later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which time the stand-in verifies against.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant (Unix seconds), for recorded tokens.
    Fixed(u64),
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn now(self) -> u64 {
        match self {
            Clock::System => unix_now(),
            Clock::Fixed(now) => now,
        }
    }
}

/// Seconds since the Unix epoch from the system clock.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
