//! The real pkcv-proxy binary, run as a separate process against the loopback upstream.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::procfs::{self, Usage};
use crate::rsa::KEY_PEM;
use crate::upstream::{Upstream, HOST};

/// The account the proxy signs for (fake SIDs; the upstream checks nothing).
const ACCOUNT_SID: &str = "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4";
const CREDENTIAL_SID: &str = "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d";

/// A running proxy.
pub(crate) struct Proxy {
    child: Child,
    pid: u32,
    pub(crate) listen: SocketAddr,
    admin: SocketAddr,
    /// Config, key and CA file; removed when the proxy is dropped.
    _dir: tempfile::TempDir,
    /// The key service holding the key (OpenBao, moto), if the key is in one.
    _key_service: Option<Child>,
}

impl Proxy {
    /// Writes a config for `upstream`, starts `binary serve` and waits until `/readyz` is 200.
    pub(crate) async fn start(
        binary: &Path,
        upstream: &Upstream,
        mut settings: Settings,
        services: KeyServices<'_>,
    ) -> anyhow::Result<Proxy> {
        let dir = tempfile::Builder::new().prefix("pkcv-bench-").tempdir()?;
        let listen = free_port()?;
        let admin = free_port()?;
        let ports = Ports { listen, admin };
        let key_service = if let Some(bao) = services.openbao {
            let (child, addr) = start_openbao(bao, dir.path()).await?;
            settings.vault = Some(addr);
            Some(child)
        } else if let Some(moto) = services.moto {
            let (child, addr) = start_moto(moto).await?;
            settings.kms = Some(addr);
            Some(child)
        } else {
            None
        };
        let config = write_files(dir.path(), upstream, ports, settings)?;
        if settings.vault.is_some() {
            service_keygen(binary, &config, dir.path(), "--vault-transit", "bench").await?;
        }
        if settings.kms.is_some() {
            service_keygen(binary, &config, dir.path(), "--aws-kms", "alias/bench").await?;
        }
        let mut command = Command::new(binary);
        if settings.kms.is_some() {
            command.envs(AWS_ENV);
        }
        if settings.pkcs11_softhsm {
            command.env("SOFTHSM2_CONF", softhsm_token(binary, dir.path())?);
        }

        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Only the file configures it: RUST_LOG and PKCV_* would override it.
        command.env_remove("RUST_LOG");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PKCV_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the proxy exited at once"))?;
        let mut proxy = Proxy {
            child,
            pid,
            listen,
            admin,
            _dir: dir,
            _key_service: key_service,
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the proxy exited during start-up ({status})");
            }
            if let Ok((StatusCode::OK, _)) = get(self.admin, "/readyz").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the proxy was not ready after 30 s")
    }

    /// CPU time and memory so far.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procfs::usage(Some(self.pid))
    }

    /// One unlabelled sample from `/metrics`, e.g. `pkcv_proxy_upstream_connections_opened_total`.
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, text) = get(self.admin, "/metrics").await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .ok_or_else(|| anyhow::anyhow!("/metrics has no {name}"))?
            .trim()
            .parse()
            .map_err(Into::into)
    }

    /// SIGTERM, then up to 10 s for the drain (shutdown_grace_secs is 1), then SIGKILL.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid)?)
            .ok_or_else(|| anyhow::anyhow!("pid 0"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// What the benchmark sets in the proxy's config beyond the fixed parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The most clients any step runs: connection and in-flight caps are set above it.
    pub(crate) max_clients: usize,
    /// `upstream.http2 = true`.
    pub(crate) http2: bool,
    /// `signing.pem_on_pool = true`.
    pub(crate) pem_on_pool: bool,
    /// The key in a SoftHSM2 token, signing through PKCS#11.
    pub(crate) pkcs11_softhsm: bool,
    /// The key in Vault transit, on the OpenBao server at this address.
    pub(crate) vault: Option<SocketAddr>,
    /// The key in AWS KMS, on the moto server at this address.
    pub(crate) kms: Option<SocketAddr>,
    /// `server.max_in_flight`, if set (else far above the clients).
    pub(crate) max_in_flight: Option<usize>,
    /// `server.worker_threads`, if set.
    pub(crate) worker_threads: Option<usize>,
}

/// An OpenBao dev server on a free loopback port (root token `bench`, in memory) with the
/// transit engine enabled; the token is written to `dir/vault-token` for the proxy.
async fn start_openbao(bao: &Path, dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let addr = free_port()?;
    let child = Command::new(bao)
        .args(["server", "-dev", "-dev-root-token-id=bench"])
        .arg(format!("-dev-listen-address={addr}"))
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let call = |path: &'static str| {
        let mut request = Request::post(path)
            .header(header::HOST, addr.to_string())
            .header("x-vault-token", "bench");
        let body = if path == "/v1/sys/mounts/transit" {
            request = request.header(header::CONTENT_TYPE, "application/json");
            r#"{"type":"transit"}"#
        } else {
            ""
        };
        request.body(body.to_owned())
    };
    for attempt in 0.. {
        match send(addr, call("/v1/sys/mounts/transit")?).await {
            Ok(status) if status.is_success() => break,
            Ok(status) => anyhow::bail!("OpenBao refused to enable transit: {status}"),
            Err(_) if attempt < 200 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => anyhow::bail!("OpenBao did not come up on {addr}: {err}"),
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("vault-token"))?
        .write_all(b"bench")?;
    Ok((child, addr))
}

/// The key services a run may start: the programs to start them with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyServices<'a> {
    /// `bao`, for a key in Vault transit.
    pub(crate) openbao: Option<&'a Path>,
    /// `moto_server`, for a key in AWS KMS.
    pub(crate) moto: Option<&'a Path>,
}

/// Static test credentials, and never the instance-metadata address: moto checks no
/// signature, and only loopback is reached.
const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_ACCESS_KEY_ID", "bench"),
    ("AWS_SECRET_ACCESS_KEY", "bench"),
    ("AWS_REGION", "us-east-1"),
];

/// moto's server on a free loopback port, once it accepts connections.
async fn start_moto(moto: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let addr = free_port()?;
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    for _ in 0..300 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok((child, addr));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("moto_server did not listen on {addr} within 30 s")
}

/// One request with a small body, its status.
async fn send(addr: SocketAddr, request: Request<String>) -> anyhow::Result<StatusCode> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = request.map(|body| http_body_util::Full::new(Bytes::from(body)));
    Ok(sender.send_request(request).await?.status())
}

/// The key in the service, made by the proxy's own `keygen --vault-transit` / `--aws-kms`.
async fn service_keygen(
    binary: &Path,
    config: &Path,
    dir: &Path,
    flag: &str,
    name: &str,
) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .args(["keygen", flag, name, "--out-dir"])
        .arg(dir.join("public"))
        .arg("--config")
        .arg(config)
        .envs(AWS_ENV)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "keygen {flag}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// SoftHSM2's module as Debian installs it.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token store in `dir` with one token and an RSA-2048 key generated in it by
/// the proxy's own `keygen --pkcs11`; returns the `SOFTHSM2_CONF` to run the proxy with.
fn softhsm_token(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let pin = dir.join("hsm-pin");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pin)?
        .write_all(b"1234\n")?;
    let run = |program: &Path, args: &[&str]| -> anyhow::Result<()> {
        let output = std::process::Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    run(
        Path::new("softhsm2-util"),
        &[
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "12345678",
        ],
    )?;
    let uri = format!(
        "pkcs11:token=bench;object=bench?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
        pin.display()
    );
    let public = dir.join("public");
    run(
        binary,
        &[
            "keygen",
            "--pkcs11",
            &uri,
            "--out-dir",
            &public.display().to_string(),
        ],
    )?;
    Ok(conf)
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    listen: SocketAddr,
    admin: SocketAddr,
}

/// A loopback port free right now (the proxy binds it a moment later).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn write_files(
    dir: &Path,
    upstream: &Upstream,
    ports: Ports,
    settings: Settings,
) -> anyhow::Result<PathBuf> {
    // The proxy refuses a key file that others may read.
    let key = dir.join("pkcv-private.pem");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)?
        .write_all(KEY_PEM.as_bytes())?;
    let ca = dir.join("upstream-ca.pem");
    std::fs::write(&ca, &upstream.ca_pem)?;
    let config = dir.join("pkcv-proxy.toml");
    std::fs::write(
        &config,
        config_text(&key, &ca, upstream.addr, ports, settings),
    )?;
    Ok(config)
}

fn config_text(
    key: &Path,
    ca: &Path,
    upstream: SocketAddr,
    ports: Ports,
    settings: Settings,
) -> String {
    let Ports { listen, admin } = ports;
    let max_clients = settings.max_clients;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\""
    );
    // Room for every client at once: the benchmark measures signing, not admission.
    let _ = writeln!(
        text,
        "max_connections = {}\nmax_in_flight = {}\nshutdown_grace_secs = 1",
        (4 * max_clients).max(10_000),
        settings
            .max_in_flight
            .unwrap_or((4 * max_clients).max(4_096))
    );
    // Only when asked: a proxy from before the setting existed refuses unknown keys.
    if let Some(threads) = settings.worker_threads {
        let _ = writeln!(text, "worker_threads = {threads}");
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "[upstream]\nextra_ca_file = {}\nconnect_to = {{ \"{HOST}\" = \"{upstream}\" }}",
        toml_string(ca)
    );
    // Only when asked: a proxy from before the setting existed refuses unknown keys.
    if settings.http2 {
        let _ = writeln!(text, "http2 = true");
    }
    let _ = writeln!(text);
    if settings.pem_on_pool {
        let _ = writeln!(text, "[signing]\npem_on_pool = true\n");
    }
    if let Some(vault) = settings.vault {
        let token = key.with_file_name("vault-token");
        let _ = writeln!(
            text,
            "[vault]\naddress = \"http://{vault}\"\ntoken_file = {}\n",
            toml_string(&token)
        );
    }
    if let Some(kms) = settings.kms {
        let _ = writeln!(text, "[aws_kms]\nendpoint_url = \"http://{kms}\"\n");
    }
    let _ = writeln!(text, "[log]\nlevel = \"warn\"\n");
    let _ = writeln!(
        text,
        "[[accounts]]\naccount_sid = \"{ACCOUNT_SID}\"\ncredential_sid = \"{CREDENTIAL_SID}\""
    );
    if settings.pkcs11_softhsm {
        let pin = key.with_file_name("hsm-pin");
        let uri = format!(
            "pkcs11:token=bench;object=bench?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
            pin.display()
        );
        let _ = writeln!(text, "private_key = {}", toml_string(Path::new(&uri)));
    } else if settings.vault.is_some() {
        let _ = writeln!(text, "private_key = \"vault-transit:bench\"");
    } else if settings.kms.is_some() {
        let _ = writeln!(text, "private_key = \"aws-kms:alias/bench\"");
    } else {
        let _ = writeln!(text, "private_key_file = {}", toml_string(key));
    }
    text
}

fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A plain HTTP/1.1 GET to the admin listener.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The binary to run: `explicit`, or target/release/pkcv-proxy, built first unless `no_build`.
pub(crate) fn binary(explicit: Option<&Path>, no_build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let args = [
            "build",
            "--release",
            "-p",
            "pkcv-proxy",
            "--no-default-features",
            "--bin",
            "pkcv-proxy",
        ];
        eprintln!("building the proxy: cargo {}", args.join(" "));
        let status = std::process::Command::new(cargo)
            .args(args)
            .current_dir(&root)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cargo build of pkcv-proxy failed ({status})"
        );
    }
    // A relative CARGO_TARGET_DIR is relative to where cargo ran: the workspace root.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let binary = target.join("release/pkcv-proxy");
    anyhow::ensure!(
        binary.is_file(),
        "{} does not exist: build it with `cargo build --release -p pkcv-proxy --no-default-features`",
        binary.display()
    );
    Ok(binary.canonicalize().unwrap_or(binary))
}
