//! Running it in production: the admin port and its metrics after known traffic, readiness
//! during a drain, `SIGHUP` through the real binary, Kubernetes-style Secret mounts, the
//! caps on connections and requests, the idempotent retry, and the idle and head deadlines.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{json, wait_until, Harness, ProxyProcess, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";

/// Reads one HTTP/1.1 response with a `Content-Length` body: status, head, body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(read > 0, "the connection closed before a response");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the connection closed inside the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    (status, head, buffer[head_end..head_end + length].to_vec())
}

/// How long until the peer closes `stream` (reads return 0), at most `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(limit, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => None,
    }
}

/// A POST whose head and half its body are sent: a request held in flight until the test
/// writes the rest, `dy=Hello`.
async fn request_in_flight(h: &Harness) -> TcpStream {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let head = format!(
        "POST /2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 18\r\n\r\nTo=%2B1&Bo",
        h.proxy,
        TestAccount::a().basic_auth()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            h.metric("pkcv_proxy_requests_in_flight").await == Some(1.0)
        })
        .await,
        "the request never got in flight"
    );
    stream
}

#[tokio::test]
async fn admin_endpoints_and_metrics_after_known_traffic() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    for _ in 0..2 {
        assert_eq!(h.get_as(A_ACCOUNTS, &a).await.status(), 200);
    }
    assert_eq!(h.get_as("/example.com/x", &a).await.status(), 403);

    assert_eq!(h.admin_get("/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = h.admin_get("/readyz").await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["accounts"], 2);
    assert_eq!(ready["degraded"], serde_json::json!([]));
    assert_eq!(ready["warnings"], serde_json::json!([]));

    for (sample, value) in [
        (
            r#"pkcv_proxy_requests_total{host="*.twilio.com",method="GET",status="200"}"#,
            2.0,
        ),
        (
            r#"pkcv_proxy_requests_total{host="none",method="GET",status="403"}"#,
            1.0,
        ),
        (r#"pkcv_proxy_rejected_total{code="79010"}"#, 1.0),
        (
            r#"pkcv_proxy_sign_duration_seconds_count{backend="pem"}"#,
            2.0,
        ),
        ("pkcv_proxy_request_duration_seconds_count", 3.0),
        ("pkcv_proxy_upstream_duration_seconds_count", 2.0),
        ("pkcv_proxy_accounts_loaded", 2.0),
        ("pkcv_proxy_requests_in_flight", 0.0),
        ("pkcv_proxy_tunnels_open", 0.0),
        // Two requests one after the other share one pooled upstream connection.
        ("pkcv_proxy_upstream_connections_opened_total", 1.0),
    ] {
        assert_eq!(h.metric(sample).await, Some(value), "{sample}");
    }
    let skew = h.metric("pkcv_proxy_clock_skew_seconds").await.unwrap();
    assert!(skew.abs() <= 2.0, "the stand-in shares this clock: {skew}");
    let version = format!(
        r#"pkcv_proxy_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(h.metric(&version).await, Some(1.0));
    assert!(
        h.metric("pkcv_proxy_key_last_reload_timestamp_seconds")
            .await
            .unwrap()
            > 1.6e9
    );

    let (status, body) = h.admin_get("/nope").await;
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, error["code"].as_u64()), (404, Some(79090)));
    let post = h
        .client()
        .post(format!("http://{}/metrics", h.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(json(post).await.1["code"], 79091);
    h.stop().await;
}

#[tokio::test]
async fn request_ids_travel_both_ways_and_the_proxy_port_serves_no_admin_paths() {
    let h = Harness::start().await;
    let a = TestAccount::a();
    let response = h
        .client()
        .get(h.url(A_ACCOUNTS))
        .header("authorization", a.basic_auth())
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let record = h.standin.records().await.pop().unwrap();
    assert!(record
        .headers
        .contains(&("x-request-id".into(), "trace-42".into())));
    // An ID a log cannot hold safely is replaced, not passed on.
    let response = h
        .client()
        .get(h.url(A_ACCOUNTS))
        .header("authorization", a.basic_auth())
        .header("x-request-id", "x".repeat(129))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let record = h.standin.records().await.pop().unwrap();
    assert!(record.headers.contains(&("x-request-id".into(), id)));

    // `/healthz` on the proxy port is a Twilio path like any other: signed and forwarded.
    let (status, body) = json(h.get_as("/healthz", &a).await).await;
    assert_eq!(
        (status, body["verified"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(body["path"], "/healthz");

    // Twilio's own 429 reaches the client as Twilio sent it.
    h.standin
        .fail_next("GET", A_ACCOUNTS, 429, 20429, "Too Many Requests")
        .await;
    let (status, body) = json(h.get_as(A_ACCOUNTS, &a).await).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (429, Some(20429)),
        "{body}"
    );
    h.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_during_the_drain_while_requests_in_flight_finish() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.shutdown_grace_secs = 10;
    })
    .await;
    let mut held = request_in_flight(&h).await;
    h.begin_shutdown();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (status, body) = h.admin_get("/readyz").await;
            status == 503 && body.contains("draining")
        })
        .await,
        "/readyz did not turn 503 during the drain"
    );
    // No new connections once draining.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            TcpStream::connect(h.proxy).await.is_err()
        })
        .await,
        "the listener still accepts during the drain"
    );
    // The request in flight finishes, verified.
    held.write_all(b"dy=Hello").await.unwrap();
    let (status, _, body) = read_response(&mut held).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    h.stop().await;
}

#[tokio::test]
async fn connection_cap_closes_new_connections_and_recovers() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.max_connections = 2;
    })
    .await;
    let first = TcpStream::connect(h.proxy).await.unwrap();
    let _second = TcpStream::connect(h.proxy).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            h.metric("pkcv_proxy_connections_open").await == Some(2.0)
        })
        .await
    );
    let mut third = TcpStream::connect(h.proxy).await.unwrap();
    assert!(
        closed_after(&mut third, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection beyond max_connections was kept"
    );
    assert_eq!(
        h.metric(r#"pkcv_proxy_rejected_total{code="79051"}"#).await,
        Some(1.0)
    );
    drop(first);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            h.metric("pkcv_proxy_connections_open").await == Some(1.0)
        })
        .await
    );
    let mut fourth = TcpStream::connect(h.proxy).await.unwrap();
    let request = format!(
        "GET {A_ACCOUNTS} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        h.proxy,
        TestAccount::a().basic_auth()
    );
    fourth.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut fourth).await.0, 200);
    h.stop().await;
}

#[tokio::test]
async fn in_flight_cap_answers_503_with_retry_after_then_serves_again() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.max_in_flight = 1;
    })
    .await;
    let a = TestAccount::a();
    let mut held = request_in_flight(&h).await;
    let response = h.get_as(A_ACCOUNTS, &a).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = json(response).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (503, Some(79050)),
        "{body}"
    );
    held.write_all(b"dy=Hello").await.unwrap();
    assert_eq!(read_response(&mut held).await.0, 201);
    assert_eq!(h.get_as(A_ACCOUNTS, &a).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_with_a_fresh_token_and_posts_never() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let a = TestAccount::a();
    // The first connection fails before a byte is sent: the GET is signed anew and resent.
    h.standin.drop_next_connections(1);
    assert_eq!(h.get_as(A_ACCOUNTS, &a).await.status(), 200);
    assert_eq!(h.standin.connections_accepted(), 2);
    assert_eq!(h.standin.verified(), 1);
    assert_eq!(
        h.metric("pkcv_proxy_upstream_connections_opened_total")
            .await,
        Some(2.0)
    );

    // A POST on a host with no pooled connection is not sent twice: 502, nothing arrives.
    h.standin.drop_next_connections(1);
    let response = h
        .client()
        .post(h.url("/accounts.twilio.com/v1/Credentials/PublicKeys"))
        .header("authorization", a.basic_auth())
        .form(&[("FriendlyName", "x")])
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (502, Some(79040)),
        "{body}"
    );
    assert_eq!(h.standin.connections_accepted(), 3);
    assert_eq!(h.standin.records().await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout_and_slow_heads_after_the_head_deadline() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.server.idle_timeout_secs = 1;
        raw.server.header_read_timeout_secs = 3;
    })
    .await;
    let mut idle = TcpStream::connect(h.proxy).await.unwrap();
    let request = format!(
        "GET {A_ACCOUNTS} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        h.proxy,
        TestAccount::a().basic_auth()
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let closed = closed_after(&mut idle, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "{closed:?}"
    );

    // A head that has begun gets the (longer) head deadline, not the idle one.
    let mut slow = TcpStream::connect(h.proxy).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: api.twilio.com\r\n")
        .await
        .unwrap();
    let closed = closed_after(&mut slow, Duration::from_secs(6))
        .await
        .unwrap();
    assert!(
        closed >= Duration::from_millis(2700) && closed < Duration::from_millis(4500),
        "{closed:?}"
    );
    h.stop().await;
}

/// Lays out `files` the way Kubernetes' atomic writer mounts a Secret: a timestamped
/// directory holding the files (mode 0440), `..data` pointing at it, and one symlink per
/// file through `..data`. A second call swaps `..data` atomically to a new directory.
fn mount_secret(dir: &Path, generation: &str, files: &[(&str, &[u8])]) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let real = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&real).unwrap();
    for (name, contents) in files {
        let path = real.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let staged = dir.join("..data_tmp");
    symlink(format!("..{generation}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

fn account_toml(account: &TestAccount, key_file: &Path) -> Vec<u8> {
    format!(
        "account_sid = \"{}\"\ncredential_sid = \"{}\"\nprivate_key_file = \"{}\"\n",
        account.account_sid,
        account.credential_sid,
        key_file.display()
    )
    .into_bytes()
}

#[tokio::test]
async fn kubernetes_secret_mounts_load_and_reload_on_a_data_swap() {
    let (a, b) = (TestAccount::a(), TestAccount::b());
    let secret = tempfile::tempdir().unwrap();
    let key = |account: &TestAccount| std::fs::read(&account.private_key_file).unwrap();
    let a_files: [(&str, &[u8]); 2] = [
        (
            "a.toml",
            &account_toml(&a, &secret.path().join("a-key.pem")),
        ),
        ("a-key.pem", &key(&a)),
    ];
    mount_secret(secret.path(), "2026_11_29_a", &a_files);
    let status_file = secret.path().join("..status.json");
    let h = Harness::start_with(&[a.clone(), b.clone()], |raw| {
        raw.accounts.clear();
        raw.accounts_dir = Some(secret.path().to_path_buf());
        raw.server.reload_interval_ms = 100;
        raw.server.status_file = Some(status_file.clone());
    })
    .await;
    // A's key is a 0440 file behind two symlinks, readable through the proxy's own group.
    assert_eq!(h.get_as(A_ACCOUNTS, &a).await.status(), 200);

    // The Secret is updated: B arrives, and `..data` is swapped atomically.
    let b_path = "/2010-04-01/Accounts/ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.json";
    let b_files: [(&str, &[u8]); 4] = [
        a_files[0],
        a_files[1],
        (
            "b.toml",
            &account_toml(&b, &secret.path().join("b-key.pem")),
        ),
        ("b-key.pem", &key(&b)),
    ];
    mount_secret(secret.path(), "2026_11_29_b", &b_files);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            h.metric("pkcv_proxy_accounts_loaded").await == Some(2.0)
        })
        .await,
        "the ..data swap was not picked up"
    );
    assert_eq!(h.get_as(b_path, &b).await.status(), 200);
    let status: Value = serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(
        status["accounts"][&b.account_sid],
        b.credential_sid.as_str()
    );

    // A world-readable key in the next version is refused; the previous set stays.
    mount_secret(secret.path(), "2026_11_29_c", &b_files);
    let b_key = secret.path().join("..2026_11_29_c/b-key.pem");
    std::fs::set_permissions(&b_key, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    std::fs::write(
        secret.path().join("..2026_11_29_c/b.toml"),
        account_toml(&b, &b_key),
    )
    .unwrap();
    h.reload_now();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            h.metric(r#"pkcv_proxy_account_loads_total{backend="pem",result="failed"}"#)
                .await
                >= Some(1.0)
        })
        .await,
        "a world-readable key was not refused"
    );
    // Only that account is held back, at its previous version, and says so.
    assert_eq!(h.get_as(b_path, &b).await.status(), 200);
    let (status, ready) = h.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["not_loaded"][0]["account"], b.account_sid.as_str());
    assert_eq!(ready["not_loaded"][0]["kept_previous"], true);
    assert!(
        ready["not_loaded"][0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("b-key.pem")),
        "{ready}"
    );
    h.stop().await;
}

#[tokio::test]
async fn sighup_reloads_at_once_and_a_bad_reload_keeps_the_previous_accounts() {
    let (a, b) = (TestAccount::a(), TestAccount::b());
    let accounts_dir = tempfile::tempdir().unwrap();
    let accounts = accounts_dir.path().to_path_buf();
    std::fs::write(
        accounts.join("a.toml"),
        account_toml(&a, &a.private_key_file),
    )
    .unwrap();
    // The in-process proxy only hosts the stand-in and the config the binary starts from.
    let h = Harness::start_with(&[a.clone(), b.clone()], |raw| {
        raw.accounts.clear();
        raw.accounts_dir = Some(accounts.clone());
        raw.server.status_file = Some(accounts.join("in-process-status.json"));
    })
    .await;
    let mut raw = h.raw.clone();
    // Only SIGHUP may cause a reload within this test.
    raw.server.reload_interval_ms = 3_600_000;
    raw.server.status_file = None;
    let proxy = ProxyProcess::start(&raw, h.dir.path()).await;
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    let b_path = format!("/2010-04-01/Accounts/{}.json", b.account_sid);
    assert_eq!(
        proxy.get(&b_path, &b.basic_auth()).await,
        403,
        "B is not configured yet"
    );

    std::fs::write(
        accounts.join("b.toml"),
        account_toml(&b, &b.private_key_file),
    )
    .unwrap();
    proxy.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(10), || async {
        proxy
            .metric(r#"pkcv_proxy_key_reloads_total{result="success"}"#)
            .await
            == Some(1.0)
    });
    assert!(reloaded.await, "SIGHUP did not reload");
    assert_eq!(proxy.metric("pkcv_proxy_accounts_loaded").await, Some(2.0));
    assert_eq!(proxy.get(&b_path, &b.basic_auth()).await, 200);

    std::fs::write(accounts.join("broken.toml"), "account_sid = 1").unwrap();
    proxy.signal("HUP");
    let refused = wait_until(Duration::from_secs(10), || async {
        proxy
            .metric(r#"pkcv_proxy_key_reloads_total{result="failure"}"#)
            .await
            == Some(1.0)
    });
    assert!(refused.await, "the bad reload was not counted");
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    assert_eq!(
        proxy.get(&b_path, &b.basic_auth()).await,
        200,
        "a bad reload replaced the accounts"
    );

    // A setting only a restart applies: the reload says so, in the log and in /readyz.
    std::fs::remove_file(accounts.join("broken.toml")).unwrap();
    let file = h.dir.path().join("pkcv-proxy.toml");
    let mut written: toml::Value =
        toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    written["upstream"]["request_timeout_ms"] = toml::Value::Integer(12_345);
    std::fs::write(&file, toml::to_string(&written).unwrap()).unwrap();
    proxy.signal("HUP");
    let flagged = wait_until(Duration::from_secs(10), || async {
        proxy
            .admin_get("/readyz")
            .await
            .1
            .contains(r#""restart_needed":["[upstream]"]"#)
    });
    assert!(flagged.await, "{}", proxy.admin_get("/readyz").await.1);
    assert_eq!(proxy.get(&b_path, &b.basic_auth()).await, 200);

    proxy.signal("TERM");
    let exit = proxy.exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    h.stop().await;
}

#[tokio::test]
async fn upstream_connections_per_host_are_bounded_and_reused() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.upstream.max_connections_per_host = 2;
    })
    .await;
    let a = TestAccount::a();
    let pages = (0..20).map(|i| format!("{A_ACCOUNTS}?Page={i}")).collect();
    let statuses = h.get_all_at_once(pages, &a).await;
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    assert_eq!(h.standin.verified(), 20);
    let records = h.standin.records().await;
    let connections: std::collections::HashSet<u64> =
        records.iter().map(|r| r.connection).collect();
    assert!(
        connections.len() <= 2,
        "{} upstream connections",
        connections.len()
    );
    assert!(records.iter().all(|r| r.version == http::Version::HTTP_11));
    assert_eq!(
        h.metric("pkcv_proxy_upstream_connections_opened_total")
            .await,
        Some(connections.len() as f64)
    );
    h.stop().await;
}

/// `max_connections_per_host` holds exactly with requests on both runtime threads: 20
/// requests sent together, each held 50 ms by the stand-in, never reach it more than 2 at a
/// time, and all are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_cap_holds_exactly_under_concurrent_requests() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.upstream.max_connections_per_host = 2;
    })
    .await;
    h.standin.set_delay(Duration::from_millis(50));
    let a = TestAccount::a();
    let pages = (0..20).map(|i| format!("{A_ACCOUNTS}?Page={i}")).collect();
    let statuses = h.get_all_at_once(pages, &a).await;
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    assert_eq!(h.standin.peak_in_flight(), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_request_that_finds_every_upstream_connection_busy_gets_503() {
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.upstream.max_connections_per_host = 1;
        raw.upstream.connect_timeout_ms = 300;
    })
    .await;
    let a = TestAccount::a();
    h.standin.set_delay(Duration::from_millis(1500));
    let slow = tokio::spawn({
        let request = h
            .client()
            .get(h.url(A_ACCOUNTS))
            .header("authorization", a.basic_auth());
        async move { request.send().await.unwrap().status().as_u16() }
    });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            h.metric("pkcv_proxy_upstream_connections_opened_total")
                .await
                == Some(1.0)
        })
        .await
    );
    let started = Instant::now();
    let response = h.get_as(A_ACCOUNTS, &a).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = json(response).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (503, Some(79052)),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap(), 200);
    h.standin.set_delay(Duration::ZERO);
    assert_eq!(h.get_as(A_ACCOUNTS, &a).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn signatures_made_on_the_signing_pool_verify() {
    let h = Harness::start_with(&[TestAccount::a(), TestAccount::b()], |raw| {
        raw.signing.pem_on_pool = true;
        raw.signing.pool_threads = 2;
    })
    .await;
    let a = TestAccount::a();
    let pages = (0..16).map(|i| format!("{A_ACCOUNTS}?Page={i}")).collect();
    let statuses = h.get_all_at_once(pages, &a).await;
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    assert_eq!((h.standin.verified(), h.standin.rejected()), (16, 0));
    h.stop().await;
}

/// `server.worker_threads` sizes the runtime `serve` runs on (reported on `/metrics`), and
/// a proxy on one worker still signs and forwards.
#[tokio::test]
async fn worker_threads_size_the_serving_runtime() {
    let h = Harness::start_with(&[TestAccount::a()], |_| {}).await;
    let workers = "pkcv_proxy_runtime_workers";
    for (configured, expected) in [(1, 1.0), (3, 3.0)] {
        let mut raw = h.raw.clone();
        raw.server.worker_threads = configured;
        let dir = tempfile::tempdir().unwrap();
        let proxy = ProxyProcess::start(&raw, dir.path()).await;
        assert_eq!(proxy.metric(workers).await, Some(expected));
        assert_eq!(
            proxy.get(A_ACCOUNTS, &TestAccount::a().basic_auth()).await,
            200
        );
    }
    // The in-process harness runs on the test's runtime: one worker, as #[tokio::test] has.
    assert_eq!(h.metric(workers).await, Some(1.0));
    h.stop().await;
}

#[tokio::test]
async fn a_fresh_proxy_exports_every_static_series_at_zero() {
    let h = Harness::start().await;
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    // Before any request: the series `rate()` and alerts need exist, at zero.
    for series in [
        r#"pkcv_proxy_rejected_total{code="79006"}"#,
        r#"pkcv_proxy_rejected_total{code="79040"}"#,
        r#"pkcv_proxy_rejected_total{code="79051"}"#,
        r#"pkcv_proxy_rejected_total{code="79053"}"#,
        r#"pkcv_proxy_key_reloads_total{result="success"}"#,
        r#"pkcv_proxy_key_reloads_total{result="failure"}"#,
        r#"pkcv_proxy_sign_duration_seconds_count{backend="pem"}"#,
        r#"pkcv_proxy_sign_duration_seconds_count{backend="pkcs11"}"#,
    ] {
        assert!(
            text.lines().any(|line| line == format!("{series} 0")),
            "{series} is not at 0:\n{text}"
        );
    }
    // Every signing backend, whatever the config uses (exhaustive: a new backend does not
    // compile here until it is handled).
    use pkcv_proxy::signing_key::Backend;
    for backend in [
        Backend::Pem,
        Backend::Pkcs11,
        Backend::AwsKms,
        Backend::VaultTransit,
    ] {
        match backend {
            Backend::Pem | Backend::Pkcs11 | Backend::AwsKms | Backend::VaultTransit => {
                let series = format!(
                    r#"pkcv_proxy_sign_duration_seconds_count{{backend="{}"}} 0"#,
                    backend.as_str()
                );
                assert!(text.lines().any(|line| line == series), "{series}:\n{text}");
            }
        }
    }
    // Open label sets are not listed ahead: no account, host or Twilio code.
    assert!(!text.contains("pkcv_proxy_requests_total{"), "{text}");
    assert!(!text.contains("account=\""), "{text}");
    h.stop().await;
}

/// A broken account file is read once per version: polling does not read it again (and count
/// another failed reload) until it changes, so a huge or broken file costs nothing while it
/// stays as it is.
#[tokio::test]
async fn a_broken_account_file_is_not_read_again_until_it_changes() {
    let accounts = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.accounts_dir = Some(accounts.path().to_path_buf());
        raw.server.reload_interval_ms = 100;
    })
    .await;
    let failures = r#"pkcv_proxy_key_reloads_total{result="failure"}"#;
    std::fs::write(accounts.path().join("broken.toml"), "account_sid = [").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            h.metric(failures).await >= Some(1.0)
        })
        .await,
        "the broken file was never tried"
    );
    // Ten polling intervals: the same broken file is not tried again.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(h.metric(failures).await, Some(1.0));
    // Changed (still broken): tried once more.
    std::fs::write(accounts.path().join("broken.toml"), "account_sid = [[").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            h.metric(failures).await == Some(2.0)
        })
        .await,
        "the changed file was not tried"
    );
    assert_eq!(h.get_as(A_ACCOUNTS, &TestAccount::a()).await.status(), 200);
    h.stop().await;
}
