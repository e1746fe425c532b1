//! A Twilio stand-in that checks PKCV the way Twilio does, for tests and the offline demo.
//!
//! It serves HTTPS on loopback with its own test CA and, for every request:
//! checks the API key and secret, verifies the JWT signature against the public key
//! registered for `kid`, checks `cty`, `alg`, `iss` = the Basic username, `sub` = the key's
//! account, the 300 s window and `hrh`, and recomputes `rqh` from the raw request it received
//! with its own port of twilio-java's canonicalizer ([`canonical`]) — sharing no code with the
//! proxy's signing path. A failure is a 401 with Twilio's code (20003, 20151–20153,
//! 20155–20157, 70156);
//! success echoes what it verified as JSON.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod api;
pub mod canonical;
mod clock;
mod sid;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use tokio_util::sync::{CancellationToken, DropGuard};

use canonical::ReceivedRequest;
pub use clock::Clock;
pub use sid::{random_hex, random_sid};
pub use verify::{Registry, Rejection, Verified};

/// The largest body the stand-in reads.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One request the stand-in saw, and what it concluded.
#[derive(Debug, Clone)]
pub struct Record {
    /// The method.
    pub method: String,
    /// The `Host` (or `:authority`) it was sent to.
    pub host: String,
    /// The raw path.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The body bytes.
    pub body: Bytes,
    /// The HTTP version used.
    pub version: http::Version,
    /// Which TLS connection it came on (numbered from 1 as accepted), to see pooling.
    pub connection: u64,
    /// Its `Content-Length`, if it had one.
    pub content_length: Option<u64>,
    /// Every header as received (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The verification result.
    pub outcome: Result<Verified, Rejection>,
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandInError {
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The emulated Twilio: who is known, and what was created.
struct Twilio {
    registry: Registry,
    messages: api::Messages,
}

/// An injected failure: the next `remaining` verified requests matching `method` and `path`
/// are answered with this instead.
#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path: String,
    status: StatusCode,
    answer: Injected,
    remaining: u32,
}

/// What an injected failure answers.
#[derive(Debug, Clone)]
enum Injected {
    /// A Twilio error, as JSON.
    Error(Rejection),
    /// These headers and body bytes, exactly (say, a gzip-encoded error).
    Raw {
        headers: http::HeaderMap,
        body: Bytes,
    },
}

impl Fault {
    fn response(&self) -> Response<Full<Bytes>> {
        match &self.answer {
            Injected::Error(rejection) => twilio_error(self.status, rejection),
            Injected::Raw { headers, body } => {
                let mut response = Response::new(Full::new(body.clone()));
                *response.status_mut() = self.status;
                *response.headers_mut() = headers.clone();
                response
            }
        }
    }
}

struct State {
    twilio: Mutex<Twilio>,
    faults: Mutex<Vec<Fault>>,
    clock: Clock,
    /// Seconds added to `clock` (a Twilio whose clock differs from the signer's), applied to
    /// the token-time checks and to every answer's `Date`.
    clock_offset: std::sync::atomic::AtomicI64,
    records: Mutex<Vec<Record>>,
    verified: AtomicU64,
    rejected: AtomicU64,
    page_size: std::sync::atomic::AtomicUsize,
    /// Connections still to be closed right after TCP accept, before TLS.
    drop_connections: std::sync::atomic::AtomicU32,
    accepted: AtomicU64,
    /// How long every answer is held back, in milliseconds.
    delay_ms: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Whether requests are kept in `records` (a long load test turns it off).
    recording: std::sync::atomic::AtomicBool,
}

/// A running stand-in. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<State>,
    _stop: DropGuard,
}

impl StandIn {
    /// Starts a stand-in on `127.0.0.1` (port chosen by the OS) with the system clock.
    pub async fn start(registry: Registry) -> Result<StandIn, StandInError> {
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            registry,
            Clock::System,
        )
        .await
    }

    /// Starts a stand-in on `addr` with `clock`.
    pub async fn start_with(
        addr: SocketAddr,
        registry: Registry,
        clock: Clock,
    ) -> Result<StandIn, StandInError> {
        let tls = tls::generate(tls::DEFAULT_NAMES)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            twilio: Mutex::new(Twilio {
                registry,
                messages: api::Messages::new(),
            }),
            clock,
            clock_offset: std::sync::atomic::AtomicI64::new(0),
            records: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            page_size: std::sync::atomic::AtomicUsize::new(50),
            drop_connections: std::sync::atomic::AtomicU32::new(0),
            accepted: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            recording: std::sync::atomic::AtomicBool::new(true),
            verified: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls.server_config),
            state.clone(),
            stop.clone(),
        ));
        Ok(StandIn {
            addr,
            ca_pem: tls.ca_pem,
            state,
            _stop: stop.drop_guard(),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate clients must trust to `path`.
    pub fn write_ca(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// Requests verified so far.
    pub fn verified(&self) -> u64 {
        self.state.verified.load(Ordering::SeqCst)
    }

    /// Requests rejected so far.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub async fn records(&self) -> Vec<Record> {
        self.state.records.lock().await.clone()
    }

    /// Changes what the stand-in knows (accounts, keys, enforcement).
    pub async fn update_registry(&self, update: impl FnOnce(&mut Registry)) {
        update(&mut self.state.twilio.lock().await.registry);
    }

    /// The largest page of a list the stand-in serves (50, as Twilio's default), so tests can
    /// make clients follow next-page links.
    pub fn set_page_size(&self, size: usize) {
        self.state.page_size.store(size.max(1), Ordering::SeqCst);
    }

    /// Makes the next verified `method path` request fail with Twilio error `code`, to test
    /// how a workflow reports a failure in the middle.
    pub async fn fail_next(&self, method: &str, path: &str, status: u16, code: u32, message: &str) {
        self.state.faults.lock().await.push(Fault {
            method: method.to_owned(),
            path: path.to_owned(),
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            answer: Injected::Error(Rejection {
                code,
                message: message.to_owned(),
            }),
            remaining: 1,
        });
    }

    /// Makes the next verified `method path` request be answered with `status`, `headers`
    /// and `body` exactly as given (a compressed or malformed error body, say).
    pub async fn answer_next(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: http::HeaderMap,
        body: Bytes,
    ) {
        self.state.faults.lock().await.push(Fault {
            method: method.to_owned(),
            path: path.to_owned(),
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            answer: Injected::Raw { headers, body },
            remaining: 1,
        });
    }

    /// Closes the next `count` connections right after accepting them, before TLS: the
    /// client sees a connection failure with nothing sent.
    pub fn drop_next_connections(&self, count: u32) {
        self.state.drop_connections.store(count, Ordering::SeqCst);
    }

    /// Keeps (`true`, the default) or stops keeping every request in [`StandIn::records`]:
    /// a long load test counts with [`StandIn::verified`] and [`StandIn::rejected`] instead.
    pub fn set_recording(&self, recording: bool) {
        self.state.recording.store(recording, Ordering::SeqCst);
    }

    /// The most requests it was answering at once (from the head received to the answer's
    /// head sent, `set_delay` included): what a client's per-host cap must bound.
    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Holds back every answer by `delay`, as a slow upstream does.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Shifts the stand-in's clock by `seconds` (negative: behind): its token-time checks
    /// and the `Date` of its answers, as a Twilio whose clock differs from this machine's.
    pub fn shift_clock(&self, seconds: i64) {
        self.state.clock_offset.store(seconds, Ordering::SeqCst);
    }

    /// How many TCP connections it has accepted (dropped ones included).
    pub fn connections_accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// A copy of what the stand-in knows now.
    pub async fn registry(&self) -> Registry {
        self.state.twilio.lock().await.registry.clone()
    }
}

impl State {
    /// Now, as this stand-in's (possibly shifted) clock says.
    fn now(&self) -> u64 {
        self.clock
            .now()
            .saturating_add_signed(self.clock_offset.load(Ordering::SeqCst))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections: u64 = 0;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        connections += 1;
        let connection_id = connections;
        state.accepted.store(connections, Ordering::SeqCst);
        let dropping =
            state
                .drop_connections
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if dropping.is_ok() {
            // A connection that fails before a byte of a request is sent, as a TCP reset
            // or an edge restart does.
            drop(stream);
            continue;
        }
        let acceptor = acceptor.clone();
        let state = state.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let service = service_fn(move |request| {
                let state = state.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&state, connection_id, request).await)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(
    state: &State,
    connection: u64,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(too_large) => return too_large,
    };
    let headers = received_headers(&parts);
    let host = headers
        .iter()
        .find(|(name, _)| name == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let received = ReceivedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers,
        body: &body,
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (mut response, outcome) = verify_and_answer(state, &received, &host).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let offset = state.clock_offset.load(Ordering::SeqCst);
    if offset != 0 {
        // hyper adds the real time's `Date` only when the answer has none.
        let date = std::time::UNIX_EPOCH + Duration::from_secs(state.now());
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
            response.headers_mut().insert(header::DATE, value);
        }
    }
    // Cheap: `Bytes` clones share the buffer.
    let record = record(&parts, &received, host, body.clone(), connection, outcome);
    if state.recording.load(Ordering::SeqCst) {
        state.records.lock().await.push(record);
    }
    response
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"code": 20001, "message": "body too large", "status": 413}),
        )),
    }
}

/// Every header as received, lower-case name first, with a `host` whichever HTTP version
/// carried it.
fn received_headers(parts: &http::request::Parts) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    // HTTP/2 carries the host as :authority.
    if !headers.iter().any(|(name, _)| name == "host") {
        if let Some(authority) = parts.uri.authority() {
            headers.push(("host".into(), authority.to_string()));
        }
    }
    headers
}

/// Verifies `received` and answers it. The emulated state stays locked across both, so a
/// key revoked by one request is already gone when the next is verified.
async fn verify_and_answer(
    state: &State,
    received: &ReceivedRequest<'_>,
    host: &str,
) -> (Response<Full<Bytes>>, Result<Verified, Rejection>) {
    let mut twilio = state.twilio.lock().await;
    let outcome = verify::verify_request(&twilio.registry, received, state.now());
    let response = match &outcome {
        Ok(verified) => {
            state.verified.fetch_add(1, Ordering::SeqCst);
            answer(state, &mut twilio, verified, received, host).await
        }
        Err(rejection) => {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            twilio_error(StatusCode::UNAUTHORIZED, rejection)
        }
    };
    (response, outcome)
}

/// Answers a verified request: an injected fault first, then the emulated API, else an echo.
async fn answer(
    state: &State,
    twilio: &mut Twilio,
    verified: &Verified,
    received: &ReceivedRequest<'_>,
    host: &str,
) -> Response<Full<Bytes>> {
    let request = api::ApiRequest {
        method: received.method,
        host,
        path: received.path,
        query: received.query,
        body: received.body,
        max_page_size: state.page_size.load(Ordering::SeqCst),
    };
    if let Some(answer) = take_fault(state, received).await {
        return answer;
    }
    let Twilio { registry, messages } = twilio;
    match api::dispatch(registry, messages, verified, &request) {
        Some((status, Some(json))) => json_response(status, json),
        Some((status, None)) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            response
        }
        None => echo(verified, received, host),
    }
}

/// Uses up one turn of the first fault injected for this method and path, if any.
async fn take_fault(
    state: &State,
    received: &ReceivedRequest<'_>,
) -> Option<Response<Full<Bytes>>> {
    let mut faults = state.faults.lock().await;
    let found = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method == received.method && f.path == received.path);
    found.map(|fault| {
        fault.remaining -= 1;
        fault.response()
    })
}

/// What was verified, for a path the stand-in does not emulate.
fn echo(verified: &Verified, received: &ReceivedRequest<'_>, host: &str) -> Response<Full<Bytes>> {
    let mut echo = json_response(
        StatusCode::OK,
        json!({
            "verified": true,
            "account_sid": verified.account_sid,
            "api_key_sid": verified.api_key_sid,
            "request_hash": verified.request_hash,
            "method": received.method,
            "host": host,
            "path": received.path,
            "query": received.query,
            "body_length": received.body.len(),
        }),
    );
    // A hop-by-hop header on the way back, which the proxy must not relay.
    let headers = echo.headers_mut();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("x-standin-hop"),
    );
    headers.insert("x-standin-hop", HeaderValue::from_static("1"));
    echo
}

fn record(
    parts: &http::request::Parts,
    received: &ReceivedRequest<'_>,
    host: String,
    body: Bytes,
    connection: u64,
    outcome: Result<Verified, Rejection>,
) -> Record {
    Record {
        method: received.method.to_owned(),
        host,
        path: received.path.to_owned(),
        query: received.query.to_owned(),
        content_length: parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        headers: received.headers.clone(),
        body,
        version: parts.version,
        connection,
        outcome,
    }
}

fn twilio_error(status: StatusCode, rejection: &Rejection) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({
            "code": rejection.code,
            "message": rejection.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", rejection.code),
            "status": status.as_u16(),
        }),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
