use super::*;
use crate::signing_key::{Algorithm, Key};

const PEM: &str = include_str!("../../tests/fixtures/rsa-2048-pkcs1.pem");
pub(crate) const A: &str = "AC00000000000000000000000000000001";
pub(crate) const B: &str = "AC00000000000000000000000000000002";
pub(crate) const K1: &str = "SK00000000000000000000000000000001";
pub(crate) const K2: &str = "SK00000000000000000000000000000002";
const K3: &str = "SK00000000000000000000000000000003";

/// An account `sid` with the fixture key, listing `keys`.
pub(crate) fn account(sid: &str, keys: &[&str]) -> Account {
    let credential = "CR00000000000000000000000000000001";
    Account::new(
        sid,
        credential,
        keys.iter().map(|k| k.to_string()).collect(),
        TokenMinter::from_pem(PEM.as_bytes(), credential, Algorithm::Rs256).unwrap(),
    )
}

fn pick(accounts: &Accounts, key: &str, path: Option<&str>) -> Result<String, ProxyError> {
    accounts.select(key, path).map(|a| a.account_sid.clone())
}

#[test]
fn selection_rules() {
    let two = Accounts::new([account(A, &[K1]), account(B, &[])]).unwrap();
    // The listing account wins, even on the other account's path.
    assert_eq!(pick(&two, K1, Some(B)).unwrap(), A);
    assert_eq!(pick(&two, K1, None).unwrap(), A);
    // Unlisted key: the path's account, if it allows any key.
    assert_eq!(pick(&two, K2, Some(B)).unwrap(), B);
    assert!(matches!(
        pick(&two, K2, Some(A)),
        Err(ProxyError::ApiKeyNotAllowed { .. })
    ));
    assert!(matches!(
        pick(&two, K2, Some("AC0000000000000000000000000000000f")),
        Err(ProxyError::AccountNotConfigured(_))
    ));
    assert!(matches!(
        pick(&two, K2, None),
        Err(ProxyError::AmbiguousAccount)
    ));

    let one = Accounts::new([account(A, &[K1, K2])]).unwrap();
    assert_eq!(pick(&one, K2, None).unwrap(), A);
    assert!(matches!(
        pick(&one, K3, None),
        Err(ProxyError::ApiKeyNotAllowed { .. })
    ));

    assert!(matches!(
        pick(&Accounts::default(), K1, None),
        Err(ProxyError::NoAccounts)
    ));
}

#[test]
fn a_key_under_two_accounts_is_refused() {
    let err = Accounts::new([account(A, &[K1]), account(B, &[K1])]).unwrap_err();
    assert!(matches!(err, KeyStoreError::ApiKeyListedTwice { .. }));
}

/// A reload with one HSM token down: the HSM account, unchanged, keeps its live key
/// (nothing is asked of the token), a new PEM account is applied beside it; had the HSM
/// account changed, its previous version would keep signing. The HSM key is the scripted
/// device, and the loader fails every `pkcs11:` key as a token that is down would.
#[test]
fn a_reload_with_a_token_down_still_applies_an_unrelated_new_account() {
    use crate::config::RawConfig;
    use crate::signing_key::testing::flaky;
    use std::sync::atomic::Ordering::SeqCst;

    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("b.pem");
    std::fs::write(&pem, PEM).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let credential = "CR00000000000000000000000000000001";
    let in_hsm = AccountConfig {
        account_sid: A.into(),
        credential_sid: credential.into(),
        private_key: PrivateKey::Pkcs11(Box::new("pkcs11:token=t;object=o".parse().unwrap())),
        api_key_sids: vec![K1.into()],
    };
    let new_pem = AccountConfig {
        account_sid: B.into(),
        credential_sid: credential.into(),
        private_key: PrivateKey::File(pem),
        api_key_sids: vec![K2.into()],
    };
    let raw = RawConfig {
        accounts: vec![in_hsm.clone(), new_pem],
        ..RawConfig::default()
    };
    let config = Config::from_raw(raw).unwrap();
    let (device, _on, connects) = flaky();
    let device = Key::Blocking(Arc::new(device));
    let live = Arc::new(Account {
        source: Some(source(&in_hsm, &config)),
        ..Account::new(
            A,
            credential,
            vec![K1.into()],
            TokenMinter::new(device, credential, Algorithm::Rs256),
        )
    });
    let previous = Accounts::index([live.clone()]).unwrap();
    let token_down = |entry: &AccountConfig, config: &Config| match entry.private_key {
        PrivateKey::File(_) => Account::load(entry, config),
        _ => Err(KeyStoreError::AccountListedTwice("token down".into())),
    };
    let connected = connects.load(SeqCst);

    let reloaded = Accounts::reload_with(&config, &previous, token_down).unwrap();
    assert!(
        Arc::ptr_eq(reloaded.get(A).unwrap(), &live),
        "the live HSM key was kept"
    );
    assert_eq!(connects.load(SeqCst), connected);
    assert!(reloaded.get(B).is_some(), "the new PEM account was applied");
    assert_eq!(reloaded.problems().count(), 0);
    let outcomes: Vec<_> = reloaded
        .outcomes()
        .iter()
        .map(|l| l.outcome.clone())
        .collect();
    assert_eq!(outcomes, [LoadOutcome::Unchanged, LoadOutcome::Loaded]);

    // The HSM account changed while its token is down: the previous version keeps signing.
    let raw = RawConfig {
        accounts: vec![AccountConfig {
            api_key_sids: vec![K1.into(), K2.into()],
            ..in_hsm
        }],
        ..RawConfig::default()
    };
    let changed = Config::from_raw(raw).unwrap();
    let reloaded = Accounts::reload_with(&changed, &previous, token_down).unwrap();
    assert!(Arc::ptr_eq(reloaded.get(A).unwrap(), &live));
    let problem = reloaded.problems().next().unwrap();
    assert!(
        problem.kept_previous && problem.account_sid == A,
        "{problem:?}"
    );
    // A new account that does not load is left out, and said so.
    let empty = Accounts::default();
    let reloaded = Accounts::reload_with(&changed, &empty, token_down).unwrap();
    assert!(reloaded.get(A).is_none());
    assert!(!reloaded.problems().next().unwrap().kept_previous);
}

#[test]
fn replace_swaps_whole_snapshots() {
    let store = KeyStore::new(Accounts::new([account(A, &[])]).unwrap());
    let before = store.snapshot();
    store.replace(Accounts::new([account(B, &[])]).unwrap());
    assert!(before.get(A).is_some(), "a held snapshot is unaffected");
    assert!(store.snapshot().get(A).is_none());
    assert!(store.snapshot().get(B).is_some());
}
