//! One load step: N closed-loop clients against one target for a warm-up, then a measured
//! window. All connections are opened before the warm-up starts, so the window holds only
//! requests on open keep-alive connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;
use tokio::sync::{watch, Barrier};
use tokio::time::{sleep_until, Instant};

use crate::client::{Connection, Target};

/// A request still unanswered this long after the window is counted as timed out.
const GRACE: Duration = Duration::from_secs(10);

/// The measured part of a step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    fn holds(&self, instant: Instant) -> bool {
        self.start <= instant && instant <= self.end
    }
}

/// Warm-up and window lengths.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// What the clients saw in the window, summed over clients.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    /// Latency of successful (2xx) requests answered inside the window, µs (whenever they
    /// were sent: a request slower than the window still counts, as in wrk).
    pub(crate) latency: Histogram<u64>,
    pub(crate) ok: u64,
    /// Latency of 503 answers (overload refusals) inside the window, µs.
    pub(crate) refused_latency: Histogram<u64>,
    /// Non-2xx responses by status.
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Requests that failed on the connection (reset, closed mid-request).
    pub(crate) io_errors: u64,
    /// Requests unanswered 10 s after the window.
    pub(crate) timeouts: u64,
    /// Connection attempts that failed (before or during the step).
    pub(crate) connect_failures: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            ok: 0,
            refused_latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            io_errors: 0,
            timeouts: 0,
            connect_failures: 0,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
        self.ok += other.ok;
        self.refused_latency
            .add(&other.refused_latency)
            .expect("histograms with the same bounds");
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.io_errors += other.io_errors;
        self.timeouts += other.timeouts;
        self.connect_failures += other.connect_failures;
    }

    /// Every failed request in the window (non-2xx, I/O, timeout).
    pub(crate) fn errors(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.io_errors + self.timeouts
    }

    fn response(&mut self, status: StatusCode, sent: Instant, done: Instant, window: &Window) {
        if !window.holds(done) {
            return;
        }
        let micros = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        if status.is_success() {
            self.latency.saturating_record(micros.max(1));
            self.ok += 1;
        } else {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                self.refused_latency.saturating_record(micros.max(1));
            }
            *self.statuses.entry(status.as_u16()).or_default() += 1;
        }
    }
}

/// The clients' tally and what `probe` returned at the window's start and end.
pub(crate) struct Outcome<S> {
    pub(crate) tally: Tally,
    pub(crate) before: S,
    pub(crate) after: S,
    /// How long opening all connections took.
    pub(crate) connect_time: Duration,
    /// The window as measured between the two probes.
    pub(crate) measured: Duration,
}

/// Runs one step: connect `clients` connections, warm up, then measure.
pub(crate) async fn run<S>(
    target: &Target,
    clients: usize,
    timing: Timing,
    probe: impl Fn() -> S,
) -> anyhow::Result<Outcome<S>> {
    let target = Arc::new(target.clone());
    let barrier = Arc::new(Barrier::new(clients + 1));
    let (tx, rx) = watch::channel(None);
    let connect_start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(target.clone(), barrier.clone(), rx.clone())))
        .collect();
    barrier.wait().await;
    let connect_time = connect_start.elapsed();
    let start = Instant::now() + timing.warmup;
    let window = Window {
        start,
        end: start + timing.measure,
    };
    tx.send_replace(Some(window));
    sleep_until(window.start).await;
    let (before, probed_at) = (probe(), Instant::now());
    sleep_until(window.end).await;
    let after = probe();
    let measured = probed_at.elapsed();
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(&task.await?);
    }
    Ok(Outcome {
        tally,
        before,
        after,
        connect_time,
        measured,
    })
}

/// One client: connect, wait for the others, then send requests back to back until the
/// window closes, reconnecting if the connection fails.
async fn client(
    target: Arc<Target>,
    barrier: Arc<Barrier>,
    mut window: watch::Receiver<Option<Window>>,
) -> Tally {
    let mut tally = Tally::new();
    let mut connection = target.connect().await.ok();
    if connection.is_none() {
        tally.connect_failures += 1;
    }
    barrier.wait().await;
    let Ok(window) = window
        .wait_for(Option::is_some)
        .await
        .map(|w| w.expect("is some"))
    else {
        return tally;
    };
    while Instant::now() < window.end {
        let Some(open) = connection.as_mut() else {
            connection = reconnect(&target, &mut tally).await;
            continue;
        };
        if !request(&target, open, &window, &mut tally).await {
            connection = None;
        }
        if tally.timeouts > 0 {
            break;
        }
    }
    tally
}

/// Sends one request; false when the connection is no longer usable.
async fn request(
    target: &Target,
    connection: &mut Connection,
    window: &Window,
    tally: &mut Tally,
) -> bool {
    let sent = Instant::now();
    let result = tokio::time::timeout_at(window.end + GRACE, target.send(connection)).await;
    let done = Instant::now();
    let in_window = window.holds(done);
    match result {
        Ok(Ok(status)) => {
            tally.response(status, sent, done, window);
            true
        }
        Ok(Err(_)) => {
            tally.io_errors += u64::from(in_window);
            false
        }
        Err(_) => {
            tally.timeouts += 1;
            false
        }
    }
}

async fn reconnect(target: &Target, tally: &mut Tally) -> Option<Connection> {
    match target.connect().await {
        Ok(connection) => Some(connection),
        Err(_) => {
            tally.connect_failures += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            None
        }
    }
}
