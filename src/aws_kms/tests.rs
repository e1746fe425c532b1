//! Unit tests of the KMS backend against a canned HTTP connector (no server): the request
//! the proxy sends, the checks of `GetPublicKey`, and how each failure is classified.

use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

/// What the canned connector answers: a status and JSON, or a connection failure.
#[derive(Debug, Clone)]
enum Canned {
    Answer(u16, Value),
    ConnectionRefused,
}

/// Answers every request with `answer` and keeps the last request's target and body.
#[derive(Debug, Clone)]
struct Recorder {
    answer: Canned,
    seen: Arc<ArcSwap<Option<(String, Value)>>>,
}

impl HttpClient for Recorder {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Recorder {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let body: Value = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
        self.seen.store(Arc::new(Some((target, body))));
        let answer = self.answer.clone();
        HttpConnectorFuture::ready(match answer {
            Canned::Answer(status, json) => {
                let mut response = Response::new(
                    StatusCode::try_from(status).unwrap(),
                    SdkBody::from(json.to_string()),
                );
                response
                    .headers_mut()
                    .insert("content-type", "application/x-amz-json-1.1");
                Ok(response)
            }
            Canned::ConnectionRefused => Err(ConnectorError::io(
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            )),
        })
    }
}

fn service(answer: Canned) -> (KmsService, Recorder) {
    let recorder = Recorder {
        answer,
        seen: Arc::default(),
    };
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .http_client(recorder.clone())
        .build();
    let limits = Limits::new(4, Duration::from_secs(2));
    (
        KmsService::with_client(aws_sdk_kms::Client::from_conf(config), limits),
        recorder,
    )
}

fn signer(answer: Canned) -> (KmsSigner, Recorder) {
    let (service, recorder) = service(answer);
    let signer = KmsSigner {
        service: Arc::new(service),
        id: "alias/pkcv".into(),
    };
    (signer, recorder)
}

#[tokio::test]
async fn ps256_signs_the_raw_signing_input_with_rsassa_pss_sha_256() {
    let answer = json!({
        "KeyId": "arn:aws:kms:us-east-1:111122223333:key/1234",
        "Signature": STANDARD.encode([7u8; 256]),
        "SigningAlgorithm": "RSASSA_PSS_SHA_256",
    });
    let (signer, recorder) = signer(Canned::Answer(200, answer));
    let message = b"eyJhbGciOiJQUzI1NiJ9.eyJpc3MiOiJTSyJ9";

    let signature = signer.sign(Algorithm::Ps256, message).await.unwrap();

    assert_eq!(signature, vec![7u8; 256]);
    let seen = recorder.seen.load();
    let (target, body) = Option::as_ref(&seen).unwrap();
    assert_eq!(target, "TrentService.Sign");
    assert_eq!(body["KeyId"], "alias/pkcv");
    assert_eq!(body["SigningAlgorithm"], "RSASSA_PSS_SHA_256");
    // The signing input itself, never a digest of it: KMS hashes it.
    assert_eq!(body["MessageType"], "RAW");
    assert_eq!(body["Message"], STANDARD.encode(message));
}

#[tokio::test]
async fn rs256_asks_for_rsassa_pkcs1_v1_5_sha_256() {
    let answer = json!({ "Signature": STANDARD.encode([1u8; 256]) });
    let (signer, recorder) = signer(Canned::Answer(200, answer));
    signer.sign(Algorithm::Rs256, b"a.b").await.unwrap();
    let seen = recorder.seen.load();
    let (_, body) = Option::as_ref(&seen).unwrap();
    assert_eq!(body["SigningAlgorithm"], "RSASSA_PKCS1_V1_5_SHA_256");
    assert_eq!(body["MessageType"], "RAW");
}

#[tokio::test]
async fn each_failure_is_classified() {
    let error = |code: &str| {
        Canned::Answer(
            400,
            json!({ "__type": code, "message": format!("{code} said so") }),
        )
    };
    let cases = [
        (error("ThrottlingException"), "throttled"),
        (error("LimitExceededException"), "throttled"),
        (error("AccessDeniedException"), "refused"),
        (error("DisabledException"), "refused"),
        (error("NotFoundException"), "refused"),
        (error("KMSInvalidStateException"), "refused"),
        (error("InvalidKeyUsageException"), "refused"),
        (error("KeyUnavailableException"), "refused"),
        (error("DependencyTimeoutException"), "unreachable"),
        (
            Canned::Answer(500, json!({ "__type": "KMSInternalException" })),
            "failed",
        ),
        (
            Canned::Answer(503, json!({ "__type": "ServiceUnavailable" })),
            "unreachable",
        ),
        (Canned::ConnectionRefused, "unreachable"),
    ];
    for (answer, expected) in cases {
        let (signer, _) = signer(answer.clone());
        let err = signer.sign(Algorithm::Rs256, b"a.b").await.unwrap_err();
        let kind = match &err {
            ServiceError::Throttled(_) => "throttled",
            ServiceError::Refused(_) => "refused",
            ServiceError::Unreachable(_) => "unreachable",
            _ => "failed",
        };
        assert_eq!(kind, expected, "{answer:?}: {err}");
        if let Canned::Answer(400, json) = &answer {
            // KMS's own words are passed on.
            let code = json["__type"].as_str().unwrap();
            assert!(
                err.to_string().contains(&format!("{code}: {code} said so")),
                "{err}"
            );
        }
    }
}

fn spki(bits: u32) -> Blob {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        _ => KeySize::Rsa4096,
    };
    let key = KeyPair::generate(size).unwrap();
    Blob::new(key.public_key().as_der().unwrap().as_ref().to_vec())
}

fn get_public_key(spec: KeySpec, usage: KeyUsageType, bits: u32) -> GetPublicKeyOutput {
    GetPublicKeyOutput::builder()
        .key_id("arn:aws:kms:us-east-1:111122223333:key/1234")
        .key_spec(spec)
        .key_usage(usage)
        .signing_algorithms(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
        .signing_algorithms(SigningAlgorithmSpec::RsassaPssSha256)
        .public_key(spki(bits))
        .build()
}

#[test]
fn only_rsa_2048_signing_keys_offering_the_algorithm_load() {
    let good = get_public_key(KeySpec::Rsa2048, KeyUsageType::SignVerify, 2048);
    for algorithm in [Algorithm::Rs256, Algorithm::Ps256] {
        checked_public_key("alias/pkcv", &good, Some(algorithm)).unwrap();
    }

    let big = get_public_key(KeySpec::Rsa4096, KeyUsageType::SignVerify, 4096);
    let err = checked_public_key("alias/big", &big, Some(Algorithm::Rs256)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused: KMS key alias/big is a RSA_4096 key; Twilio takes RSA-2048 keys only (KeySpec RSA_2048)"
    );

    let encrypting = get_public_key(KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt, 2048);
    let err = checked_public_key("k", &encrypting, None).unwrap_err();
    assert!(
        err.to_string().contains("KeyUsage ENCRYPT_DECRYPT"),
        "{err}"
    );

    let pkcs1_only = GetPublicKeyOutput::builder()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .signing_algorithms(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
        .public_key(spki(2048))
        .build();
    let err = checked_public_key("k", &pkcs1_only, Some(Algorithm::Ps256)).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not offer RSASSA_PSS_SHA_256"),
        "{err}"
    );

    // A KeySpec that lies about the key is caught by the key itself.
    let lying = get_public_key(KeySpec::Rsa2048, KeyUsageType::SignVerify, 3072);
    let err = checked_public_key("k", &lying, None).unwrap_err();
    assert!(err.to_string().contains("RSA-3072"), "{err}");
}

#[tokio::test]
async fn keygen_takes_only_an_alias_it_may_create() {
    let config = Config::from_raw(crate::config::RawConfig::default()).unwrap();
    for bad in ["1234-abcd", "alias/", "alias/aws/kms"] {
        let err = create_key(&config, bad).await.unwrap_err();
        assert!(matches!(err, RemoteLoadError::Settings(_)), "{bad}: {err}");
    }
}
