//! Deadlines for a client connection between requests: how long it may sit idle
//! (`idle_timeout_secs`) and how long a request head may take once it has begun, or once the
//! client has connected (`header_read_timeout_secs`).
//!
//! hyper's own header timer starts whenever it waits for a head, idle or not, so it cannot
//! tell the two apart. Here the connection's bytes and its requests are watched instead:
//! [`Tracked`] notes the first byte read while no request is in progress, a [`RequestGuard`]
//! lives from the moment a request head is complete until its response body is written, and
//! [`Activity::expired`] resolves when the deadline of the phase the connection is in passes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::shutdown::{GracefulConnection, Shutdown};

/// What a connection is doing, as far as its deadlines are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is being handled or its response written: no deadline here.
    InRequest,
    /// A head has begun (or the client just connected) at this many ms after the start.
    ReadingHead(u64),
    /// Idle since this many ms after the start.
    Idle(u64),
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No request for `idle_timeout`.
    Idle,
    /// A request head not finished within `header_read_timeout`.
    HeadTooSlow,
}

#[derive(Debug)]
struct State {
    started: Instant,
    requests: AtomicUsize,
    /// ms after `started` + 1 when a head began; 0 when none has.
    head_started: AtomicU64,
    /// ms after `started` when the last request ended.
    idle_since: AtomicU64,
    changed: Notify,
}

impl State {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn phase(&self) -> Phase {
        if self.requests.load(Ordering::Acquire) > 0 {
            return Phase::InRequest;
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => Phase::Idle(self.idle_since.load(Ordering::Acquire)),
            started => Phase::ReadingHead(started - 1),
        }
    }
}

/// One connection's activity, shared by its I/O, its requests and its timer.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<State>);

impl Activity {
    /// A connection that just connected: its first head is due within the head deadline.
    pub(crate) fn new() -> Activity {
        Activity(Arc::new(State {
            started: Instant::now(),
            requests: AtomicUsize::new(0),
            head_started: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
            changed: Notify::new(),
        }))
    }

    /// A request head is complete: no deadline until the returned guard is dropped.
    pub(crate) fn request(&self) -> RequestGuard {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
        self.0.head_started.store(0, Ordering::Release);
        self.0.changed.notify_one();
        RequestGuard(self.0.clone())
    }

    /// Resolves when the deadline of the connection's current phase has passed.
    pub(crate) async fn expired(&self, header_read: Duration, idle: Duration) -> Expiry {
        loop {
            let changed = self.0.changed.notified();
            let phase = self.0.phase();
            let (deadline, expiry) = match phase {
                Phase::InRequest => {
                    changed.await;
                    continue;
                }
                Phase::ReadingHead(at) => (at_ms(&self.0, at) + header_read, Expiry::HeadTooSlow),
                Phase::Idle(at) => (at_ms(&self.0, at) + idle, Expiry::Idle),
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    if self.0.phase() == phase {
                        return expiry;
                    }
                }
            }
        }
    }
}

fn at_ms(state: &State, ms: u64) -> Instant {
    state.started + Duration::from_millis(ms)
}

/// Held while a request is in progress; its drop starts the idle clock.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<State>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0
                .idle_since
                .store(self.0.elapsed_ms(), Ordering::Release);
            self.0.changed.notify_one();
        }
    }
}

/// A response body that holds its request's guard until it is written (or dropped).
#[derive(Debug)]
pub(crate) struct Guarded<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Guarded<B> {
    pub(crate) fn new(body: B, guard: RequestGuard) -> Guarded<B> {
        Guarded {
            body,
            _guard: guard,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's I/O, noting when a request head begins.
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    io: T,
    activity: Activity,
}

impl<T> Tracked<T> {
    pub(crate) fn new(io: T, activity: Activity) -> Tracked<T> {
        Tracked { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let state = &self.activity.0;
            if state.requests.load(Ordering::Acquire) == 0
                && state.head_started.load(Ordering::Acquire) == 0
            {
                state
                    .head_started
                    .store(state.elapsed_ms() + 1, Ordering::Release);
                state.changed.notify_one();
            }
        }
        polled
    }
}

/// `AsyncWrite` for a wrapper that only watches reads: every write call goes straight to its
/// `io` field. Shared by the connection wrappers here and in `head.rs`.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

write_through!(Tracked);

/// A hyper connection with its deadlines: it runs until the client closes, a deadline
/// passes (it is dropped then: nothing is in flight), or shutdown asks the request in flight
/// to finish first.
pub(crate) struct Deadlines<C> {
    connection: C,
    activity: Activity,
    header_read: Duration,
    idle: Duration,
}

impl<C, E> Deadlines<C>
where
    C: GracefulConnection<Output = Result<(), E>>,
{
    pub(crate) fn new(
        connection: C,
        activity: Activity,
        header_read: Duration,
        idle: Duration,
    ) -> Self {
        Deadlines {
            connection,
            activity,
            header_read,
            idle,
        }
    }

    pub(crate) async fn run(self, mut shutdown: Shutdown) -> Result<(), E> {
        let connection = self.connection;
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result,
            expiry = self.activity.expired(self.header_read, self.idle) => {
                if expiry == Expiry::HeadTooSlow {
                    tracing::debug!("closing a connection whose request head did not arrive in time");
                }
                Ok(())
            }
            _ = shutdown.recv() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_own_deadline() {
        let head = Duration::from_secs(30);
        let idle = Duration::from_secs(60);
        // Just connected: the head deadline.
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(activity.expired(head, idle).await, Expiry::HeadTooSlow);
        assert_eq!(started.elapsed(), head);

        // In a request: none; once it ends, the idle deadline from then.
        let activity = Activity::new();
        let guard = activity.request();
        let timer = tokio::spawn({
            let activity = activity.clone();
            async move { (activity.expired(head, idle).await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert!(
            !timer.is_finished(),
            "no deadline while a request is in progress"
        );
        let ended = Instant::now();
        drop(guard);
        let (expiry, at) = timer.await.unwrap();
        assert_eq!(expiry, Expiry::Idle);
        assert!(at - ended >= idle && at - ended < idle + Duration::from_secs(1));
    }
}
