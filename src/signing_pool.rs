//! The signing pool: a few threads that do nothing but private-key operations.
//!
//! Every request costs one RSA signature, and nothing can be cached (`rqh` covers the
//! request itself), so signing is the proxy's physical limit. A signer that blocks, such as
//! an HSM reached through PKCS#11 (milliseconds, on a socket), must never run on the async
//! runtime's threads: it would stall every connection they serve. So signatures can run here,
//! on `threads` threads (default: one per core) fed by a bounded queue. A full queue is
//! overload, answered at once with 503 (79050) like `max_in_flight`, never an unbounded wait.
//!
//! The in-process PEM signer (~0.3 ms) may run inline instead (`signing.pem_on_pool`): the
//! hand-off costs a thread wake-up both ways; BENCHMARKS.md has the measurement.

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

type Job = Box<dyn FnOnce() + Send>;

/// The pool's threads and the queue that feeds them.
#[derive(Debug)]
pub(crate) struct SigningPool {
    queue: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl SigningPool {
    /// Starts `threads` signing threads behind a queue of `queue` jobs.
    pub(crate) fn new(threads: usize, queue: usize) -> std::io::Result<SigningPool> {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue);
        let threads = (0..threads)
            .map(|n| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("pkcv-sign-{n}"))
                    .spawn(move || {
                        // Ends when the pool is dropped and the queue drains.
                        while let Ok(job) = receiver.recv() {
                            job();
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningPool {
            queue: Some(sender),
            threads,
        })
    }

    /// How many signing threads there are.
    pub(crate) fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `job` on a pool thread and awaits its result; refused at once when the queue is
    /// full.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work: Job = Box::new(move || {
            // The requester may have gone (client disconnected): nothing to do then.
            let _ = reply.send(job());
        });
        let queue = self.queue.as_ref().ok_or(PoolError::Stopped)?;
        queue.try_send(work).map_err(|err| match err {
            TrySendError::Full(_) => PoolError::Full,
            TrySendError::Disconnected(_) => PoolError::Stopped,
        })?;
        answer.await.map_err(|_| PoolError::Stopped)
    }
}

/// Why a job did not run on the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The queue is full: overload.
    #[error("the signing queue is full")]
    Full,
    /// The pool's threads have stopped (the proxy is shutting down).
    #[error("the signing threads have stopped")]
    Stopped,
}

impl Drop for SigningPool {
    fn drop(&mut self) {
        // Closing the queue lets every thread finish its last job and end.
        self.queue.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::body_hash;
    use crate::signing_key::Algorithm;
    use crate::token::{Claims, TokenMinter};
    use std::sync::Arc;

    const PEM: &str = include_str!("../tests/fixtures/rsa-2048-pkcs1.pem");
    const CR: &str = "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d";

    fn mint(signer: &TokenMinter) -> String {
        let hash = body_hash(b"x").unwrap();
        signer
            .mint(&Claims {
                api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c",
                account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
                request_hash: &hash,
                issued_at: 1_700_000_000,
                ttl_secs: 300,
            })
            .unwrap()
    }

    #[tokio::test]
    async fn the_pool_mints_what_inline_signing_mints() {
        let signer = Arc::new(TokenMinter::from_pem(PEM.as_bytes(), CR, Algorithm::Rs256).unwrap());
        let pool = SigningPool::new(2, 8).unwrap();
        assert_eq!(pool.threads(), 2);
        let on_pool = signer.clone();
        let pooled = pool.run(move || mint(&on_pool)).await.unwrap();
        // RS256 is deterministic: the same token either way.
        assert_eq!(pooled, mint(&signer));
        let thread = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(thread.is_some_and(|name| name.starts_with("pkcv-sign-")));
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_not_a_wait() {
        // One thread, a queue of one: of many jobs asked for at once, some must be refused at
        // once rather than queue without bound.
        let pool = Arc::new(SigningPool::new(1, 1).unwrap());
        let asks = (0..64).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(|| std::thread::sleep(std::time::Duration::from_millis(2)))
                    .await
            })
        });
        let mut refused = 0;
        for ask in asks.collect::<Vec<_>>() {
            if let Err(err) = ask.await.unwrap() {
                assert_eq!(err, PoolError::Full);
                refused += 1;
            }
        }
        assert!(refused > 0, "no job was refused with a queue of one");
    }
}
