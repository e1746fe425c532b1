//! Twilio's response on its way back to the client: hop-by-hop headers stripped, a protocol
//! switch or other non-final answer refused (502), and a body that stalls cut off.
//!
//! The response head has `request_timeout_ms`; the body has
//! `upstream.response_idle_timeout_ms` between chunks. When a chunk is that late the body
//! ends with an error, so hyper closes the client's connection (HTTP/1.1) or resets the
//! stream (HTTP/2) instead of holding both connections open forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::error::ProxyError;
use crate::hop;
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
