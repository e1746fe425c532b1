//! Twilio's response on its way back to the client: hop-by-hop headers stripped, a protocol
//! switch or other non-final answer refused (502), and a body that stalls cut off.
//!
//! The response head has `request_timeout_ms`; the body has
//! `upstream.response_idle_timeout_ms` between chunks. When a chunk is that late the body
//! ends with an error, so hyper closes the client's connection (HTTP/1.1) or resets the
//! stream (HTTP/2) instead of holding both connections open forever.
//!
//! The other direction has `server.response_write_timeout_ms`: a client that reads nothing
//! for that long has its connection closed ([`WriteDeadline`]), its upstream connection
//! discarded and its `max_connections_per_host` permit freed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::error::ProxyError;
use crate::hop;
use crate::metrics::Metrics;
use crate::rejection::Inspected;
use crate::upstream::HostPermit;

/// What the proxy answers with: Twilio's streamed response, or its own (error) body.
pub(crate) type ProxyBody = Either<Stalling<Inspected<Incoming>>, Full<Bytes>>;

/// Checks and prepares Twilio's response for the client.
///
/// The body keeps the request's `permit` among `max_connections_per_host` until it is done.
pub(crate) fn prepare<B>(
    mut response: Response<B>,
    host: &str,
    idle_timeout: Duration,
    permit: HostPermit,
) -> Result<Response<Stalling<B>>, ProxyError> {
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS || status.is_informational() {
        return Err(ProxyError::BadUpstreamResponse {
            host: host.to_owned(),
            what: format!("{status}"),
        });
    }
    hop::strip(response.headers_mut());
    Ok(response.map(|body| Stalling::new(body, idle_timeout).holding(permit)))
}

/// The body stalled: no chunk within the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("Twilio's response body stalled for {} ms", .0.as_millis())]
pub(crate) struct Stalled(Duration);

/// A body that fails when no frame arrives within `timeout` of the last one.
#[derive(Debug)]
pub(crate) struct Stalling<B> {
    body: B,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: Option<HostPermit>,
}

impl<B> Stalling<B> {
    fn new(body: B, timeout: Duration) -> Stalling<B> {
        Stalling {
            body,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            _permit: None,
        }
    }

    /// Keeps `permit` until the body is dropped.
    fn holding(mut self, permit: HostPermit) -> Stalling<B> {
        self._permit = Some(permit);
        self
    }
}

impl<B> Body for Stalling<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client connection's I/O that fails a write making no progress for `timeout`: a
/// client that does not read its response would otherwise hold its connection, the upstream
/// connection and the host's permit for as long as it likes. The failed write makes hyper
/// close the client connection and drop the response body mid-stream, which closes the
/// upstream connection (never returned to the pool half-read) and frees the permit.
#[derive(Debug)]
pub(crate) struct WriteDeadline<T> {
    io: T,
    timeout: Duration,
    /// Armed while a write is pending; reset whenever one makes progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
}

/// A write to the client made no progress for `response_write_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing for {} ms", .0.as_millis())]
pub(crate) struct WriteStalled(Duration);

impl<T> WriteDeadline<T> {
    pub(crate) fn new(
        io: T,
        timeout: Duration,
        metrics: Arc<Metrics>,
        peer: SocketAddr,
    ) -> WriteDeadline<T> {
        WriteDeadline {
            io,
            timeout,
            stalled_since: None,
            metrics,
            peer,
        }
    }

    /// What a write (or flush) that returned `polled` means under the deadline.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let timeout = self.timeout;
        let deadline = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled_since = None;
        self.metrics.client_write_timed_out();
        if let Some(suppressed) = crate::head::WRITE_TIMEOUTS.allow() {
            let suppressed = Some(suppressed).filter(|&n| n > 0);
            tracing::warn!(peer = %self.peer, timeout_ms = timeout.as_millis(), suppressed, "the client read nothing for response_write_timeout_ms: connection closed");
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            WriteStalled(timeout),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_after_the_idle_timeout() {
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream_from(receiver);
        let mut body = Stalling::new(StreamBody::new(stream), Duration::from_secs(60));
        sender
            .send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("stalled for 60000 ms"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(sender);
    }

    /// A receiver as a `Stream`, without another dependency.
    fn tokio_stream_from<T: Send + 'static>(
        mut receiver: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        }))
    }
}
