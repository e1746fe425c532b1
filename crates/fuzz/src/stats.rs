//! How far inputs get: counters the checks bump at each property they reach, so a run can
//! show that its properties were exercised and not skipped (a property guarded by an `if`
//! that no input satisfies would pass vacuously). The runner prints them at the end.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter, `target.what`.
pub const NAMES: &[&str] = &[
    "normalize.path-ok",
    "normalize.path-refused",
    "normalize.query-ok",
    "normalize.query-refused",
    "normalize.java-python-compared",
    "normalize.node-compared-whole",
    "normalize.node-compared-pieces",
    "route.policy-valid",
    "route.target-parsed",
    "route.routed-absolute",
    "route.routed-host-header",
    "route.routed-path-prefix",
    "route.routed-default",
    "route.refused",
    "route.tunnel-routed",
    "route.tunnel-refused",
    "head.refused",
    "head.refused-first",
    "head.refused-after-a-request",
    "head.pipelined-passed",
    "head.chunked-body",
    "head.body-broken",
    "head.h2-preface",
    "auth.accepted",
    "auth.refused",
    "auth.well-formed",
    "config.read",
    "config.refused",
    "config.valid",
    "config.written-back",
    "config.account-file-valid",
    "config.account-file-refused",
    "config.account-file-pin-kept",
    "proxy_auth.authenticated",
    "proxy_auth.refused",
];

static COUNTS: [AtomicU64; 48] = [const { AtomicU64::new(0) }; 48];

/// Counts one input reaching `name` (one of [`NAMES`]).
pub fn count(name: &str) {
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        COUNTS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters of `target`, without the prefix.
pub fn counters(target: &str) -> Vec<(&'static str, u64)> {
    NAMES
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let what = name.strip_prefix(target)?.strip_prefix('.')?;
            Some((what, COUNTS[i].load(Ordering::Relaxed)))
        })
        .collect()
}
