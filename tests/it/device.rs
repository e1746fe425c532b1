//! The whole proxy with a signing device that fails while it runs, injected through the
//! public signing-key abstraction (SoftHSM does not reliably fail open sessions when its
//! files go away): its account answers 503 `79053` and shows as degraded, the other account
//! keeps signing through the real server to the verifying stand-in, and the account recovers
//! when the device returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pkcv_proxy::config::{Config, RawConfig};
use pkcv_proxy::keys::{Account, Accounts};
use pkcv_proxy::signing_key::{
    Algorithm, Backend, Device, DeviceError, DeviceKey, DeviceKeyInfo, Key, PemKey, Retry, SignNow,
    SigningKey,
};
use pkcv_proxy::token::TokenMinter;
use pkcv_proxy::App;
use pkcv_standin::{Registry, StandIn};

const PEM: &str = include_str!("../fixtures/rsa-2048-pkcs1.pem");

/// A device that signs with a PEM key and can be switched off (every call then reports the
/// device lost) and on again.
struct Switchable {
    key: PemKey,
    on: Arc<AtomicBool>,
}

impl Device for Switchable {
    type Session = ();

    fn connect(&self) -> Result<(), DeviceError> {
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
        self.connect()?;
        self.key
            .sign(algorithm, message)
            .map_err(|err| DeviceError::Failed(Box::new(err)))
    }
}

fn switchable() -> (DeviceKey<Switchable>, Arc<AtomicBool>) {
    let on = Arc::new(AtomicBool::new(true));
    let key = PemKey::from_pem(PEM.as_bytes()).unwrap();
    let info = DeviceKeyInfo {
        description: "switchable test device".into(),
        backend: Backend::Pkcs11,
        modulus_len: key.modulus_len(),
        public_spki: key.public_key_spki_der().to_vec(),
    };
    let retry = Retry {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    let device = Switchable {
        key,
        on: on.clone(),
    };
    (DeviceKey::open(device, info, 2, retry).unwrap(), on)
}
const IN_HSM: (&str, &str, &str) = (
    "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "SKaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
);
const IN_FILE: (&str, &str, &str) = (
    "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "CRbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
);

fn account((account_sid, credential_sid, api_key): (&str, &str, &str), key: Key) -> Account {
    Account::new(
        account_sid,
        credential_sid,
        vec![api_key.into()],
        TokenMinter::new(key, credential_sid, Algorithm::Rs256),
    )
}

async fn standin() -> StandIn {
    let public = PemKey::from_pem(PEM.as_bytes()).unwrap();
    let public = pem::encode(&pem::Pem::new(
        "PUBLIC KEY",
        public.public_key_spki_der().to_vec(),
    ));
    let mut registry = Registry::default();
    for (account, credential, api_key) in [IN_HSM, IN_FILE] {
        registry
            .add_public_key_pem(credential, account, public.as_bytes())
            .unwrap();
        registry.add_api_key(api_key, account, "secret");
    }
    StandIn::start(registry).await.unwrap()
}

/// The proxy in front of `standin`, signing for one account through a flaky device and one
/// with a PEM key; the switch turns the device off and on.
async fn start(
    standin: &StandIn,
    dir: &std::path::Path,
) -> (pkcv_proxy::app::Running, Arc<AtomicBool>) {
    let mut raw = RawConfig::default();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.admin_listen = "127.0.0.1:0".into();
    raw.server.reload_interval_ms = 3_600_000;
    raw.accounts_dir = Some(dir.to_path_buf());
    let ca_file = dir.join("standin-ca.pem");
    standin.write_ca(&ca_file).unwrap();
    raw.upstream.route_all_to(standin.addr(), ca_file);
    let app = App::build(Config::from_raw(raw).unwrap(), None).unwrap();
    let (device, device_on) = switchable();
    let in_file = PemKey::from_pem(PEM.as_bytes()).unwrap();
    let accounts = [
        account(IN_HSM, Key::Blocking(Arc::new(device))),
        account(IN_FILE, Key::Inline(Arc::new(in_file))),
    ];
    app.keys().replace(Accounts::new(accounts).unwrap());
    (app.bind().await.unwrap().spawn(), device_on)
}

#[tokio::test]
async fn a_lost_device_answers_79053_for_its_account_only_and_recovers() {
    let standin = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let (running, device_on) = start(&standin, dir.path()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |(account, _, api_key): (&str, &str, &str)| {
        let url = format!(
            "http://{}/2010-04-01/Accounts/{account}/Messages.json",
            running.addr()
        );
        let auth = format!("Basic {}", STANDARD.encode(format!("{api_key}:secret")));
        let request = client.get(url).header("authorization", auth).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["code"].as_u64(), retry_after)
        }
    };
    let admin = |path: &str| {
        let url = format!("http://{}{path}", running.admin_addr().unwrap());
        let request = client.get(url).send();
        async move {
            let response = request.await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    assert_eq!(send(IN_HSM).await.0, 200);
    device_on.store(false, Ordering::SeqCst);
    // The signature that meets the dead device fails, and every one after it is refused at
    // once while the device is being reconnected.
    for _ in 0..2 {
        let (status, code, retry_after) = send(IN_HSM).await;
        assert_eq!((status, code), (503, Some(79053)));
        assert_eq!(retry_after.unwrap(), "1");
    }
    assert_eq!(
        send(IN_FILE).await.0,
        200,
        "the other account keeps signing"
    );
    let (status, ready) = admin("/readyz").await;
    assert_eq!(status, 200, "another account can sign: {ready}");
    assert!(
        ready.contains(r#""degraded":["ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]"#),
        "{ready}"
    );
    let (_, metrics) = admin("/metrics").await;
    let unavailable = r#"pkcv_proxy_sign_errors_total{account="ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",reason="unavailable"} 2"#;
    assert!(metrics.contains(unavailable), "{metrics}");

    device_on.store(true, Ordering::SeqCst);
    let mut recovered = false;
    for _ in 0..200 {
        if send(IN_HSM).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        recovered,
        "the account never signed again after its device returned"
    );
    assert!(admin("/readyz").await.1.contains(r#""degraded":[]"#));
    assert_eq!(standin.rejected(), 0);
    running.stop().await;
}
