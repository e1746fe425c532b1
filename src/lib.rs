//! pkcv-proxy: a signing forward proxy for Twilio's Public Key Client Validation (PKCV).
//!
//! Unmodified clients send plain API-key requests; the proxy normalizes each one, signs
//! exactly what it forwards with a `Twilio-Client-Validation` JWT and sends it to Twilio
//! over verified TLS.
//!
//! # Layout
//!
//! The request path reads top to bottom, one module per step:
//!
//! - [`server`]: the listener loop; one task per connection, one shutdown signal.
//! - [`proxy`]: the per-request pipeline that ties the steps below together.
//! - [`connect`]: `CONNECT` — refused, intercepted (TLS terminated with a local CA, each
//!   request inside signed like any other) or, for hosts named for it, passed through.
//! - [`route`]: which Twilio host a request is for, and the allow-list that keeps the
//!   proxy from ever becoming an open proxy.
//! - [`auth`]: who is asking — the API key SID from HTTP Basic auth.
//! - [`keys`]: which configured account signs, behind a swappable snapshot handle.
//! - [`normalize`]: the path and query rewritten into a form every Twilio SDK
//!   canonicalizes identically.
//! - [`sign`]: the resolved [`sign::Target`] and the token minted over exactly it.
//! - [`hop`]: hop-by-hop headers stripped before signing and forwarding.
//! - [`body`]: the request body, hashed chunk by chunk and forwarded as the same `Bytes`.
//! - [`canonical`]: the canonical request string and its SHA-256 (`rqh`).
//! - [`token`]: minting the JWT from a key parsed once.
//! - [`upstream`]: the pooled, always-verified TLS client to Twilio.
//! - [`intercept`]: the local CA that lets `HTTPS_PROXY` clients be signed for inside
//!   `CONNECT` tunnels.
//! - [`error`]: every error the proxy produces, turned into Twilio-style JSON in one place.
//!
//! Around it: [`config`] (figment file + env, validated before anything binds), [`keygen`],
//! [`sid`] (Twilio SID shapes), [`shutdown`], [`telemetry`] (logging with redaction), and
//! [`workflow`] (the subaccount and key-rotation workflow under PKCV, through the proxy's own
//! signing path), and [`standin`], a Twilio stand-in that verifies PKCV the way Twilio does, for tests and the
//! offline demo.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub(crate) mod access_log;
pub mod app;
pub mod auth;
pub mod body;
pub mod canonical;
pub mod config;
pub(crate) mod connect;
pub mod error;
pub(crate) mod hop;
pub mod intercept;
pub mod keygen;
pub mod keys;
pub mod normalize;
pub(crate) mod proxy;
pub mod route;
pub(crate) mod server;
pub mod shutdown;
pub(crate) mod sid;
pub mod sign;
pub mod telemetry;
pub mod token;
pub mod upstream;
pub mod workflow;

pub use app::App;
pub use config::Config;
pub use error::ProxyError;
