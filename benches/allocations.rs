//! Heap allocations per forwarded request, on the proxy's own thread (issue #23).
//!
//! The proxy runs in-process on a thread and runtime of its own ([`proxy_thread`]) in front
//! of the Twilio stand-in, and a keep-alive client sends the same `GET` over and over. dhat
//! records every Rust allocation with its whole backtrace; the ones whose backtrace starts
//! on the proxy's thread are the proxy's, whatever library made them (hyper, rustls, tokio,
//! ours); the stand-in and the client run on the bench's main thread and are not counted.
//! aws-lc allocates with C's `malloc`, which dhat does not see: what is counted is what Rust
//! code can avoid.
//!
//! Prints the allocations per request and, for each, the innermost frame of this crate on
//! its backtrace (where in the request path it was asked for), most first. Needs line
//! tables to name frames: the dev profile has them (an optimized build counts the same
//! allocations but for the few LLVM may elide; `CARGO_PROFILE_BENCH_DEBUG=line-tables-only`
//! gives it line tables):
//!
//! ```sh
//! cargo bench --bench allocations --profile dev
//! ```
//!
//! Results: BENCHMARKS.md, "Forwarding at nginx's cost".

use std::collections::HashMap;
use std::net::SocketAddr;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use pkcv_standin::StandIn;
use support::{Harness, TestAccount};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Requests counted after the warm-up under `cargo bench`; `cargo test --all-targets` runs
/// this file too, as a quick check that it still works, with fewer.
const REQUESTS: u64 = 2_000;
const REQUESTS_UNDER_TEST: u64 = 100;
const WARM_UP: u64 = 200;

/// How many requests this run counts: `cargo bench` passes `--bench`.
fn requests() -> u64 {
    if std::env::args().any(|arg| arg == "--bench") {
        REQUESTS
    } else {
        REQUESTS_UNDER_TEST
    }
}
const PATH: &str =
    "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json?PageSize=20";

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let profile = runtime.block_on(measure());
    report(&profile);
}

/// Runs the requests under the profiler; the path of the profile it wrote.
async fn measure() -> std::path::PathBuf {
    let account = TestAccount::a();
    let standin = StandIn::start(support::registry(std::slice::from_ref(&account)))
        .await
        .expect("the stand-in");
    standin.set_recording(false);
    let (addr_sender, addr) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let proxy = std::thread::spawn({
        let account = account.clone();
        move || proxy_thread(standin, account, addr_sender, stopped)
    });
    let addr = addr.recv().expect("the proxy's address");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let url = format!("http://{addr}{PATH}");
    let send = || async {
        let response = client
            .get(&url)
            .header("authorization", account.basic_auth())
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("a body");
    };
    // The pooled upstream connection, the TLS session, the metric series: made once.
    for _ in 0..WARM_UP {
        send().await;
    }
    let file = std::env::temp_dir().join(format!("pkcv-dhat-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder()
        .file_name(&file)
        .trim_backtraces(None)
        .build();
    for _ in 0..requests() {
        send().await;
    }
    drop(profiler);
    drop(client);
    let _ = stop.send(());
    let _ = proxy.join();
    file
}

/// The proxy, alone on this thread's runtime (its connections and its upstream client's
/// tasks with it) until `stop`: every allocation it makes starts here.
fn proxy_thread(
    standin: StandIn,
    account: TestAccount,
    addr: std::sync::mpsc::Sender<SocketAddr>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the proxy's runtime");
    runtime.block_on(async move {
        let h = Harness::start_around(standin, std::slice::from_ref(&account), |_| {}).await;
        let _ = addr.send(h.proxy);
        let _ = stop.await;
        h.stop().await;
    });
}

/// Reads dhat's profile: program points (`pps`: total blocks `tbk` and bytes `tb`, frame
/// indices `fs`) and the frame table (`ftbl`).
fn report(file: &std::path::Path) {
    let text = std::fs::read_to_string(file).expect("the dhat profile");
    let _ = std::fs::remove_file(file);
    let profile: serde_json::Value = serde_json::from_str(&text).expect("dhat's JSON");
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .expect("ftbl")
        .iter()
        .map(|frame| frame.as_str().unwrap_or_default())
        .collect();
    let mut by_site: HashMap<String, u64> = HashMap::new();
    let (mut proxy, mut proxy_bytes, mut elsewhere) = (0u64, 0u64, 0u64);
    for point in profile["pps"].as_array().expect("pps") {
        let blocks = point["tbk"].as_u64().unwrap_or(0);
        let stack: Vec<&str> = point["fs"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .filter_map(|index| frames.get(usize::try_from(index.as_u64()?).ok()?))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if !stack
            .iter()
            .any(|frame| frame.contains("allocations::proxy_thread"))
        {
            elsewhere += blocks;
            continue;
        }
        proxy += blocks;
        proxy_bytes += point["tb"].as_u64().unwrap_or(0);
        *by_site.entry(site(&stack)).or_default() += blocks;
    }
    assert!(
        proxy > 0,
        "no allocation was seen on the proxy thread: build with line tables (CARGO_PROFILE_BENCH_DEBUG=line-tables-only)"
    );
    let requests = requests();
    let per_request = |count: u64| count as f64 / requests as f64;
    println!(
        "{requests} requests: {:.1} allocations ({:.0} bytes) per request on the proxy's thread, {:.1} elsewhere (the stand-in and the client)",
        per_request(proxy),
        per_request(proxy_bytes),
        per_request(elsewhere)
    );
    let mut sites: Vec<_> = by_site.into_iter().collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (site, blocks) in sites
        .iter()
        .filter(|(_, blocks)| per_request(*blocks) >= 0.05)
    {
        println!("{:>6.2}  {site}", per_request(*blocks));
    }
}

/// Frames of the allocator, of dhat and of the standard library: skipped to find who asked.
const PLUMBING: &[&str] = &[
    "[root]",
    "alloc::",
    "<alloc::",
    "core::",
    "<core::",
    "std::",
    "<std::",
    "dhat::",
    "<dhat::",
    "backtrace::",
    "<backtrace::",
    "__rust",
];

/// Where an allocation was asked for: the innermost frame of this crate and, when another
/// crate's code made it, the innermost frame outside the plumbing, e.g.
/// `pkcv_proxy::sign::finish <- http::header::map::HeaderMap<T>::insert`.
fn site(stack: &[&str]) -> String {
    // dhat's frames read "0x…: function (file:line:col)".
    let name = |frame: &str| -> String {
        let function = frame.split_once(": ").map_or(frame, |(_, rest)| rest);
        let function = function.split(" (").next().unwrap_or(function);
        function.replace("::{{closure}}", "")
    };
    let names: Vec<String> = stack.iter().map(|frame| name(frame)).collect();
    let ours = names.iter().find(|name| name.contains("pkcv_proxy::"));
    let innermost = names
        .iter()
        .find(|name| !PLUMBING.iter().any(|prefix| name.starts_with(prefix)));
    match (ours, innermost) {
        (Some(ours), Some(innermost)) if ours != innermost => format!("{ours} <- {innermost}"),
        (Some(ours), _) => ours.clone(),
        (None, Some(innermost)) => innermost.clone(),
        (None, None) => "?".to_owned(),
    }
}
