//! The road to Twilio as `serve` travels it: DNS, TCP and TLS with the configured trust (or
//! `CONNECT` through the egress proxy), each timed, and Twilio's `Date` for the clock check.

use super::*;

/// DNS, TCP and TLS to `host` with the upstream settings, each timed; then one plain
/// DNS, TCP and TLS to `host` with the upstream settings, each timed.
pub(super) async fn reach(config: &Config, host: &str) -> Check {
    let name = format!("upstream {host}");
    match connect(config, host).await {
        Ok((_, detail)) => Check::passed(&name, None, detail),
        Err((detail, advice)) => Check::failed(&name, None, detail, advice),
    }
}

/// Twilio's `Date` from one unauthenticated `HEAD /` (when no signed call ran).
pub(super) async fn probe_date(config: &Config, host: &str) -> Option<SystemTime> {
    let (tls, _) = connect(config, host).await.ok()?;
    date_of(tls, host, config.upstream.request_timeout).await
}

pub(super) type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A verified TLS connection to `host` and how long each step took; else what failed and
/// what to do.
async fn connect(config: &Config, host: &str) -> Result<(Tls, String), (String, &'static str)> {
    let settings = &config.upstream;
    let fail = |detail: String, advice: &'static str| Err((detail, advice));
    let dialer = match settings.dialer() {
        Ok(dialer) => dialer,
        Err(err) => {
            return fail(
                format!("egress proxy: {err}"),
                "fix [upstream] proxy_auth_file or proxy_auth_env",
            )
        }
    };
    let through = settings
        .proxy
        .as_ref()
        .filter(|p| !p.no_proxy.iter().any(|n| n.matches(host)));
    if let Some(egress) = through {
        return connect_through(settings, &dialer, &egress.address, host).await;
    }
    let address = dialer.address(host, 443);
    let started = Instant::now();
    let resolved =
        tokio::time::timeout(settings.connect_timeout, tokio::net::lookup_host(&address)).await;
    let Some(ip) = resolved
        .ok()
        .and_then(Result::ok)
        .and_then(|mut a| a.next())
    else {
        return fail(
            format!("DNS: {address} does not resolve"),
            "check the resolver (/etc/resolv.conf) and the host name (connect_to)",
        );
    };
    let dns = started.elapsed();
    let started = Instant::now();
    let tcp =
        match tokio::time::timeout(settings.connect_timeout, tokio::net::TcpStream::connect(ip))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                return fail(
                    format!("TCP: {ip} ({address}): {err}"),
                    "a firewall or the network refuses port 443 to Twilio: open egress to Twilio",
                )
            }
            Err(_) => {
                return fail(
                    format!(
                        "TCP: {ip} ({address}): no answer within {} ms",
                        settings.connect_timeout.as_millis()
                    ),
                    "a firewall drops traffic to Twilio: open egress to port 443",
                )
            }
        };
    let tcp_time = started.elapsed();
    let started = Instant::now();
    let tls = match tls_handshake(settings, host, tcp).await {
        Ok(tls) => tls,
        Err(err) => return fail(format!("TLS: {err}"), "the certificate is not trusted: is a TLS-inspecting middlebox in the way? Its CA goes in upstream.extra_ca_file"),
    };
    let detail = format!(
        "DNS {} ms ({ip}), TCP {} ms, TLS {} ms",
        dns.as_millis(),
        tcp_time.as_millis(),
        started.elapsed().as_millis()
    );
    Ok((tls, detail))
}

/// As `serve` goes through the corporate proxy: `CONNECT`, then TLS to Twilio end to end.
async fn connect_through(
    settings: &crate::config::UpstreamSettings,
    dialer: &Dialer,
    proxy: &str,
    host: &str,
) -> Result<(Tls, String), (String, &'static str)> {
    let started = Instant::now();
    let tunnel = dialer.connect(host, 443).await.map_err(|err| {
        (
            format!("CONNECT {host}:443 through the egress proxy {proxy}: {err}"),
            "check [upstream] proxy and its credentials (pkcv-proxy explain 79044, 79045)",
        )
    })?;
    let tunnel_time = started.elapsed();
    let started = Instant::now();
    let tls = tls_handshake(settings, host, tunnel).await.map_err(|err| {
        (
            format!("TLS: {err}"),
            "the certificate is not trusted: is a TLS-inspecting middlebox in the way? Its CA goes in upstream.extra_ca_file",
        )
    })?;
    let detail = format!(
        "CONNECT through {proxy} {} ms, TLS {} ms",
        tunnel_time.as_millis(),
        started.elapsed().as_millis()
    );
    Ok((tls, detail))
}

async fn tls_handshake(
    settings: &crate::config::UpstreamSettings,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<Tls, String> {
    let config = upstream::tls_config(settings).map_err(|e| e.to_string())?;
    let server_name =
        rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(
        settings.request_timeout,
        connector.connect(server_name, tcp),
    )
    .await
    .map_err(|_| "no handshake within request_timeout_ms".to_owned())?
    .map_err(|e| e.to_string())
}

/// Twilio's `Date`, from the head of an answer to a plain `HEAD /` (bounded, timed out).
pub(super) async fn date_of<S>(mut stream: S, host: &str, timeout: Duration) -> Option<SystemTime>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pkcv-proxy-doctor\r\nConnection: close\r\n\r\n");
    let read = async {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 2048];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Some(head)
    };
    let head = tokio::time::timeout(timeout, read).await.ok()??;
    String::from_utf8_lossy(&head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("date")
                .then(|| value.trim().to_owned())
        })
        .and_then(|value| httpdate::parse_http_date(&value).ok())
}
