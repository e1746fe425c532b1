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

use crate::error::ProxyError;
use crate::sign::MintJob;

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

    /// Mints on a pool thread; 503 at once when the queue is full.
    pub(crate) async fn mint(&self, job: MintJob) -> Result<String, ProxyError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work: Job = Box::new(move || {
            // The requester may have gone (client disconnected): nothing to do then.
            let _ = reply.send(job.run());
        });
        let queue = self.queue.as_ref().ok_or(ProxyError::Signing)?;
        queue.try_send(work).map_err(|err| match err {
            TrySendError::Full(_) => ProxyError::Overloaded("the signing queue is full"),
            TrySendError::Disconnected(_) => ProxyError::Signing,
        })?;
        answer.await.map_err(|_| ProxyError::Signing)?
    }
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
    use crate::config::{Config, RawConfig};
    use crate::keys::{Account, Accounts, KeyStore};
    use crate::token::{Algorithm, Signer};
    use std::sync::Arc;

    const PEM: &str = include_str!("../tests/fixtures/rsa-2048-pkcs1.pem");

    fn signer_and_target() -> (crate::sign::RequestSigner, crate::sign::Target) {
        let account = Account {
            account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4".into(),
            credential_sid: "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d".into(),
            api_key_sids: vec![],
            signer: Signer::from_pem(
                PEM.as_bytes(),
                "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d",
                Algorithm::Rs256,
            )
            .unwrap(),
        };
        let keys = Arc::new(KeyStore::new(Accounts::new([account]).unwrap()));
        let config = Config::from_raw(RawConfig::default()).unwrap();
        let signer = crate::sign::RequestSigner::new(&config, keys);
        let mut request = http::Request::get("/2010-04-01/Accounts.json")
            .body(())
            .unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static(
                "Basic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzp4",
            ),
        );
        let (parts, ()) = request.into_parts();
        let target = signer.resolve(&parts, None).unwrap();
        (signer, target)
    }

    #[tokio::test]
    async fn the_pool_mints_what_inline_signing_mints() {
        let (signer, target) = signer_and_target();
        let hash = target.canonical(&http::Method::GET, body_hash(b"")).hash();
        let pool = SigningPool::new(2, 8).unwrap();
        assert_eq!(pool.threads(), 2);
        let pooled = pool
            .mint(signer.mint_job(&target, hash, 1_700_000_000))
            .await
            .unwrap();
        let inline = signer.mint(&target, &hash, 1_700_000_000).unwrap();
        // RS256 is deterministic: the same token either way.
        assert_eq!(pooled, inline);
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_not_a_wait() {
        let (signer, target) = signer_and_target();
        let hash = target.canonical(&http::Method::GET, body_hash(b"")).hash();
        // One thread, a queue of one: of many signatures asked for at once, some must be
        // refused at once with 503 rather than queue without bound.
        let pool = Arc::new(SigningPool::new(1, 1).unwrap());
        let asks = (0..64).map(|_| {
            let (pool, job) = (pool.clone(), signer.mint_job(&target, hash, 1_700_000_000));
            tokio::spawn(async move { pool.mint(job).await })
        });
        let mut refused = 0;
        for ask in asks.collect::<Vec<_>>() {
            if let Err(err) = ask.await.unwrap() {
                assert_eq!((err.status().as_u16(), err.code()), (503, 79050));
                refused += 1;
            }
        }
        assert!(refused > 0, "no signature was refused with a queue of one");
    }
}
