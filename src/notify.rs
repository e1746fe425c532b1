//! Telling systemd what the proxy is doing (`Type=notify`): `READY=1` once the listeners are
//! bound and the first load of accounts is done, `RELOADING=1` then `READY=1` around a
//! reload, `STOPPING=1` when the drain begins, and a `STATUS=` line with what it signs for.
//! Nothing happens where `NOTIFY_SOCKET` is unset (anywhere but under systemd).

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "cannot notify systemd");
    }
}

fn status(accounts: usize) -> String {
    format!("signing for {accounts} account(s)")
}

/// Listening, with the first accounts loaded.
pub(crate) fn ready(accounts: usize) {
    send(&[NotifyState::Ready, NotifyState::Status(&status(accounts))]);
}

/// A reload has begun.
pub(crate) fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// A reload has ended (`accounts` when it loaded, `None` when the previous set stays).
pub(crate) fn reloaded(accounts: Option<usize>) {
    match accounts {
        Some(accounts) => send(&[NotifyState::Ready, NotifyState::Status(&status(accounts))]),
        None => send(&[
            NotifyState::Ready,
            NotifyState::Status("the last reload failed: the previous accounts stay in use"),
        ]),
    }
}

/// The drain has begun.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}
