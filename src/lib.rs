//! pkcv-proxy: a signing forward proxy for Twilio's Public Key Client Validation (PKCV).
//!
//! Unmodified clients send plain API-key requests; the proxy normalizes each one, signs
//! exactly what it forwards with a `Twilio-Client-Validation` JWT and sends it to Twilio
//! over verified TLS.
//!
//! # Layout
//!
//! Every module, by layer; a module uses only those in its own layer or below it (the test
//! suite checks that no import cycle exists). [`app`] is the one assembly path: it builds
//! everything from a validated [`Config`], binds, serves and drains, for `serve`, the demo and
//! the tests alike.
//!
//! **Assembly and operations**
//! - [`app`]: build → bind → serve → drain; `notify` (systemd readiness), [`admin`] (the admin
//!   port: health, readiness, metrics), [`metrics`], [`telemetry`] (logging, and span export
//!   over OTLP/HTTP with the `otlp` feature), [`shutdown`] (one signal and the drain).
//!
//! **The request path, top to bottom** — listener → route → normalize → sign → upstream:
//! - `server`: the listener loop; one task per connection, each holding a slot
//!   (`admission`: `max_connections`, `max_in_flight`); `mtls` for the TLS listener;
//!   `head` (the strict head pre-check that answers 79023/79024 as JSON) and `keepalive`
//!   (idle and header deadlines) wrap each connection.
//! - `connect`: `CONNECT` — refused, intercepted (TLS terminated with the local CA of
//!   [`intercept`], each request inside handed to `proxy` like any other) or passed through.
//! - `proxy`: one request: the client check ([`clients`]), hop-by-hop headers (`hop`),
//!   resolve and sign ([`sign`]), buffer and hash the body ([`body`]), forward (`upstream`),
//!   stream the answer back (`response`; Twilio's own 401/403 codes read from it as it
//!   streams by [`rejection`], counted and explained), one log line (`access_log`), the clock
//!   skew seen in Twilio's `Date` (`clock_skew`).
//! - [`sign`]: resolve against the request's one snapshot of [`keys`] — [`route`] (which Twilio
//!   host; the allow-list that keeps the proxy from ever becoming an open proxy), [`auth`] (the
//!   API key from HTTP Basic auth), [`normalize`] (path and query in a form every SDK
//!   canonicalizes alike), the account (`sid`: SIDs in paths) — then one async step makes the
//!   [`sign::SignedRequest`], the only thing `upstream` sends.
//! - [`canonical`] (the canonical request and `rqh`), [`token`] (the JWT around one signature,
//!   [`token::TokenMinter`]), [`signing_key`] (that signature: a PEM key in memory, or a device
//!   that may block and go away — [`pkcs11`], an HSM — called on `signing_pool`, never on a
//!   runtime thread; or a key in a network service, awaited — [`remote`], with [`vault`]'s
//!   transit engine and `aws_kms` behind the `aws-kms` feature).
//! - `upstream` dials through `egress` when `[upstream] proxy` is set: a `CONNECT` tunnel
//!   through a corporate HTTP proxy, with TLS to Twilio end to end inside it.
//! - `error`: every error a client can get, turned into Twilio-style JSON in one place.
//!
//! **Beside the request path**
//! - [`keys`]: the account snapshot, its one loader, `accounts_dir` ([`keys::dir`]) and the
//!   reload ([`keys::reload`]) that isolates accounts.
//! - [`doctor`]: every check of a setup against Twilio, from the config to a signed call per
//!   account, each with what to do.
//! - [`workflow`]: the subaccount and key-rotation workflow under PKCV — a client of [`sign`]
//!   and `upstream`; [`keygen`]: key pairs.
//! - [`config`]: a pure, validated value (figment file + env); `files`: bounded reads of
//!   files that may hold secrets.
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
#[cfg(feature = "aws-kms")]
pub mod aws_kms;
pub mod body;
pub mod canonical;
pub mod clients;
pub(crate) mod clock_skew;
pub mod config;
pub(crate) mod connect;
pub mod doctor;
pub(crate) mod egress;
pub(crate) mod error;
pub(crate) mod files;
pub mod head;
pub(crate) mod hop;
pub mod intercept;
pub(crate) mod keepalive;
pub mod keygen;
pub mod keys;
pub mod metrics;
pub(crate) mod mtls;
pub mod normalize;
pub(crate) mod notify;
pub mod pkcs11;
pub(crate) mod proxy;
pub mod rejection;
pub mod remote;
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
pub(crate) mod upstream;
pub mod vault;
pub mod workflow;

pub use app::App;
pub use config::Config;
pub use error::ProxyError;
