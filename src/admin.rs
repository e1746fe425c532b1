//! The admin listener: `GET /healthz`, `GET /readyz` and `GET /metrics` on a port of its
//! own (`server.admin_listen`, default `127.0.0.1:9090`).
//!
//! It is unauthenticated and serves no secrets: account and credential SIDs are counted,
//! never listed with key material. It stays up while the proxy drains after `SIGTERM`, so an
//! orchestrator sees `/readyz` turn 503 and stops sending traffic before the process exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::keepalive::{Activity, Deadlines, Guarded, Tracked};
use crate::keys::KeyStore;
use crate::metrics::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::shutdown::Shutdown;

/// Whether the proxy should get traffic, and why not.
#[derive(Debug)]
pub(crate) struct Readiness {
    keys: Arc<KeyStore>,
    draining: AtomicBool,
    warnings: Vec<String>,
    /// Settings a reload saw changed that only a restart applies (from the reloader).
    restart_needed: Arc<arc_swap::ArcSwap<Vec<String>>>,
}

impl Readiness {
    /// Ready while an account can sign and until [`Readiness::start_draining`];
    /// `warnings` are shown either way.
    pub(crate) fn new(keys: Arc<KeyStore>, warnings: Vec<String>) -> Readiness {
        Readiness {
            keys,
            draining: AtomicBool::new(false),
            warnings,
            restart_needed: Arc::default(),
        }
    }

    /// Where the reloader reports settings that changed but need a restart.
    pub(crate) fn restart_needed(&self) -> Arc<arc_swap::ArcSwap<Vec<String>>> {
        self.restart_needed.clone()
    }

    /// From now on, not ready: the proxy is shutting down.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `/readyz`'s status and JSON body.
    pub(crate) fn report(&self) -> (StatusCode, serde_json::Value) {
        let accounts = self.keys.snapshot();
        // What a key in a service last said: refused, changed, or not answering.
        let key_problems: Vec<serde_json::Value> = accounts
            .iter()
            .filter_map(|account| {
                let problem = account.minter.key().info().problem()?;
                Some(json!({ "account": account.account_sid, "problem": problem }))
            })
            .collect();
        let mut degraded: Vec<&str> = accounts
            .iter()
            .filter(|account| {
                !account.can_sign() || account.minter.key().info().problem().is_some()
            })
            .map(|account| account.account_sid.as_str())
            .collect();
        degraded.sort_unstable();
        let signing = accounts.len() - degraded.len();
        let reason = if self.draining.load(Ordering::SeqCst) {
            Some("draining: the proxy is shutting down")
        } else if accounts.is_empty() {
            Some("no accounts are configured (is accounts_dir empty?)")
        } else if signing == 0 {
            Some("no account can sign right now")
        } else {
            None
        };
        // Accounts the last reload could not apply (kept at their previous version, or left
        // out): the SID and the cause, which names files, never their contents.
        let not_loaded: Vec<serde_json::Value> = accounts
            .problems()
            .map(|problem| {
                json!({
                    "account": problem.account_sid,
                    "error": problem.error,
                    "kept_previous": problem.kept_previous,
                })
            })
            .collect();
        let mut body = json!({
            "ready": reason.is_none(),
            "accounts": accounts.len(),
            "degraded": degraded,
            "not_loaded": not_loaded,
            "key_problems": key_problems,
            "warnings": self.warnings,
            "restart_needed": **self.restart_needed.load(),
        });
        let status = match reason {
            Some(reason) => {
                body["reason"] = json!(reason);
                StatusCode::SERVICE_UNAVAILABLE
            }
            None => StatusCode::OK,
        };
        (status, body)
    }
}

/// What the admin listener serves.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Admin connections held at once; beyond, a new one is closed at once. Probes and scrapes
/// need a handful; the budget of open files reserves exactly this many for the admin port
/// (see `app::fit_open_files`), so neither port can starve the other of descriptors.
pub(crate) const ADMIN_CONNECTIONS: usize = 32;

/// An admin connection that sends no request head within this (from connecting, or from the
/// end of its last response) is closed: probes are small, and idle connections would
/// otherwise hold the few places above.
const ADMIN_IDLE: Duration = Duration::from_secs(5);

impl Admin {
    /// Serves until `stop` fires. Each connection is HTTP/1.1 with short head and idle
    /// deadlines, at most [`ADMIN_CONNECTIONS`] at once.
    pub(crate) async fn serve(self, listener: TcpListener, stop: Shutdown) {
        let mut builder = http1::Builder::new();
        // The deadlines are kept by `keepalive`, which tells idle from slow.
        builder.header_read_timeout(None);
        let places = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
        let mut accepting = stop.clone();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = accepting.recv() => return,
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let activity = Activity::new();
            let (admin, requests) = (self.clone(), activity.clone());
            let service = service_fn(move |request| {
                let (admin, guard) = (admin.clone(), requests.request());
                async move {
                    let response = admin.answer(&request);
                    Ok::<_, Infallible>(response.map(|body| Guarded::new(body, guard)))
                }
            });
            let io = TokioIo::new(Tracked::new(stream, activity.clone()));
            let connection = Deadlines::new(
                builder.serve_connection(io, service),
                activity,
                ADMIN_IDLE,
                ADMIN_IDLE,
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = connection.run(stop).await;
                drop(place);
            });
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                79091,
                "the admin port answers GET and HEAD only",
            );
        }
        match request.uri().path() {
            "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            "/readyz" => {
                let (status, mut body) = self.readiness.report();
                // Details only: Twilio refusing a setup does not make the proxy unready.
                body["twilio_rejections"] = self.metrics.rejections().readyz_details();
                respond(status, "application/json", body.to_string())
            }
            "/metrics" => respond(StatusCode::OK, METRICS_CONTENT_TYPE, self.metrics.encode()),
            _ => error(
                StatusCode::NOT_FOUND,
                79090,
                "the admin port serves /healthz, /readyz and /metrics",
            ),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A refusal in the proxy's Twilio-style JSON shape.
fn error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": crate::error::more_info(code),
        "status": status.as_u16(),
    });
    respond(status, "application/json", body.to_string())
}

/// `pkcv-proxy healthcheck`: whether the admin port at `address` answers `/readyz` with 200.
pub async fn check_ready(address: SocketAddr, timeout: Duration) -> Result<(), String> {
    let probe = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|err| format!("cannot connect to the admin port {address}: {err}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("{address}: {err}"))?;
        tokio::spawn(connection);
        let request = Request::get("/readyz")
            .header(header::HOST, address.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("{address}: {err}"))?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!(
                "not ready ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            ))
        }
    };
    tokio::time::timeout(timeout, probe).await.map_err(|_| {
        format!(
            "the admin port {address} did not answer within {} s",
            timeout.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{account, A, B, K1, K2};
    use crate::keys::{Account, Accounts, KeyStore};
    use crate::signing_key::{Algorithm, Key, SignNow};
    use crate::token::TokenMinter;

    /// A device lost while running shows its account as degraded; readiness stays up while
    /// another account can sign, and the account is back once the device is. (What a request
    /// gets meanwhile is the signing step's test, in `sign`.)
    #[test]
    fn a_lost_device_degrades_only_its_account_until_it_returns() {
        use crate::signing_key::testing::flaky;
        use std::sync::atomic::Ordering;

        let (key, device_on, _) = flaky();
        let key = Arc::new(key);
        let in_hsm = Account::new(
            A,
            "CR00000000000000000000000000000001",
            vec![K1.into()],
            TokenMinter::new(
                Key::Blocking(key.clone()),
                "CR00000000000000000000000000000001",
                Algorithm::Rs256,
            ),
        );
        let store = Arc::new(KeyStore::new(
            Accounts::new([in_hsm, account(B, &[K2])]).unwrap(),
        ));
        let readiness = Readiness::new(store.clone(), vec![]);
        assert_eq!(readiness.report().0, http::StatusCode::OK);
        let device = store.snapshot().get(A).unwrap().clone();

        device_on.store(false, Ordering::SeqCst);
        assert!(key.sign(Algorithm::Rs256, b"a.b").is_err());
        let (status, body) = readiness.report();
        assert_eq!(
            status,
            http::StatusCode::OK,
            "another account can still sign"
        );
        assert_eq!(body["degraded"], serde_json::json!([A]));

        device_on.store(true, Ordering::SeqCst);
        for _ in 0..300 {
            if device.can_sign() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(readiness.report().1["degraded"], serde_json::json!([]));
    }

    #[test]
    fn readiness_fails_when_no_account_can_sign() {
        use crate::signing_key::testing::flaky;
        use std::sync::atomic::Ordering;
        let (key, device_on, _) = flaky();
        let key = Arc::new(key);
        let only = Account::new(
            A,
            "CR00000000000000000000000000000001",
            vec![],
            TokenMinter::new(
                Key::Blocking(key.clone()),
                "CR00000000000000000000000000000001",
                Algorithm::Rs256,
            ),
        );
        let store = Arc::new(KeyStore::new(Accounts::new([only]).unwrap()));
        let readiness = Readiness::new(store.clone(), vec![]);
        device_on.store(false, Ordering::SeqCst);
        assert!(key.sign(Algorithm::Rs256, b"a.b").is_err());
        let (status, body) = readiness.report();
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["degraded"], serde_json::json!([A]));
    }
}
