//! pkcv-proxy: a signing forward proxy for Twilio's Public Key Client Validation (PKCV).
//!
//! Unmodified clients send plain API-key requests; the proxy normalizes each one, signs
//! exactly what it forwards with a `Twilio-Client-Validation` JWT and sends it to Twilio
//! over verified TLS.
//!
//! # Layout
//!
//! [`app`] is the one assembly path: it builds everything from a validated [`Config`], binds,
//! serves and drains, for `serve`, the demo and the tests alike. From there the request path
//! reads top to bottom, one module per step:
//!
//! - `server`: the listener loop; one task per connection; `CONNECT` to `connect`, every
//!   other request to `proxy`.
//! - `connect`: `CONNECT` — refused, intercepted (TLS terminated with a local CA, each
//!   request inside handed to `proxy` like any other) or, for hosts named for it, passed
//!   through.
//! - `proxy`: one request: strip hop-by-hop headers (`hop`), resolve and sign ([`sign`]),
//!   buffer and hash the body ([`body`]), forward ([`upstream`]); one log line each
//!   (`access_log`).
//! - [`sign`]: resolve a request to a [`sign::Target`] — [`route`] (which Twilio host; the
//!   allow-list that keeps the proxy from ever becoming an open proxy), [`auth`] (the API key
//!   from HTTP Basic auth), [`normalize`] (path and query in a form every SDK canonicalizes
//!   alike), [`keys`] (which account signs, one snapshot per request) — then mint the token
//!   over exactly what is forwarded.
//! - [`canonical`]: the canonical request string and its SHA-256 (`rqh`); [`token`]: the JWT
//!   around one signature; [`signing_key`]: that signature, from a PEM key in memory or from a
//!   device that may block and go away ([`pkcs11`]: an HSM, whose signatures run on the
//!   signing pool and whose loss answers 503 `79053` for its account only).
//! - [`error`]: every error a client can get, turned into Twilio-style JSON in one place.
//!
//! Around it: [`config`] (a pure, validated value: figment file + env), [`intercept`] (the
//! local CA), [`keygen`], [`shutdown`] (one signal and the drain), [`telemetry`] (logging),
//! and [`workflow`], the subaccount and key-rotation workflow under PKCV: a client of
//! [`sign`] and [`upstream`], not part of the request path.
//!
//! # Which way dependencies point
//!
//! Downward only: `app` → `server` → `connect` → `proxy` → `sign` → `route`, `auth`,
//! `normalize`, `keys` → `canonical`, `token` → `pkcs11` → `signing_key`, and `error`, with
//! `config` a value every layer
//! may read. No module reaches up; the test suite checks that no import cycle exists.
//!
//! The Twilio stand-in the tests and the demo verify against is another crate
//! (`crates/standin`, package `pkcv-standin`) that shares no code with this one, so it is an
//! independent check of the signing; the binary carries it only with the default `demo`
//! feature.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub(crate) mod access_log;
pub mod admin;
pub(crate) mod admission;
pub mod app;
pub mod auth;
pub mod body;
pub mod canonical;
pub mod clients;
pub(crate) mod clock_skew;
pub mod config;
pub(crate) mod connect;
pub mod error;
pub mod files;
pub mod head;
pub(crate) mod hop;
pub mod intercept;
pub(crate) mod keepalive;
pub mod keygen;
pub mod keys;
pub mod metrics;
pub mod mtls;
pub mod normalize;
pub(crate) mod notify;
pub mod pkcs11;
pub(crate) mod proxy;
pub(crate) mod response;
pub mod route;
pub(crate) mod server;
pub mod shutdown;
pub(crate) mod sid;
pub mod sign;
pub mod signing_key;
pub(crate) mod signing_pool;
pub mod telemetry;
pub mod token;
pub mod upstream;
pub mod workflow;

pub use app::App;
pub use config::Config;
pub use error::ProxyError;
