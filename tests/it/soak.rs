//! A bounded soak (`#[ignore]`d; `.ci/run` runs it for `SOAK_SECS`, at most 120 s; 0 skips it): the
//! release-like binary under hundreds of concurrent keep-alive clients, a stream of `SIGHUP`
//! reloads and one key rotation while it runs. Every response is either verified by the
//! stand-in or a proxy error (nothing forwarded unsigned or signed with a key Twilio no
//! longer knows), and the proxy's RSS stays flat across the second half.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{run_pkcv, text, Harness, ProxyProcess, TestAccount};

const CLIENTS: usize = 200;

/// The proxy process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// One client: requests on its keep-alive connection until `until`, with a short pause.
async fn client(url: String, authorization: String, until: Instant, tally: Arc<Tally>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    while Instant::now() < until {
        let sent = client
            .get(&url)
            .header("authorization", &authorization)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
            Ok(response) => {
                // A proxy error is a Twilio-style JSON with a 790xx code; anything else is not.
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let proxy_made = body["code"]
                    .as_u64()
                    .is_some_and(|c| (79000..80000).contains(&c));
                let counter = if proxy_made {
                    &tally.refused
                } else {
                    &tally.other
                };
                counter.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => tally.other.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of SOAK_SECS seconds (default 60; 0: none); .ci/run runs it as a step of its own"]
async fn soak_with_reloads_and_a_rotation() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // `SOAK_SECS=0`: no soak. `.ci/run` sets it for its main test run (criterion's bench
    // harness, also run by `--all-targets`, takes no `--skip`) and soaks in a stage of its own.
    if secs == 0 {
        eprintln!("SOAK_SECS=0: no soak");
        return;
    }
    let a = TestAccount::a();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir_all(&accounts).unwrap();
    let h = Harness::start_with(std::slice::from_ref(&a), |raw| {
        raw.accounts_dir = Some(accounts.clone());
        raw.server.reload_interval_ms = 200;
        // The in-process proxy only hosts the stand-in: its status goes elsewhere.
        raw.server.status_file = Some(dir.path().join("in-process-status.json"));
    })
    .await;
    h.standin.set_recording(false);
    let mut raw = h.raw.clone();
    raw.server.status_file = None;
    raw.server.max_in_flight = 4096;
    let proxy = ProxyProcess::start(&raw, h.dir.path()).await;
    let pid = proxy.pid();

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tally = Arc::new(Tally::default());
    let url = format!(
        "http://{}/2010-04-01/Accounts/{}.json",
        proxy.listen, a.account_sid
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(url.clone(), a.basic_auth(), until, tally.clone())))
        .collect();

    let mut rss = Vec::new();
    let mut rotated = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.signal("HUP");
        rss.push((started.elapsed(), rss_kib(pid)));
        if !rotated && started.elapsed() >= Duration::from_secs(secs / 3) {
            rotated = true;
            rotate(&h, &raw, &a).await;
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    report_and_check(&h, &tally, &rss).await;
    proxy.signal("TERM");
    assert!(proxy.exit(Duration::from_secs(30)).await.success());
    h.stop().await;
}

/// `keys rotate` for the main account, as an operator runs it against the running proxy.
async fn rotate(h: &Harness, raw: &pkcv_proxy::config::RawConfig, a: &TestAccount) {
    let dir = h.dir.path().join("rotation");
    std::fs::create_dir_all(&dir).unwrap();
    let config = crate::support::write_config(&dir, &toml::to_string(raw).unwrap());
    let rotated = run_pkcv(
        &[
            "keys",
            "rotate",
            "--account",
            &a.account_sid,
            "--grace-secs",
            "1",
        ],
        Some(&config),
        &[
            ("TWILIO_ACCOUNT_SID", &a.account_sid),
            ("TWILIO_MAIN_KEY", &a.api_key_sid),
            ("TWILIO_MAIN_SECRET", &a.secret),
        ],
    )
    .await;
    assert!(rotated.status.success(), "{}", text(&rotated));
}

async fn report_and_check(h: &Harness, tally: &Tally, rss: &[(Duration, u64)]) {
    let (ok, refused, other) = (
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: {ok} verified, {refused} refused by the proxy, {other} other; stand-in verified {} rejected {}; RSS KiB {:?}",
        h.standin.verified(),
        h.standin.rejected(),
        rss.iter().map(|(_, kib)| kib).collect::<Vec<_>>()
    );
    assert!(ok > 1000, "too little load to mean anything: {ok}");
    assert_eq!(
        other, 0,
        "responses that were neither verified nor a proxy error"
    );
    assert_eq!(
        h.standin.rejected(),
        0,
        "a request reached Twilio unsigned or with a stale key"
    );
    // Every success was verified; the few more are the rotation's own requests.
    let verified = h.standin.verified();
    assert!(
        verified >= ok && verified - ok <= 10,
        "{ok} successes, {verified} verified"
    );
    let half = &rss[rss.len() / 2..];
    let first = half.first().map(|(_, kib)| *kib).unwrap_or(0);
    let peak = half.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
    // Flat: the second half grows by at most a fifth (allocator noise), plus 4 MiB.
    assert!(
        peak <= first + first / 5 + 4096,
        "RSS grew from {first} KiB to {peak} KiB in the second half"
    );
}
