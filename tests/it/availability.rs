//! Hostile clients cannot starve anyone (issue #20): a client that never reads its response
//! loses its connection after `response_write_timeout_ms` and frees its upstream slot;
//! upstream connections to many hosts stay within `max_connections_total` and expire when
//! idle; idle admin connections take neither port.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::{wait_until, BulkUpstream, Harness, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";

/// Opens a connection with a small receive buffer and asks for `path` through the proxy,
/// then never reads: the connection is returned to be held.
async fn request_and_never_read(h: &Harness, host: &str, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(h.proxy).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\n\r\n",
        TestAccount::a().basic_auth()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Two clients that never read a large response hold both of a host's two upstream slots;
/// once `response_write_timeout_ms` has passed with nothing written, their connections are
/// closed, the upstream connections discarded (not pooled half-read), and a third client
/// gets 200.
#[tokio::test]
async fn a_client_that_never_reads_frees_its_upstream_slot() {
    let upstream = BulkUpstream::start(32 * 1024 * 1024).await;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        upstream.route(raw);
        raw.upstream.max_connections_per_host = 2;
        raw.server.response_write_timeout_ms = 1_000;
    })
    .await;
    let big = format!("{}/big", A_ACCOUNTS.trim_end_matches(".json"));
    let _stuck = [
        request_and_never_read(&h, "api.twilio.com", &big).await,
        request_and_never_read(&h, "api.twilio.com", &big).await,
    ];
    assert!(
        wait_until(Duration::from_secs(10), || async {
            upstream.open_connections() == 2
        })
        .await,
        "the two large responses did not start"
    );
    let client = h.client();
    let served = wait_until(Duration::from_secs(15), || async {
        let response = client
            .get(h.url(A_ACCOUNTS))
            .header("authorization", TestAccount::a().basic_auth())
            .send()
            .await
            .unwrap();
        response.status() == 200
    })
    .await;
    assert!(served, "the third client never got a slot");
    assert!(
        h.metric("pkcv_proxy_client_write_timeouts_total").await >= Some(2.0),
        "{:?}",
        h.metric("pkcv_proxy_client_write_timeouts_total").await
    );
    // The stuck responses' upstream connections are closed, not kept half-read: only the
    // third request's (pooled) connection stays open.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            upstream.open_connections() <= 1
        })
        .await,
        "{} upstream connections open",
        upstream.open_connections()
    );
    h.stop().await;
}

/// 100 connections to the admin port that send nothing: at most 32 are held (the rest are
/// closed at once), those close after a few idle seconds, `/readyz` answers again, and the
/// proxy port accepts throughout.
#[tokio::test]
async fn idle_admin_connections_cannot_take_the_admin_port_or_the_proxy_port() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(h.admin()).await.unwrap());
    }
    // The admin port may take a moment to accept (and close) all of them.
    let held = held_open_within(&mut idle, 32, Duration::from_secs(3)).await;
    assert!(held <= 32, "{held} idle admin connections held open");
    assert_eq!(h.get_as(A_ACCOUNTS, &TestAccount::a()).await.status(), 200);
    let ready = wait_until(Duration::from_secs(10), || async {
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            pkcv_proxy::admin::check_ready(h.admin(), Duration::from_secs(1)),
        );
        matches!(probe.await, Ok(Ok(())))
    })
    .await;
    assert!(ready, "/readyz did not answer again");
    let held = held_open_within(&mut idle, 0, Duration::from_secs(10)).await;
    assert_eq!(held, 0, "idle admin connections stay open");
    h.stop().await;
}

/// How many of `streams` the other end still holds open (a read neither ends nor fails).
async fn held_open(streams: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let reads = streams.iter_mut().map(|stream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte));
        read.await.is_err()
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|&open| open)
        .count()
}

/// [`held_open`] once it is `at_most`, or when `timeout` has passed.
async fn held_open_within(
    streams: &mut [tokio::net::TcpStream],
    at_most: usize,
    timeout: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let held = held_open(streams).await;
        if held <= at_most || tokio::time::Instant::now() >= deadline {
            return held;
        }
    }
}

/// 60 requests to distinct `*.twilio.com` names (one wildcard `connect_to`): the upstream
/// connections open stay within `max_connections_total` (idle ones to other hosts are closed
/// to make room), every request is served, and the idle ones expire.
#[tokio::test]
async fn upstream_connections_to_many_hosts_stay_bounded_and_expire() {
    let upstream = BulkUpstream::start(0).await;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        upstream.route(raw);
        raw.upstream.max_connections_total = 8;
        raw.upstream.pool_idle_timeout_ms = 1_000;
    })
    .await;
    let client = h.client();
    let mut most = 0;
    for i in 0..60 {
        let response = client
            .get(h.url(A_ACCOUNTS))
            .header("host", format!("h{i}.twilio.com"))
            .header("authorization", TestAccount::a().basic_auth())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "h{i}: {}",
            response.text().await.unwrap()
        );
        most = most.max(upstream.open_connections());
    }
    assert!(most <= 8, "{most} upstream connections open at once");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            upstream.open_connections() == 0
        })
        .await,
        "{} idle upstream connections never expired",
        upstream.open_connections()
    );
    h.stop().await;
}

/// With every connection of `max_connections_total` busy (clients that never read), a
/// request to yet another host gets 503 79054 with `Retry-After` at once.
#[tokio::test]
async fn busy_upstream_connections_refuse_another_host_with_79054() {
    let upstream = BulkUpstream::start(32 * 1024 * 1024).await;
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        upstream.route(raw);
        raw.upstream.max_connections_total = 2;
    })
    .await;
    let big = format!("{}/big", A_ACCOUNTS.trim_end_matches(".json"));
    let _stuck = [
        request_and_never_read(&h, "a.twilio.com", &big).await,
        request_and_never_read(&h, "b.twilio.com", &big).await,
    ];
    assert!(
        wait_until(Duration::from_secs(10), || async {
            upstream.open_connections() == 2
        })
        .await,
        "the two large responses did not start"
    );
    let response = h
        .client()
        .get(h.url(A_ACCOUNTS))
        .header("host", "c.twilio.com")
        .header("authorization", TestAccount::a().basic_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = crate::support::json(response).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (503, Some(79054)),
        "{body}"
    );
    assert_eq!(upstream.open_connections(), 2);
    h.stop().await;
}
