//! Keys in AWS KMS: `private_key = "aws-kms:ID"` (a key ID, `alias/NAME` or a key ARN),
//! behind the `aws-kms` feature.
//!
//! At load, `GetPublicKey` must say `RSA_2048`, `SIGN_VERIFY` and offer the configured
//! algorithm; the public key is kept and one test signature must verify with it
//! ([`RemoteKey::load`]). Each token is then one `Sign` with the JWT's signing input itself
//! (`MessageType` `RAW`: KMS hashes it, never a digest computed here),
//! `RSASSA_PKCS1_V1_5_SHA_256` for RS256 and `RSASSA_PSS_SHA_256` for PS256 (KMS's salt is
//! as long as the hash, as RFC 7518 requires). The key is addressed as configured, so a
//! repointed alias is caught by the verification of every signature.
//!
//! One [`KmsService`] per set of settings holds the SDK client: region, endpoint and profile
//! from `[aws_kms]`, credentials from the SDK's default chain (environment, shared config,
//! web identity/IRSA, ECS and EC2 metadata), its HTTP client ours ([`client`]). The SDK
//! retries nothing (`RetryConfig::disabled()`): [`crate::remote`] retries throttling within
//! `sign_timeout_ms`. Errors carry KMS's code and message, never a credential.

mod client;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};

use crate::config::{AwsKmsSettings, Config};
use crate::remote::http::chain;
use crate::remote::{KeyService, Limits, PublicKey, RemoteKey, RemoteLoadError, ServiceError};
use crate::signing_key::{Algorithm, Backend, Key};

/// The SDK's own bound on one call: the signature's deadline is `sign_timeout_ms` (in
/// [`crate::remote`]); key administration (`keygen`) may take longer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// KMS in one region, as the config reaches it: the SDK client and the limits its keys share.
#[derive(Debug)]
pub struct KmsService {
    client: aws_sdk_kms::Client,
    limits: Limits,
}

/// The process's services by settings: every key of one `[aws_kms]` shares its
/// connections and its `max_concurrent`.
static SERVICES: OnceLock<ArcSwap<Vec<Known>>> = OnceLock::new();

/// A service and the settings it was made for.
type Known = (String, Arc<KmsService>);

impl KmsService {
    /// The service for `config`'s `[aws_kms]` (and egress), made once per set of settings.
    pub async fn for_config(config: &Config) -> Result<Arc<KmsService>, RemoteLoadError> {
        let identity = format!("{:?}{:?}", config.aws_kms, config.upstream);
        let services = SERVICES.get_or_init(ArcSwap::default);
        if let Some((_, service)) = services.load().iter().find(|(id, _)| *id == identity) {
            return Ok(service.clone());
        }
        let dialer = config
            .upstream
            .dialer()
            .map_err(|err| RemoteLoadError::Settings(err.to_string()))?;
        let http = client::SdkHttpClient::new(dialer)
            .map_err(|err| RemoteLoadError::Settings(format!("[aws_kms] {err}")))?;
        let sdk = sdk_config(&config.aws_kms, http).await?;
        let service = Arc::new(KmsService {
            client: aws_sdk_kms::Client::new(&sdk),
            limits: Limits::new(config.aws_kms.max_concurrent, config.aws_kms.sign_timeout),
        });
        // Keep a few: settings change rarely, and each reload asks again.
        services.rcu(|known| {
            let mut known = Vec::clone(known);
            if known.len() >= 4 {
                known.remove(0);
            }
            known.push((identity.clone(), service.clone()));
            known
        });
        Ok(service)
    }

    /// A service around an SDK client made elsewhere (tests).
    #[cfg(test)]
    fn with_client(client: aws_sdk_kms::Client, limits: Limits) -> KmsService {
        KmsService { client, limits }
    }

    /// `GetPublicKey`, checked: RSA-2048 for signing, offering `algorithm` if given.
    async fn public_key(
        &self,
        id: &str,
        algorithm: Option<Algorithm>,
    ) -> Result<PublicKey, ServiceError> {
        let output = self
            .client
            .get_public_key()
            .key_id(id)
            .send()
            .await
            .map_err(|err| classify("GetPublicKey", err))?;
        checked_public_key(id, &output, algorithm)
    }

    /// Makes `alias` (`alias/NAME`) name a new non-exportable RSA-2048 signing key, unless
    /// it names one already (then that key is used, never replaced); its public key, and
    /// `true` when created.
    async fn create_key(&self, alias: &str) -> Result<(PublicKey, bool), ServiceError> {
        match self.public_key(alias, None).await {
            Ok(public) => return Ok((public, false)),
            Err(ServiceError::Refused(reason)) if reason.starts_with("NotFoundException") => {}
            Err(err) => return Err(err),
        }
        let created = self
            .client
            .create_key()
            .key_spec(KeySpec::Rsa2048)
            .key_usage(KeyUsageType::SignVerify)
            .description("pkcv-proxy: signs Twilio PKCV tokens")
            .send()
            .await
            .map_err(|err| classify("CreateKey", err))?;
        let key_id = created
            .key_metadata()
            .map(|metadata| metadata.key_id().to_owned())
            .ok_or_else(|| ServiceError::Failed("CreateKey answered without a key".into()))?;
        self.client
            .create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await
            .map_err(|err| classify("CreateAlias", err))?;
        let public = self.public_key(&key_id, None).await?;
        Ok((public, true))
    }
}

/// The SDK's configuration: our HTTP client, no retries, the settings' region, endpoint and
/// profile; the default credential chain.
async fn sdk_config(
    settings: &AwsKmsSettings,
    http: client::SdkHttpClient,
) -> Result<aws_config::SdkConfig, RemoteLoadError> {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(settings.sign_timeout.max(ADMIN_TIMEOUT))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(RemoteLoadError::Settings(
            "aws-kms keys need a region: [aws_kms] region, AWS_REGION or the profile's region"
                .into(),
        ));
    }
    Ok(sdk)
}

/// The public key in a `GetPublicKey` answer, checked as Twilio and the signer need.
fn checked_public_key(
    id: &str,
    output: &GetPublicKeyOutput,
    algorithm: Option<Algorithm>,
) -> Result<PublicKey, ServiceError> {
    // KMS answers both; some stand-ins (moto) only the older CustomerMasterKeySpec.
    #[allow(deprecated)]
    let older = output.customer_master_key_spec().map(|spec| spec.as_str());
    let spec = output
        .key_spec()
        .map(KeySpec::as_str)
        .or(older)
        .unwrap_or("unknown");
    if spec != KeySpec::Rsa2048.as_str() {
        return Err(ServiceError::Refused(format!(
            "KMS key {id} is a {spec} key; Twilio takes RSA-2048 keys only (KeySpec RSA_2048)"
        )));
    }
    if output.key_usage() != Some(&KeyUsageType::SignVerify) {
        let usage = output.key_usage().map_or("unknown", KeyUsageType::as_str);
        return Err(ServiceError::Refused(format!(
            "KMS key {id} has KeyUsage {usage}; signing needs SIGN_VERIFY"
        )));
    }
    if let Some(algorithm) = algorithm {
        let wanted = signing_algorithm(algorithm);
        if !output.signing_algorithms().contains(&wanted) {
            return Err(ServiceError::Refused(format!(
                "KMS key {id} does not offer {} (signing.algorithm {algorithm:?})",
                wanted.as_str()
            )));
        }
    }
    let der = output
        .public_key()
        .ok_or_else(|| ServiceError::Failed(format!("KMS key {id}: no public key answered")))?;
    PublicKey::from_spki_der(der.as_ref())
        .map_err(|problem| ServiceError::Refused(format!("KMS key {id} {problem}")))
}

/// KMS's name for a JWT algorithm.
fn signing_algorithm(algorithm: Algorithm) -> SigningAlgorithmSpec {
    match algorithm {
        Algorithm::Rs256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        Algorithm::Ps256 => SigningAlgorithmSpec::RsassaPssSha256,
    }
}

/// A KMS key, as a [`KeyService`]: addressed as configured (an alias is resolved by KMS at
/// every call).
#[derive(Debug)]
pub struct KmsSigner {
    service: Arc<KmsService>,
    id: String,
}

impl KeyService for KmsSigner {
    async fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let output = self
            .service
            .client
            .sign()
            .key_id(&self.id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(signing_algorithm(algorithm))
            .send()
            .await
            .map_err(|err| classify("Sign", err))?;
        output
            .signature()
            .map(|signature| signature.as_ref().to_vec())
            .ok_or_else(|| ServiceError::Failed("KMS answered Sign without a signature".into()))
    }

    async fn public_key(&self) -> Result<PublicKey, ServiceError> {
        self.service.public_key(&self.id, None).await
    }
}

/// Loads `aws-kms:ID`: checks the key (type, usage, algorithm, RSA-2048 with e = 65537) and
/// one signature.
pub(crate) async fn load(id: &str, config: &Config) -> Result<Key, RemoteLoadError> {
    let service = KmsService::for_config(config).await?;
    let failed = |source| RemoteLoadError::Service {
        key: format!("aws-kms:{id}"),
        source,
    };
    let algorithm = config.signing.algorithm;
    let limits = service.limits.clone();
    let checked = tokio::time::timeout(
        config.aws_kms.sign_timeout,
        service.public_key(id, Some(algorithm)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ServiceError::Unreachable(format!(
            "GetPublicKey: no answer within {} ms",
            config.aws_kms.sign_timeout.as_millis()
        )))
    });
    checked.map_err(failed)?;
    let description = format!(
        "AWS KMS key {id} ({})",
        signing_algorithm(algorithm).as_str()
    );
    let signer = KmsSigner {
        service,
        id: id.to_owned(),
    };
    RemoteKey::load(signer, description, Backend::AwsKms, algorithm, limits)
        .await
        .map(Key::from)
        .map_err(failed)
}

/// For `keygen --aws-kms alias/NAME`: the key `alias` names, created (RSA-2048,
/// `SIGN_VERIFY`) with the alias if none does yet; an existing key is never replaced.
/// Its public key, and `true` when created.
pub async fn create_key(
    config: &Config,
    alias: &str,
) -> Result<(PublicKey, bool), RemoteLoadError> {
    let Some(name) = alias.strip_prefix("alias/") else {
        return Err(RemoteLoadError::Settings(format!(
            "'{alias}' is not alias/NAME: a new KMS key is named by an alias"
        )));
    };
    if name.is_empty() || name.starts_with("aws/") {
        return Err(RemoteLoadError::Settings(format!(
            "'{alias}' is not an alias pkcv-proxy may create (alias/NAME, not alias/aws/…)"
        )));
    }
    let service = KmsService::for_config(config).await?;
    service
        .create_key(alias)
        .await
        .map_err(|source| RemoteLoadError::Service {
            key: format!("aws-kms:{alias}"),
            source,
        })
}

/// Codes KMS answers when the key or the caller may not sign: the account is refused.
const REFUSALS: [&str; 12] = [
    "AccessDeniedException",
    "DisabledException",
    "NotFoundException",
    "KMSInvalidStateException",
    "InvalidKeyUsageException",
    "KeyUnavailableException",
    "IncorrectKeyException",
    "InvalidGrantTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ValidationException",
];

/// What a failed call means for the key: throttled, refused, unreachable or failed, in
/// KMS's own words (its error code and message; the SDK's never hold a credential).
fn classify<E>(
    operation: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> ServiceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("an unknown error");
            let status = context.raw().status().as_u16();
            let mut said = match context.err().message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            };
            said.truncate(300);
            match code {
                "ThrottlingException" | "LimitExceededException" => ServiceError::Throttled(said),
                code if REFUSALS.contains(&code) => ServiceError::Refused(said),
                "DependencyTimeoutException" => ServiceError::Unreachable(said),
                _ if matches!(status, 502..=504) => ServiceError::Unreachable(said),
                _ => ServiceError::Failed(format!("KMS {operation}: {said} (HTTP {status})")),
            }
        }
        SdkError::TimeoutError(_) => {
            ServiceError::Unreachable(format!("KMS {operation}: timed out"))
        }
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            ServiceError::Unreachable(format!("KMS {operation}: {}", chain(&err)))
        }
        // Before sending: no credentials, no region, a bad endpoint.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            ServiceError::Refused(format!("KMS {operation}: {}", chain(&err)))
        }
        _ => ServiceError::Failed(format!("KMS {operation}: {}", chain(&err))),
    }
}

#[cfg(test)]
mod tests;
