//! Known bugs: property violations the fuzzer found in the proxy that `src/` has not fixed
//! yet.
//!
//! Each has a regression input under `regressions/<target>/bug-*` and an `#[ignore]`d test
//! in `tests/regressions.rs`, which fails until the bug is fixed. So that CI's bounded run
//! keeps looking for *new* bugs meanwhile, the runner tolerates the known ones (counting
//! them) unless run with `--strict`; the checks call [`tolerated`] at the exact point the
//! known property fails. When `src/` is fixed: remove the entry here and the `tolerated`
//! call, and un-ignore the test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A known bug.
#[derive(Debug)]
pub struct KnownBug {
    /// Its short name, used by [`tolerated`].
    pub id: &'static str,
    /// The targets that find it.
    pub targets: &'static [&'static str],
    /// What is wrong.
    pub summary: &'static str,
}

/// Every known bug. Empty when `src/` has none the fuzzer knows of.
pub const KNOWN_BUGS: &[KnownBug] = &[];

static TOLERATE: AtomicBool = AtomicBool::new(false);
static HITS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Whether the checks let known bugs pass (the runner's default; never in tests).
pub fn tolerate(on: bool) {
    TOLERATE.store(on, Ordering::Relaxed);
}

/// Called where the known bug `id` makes a property fail: true (and counted) when known
/// bugs are tolerated, so the check returns instead of panicking.
pub fn tolerated(id: &str) -> bool {
    let Some(index) = KNOWN_BUGS.iter().position(|bug| bug.id == id) else {
        return false;
    };
    if !TOLERATE.load(Ordering::Relaxed) {
        return false;
    }
    HITS[index.min(HITS.len() - 1)].fetch_add(1, Ordering::Relaxed);
    true
}

/// How often each known bug was hit and let pass.
pub fn hits() -> Vec<(&'static KnownBug, u64)> {
    KNOWN_BUGS
        .iter()
        .enumerate()
        .map(|(i, bug)| (bug, HITS[i.min(HITS.len() - 1)].load(Ordering::Relaxed)))
        .collect()
}
