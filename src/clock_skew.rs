//! Watching the local clock against Twilio's.
//!
//! Twilio refuses a token whose `nbf`/`exp` window (300 s) does not hold its own clock, so a
//! proxy on a machine whose clock is off fails every request with 20151-ish errors that look
//! like key problems. Each upstream response's `Date` is compared with the local clock; the
//! difference is exported, and a warning is logged once each time it crosses [`WARN_ABOVE`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::metrics::Metrics;

/// A difference worth a warning: a tenth of the token window.
pub(crate) const WARN_ABOVE: Duration = Duration::from_secs(30);

/// The last seen difference, and whether it was over the threshold.
#[derive(Debug)]
pub(crate) struct ClockSkew {
    metrics: Arc<Metrics>,
    skewed: AtomicBool,
}

impl ClockSkew {
    pub(crate) fn new(metrics: Arc<Metrics>) -> ClockSkew {
        ClockSkew {
            metrics,
            skewed: AtomicBool::new(false),
        }
    }

    /// Compares a response's `Date` (whole seconds) with the local clock now.
    pub(crate) fn observe(&self, date: Option<&HeaderValue>) {
        let Some(remote) = date
            .and_then(|value| value.to_str().ok())
            .and_then(|text| httpdate::parse_http_date(text).ok())
        else {
            return;
        };
        let skew = skew_seconds(SystemTime::now(), remote);
        self.metrics.clock_skew(skew);
        // `Date` has whole seconds: up to a second of apparent skew is rounding.
        let over = skew.abs() > WARN_ABOVE.as_secs_f64();
        if self.skewed.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::warn!(skew_seconds = skew.round(), "the local clock differs from Twilio's by more than 30 s: fix the clock (NTP); beyond 300 s every token is refused");
            } else {
                tracing::info!(
                    skew_seconds = skew.round(),
                    "the local clock agrees with Twilio's again"
                );
            }
        }
    }
}

/// Local minus remote, in seconds (positive: the local clock is ahead).
pub(crate) fn skew_seconds(local: SystemTime, remote: SystemTime) -> f64 {
    match local.duration_since(remote) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_signed_and_crossings_flip_the_state() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(skew_seconds(base + Duration::from_secs(45), base), 45.0);
        assert_eq!(skew_seconds(base, base + Duration::from_secs(45)), -45.0);

        let metrics = Arc::new(Metrics::new());
        let skew = ClockSkew::new(metrics.clone());
        let far = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(120));
        skew.observe(Some(&HeaderValue::from_str(&far).unwrap()));
        assert!(skew.skewed.load(Ordering::Relaxed));
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("pkcv_proxy_clock_skew_seconds "))
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((119.0..=122.0).contains(&value), "{line}");
        let now = httpdate::fmt_http_date(SystemTime::now());
        skew.observe(Some(&HeaderValue::from_str(&now).unwrap()));
        assert!(!skew.skewed.load(Ordering::Relaxed));
        // No `Date`, or a malformed one: nothing learned.
        skew.observe(None);
        skew.observe(Some(&HeaderValue::from_static("yesterday")));
    }
}
