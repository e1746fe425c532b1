use super::*;

#[test]
fn proxy_urls_are_http_host_port_without_credentials() {
    assert_eq!(
        proxy_address("k", "http://proxy.corp:3128").unwrap(),
        "proxy.corp:3128"
    );
    assert_eq!(
        proxy_address("k", "http://10.0.0.1:8080/").unwrap(),
        "10.0.0.1:8080"
    );
    for bad in [
        "https://proxy:3128",
        "socks5://proxy:1080",
        "proxy:3128",
        "http://proxy",
        "http://proxy:3128/path",
        "http://:3128",
    ] {
        assert!(
            matches!(
                proxy_address("k", bad),
                Err(EgressConfigError::NotAProxyUrl { .. })
            ),
            "{bad}"
        );
    }
    let err = proxy_address("upstream.proxy", "http://alice:s3cret@proxy:3128").unwrap_err();
    assert!(matches!(err, EgressConfigError::CredentialsInUrl { .. }));
    let text = err.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("alice"),
        "{text}"
    );
    assert!(text.contains("<redacted>@proxy:3128"), "{text}");
}

#[test]
fn auth_sources_are_exclusive_and_need_a_proxy_or_none_is_set() {
    let file = Path::new("/run/proxy-auth");
    assert!(matches!(
        settings(Some("http://p:3128"), Some(file), Some("VAR"), &[]),
        Err(EgressConfigError::AuthSources)
    ));
    assert_eq!(settings(None, None, None, &[]).unwrap(), None);
    let set = settings(
        Some("http://p:3128"),
        None,
        Some("VAR"),
        &["*.internal".into()],
    )
    .unwrap()
    .unwrap();
    assert_eq!(set.address, "p:3128");
    assert!(set.no_proxy[0].matches("a.internal"));
    assert!(matches!(
        settings(Some("http://p:3128"), None, None, &["not a host".into()]),
        Err(EgressConfigError::NoProxyPattern(_))
    ));
}

#[test]
fn the_process_environment_is_read_only_as_asked() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let (mut proxy, mut no_proxy) = (None, vec![]);
    apply_env(
        &mut proxy,
        &mut no_proxy,
        env(&[
            ("HTTPS_PROXY", "proxy.corp:3128"),
            ("NO_PROXY", ".internal, 10.0.0.0/8,localhost"),
        ]),
    )
    .unwrap();
    assert_eq!(proxy.as_deref(), Some("http://proxy.corp:3128"));
    assert_eq!(
        no_proxy,
        ["internal", "*.internal", "localhost", "*.localhost"]
    );
    // The config's own proxy wins; `*` turns it off.
    let mut proxy = Some("http://mine:3128".to_owned());
    apply_env(
        &mut proxy,
        &mut vec![],
        env(&[("https_proxy", "http://other:1")]),
    )
    .unwrap();
    assert_eq!(proxy.as_deref(), Some("http://mine:3128"));
    apply_env(&mut proxy, &mut vec![], env(&[("NO_PROXY", "*")])).unwrap();
    assert_eq!(proxy, None);
    let err = apply_env(
        &mut None,
        &mut vec![],
        env(&[("HTTPS_PROXY", "http://bob:hunter2@proxy:3128")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("HTTPS_PROXY"));
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn credentials_become_a_sensitive_basic_value_and_are_never_shown() {
    let value = basic("user:pa:ss", "upstream.proxy_auth_env").unwrap();
    assert!(value.is_sensitive());
    assert_eq!(value, "Basic dXNlcjpwYTpzcw==");
    assert!(basic("no-colon", "x").is_err());
    assert!(basic(":nouser", "x").is_err());
    let proxy = EgressProxy {
        address: "p:3128".into(),
        authorization: Some(value),
        no_proxy: vec![],
    };
    let shown = format!("{proxy:?}");
    assert!(
        shown.contains("<redacted>") && !shown.contains("dXNlc"),
        "{shown}"
    );
}

async fn answer(bytes: &'static [u8]) -> Result<TcpStream, EgressError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await;
        let _ = socket.write_all(bytes).await;
        // Keep the connection open for a moment, as a proxy would.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let proxy = EgressProxy {
        address,
        authorization: None,
        no_proxy: vec![],
    };
    proxy
        .open("api.twilio.com:443", Duration::from_secs(5))
        .await
}

#[tokio::test]
async fn the_answer_head_is_bounded_and_read_for_what_it_says() {
    assert!(answer(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok());
    assert!(matches!(
        answer(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
            .await,
        Err(EgressError::AuthRequired {
            sent_credentials: false,
            ..
        })
    ));
    assert!(matches!(
        answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno!").await,
        Err(EgressError::Refused { status: 403, .. })
    ));
    let huge: &'static [u8] =
        Vec::leak([b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'x'; 10_000]].concat());
    assert!(matches!(
        answer(huge).await,
        Err(EgressError::Broken { problem, .. }) if problem.contains("larger than")
    ));
    assert!(matches!(
        answer(b"SSH-2.0-OpenSSH\r\n\r\n").await,
        Err(EgressError::Broken { .. })
    ));
    assert!(matches!(
        answer(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03").await,
        Err(EgressError::Broken { .. })
    ));
}
