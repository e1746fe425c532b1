//! The device backend: a key that never leaves a device, reached through sessions that can
//! break.
//!
//! [`DeviceKey`] keeps a few open sessions (one per signing thread, so a signature never waits
//! for one) and owns the key's availability. When a call reports the device lost, every idle
//! session is dropped, the key turns unavailable (its account answers 503 `79053` at once,
//! `/readyz` lists it as degraded) and one background thread reconnects with exponential
//! backoff. Sessions carry the generation they were opened in, so a late failure on a session
//! from before a reconnect cannot knock the fresh connection down again.
//!
//! What a device is stays behind [`Device`]: PKCS#11 in production, a scripted failing device
//! in the tests (SoftHSM does not reliably fail open sessions when its files go away).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::Algorithm;
use super::{Backend, SignError, SignNow, SigningKey};

/// A device that holds a private key and signs with it. Every call may block.
pub trait Device: Send + Sync + 'static {
    /// A connection able to sign: for PKCS#11, a logged-in session and the key's handle.
    type Session: Send + 'static;

    /// Opens a session and finds the key in it.
    fn connect(&self) -> Result<Self::Session, DeviceError>;

    /// Signs `message` in `session`.
    fn sign(
        &self,
        session: &mut Self::Session,
        algorithm: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, DeviceError>;
}

/// How a device call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device or the session is gone: reconnect.
    #[error("device lost: {0}")]
    Lost(#[source] BoxError),
    /// This one operation failed; the session is still good.
    #[error("{0}")]
    Failed(#[source] BoxError),
}

/// A device's own error, kept with its type for whoever inspects the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Waits between reconnection attempts: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            first: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// What is known about the key once it has been checked.
#[derive(Debug, Clone)]
pub struct DeviceKeyInfo {
    /// Shown by `check-config` and in logs: where the key lives.
    pub description: String,
    /// The backend, for metrics.
    pub backend: Backend,
    /// The modulus size in bytes.
    pub modulus_len: usize,
    /// The public key, DER `SubjectPublicKeyInfo`.
    pub public_spki: Vec<u8>,
}

/// A session and the generation it was opened in.
type Tagged<S> = (u64, S);

/// A [`SigningKey`] whose signatures happen in a [`Device`].
pub struct DeviceKey<D: Device> {
    shared: Arc<Shared<D>>,
}

struct Shared<D: Device> {
    device: D,
    info: DeviceKeyInfo,
    /// Idle sessions, tagged with their generation: a bounded lock-free queue, so taking
    /// and returning one never blocks a signing thread on another.
    idle: Receiver<Tagged<D::Session>>,
    returns: Sender<Tagged<D::Session>>,
    generation: AtomicU64,
    up: AtomicBool,
    reconnecting: AtomicBool,
    retry: Retry,
}

impl<D: Device> DeviceKey<D> {
    /// A key over `device`, starting with `sessions` open sessions (at least one).
    pub fn open(
        device: D,
        info: DeviceKeyInfo,
        sessions: usize,
        retry: Retry,
    ) -> Result<DeviceKey<D>, DeviceError> {
        let sessions = sessions.max(1);
        let (returns, idle) = crossbeam_channel::bounded(sessions);
        for _ in 0..sessions {
            // Room for exactly `sessions`: this never finds the queue full.
            let _ = returns.try_send((0, device.connect()?));
        }
        Ok(DeviceKey {
            shared: Arc::new(Shared {
                device,
                info,
                idle,
                returns,
                generation: AtomicU64::new(0),
                up: AtomicBool::new(true),
                reconnecting: AtomicBool::new(false),
                retry,
            }),
        })
    }

    /// The device, for checks the loader makes through it.
    pub fn device(&self) -> &D {
        &self.shared.device
    }
}

impl<D: Device> Shared<D> {
    fn take_session(&self) -> Result<(u64, D::Session), DeviceError> {
        match self.idle.try_recv() {
            Ok(session) => Ok(session),
            // Only when more threads sign than sessions were opened (a check beside the pool).
            Err(_) => {
                let generation = self.generation.load(Ordering::Acquire);
                self.device.connect().map(|session| (generation, session))
            }
        }
    }

    fn give_back(&self, session: (u64, D::Session)) {
        if session.0 != self.generation.load(Ordering::Acquire) {
            return;
        }
        // A full queue means a spare opened beside the pool: close it.
        let _ = self.returns.try_send(session);
    }

    /// The device is gone (as seen by a session of `generation`): drop every session, mark
    /// the key down and start reconnecting, once.
    fn lost(self: &Arc<Self>, generation: u64, reason: &(dyn std::error::Error + 'static)) {
        if self
            .generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // A newer connection exists already; this was an old session failing late.
            return;
        }
        self.up.store(false, Ordering::Release);
        while self.idle.try_recv().is_ok() {}
        tracing::error!(key = %self.info.description, reason = %reason, "signing device lost; its account answers 503 (79053) until it is back");
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("pkcv-reconnect".to_owned())
            .spawn(move || reconnect(&weak));
        if let Err(err) = spawned {
            self.reconnecting.store(false, Ordering::Release);
            tracing::error!(error = %err, "cannot start the reconnecting thread");
        }
    }
}

/// Tries to connect, with backoff, until it works or the key is dropped (a reload replaced
/// it).
fn reconnect<D: Device>(shared: &Weak<Shared<D>>) {
    let Some(retry) = shared.upgrade().map(|shared| shared.retry) else {
        return;
    };
    let mut wait = retry.first;
    loop {
        std::thread::sleep(wait);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.device.connect() {
            Ok(session) => {
                let generation = shared.generation.load(Ordering::Acquire);
                let _ = shared.returns.try_send((generation, session));
                shared.reconnecting.store(false, Ordering::Release);
                shared.up.store(true, Ordering::Release);
                tracing::info!(key = %shared.info.description, "signing device reconnected");
                return;
            }
            Err(err) => {
                tracing::warn!(key = %shared.info.description, error = %err, retry_in = ?(wait * 2).min(retry.max), "signing device still unavailable");
            }
        }
        wait = (wait * 2).min(retry.max);
    }
}

impl<D: Device> SignNow for DeviceKey<D> {
    fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            return Err(SignError::Unavailable);
        }
        let (generation, mut session) = match shared.take_session() {
            Ok(session) => session,
            Err(DeviceError::Lost(reason)) => {
                shared.lost(shared.generation.load(Ordering::Acquire), reason.as_ref());
                return Err(SignError::Unavailable);
            }
            Err(DeviceError::Failed(reason)) => return Err(SignError::Failed(reason)),
        };
        match shared.device.sign(&mut session, algorithm, message) {
            Ok(signature) => {
                shared.give_back((generation, session));
                Ok(signature)
            }
            Err(DeviceError::Failed(reason)) => {
                shared.give_back((generation, session));
                Err(SignError::Failed(reason))
            }
            Err(DeviceError::Lost(reason)) => {
                drop(session);
                shared.lost(generation, reason.as_ref());
                Err(SignError::Unavailable)
            }
        }
    }
}

impl<D: Device> SigningKey for DeviceKey<D> {
    fn modulus_len(&self) -> usize {
        self.shared.info.modulus_len
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.shared.info.public_spki
    }

    fn backend(&self) -> Backend {
        self.shared.info.backend
    }

    fn is_available(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

impl<D: Device> std::fmt::Debug for DeviceKey<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("key", &self.shared.info.description)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

impl<D: Device> std::fmt::Display for DeviceKey<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, RSA-{}",
            self.shared.info.description,
            self.modulus_len() * 8
        )
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted device for tests: signs with a PEM key, and can be switched off and on.
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A device that signs with a PEM key, and can be switched off and on.
    pub(crate) struct Flaky {
        key: super::super::PemKey,
        on: Arc<AtomicBool>,
        connects: Arc<AtomicUsize>,
    }

    impl Device for Flaky {
        type Session = ();
        fn connect(&self) -> Result<(), DeviceError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            if self.on.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(DeviceError::Lost("switched off".into()))
            }
        }
        fn sign(
            &self,
            (): &mut (),
            algorithm: Algorithm,
            message: &[u8],
        ) -> Result<Vec<u8>, DeviceError> {
            // The promise the signing step keeps: a device is never called on an async
            // runtime thread (the signing pool's threads run outside any runtime).
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "a device key was called on a runtime thread"
            );
            if !self.on.load(Ordering::SeqCst) {
                return Err(DeviceError::Lost("switched off".into()));
            }
            if message.is_empty() {
                return Err(DeviceError::Failed("nothing to sign".into()));
            }
            self.key
                .sign(algorithm, message)
                .map_err(|err| DeviceError::Failed(Box::new(err)))
        }
    }

    const PEM: &str = include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem");

    pub(crate) fn flaky() -> (DeviceKey<Flaky>, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let on = Arc::new(AtomicBool::new(true));
        let connects = Arc::new(AtomicUsize::new(0));
        let key = super::super::PemKey::from_pem(PEM.as_bytes()).unwrap();
        let info = DeviceKeyInfo {
            description: "flaky test device".into(),
            backend: Backend::Pkcs11,
            modulus_len: key.modulus_len(),
            public_spki: key.public_key_spki_der().to_vec(),
        };
        let device = Flaky {
            key,
            on: on.clone(),
            connects: connects.clone(),
        };
        let retry = Retry {
            first: Duration::from_millis(10),
            max: Duration::from_millis(40),
        };
        (
            DeviceKey::open(device, info, 2, retry).unwrap(),
            on,
            connects,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::flaky;
    use super::*;

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting until {what}");
    }

    #[test]
    fn a_lost_device_is_unavailable_then_reconnected_with_backoff() {
        let (key, on, connects) = flaky();
        assert_eq!(
            connects.load(Ordering::SeqCst),
            2,
            "one session per signing thread"
        );
        assert!(key.is_available());
        key.sign(Algorithm::Rs256, b"a.b").unwrap();
        // A failure of one operation leaves the key up.
        assert!(matches!(
            key.sign(Algorithm::Rs256, b""),
            Err(SignError::Failed(_))
        ));
        assert!(key.is_available());

        on.store(false, Ordering::SeqCst);
        assert!(matches!(
            key.sign(Algorithm::Rs256, b"a.b"),
            Err(SignError::Unavailable)
        ));
        assert!(!key.is_available());
        // While down, refused at once, without touching the device.
        let before = connects.load(Ordering::SeqCst);
        assert!(matches!(
            key.sign(Algorithm::Rs256, b"a.b"),
            Err(SignError::Unavailable)
        ));
        // The reconnecting thread keeps trying, with growing waits.
        wait_until("two more connection attempts", || {
            connects.load(Ordering::SeqCst) >= before + 2
        });
        assert!(!key.is_available());

        on.store(true, Ordering::SeqCst);
        wait_until("the device is back", || key.is_available());
        let signature = key.sign(Algorithm::Rs256, b"a.b").unwrap();
        assert_eq!(signature.len(), 256);
    }

    #[test]
    fn a_dropped_key_stops_reconnecting() {
        let (key, on, connects) = flaky();
        on.store(false, Ordering::SeqCst);
        assert!(key.sign(Algorithm::Rs256, b"a.b").is_err());
        drop(key);
        std::thread::sleep(Duration::from_millis(100));
        let settled = connects.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            connects.load(Ordering::SeqCst),
            settled,
            "no attempts after the drop"
        );
    }
}
