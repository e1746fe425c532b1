//! Shared test support: the SDK vectors, test accounts, and a harness that runs the proxy in
//! front of the verifying Twilio stand-in on loopback; and one helper each for a Basic
//! `Authorization` value ([`basic`]), running the binary ([`run_pkcv`]), writing a config
//! file ([`write_config`]), waiting for a state ([`wait_until`]) and watching the in-process
//! proxy's logs ([`capture_logs`]); [`tunnel`]: `CONNECT` and TLS inside it.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pkcv_proxy::app::Running;
use pkcv_proxy::config::{AccountConfig, RawConfig};
use pkcv_proxy::signing_key::Algorithm;
use pkcv_proxy::token::TokenMinter;
use pkcv_proxy::{App, Config};
use pkcv_standin::{Registry, StandIn};
use serde::Deserialize;

pub mod tunnel;

/// `tests/vectors`, what the official SDKs computed (its README says how).
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[derive(Debug, Deserialize)]
pub struct CanonicalVectors {
    pub account_sid: String,
    pub api_key_sid: String,
    pub credential_sid: String,
    pub signed_headers: Vec<String>,
    pub cases: Vec<CanonicalCase>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CanonicalCase {
    pub description: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body_base64: String,
    pub canonical_request: String,
    pub hrh: String,
    pub rqh: String,
    /// Which SDKs computed it: part of the file's shape, read by people, not by the tests.
    #[allow(dead_code)]
    pub computed_by: Vec<String>,
}

impl CanonicalCase {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("case {:?} has no {name} header", self.description))
    }

    pub fn body(&self) -> Vec<u8> {
        STANDARD.decode(&self.body_base64).unwrap()
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenVectors {
    pub tokens: Vec<TokenCase>,
}

#[derive(Debug, Deserialize)]
pub struct TokenCase {
    pub description: String,
    pub token: String,
    pub rqh: String,
    pub minted_at: u64,
}

pub fn canonical_vectors() -> CanonicalVectors {
    let path = vectors_dir().join("canonical-requests.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn token_vectors() -> TokenVectors {
    let path = vectors_dir().join("sdk-tokens.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The vectors' throwaway private key, as a private (0600) copy: the proxy refuses a key
/// others can read, and git checkouts hand files out world-readable.
pub fn test_private_key() -> PathBuf {
    private_copy(&vectors_dir().join("test-keys/pkcv-test-private.pem"))
}

/// A fixture key from `tests/fixtures`, as a private (0600) copy.
pub fn fixture_key(name: &str) -> PathBuf {
    private_copy(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

/// A copy of `source` that only its owner can read, one per source file, in a directory
/// that lives as long as the test process; it keeps the source's name, so messages still
/// name it.
pub fn private_copy(source: &std::path::Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    static COPIES: AtomicUsize = AtomicUsize::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let copy = dir.path().join(&name);
    if source.exists() && !copy.exists() {
        // Tests run side by side: each writes its own temporary file and renames it into
        // place, so no test ever reads a half-written key.
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let temporary = dir.path().join(format!(".{n}-{name}"));
        std::fs::copy(source, &temporary).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::rename(&temporary, &copy).unwrap();
    }
    copy
}

pub fn test_public_key_pem() -> Vec<u8> {
    std::fs::read(vectors_dir().join("test-keys/pkcv-test-public.pem")).unwrap()
}

/// An account known to both the stand-in and the proxy.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub account_sid: String,
    pub credential_sid: String,
    pub api_key_sid: String,
    pub secret: String,
    pub private_key_file: PathBuf,
    /// Whether the proxy config lists the API key under `api_key_sids`.
    pub listed: bool,
}

impl TestAccount {
    /// Account A: the vectors' SIDs and the shared throwaway key.
    pub fn a() -> Self {
        TestAccount {
            account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4".into(),
            credential_sid: "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d".into(),
            api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c".into(),
            secret: "not-a-real-secret".into(),
            private_key_file: test_private_key(),
            listed: true,
        }
    }

    /// Account B: a second key (PKCS#1 fixture), its API key not listed in the config.
    pub fn b() -> Self {
        TestAccount {
            account_sid: "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            credential_sid: "CRbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            api_key_sid: "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
            secret: "b-secret".into(),
            private_key_file: fixture_key("rsa-2048-pkcs1.pem"),
            listed: false,
        }
    }

    /// Its API key and secret as a Basic `Authorization` value.
    pub fn basic_auth(&self) -> String {
        basic(&self.api_key_sid, &self.secret)
    }

    pub fn public_key_pem(&self) -> Vec<u8> {
        let signer = TokenMinter::from_pem_file(
            &self.private_key_file,
            &self.credential_sid,
            Algorithm::Rs256,
        )
        .unwrap();
        let der = signer.public_key_spki_der();
        pem::encode(&pem::Pem::new("PUBLIC KEY", der)).into_bytes()
    }

    pub fn config(&self) -> AccountConfig {
        AccountConfig {
            account_sid: self.account_sid.clone(),
            credential_sid: self.credential_sid.clone(),
            private_key: pkcv_proxy::config::PrivateKey::File(self.private_key_file.clone()),
            api_key_sids: if self.listed {
                vec![self.api_key_sid.clone()]
            } else {
                vec![]
            },
        }
    }
}

pub fn registry(accounts: &[TestAccount]) -> Registry {
    let mut registry = Registry::default();
    for account in accounts {
        registry
            .add_public_key_pem(
                &account.credential_sid,
                &account.account_sid,
                &account.public_key_pem(),
            )
            .unwrap();
        registry.add_api_key(&account.api_key_sid, &account.account_sid, &account.secret);
    }
    registry
}

/// Turns on `HTTPS_PROXY` interception with a fresh CA in `dir`; returns the CA certificate.
pub fn enable_interception(raw: &mut RawConfig, dir: &std::path::Path) -> PathBuf {
    let files = pkcv_proxy::intercept::init_ca(dir, &["twilio.com".into()], 30).unwrap();
    raw.intercept.enabled = true;
    raw.intercept.ca_cert_file = Some(files.cert_file.clone());
    raw.intercept.ca_key_file = Some(files.key_file);
    files.cert_file
}

/// The proxy in front of the stand-in, both on loopback.
pub struct Harness {
    pub standin: StandIn,
    pub proxy: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The configuration the proxy runs with (write it out for CLI subprocesses).
    pub raw: RawConfig,
    server: Running,
}

impl Harness {
    /// Accounts A and B, default settings.
    pub async fn start() -> Harness {
        Self::start_with(&[TestAccount::a(), TestAccount::b()], |_| {}).await
    }

    /// The stand-in knows `accounts`; the proxy is configured for them, then `tweak`ed.
    pub async fn start_with(
        accounts: &[TestAccount],
        tweak: impl FnOnce(&mut RawConfig),
    ) -> Harness {
        let standin = StandIn::start(registry(accounts)).await.unwrap();
        Self::start_around(standin, accounts, tweak).await
    }

    /// As [`Harness::start_with`], in front of a stand-in already running (whose port
    /// something else, such as a squid, had to know first).
    pub async fn start_around(
        standin: StandIn,
        accounts: &[TestAccount],
        tweak: impl FnOnce(&mut RawConfig),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.server.listen = "127.0.0.1:0".into();
        raw.upstream.connect_timeout_ms = 2_000;
        raw.upstream.request_timeout_ms = 5_000;
        raw.server.shutdown_grace_secs = 2;
        // Tests run side by side: every proxy gets its own admin port.
        raw.server.admin_listen = "127.0.0.1:0".into();
        let ca_file = dir.path().join("standin-ca.pem");
        standin.write_ca(&ca_file).unwrap();
        raw.upstream.route_all_to(standin.addr(), ca_file);
        raw.accounts = accounts.iter().map(TestAccount::config).collect();
        tweak(&mut raw);

        let config = Config::from_raw(raw.clone()).unwrap();
        let proxy = App::build(config, None)
            .unwrap()
            .bind()
            .await
            .unwrap()
            .spawn();
        Harness {
            standin,
            proxy: proxy.addr(),
            dir,
            raw,
            server: proxy,
        }
    }

    /// Writes the proxy's configuration to a TOML file, as a user's config.
    pub fn write_config(&self) -> PathBuf {
        write_config(self.dir.path(), &toml::to_string(&self.raw).unwrap())
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `GET` through the proxy (origin-form) with an `Authorization` value.
    pub async fn get(&self, url: impl reqwest::IntoUrl, authorization: &str) -> reqwest::Response {
        self.client()
            .get(url)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` through the proxy (origin-form) with `account`'s API key.
    pub async fn get_as(&self, path: &str, account: &TestAccount) -> reqwest::Response {
        self.get(self.url(path), &account.basic_auth()).await
    }

    /// `GET` each of `paths` at once with `account`'s API key: the statuses, in order.
    pub async fn get_all_at_once(&self, paths: Vec<String>, account: &TestAccount) -> Vec<u16> {
        let client = self.client();
        let requests = paths.into_iter().map(|path| {
            let request = client
                .get(self.url(&path))
                .header("authorization", account.basic_auth());
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        });
        let mut statuses = Vec::new();
        for request in requests.collect::<Vec<_>>() {
            statuses.push(request.await.unwrap());
        }
        statuses
    }

    /// A client that talks to the proxy directly (origin-form).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// A client that uses the proxy as its `HTTP_PROXY` (absolute-form).
    pub fn proxied_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.url("")).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.stop())
            .await
            .unwrap();
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.server
            .admin_addr()
            .expect("the admin listener is enabled")
    }

    /// `GET http://admin{path}`: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = self
            .client()
            .get(format!("http://{}{path}", self.admin()))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The value of one sample in `/metrics` (the line that starts with `sample` and a
    /// space), or `None` when it is not there.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// The mutual-TLS listener's address.
    pub fn tls(&self) -> SocketAddr {
        self.server.tls_addr().expect("the TLS listener is enabled")
    }

    /// Reloads accounts at once, as `SIGHUP` does.
    pub fn reload_now(&self) {
        self.server.reload_now();
    }

    /// Starts the shutdown without waiting for the drain.
    pub fn begin_shutdown(&self) {
        self.server.begin_shutdown();
    }
}

/// The proxy binary running as a separate process (`serve`), for signals and exit codes.
/// Its stderr (the log) goes to a temporary file, so a passing test prints nothing; a
/// failing one prints the log's end when the process is dropped during the panic.
pub struct ProxyProcess {
    child: tokio::process::Child,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its admin listener.
    pub admin: SocketAddr,
    client: reqwest::Client,
    log: tempfile::NamedTempFile,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // `eprintln!` in a test thread is captured by the test harness and shown with
            // the failure.
            let pid = self
                .child
                .id()
                .map_or_else(|| "exited".to_owned(), |pid| pid.to_string());
            let log = self.log();
            let log = if log.is_empty() { "(empty)" } else { &log };
            eprintln!(
                "--- pkcv-proxy serve (pid {pid}) log, its last {LOG_TAIL} bytes at most:\n{log}"
            );
        }
    }
}

/// How much of a proxy process's log a failure shows.
const LOG_TAIL: u64 = 64 * 1024;

impl ProxyProcess {
    /// Runs `pkcv-proxy serve` with `raw` (its listen and admin addresses replaced by free
    /// loopback ports) written to `dir`, and waits until `/healthz` answers.
    pub async fn start(raw: &RawConfig, dir: &Path) -> ProxyProcess {
        Self::start_with_env(raw, dir, &[]).await
    }

    /// As [`ProxyProcess::start`], with `envs` set for the process.
    pub async fn start_with_env(
        raw: &RawConfig,
        dir: &Path,
        envs: &[(&str, &str)],
    ) -> ProxyProcess {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (listen, admin) = (free(), free());
        let mut raw = raw.clone();
        raw.server.listen = listen.to_string();
        raw.server.admin_listen = admin.to_string();
        let config = write_config(dir, &toml::to_string(&raw).unwrap());
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pkcv-proxy"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("PKCV_CONFIG")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stderr(log.as_file().try_clone().unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let process = ProxyProcess {
            child,
            listen,
            admin,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            log,
        };
        let up = wait_until(Duration::from_secs(15), || async {
            process.admin_get("/healthz").await.0 == 200
        })
        .await;
        assert!(up, "pkcv-proxy serve did not come up");
        process
    }

    /// What the process has logged so far (its stderr), the last [`LOG_TAIL`] bytes at most.
    pub fn log(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        // An independent handle: the child's offset in the file is not moved.
        let Ok(mut file) = self.log.reopen() else {
            return String::from("(the log file cannot be opened)");
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL)));
        let mut bytes = Vec::new();
        let _ = file.take(LOG_TAIL).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `GET http://admin{path}`: status and body (status 0 when it does not answer).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin);
        match self.client.get(url).send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// One sample of `/metrics`, as [`Harness::metric`].
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// `GET http://listen{path}` with an `Authorization` value: the status.
    pub async fn get(&self, path: &str, authorization: &str) -> u16 {
        let url = format!("http://{}{path}", self.listen);
        let response = self.client.get(url).header("authorization", authorization);
        response.send().await.unwrap().status().as_u16()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the proxy is running")
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) to the process: with a system call, not the
    /// `kill` program, which a slim machine may lack.
    pub fn signal(&self, name: &str) {
        use rustix::process::{kill_process, Pid, Signal};
        let signal = match name {
            "HUP" => Signal::HUP,
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            other => panic!("no signal {other} in the test support"),
        };
        let pid = self.child.id().expect("the proxy is running");
        let pid = Pid::from_raw(i32::try_from(pid).unwrap()).expect("a process id is not 0");
        kill_process(pid, signal).unwrap_or_else(|e| panic!("kill -{name} {pid:?}: {e}"));
    }

    /// Waits (at most `timeout`) for the process to exit.
    pub async fn exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("pkcv-proxy did not exit in time")
            .unwrap()
    }
}

/// A `[[clients]]` entry with this name and secret (stored as its SHA-256), limited to
/// `accounts` if any.
pub fn client_config(
    name: &str,
    secret: &str,
    accounts: &[&str],
) -> pkcv_proxy::config::ClientConfig {
    use sha2::Digest;
    pkcv_proxy::config::ClientConfig {
        name: name.into(),
        secret_sha256: Some(hex::encode(sha2::Sha256::digest(secret.as_bytes()))),
        secret_file: None,
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
    }
}

/// HTTP Basic credentials: `Basic base64(user:secret)`.
pub fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{secret}")))
}

/// Writes `toml` as the proxy config file `pkcv-proxy.toml` in `dir` (replacing any earlier
/// one) and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("pkcv-proxy.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// Runs the `pkcv-proxy` binary as a user does: `args`, then `--config config` if given, with
/// `envs` set, `PKCV_CONFIG` unset and `RUST_LOG=warn`. Async, so a stand-in or proxy serving
/// on the test's own runtime keeps answering it; killed if it runs for more than 60 s.
pub async fn run_pkcv(args: &[&str], config: Option<&Path>, envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pkcv-proxy"));
    command.args(args);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .env_remove("PKCV_CONFIG")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("pkcv-proxy {args:?} ran for more than 60 s"))
        .unwrap()
}

/// Polls `check` until it holds (`true`) or `timeout` has passed (`false`): for a state that
/// comes about in the background, such as a running proxy's account reload.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Log events captured by [`capture_logs`].
pub struct Logs {
    received: RefCell<(tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>, String)>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Whether one logged line contains all of `needles`.
    pub fn has_line(&self, needles: &[&str]) -> bool {
        self.count_lines(needles) > 0
    }

    /// How many logged lines contain all of `needles`.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        let mut received = self.received.borrow_mut();
        let (chunks, text) = &mut *received;
        while let Ok(chunk) = chunks.try_recv() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }
}

/// Captures what is logged on this thread (`info` and up) until the returned [`Logs`] is
/// dropped. `#[tokio::test]`'s runtime runs every task on the test's thread, so this sees the
/// events of a proxy the test started in-process, such as a refused reload, which has no
/// other observable effect.
pub fn capture_logs() -> Logs {
    struct Sink(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // The receiver is gone only once the test is over.
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (sender, chunks) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || Sink(sender.clone()))
        .finish();
    Logs {
        received: RefCell::new((chunks, String::new())),
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// A finished command's stdout and stderr, for assertions and failure messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A file's permission bits.
#[cfg(unix)]
pub fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A response as JSON, with its status.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// A client program (an SDK script, a recipe) as a user's app runs it: only `PATH` and `HOME`
/// from this environment, the test account's API key where the SDKs read it
/// (`TWILIO_API_KEY`, `TWILIO_API_SECRET`, `TWILIO_ACCOUNT_SID`), killed when dropped.
pub fn client_command(program: &Path) -> tokio::process::Command {
    let a = TestAccount::a();
    let mut command = tokio::process::Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
        )
        .env("TWILIO_API_KEY", &a.api_key_sid)
        .env("TWILIO_API_SECRET", &a.secret)
        .env("TWILIO_ACCOUNT_SID", &a.account_sid)
        .kill_on_drop(true);
    command
}

/// An HTTPS upstream on loopback, trusted through a CA of its own, that answers any request
/// without checking it: a path containing `/big` gets `big_bytes` of zeros, streamed as the
/// connection takes them (never held whole), anything else `{}`. It counts the connections
/// it has open, so a test sees upstream connections the proxy keeps or drops.
pub struct BulkUpstream {
    addr: SocketAddr,
    ca_file: tempfile::NamedTempFile,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BulkUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BulkUpstream {
    /// Listens on 127.0.0.1 with a certificate for Twilio's names.
    pub async fn start(big_bytes: usize) -> BulkUpstream {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let tls = pkcv_standin::tls::generate(pkcv_standin::tls::DEFAULT_NAMES).unwrap();
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), &tls.ca_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, open) = (acceptor.clone(), counted.clone());
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let service = hyper::service::service_fn(move |request| {
                            std::future::ready(Ok::<_, std::convert::Infallible>(bulk_answer(
                                &request, big_bytes,
                            )))
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        BulkUpstream {
            addr,
            ca_file,
            open,
            task,
        }
    }

    /// Points every Twilio host of `raw` at this upstream.
    pub fn route(&self, raw: &mut RawConfig) {
        raw.upstream
            .route_all_to(self.addr, self.ca_file.path().to_path_buf());
    }

    /// Connections open to it now.
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type BulkBody = http_body_util::StreamBody<
    futures_util::stream::Iter<
        std::vec::IntoIter<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    >,
>;

fn bulk_answer<B>(request: &http::Request<B>, big_bytes: usize) -> http::Response<BulkBody> {
    const CHUNK: usize = 64 * 1024;
    let zeros = bytes::Bytes::from(vec![0u8; CHUNK]);
    let frames: Vec<_> = if request.uri().path().contains("/big") {
        (0..big_bytes.div_ceil(CHUNK))
            .map(|i| {
                let length = CHUNK.min(big_bytes - i * CHUNK);
                Ok(http_body::Frame::data(zeros.slice(..length)))
            })
            .collect()
    } else {
        vec![Ok(http_body::Frame::data(bytes::Bytes::from_static(b"{}")))]
    };
    http::Response::builder()
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
        .unwrap()
}

/// Asserts a success that the stand-in verified for `account`, and returns what the
/// stand-in received (host, path, query, body length) as JSON.
pub async fn verified(
    h: &Harness,
    response: reqwest::Response,
    account: &str,
) -> serde_json::Value {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!((200..300).contains(&status), "{status}: {text}");
    let record = h
        .standin
        .records()
        .await
        .pop()
        .expect("nothing reached the stand-in");
    let outcome = record
        .outcome
        .as_ref()
        .unwrap_or_else(|r| panic!("rejected: {r}"));
    assert!(outcome.signed, "the request reached the stand-in unsigned");
    assert_eq!(outcome.account_sid, account);
    serde_json::json!({
        "verified": true,
        "account_sid": outcome.account_sid,
        "method": record.method,
        "host": record.host,
        "path": record.path,
        "query": record.query,
        "body_length": record.body.len(),
    })
}
