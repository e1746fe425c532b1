//! Admission: the caps on work in progress, decided before any work is done.
//!
//! - a connection takes a [`ConnectionSlot`] among `max_connections` when accepted (a tunnel
//!   keeps its connection's slot for as long as it is open); with none free it is closed at
//!   once, never queued;
//! - a request takes a slot among `max_in_flight` before it is read; with none free it is
//!   answered 503 at once, with `Retry-After`.
//!
//! Refusing early keeps the latency of what is admitted bounded under any load, instead of
//! every request waiting in one long queue.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ProxyError;
use crate::metrics::{GaugeGuard, Metrics};

/// A connection's place among `max_connections`.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _open: GaugeGuard,
}

/// A request's place among `max_in_flight`.
#[derive(Debug)]
pub(crate) struct RequestSlot {
    _permit: OwnedSemaphorePermit,
    _in_flight: GaugeGuard,
}

/// The caps, shared by the listener loop and the proxy.
#[derive(Debug)]
pub(crate) struct Admission {
    connections: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub(crate) fn new(
        max_connections: usize,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> Admission {
        Admission {
            connections: Arc::new(Semaphore::new(max_connections)),
            requests: Arc::new(Semaphore::new(max_in_flight)),
            metrics,
        }
    }

    /// A slot for a new connection, or `None` at the cap.
    pub(crate) fn connection(&self) -> Option<Arc<ConnectionSlot>> {
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        Some(Arc::new(ConnectionSlot {
            _permit: permit,
            _open: self.metrics.connection_open(),
        }))
    }

    /// A slot for a request, or 503 at once at the cap.
    pub(crate) fn request(&self) -> Result<RequestSlot, ProxyError> {
        let permit = self.requests.clone().try_acquire_owned().map_err(|_| {
            ProxyError::Overloaded("max_in_flight (requests being signed or forwarded)")
        })?;
        Ok(RequestSlot {
            _permit: permit,
            _in_flight: self.metrics.request_in_flight(),
        })
    }
}
