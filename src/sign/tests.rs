use super::*;
use crate::body::hashed;
use crate::config::RawConfig;
use crate::keys::tests::{account, A, B, K1, K2};
use crate::keys::KeyStore;
use crate::signing_key::testing::flaky;
use crate::signing_key::{Algorithm, Key};
use crate::token::TokenMinter;
use std::sync::atomic::Ordering;

fn signer() -> RequestSigner {
    let config = Config::from_raw(RawConfig::default()).unwrap();
    RequestSigner::new(&config, Arc::new(Metrics::new())).unwrap()
}

/// A GET (or `method`) with the API key `api_key`'s Basic credentials.
fn request(method: Method, api_key: &str) -> Parts {
    let credentials = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{api_key}:secret"),
    );
    let mut request = Request::builder()
        .method(method)
        .uri("/2010-04-01/Accounts.json?PageSize=20&To=%2B14155550100")
        .header(AUTHORIZATION, format!("Basic {credentials}"))
        .header("x-client", "kept")
        .body(())
        .unwrap();
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_static("localhost:8080"));
    request.into_parts().0
}

#[tokio::test]
async fn a_signed_request_carries_exactly_what_was_hashed() {
    let signer = signer();
    let accounts = Accounts::new([account(A, &[K1])]).unwrap();
    let parts = request(Method::POST, K1);
    let target = Arc::new(signer.resolve(&accounts, &parts, None).unwrap());
    let signed = signer
        .sign(
            parts,
            target.clone(),
            hashed(bytes::Bytes::from_static(b"To=%2B1")),
        )
        .await
        .unwrap();

    // rqh is the hash of the canonical string it shows, which names the forwarded request.
    let canonical = signed.canonical_string();
    assert_eq!(
        signed.rqh().as_str(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()))
    );
    assert!(canonical.starts_with(
        "POST\n/2010-04-01/Accounts.json\nPageSize=20&To=%2B14155550100\nauthorization:Basic "
    ));
    assert!(canonical.ends_with(&crate::canonical::body_hash(b"To=%2B1").unwrap().to_string()));
    assert_eq!(
        signed.uri().to_string(),
        "https://api.twilio.com/2010-04-01/Accounts.json?PageSize=20&To=%2B14155550100"
    );

    // The token verifies with the account's public key and claims that very hash.
    let spki = account(A, &[]).minter.public_key_spki_der();
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&rsa_public_key_of(&spki));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<serde_json::Value>(signed.token(), &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["rqh"], signed.rqh().as_str());
    assert_eq!(
        (claims["sub"].as_str(), claims["iss"].as_str()),
        (Some(A), Some(K1))
    );

    let (request, retry) = signed.into_request();
    assert!(retry.is_none(), "a POST is never kept to be sent twice");
    let headers = request.headers();
    assert!(
        headers.get(HOST).is_none(),
        "the host travels as the URI's authority"
    );
    assert_eq!(headers["x-client"], "kept");
    assert_eq!(headers[CONTENT_LENGTH], "7");
    assert!(headers[token::HEADER_NAME].is_sensitive());
    assert!(headers[AUTHORIZATION].is_sensitive());
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo (what jsonwebtoken's `from_rsa_der` takes).
fn rsa_public_key_of(spki: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    parsed.subject_public_key.data.to_vec()
}

#[tokio::test]
async fn a_retry_is_signed_afresh_over_the_same_hash() {
    let signer = signer();
    let accounts = Accounts::new([account(A, &[K1])]).unwrap();
    let parts = request(Method::GET, K1);
    let target = Arc::new(signer.resolve(&accounts, &parts, None).unwrap());
    let signed = signer
        .sign(parts, target, hashed(bytes::Bytes::new()))
        .await
        .unwrap();
    let (rqh, canonical) = (*signed.rqh(), signed.canonical_string());
    let (first, retry) = signed.into_request();
    let again = signer.sign_again(retry.unwrap()).await.unwrap();
    assert_eq!(*again.rqh(), rqh);
    assert_eq!(again.canonical_string(), canonical);
    let (second, retry) = again.into_request();
    assert!(retry.is_none(), "a request is signed again once at most");
    assert_eq!(first.uri(), second.uri());
    assert!(first.headers().get(CONTENT_LENGTH).is_none());
}

/// A device key signs on the signing pool (the scripted device panics on a runtime thread);
/// while it is lost its account gets 79053 with the `unavailable` label, and a PEM account is
/// unaffected; once the device is back it signs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_signs_on_the_pool_and_its_loss_is_its_own() {
    let (key, device_on, _) = flaky();
    let credential = "CR00000000000000000000000000000001";
    let in_hsm = Account::new(
        A,
        credential,
        vec![K1.into()],
        TokenMinter::new(Key::Blocking(Arc::new(key)), credential, Algorithm::Rs256),
    );
    let accounts = Accounts::new([in_hsm, account(B, &[K2])]).unwrap();
    let signer = signer();
    let sign = |api_key: &'static str| {
        let (signer, parts) = (signer.clone(), request(Method::GET, api_key));
        let target = Arc::new(signer.resolve(&accounts, &parts, None).unwrap());
        async move {
            signer
                .sign(parts, target, hashed(bytes::Bytes::new()))
                .await
        }
    };
    sign(K1).await.unwrap();

    device_on.store(false, Ordering::SeqCst);
    let failure = sign(K1).await.unwrap_err();
    assert_eq!(failure.reason(), Some("unavailable"));
    let err = ProxyError::from(failure);
    assert_eq!((err.status().as_u16(), err.code()), (503, 79053));
    sign(K2).await.expect("the PEM account is unaffected");

    device_on.store(true, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..300 {
        if sign(K1).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(back, "the device key signs again once the device is back");
}

/// The client check and the signing account read the same snapshot: a reload between them
/// (the store replaced) changes neither for a request that already holds its snapshot.
#[tokio::test]
async fn one_snapshot_serves_the_client_check_and_the_signing_account() {
    use crate::clients::Clients;
    use crate::config::ClientConfig;

    let client_for = |account_sid: &str| {
        let secret = <sha2::Sha256 as sha2::Digest>::digest(b"s3cret");
        Clients::load(&[ClientConfig {
            name: "app".into(),
            secret_sha256: Some(hex::encode(secret)),
            secret_file: None,
            accounts: vec![account_sid.to_owned()],
        }])
        .unwrap()
    };
    // Before: the client `app` may sign for A, which lists K1.
    let store = KeyStore::new(
        Accounts::new([account(A, &[K1])])
            .unwrap()
            .with_clients(client_for(A)),
    );
    let held = store.snapshot();
    // A reload: K1 now belongs to B, and `app` may sign only for B.
    store.replace(
        Accounts::new([account(B, &[K1])])
            .unwrap()
            .with_clients(client_for(B)),
    );

    let mut parts = request(Method::GET, K1);
    parts.headers.insert(
        http::header::PROXY_AUTHORIZATION,
        HeaderValue::from_static("Basic YXBwOnMzY3JldA=="),
    );
    let client = held.clients().authenticate(&parts.headers).unwrap().clone();
    let target = signer().resolve(&held, &parts, None).unwrap();
    assert_eq!(
        target.account.account_sid, A,
        "signs with the held snapshot"
    );
    assert!(client.may_sign_for(&target.account.account_sid));
    let fresh = store.snapshot();
    let fresh_target = signer().resolve(&fresh, &parts, None).unwrap();
    assert_eq!(fresh_target.account.account_sid, B);
    assert!(!client.may_sign_for(&fresh_target.account.account_sid));
}
