//! The awaited signer against a scripted key service: retries, deadlines, the fast failure
//! after a service stops answering, and the promise that a key cannot change under the proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::signing_key::PemKey;
use crate::signing_key::SignNow;

const PEM: &str = include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem");
const OTHER: &str = include_str!("../../tests/vectors/test-keys/pkcv-test-private.pem");

/// What the scripted service answers to each `sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Signs with the key it was made with.
    Sign,
    /// Signs with another key.
    SignWithAnother,
    Throttle,
    Refuse,
    /// Never answers.
    Hang,
    Unreachable,
}

#[derive(Debug)]
struct Scripted {
    key: PemKey,
    other: PemKey,
    script: arc_swap::ArcSwap<Script>,
    public: arc_swap::ArcSwap<Vec<u8>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new() -> Arc<Scripted> {
        let key = PemKey::from_pem(PEM.as_bytes()).unwrap();
        let public = key.public_key_spki_der().to_vec();
        Arc::new(Scripted {
            key,
            other: PemKey::from_pem(OTHER.as_bytes()).unwrap(),
            script: arc_swap::ArcSwap::from_pointee(Script::Sign),
            public: arc_swap::ArcSwap::from_pointee(public),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, script: Script) {
        self.script.store(Arc::new(script));
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl KeyService for Arc<Scripted> {
    async fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, ServiceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match **self.script.load() {
            Script::Sign => Ok(self.key.sign(algorithm, message).unwrap()),
            Script::SignWithAnother => Ok(self.other.sign(algorithm, message).unwrap()),
            Script::Throttle => Err(ServiceError::Throttled("slow down".into())),
            Script::Refuse => Err(ServiceError::Refused("access denied".into())),
            Script::Hang => std::future::pending().await,
            Script::Unreachable => Err(ServiceError::Unreachable("connection refused".into())),
        }
    }

    async fn public_key(&self) -> Result<PublicKey, ServiceError> {
        PublicKey::from_spki_der(&self.public.load()).map_err(ServiceError::Refused)
    }
}

async fn loaded(service: &Arc<Scripted>, deadline_ms: u64) -> RemoteKey<Arc<Scripted>> {
    RemoteKey::load(
        service.clone(),
        "scripted key".into(),
        Backend::VaultTransit,
        Algorithm::Rs256,
        Limits::new(2, Duration::from_millis(deadline_ms)),
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn signs_and_every_signature_is_verified_against_the_key_loaded() {
    let service = Scripted::new();
    let key = loaded(&service, 1_000).await;
    for algorithm in [Algorithm::Rs256, Algorithm::Ps256] {
        let signature = key.sign_checked(algorithm, b"a.b").await.unwrap();
        assert!(key.public_key().verifies(algorithm, b"a.b", &signature));
    }
    assert!(key.is_available() && key.problem().is_none());
    assert!(key.to_string().contains("SHA256:"), "{key}");

    // The service now signs with another key: refused, and from then on without asking it.
    service.set(Script::SignWithAnother);
    let refused = key
        .sign_checked(Algorithm::Rs256, b"a.b")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SignError::Refused(ref r) if r.contains("other than the one loaded"))
    );
    let calls = service.calls();
    service.set(Script::Sign);
    assert!(matches!(
        key.sign_checked(Algorithm::Rs256, b"a.b").await,
        Err(SignError::Refused(_))
    ));
    assert_eq!(service.calls(), calls, "a changed key is not asked again");
    assert!(key.problem().is_some());
    // A recheck that finds the loaded key again lifts the refusal.
    key.recheck().await.unwrap();
    assert!(key.sign_checked(Algorithm::Rs256, b"a.b").await.is_ok());
    assert!(key.problem().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_recheck_that_finds_another_public_key_refuses_the_key() {
    let service = Scripted::new();
    let key = loaded(&service, 1_000).await;
    let other = PemKey::from_pem(OTHER.as_bytes()).unwrap();
    service
        .public
        .store(Arc::new(other.public_key_spki_der().to_vec()));
    let err = key.recheck().await.unwrap_err();
    assert!(matches!(err, ServiceError::Refused(ref r) if r.contains("no longer the key loaded")));
    assert!(matches!(
        key.sign_checked(Algorithm::Rs256, b"a.b").await,
        Err(SignError::Refused(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_with_backoff_within_the_deadline_then_reported() {
    let service = Scripted::new();
    let key = loaded(&service, 300).await;
    service.set(Script::Throttle);
    let started = tokio::time::Instant::now();
    let err = key
        .sign_checked(Algorithm::Rs256, b"a.b")
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Throttled));
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_millis(300), "{elapsed:?}");
    // 20 + 40 + 80 ms of backoff fit in 300 ms; the next (160) would not.
    let attempts = service.calls() - 1;
    assert_eq!(attempts, 4, "one try and three retries");
    // Throttling is not an outage: the key stays available.
    assert!(key.is_available());
}

#[tokio::test(start_paused = true)]
async fn a_service_that_does_not_answer_fails_fast_for_a_second_then_is_tried_again() {
    let service = Scripted::new();
    let key = loaded(&service, 500).await;
    service.set(Script::Hang);
    let started = tokio::time::Instant::now();
    let err = key
        .sign_checked(Algorithm::Rs256, b"a.b")
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Unavailable));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "the deadline, not more"
    );
    assert!(!key.is_available(), "within the cool-down");
    assert!(key.problem().unwrap().contains("did not answer"));
    // The signing step refuses at once while the key is not available; the next request
    // after the cool-down (one second of the wall clock) reaches the service again.
    service.set(Script::Sign);
    assert!(key.sign_checked(Algorithm::Rs256, b"a.b").await.is_ok());
    assert!(key.problem().is_none(), "a signature clears the outage");

    service.set(Script::Unreachable);
    assert!(matches!(
        key.sign_checked(Algorithm::Rs256, b"a.b").await,
        Err(SignError::Unavailable)
    ));
    service.set(Script::Refuse);
    assert!(matches!(
        key.sign_checked(Algorithm::Rs256, b"a.b").await,
        Err(SignError::Refused(ref r)) if r == "access denied"
    ));
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_signatures_are_in_flight() {
    let service = Scripted::new();
    let key = Arc::new(loaded(&service, 200).await);
    service.set(Script::Hang);
    let before = service.calls();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let key = key.clone();
            tokio::spawn(async move { key.sign_checked(Algorithm::Rs256, b"a.b").await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(SignError::Unavailable)));
    }
    assert_eq!(
        service.calls() - before,
        2,
        "two permits: the rest never reached it"
    );
}

#[test]
fn only_rsa_2048_with_e_65537_is_taken() {
    let key = PemKey::from_pem(PEM.as_bytes()).unwrap();
    let public = PublicKey::from_spki_der(key.public_key_spki_der()).unwrap();
    assert!(public.to_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(PublicKey::from_pem(&public.to_pem()).unwrap(), public);
    assert_eq!(public.fingerprint().len(), "SHA256:".len() + 64);

    let modulus = [0x80u8; 256];
    let big = rsa_spki_der(&[0x80u8; 512], &[1, 0, 1]);
    assert!(PublicKey::from_spki_der(&big)
        .unwrap_err()
        .contains("RSA-4096"));
    let small = rsa_spki_der(&[0x80u8; 128], &[1, 0, 1]);
    assert!(PublicKey::from_spki_der(&small)
        .unwrap_err()
        .contains("RSA-1024"));
    let three = rsa_spki_der(&modulus, &[3]);
    assert!(PublicKey::from_spki_der(&three)
        .unwrap_err()
        .contains("exponent"));
    assert!(PublicKey::from_spki_der(b"junk").is_err());
    assert!(
        PublicKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
    // An EC key (P-256 SubjectPublicKeyInfo).
    let ec = pem::parse(include_str!("../../tests/fixtures/ec-p256.pem")).unwrap();
    let ec = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        ec.contents(),
    )
    .unwrap();
    let spki =
        aws_lc_rs::encoding::AsDer::as_der(aws_lc_rs::signature::KeyPair::public_key(&ec)).unwrap();
    let err = PublicKey::from_spki_der(spki.as_ref()).unwrap_err();
    assert!(err.contains("not an RSA key"), "{err}");
}
