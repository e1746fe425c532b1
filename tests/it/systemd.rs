//! Readiness for systemd (`Type=notify`): with `NOTIFY_SOCKET` set, the proxy says `READY=1`
//! only once it answers on its port, `RELOADING=1` then `READY=1` around a `SIGHUP` reload,
//! and `STOPPING=1` when it begins to drain.

use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::support::{Harness, ProxyProcess, TestAccount};

/// The next notification, within 10 s.
async fn next(socket: &UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("no notification within 10 s")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn the_proxy_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let a = TestAccount::a();
    let h = Harness::start_with(std::slice::from_ref(&a), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut raw = h.raw.clone();
    raw.server.reload_interval_ms = 3_600_000;
    let notify = socket_path.to_str().unwrap();
    let proxy =
        ProxyProcess::start_with_env(&raw, h.dir.path(), &[("NOTIFY_SOCKET", notify)]).await;

    let ready = next(&socket).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=signing for 1 account(s)"), "{ready}");
    // Ready means serving: the port answers.
    let path = format!("/2010-04-01/Accounts/{}.json", a.account_sid);
    assert_eq!(proxy.get(&path, &a.basic_auth()).await, 200);

    proxy.signal("HUP");
    assert_eq!(next(&socket).await.trim(), "RELOADING=1");
    let reloaded = next(&socket).await;
    assert!(reloaded.lines().any(|l| l == "READY=1"), "{reloaded}");

    proxy.signal("TERM");
    let stopping = next(&socket).await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(proxy.exit(Duration::from_secs(10)).await.success());
    h.stop().await;
}
