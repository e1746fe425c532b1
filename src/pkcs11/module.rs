//! PKCS#11 libraries, the tokens in them, and logging in.
//!
//! `C_Initialize` may run once per library per process, and `C_Finalize` would pull the
//! ground from under every session of every account. So each library is loaded and
//! initialized once, kept for the life of the process in a table keyed by its path, and
//! shared by every key and every reload. The table is copy-on-write (`ArcSwap`): two loads
//! racing for a new library both initialize it (the second sees "already initialized",
//! which is success) and the first to publish wins; the loser's extra handle is dropped,
//! which unloads nothing and finalizes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{Pkcs11Error, Pkcs11Uri};

/// The library at `path`, loaded and initialized on first use.
pub fn load(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<ArcSwap<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let modules = MODULES.get_or_init(ArcSwap::default);
    if let Some(module) = modules.load().get(path) {
        return Ok(module.clone());
    }
    let failed = |reason: String| Pkcs11Error::Module {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(failed("no such file".to_owned()));
    }
    let module = Pkcs11::new(path).map_err(|err| failed(err.to_string()))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of the process got there first: the library is usable all the same.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => return Err(failed(err.to_string())),
    }
    let published = modules.rcu(|current| {
        let mut next = HashMap::clone(current);
        next.entry(path.to_path_buf())
            .or_insert_with(|| module.clone());
        Arc::new(next)
    });
    // `rcu` returns the table it replaced: if another load published first, use its handle.
    Ok(published.get(path).cloned().unwrap_or(module))
}

/// The one slot whose token matches the URI's token attributes, and the token's label.
pub fn find_token(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, String), Pkcs11Error> {
    let mut present = Vec::new();
    let mut matches = Vec::new();
    for slot in module.get_slots_with_initialized_token()? {
        let info = module.get_token_info(slot)?;
        let label = info.label().trim_end().to_owned();
        let wanted = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|want| want == have.trim_end())
        };
        let fits = wanted(&uri.token, &label)
            && wanted(&uri.manufacturer, info.manufacturer_id())
            && wanted(&uri.serial, info.serial_number())
            && wanted(&uri.model, info.model())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        if fits {
            matches.push((slot, label.clone()));
        }
        present.push(label);
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Pkcs11Error::NoToken {
            uri: uri.to_string(),
            present: if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            },
        }),
        count => Err(Pkcs11Error::SeveralTokens {
            uri: uri.to_string(),
            count,
        }),
    }
}

/// Logs the application in as the token's user. Login state is per token and application,
/// shared by all its sessions, so "already logged in" is success — with the PIN the token was
/// logged in with. Another PIN cannot be checked without logging every session out, so it is
/// refused: a PIN changed on disk takes effect with a restart, and a reload reports it.
pub fn login(session: &Session, pin: &AuthPin, token: &str) -> Result<(), Pkcs11Error> {
    use secrecy::ExposeSecret;
    use sha2::Digest as _;
    static LOGGED_IN: OnceLock<ArcSwap<HashMap<String, [u8; 32]>>> = OnceLock::new();
    let logged_in = LOGGED_IN.get_or_init(ArcSwap::default);
    let digest: [u8; 32] = sha2::Sha256::digest(pin.expose_secret().as_bytes()).into();
    let remember = || {
        logged_in.rcu(|table| {
            let mut table = HashMap::clone(table);
            table.insert(token.to_owned(), digest);
            table
        });
    };
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => {
            remember();
            Ok(())
        }
        Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            match logged_in.load().get(token) {
                Some(known) if *known != digest => Err(Pkcs11Error::Login {
                    token: token.to_owned(),
                    reason: "the token is logged in with another PIN; a new PIN takes effect when the proxy restarts".to_owned(),
                }),
                _ => Ok(()),
            }
        }
        Err(Error::Pkcs11(rv, _)) => Err(Pkcs11Error::Login {
            token: token.to_owned(),
            reason: match rv {
                RvError::PinIncorrect => "the PIN is wrong (CKR_PIN_INCORRECT)".to_owned(),
                RvError::PinLocked => "the PIN is locked (CKR_PIN_LOCKED)".to_owned(),
                RvError::PinExpired => "the PIN has expired (CKR_PIN_EXPIRED)".to_owned(),
                RvError::PinLenRange => "the PIN has the wrong length".to_owned(),
                other => other.to_string(),
            },
        }),
        Err(err) => Err(err.into()),
    }
}
