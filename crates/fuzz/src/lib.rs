//! Property fuzzing for pkcv-proxy on the stable toolchain.
//!
//! One module per target, each with `fn check(input: &[u8])` that turns the bytes into a
//! structured case and panics when a property does not hold:
//!
//! - [`normalize`]: path and query normalization — idempotent, within the unreserved+`%XX`
//!   alphabet, meaning-preserving, and canonicalized identically by the proxy and the
//!   twilio-java, twilio-python and twilio-node models;
//! - [`route`]: request-target and `Host` routing — every routed host is on the allow-list,
//!   canonical, and never an IP literal the policy does not list;
//! - [`auth`]: the client's `Authorization: Basic` header — accepted exactly when it is
//!   `Basic base64(SK…:secret)`, and the SID read back is the one encoded;
//! - [`config`]: TOML configuration — any text parses or is refused without a panic, and a
//!   configuration that validates keeps the allow-list invariants;
//! - [`head`]: request framing — every head handed on, pipelined or in a tunnel, obeys the
//!   head rules, and each body is handed on exactly as far as its head frames it;
//! - [`proxy_auth`]: client authentication with `Proxy-Authorization: Basic` — credentials
//!   read exactly when well-formed, a client authenticated exactly when its secret matches,
//!   and every configured client able to log in.
//!
//! # Input format
//!
//! Every target reads its input two ways (see [`Input`]):
//!
//! - an input whose first byte is `0x00` is *structured*: the rest drives
//!   [`arbitrary::Unstructured`], which builds the case from pools of real values and
//!   strings biased towards the bytes that matter here ([`gen`]);
//! - any other input is *literal*: the text itself (a `path?query`, a request head, a header
//!   value, a TOML file), so the committed seed corpus is readable and editable by hand.
//!
//! The runner ([`runner`], the `pkcv-fuzz` binary) replays a seed corpus and then mutates
//! it until a time budget runs out; the same `check` functions back the optional
//! `cargo fuzz` targets in `cargo-fuzz/` and the regression tests in `tests/`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod gen;
pub mod head;
pub mod known;
pub mod models;
pub mod normalize;
pub mod proxy_auth;
pub mod route;
pub mod runner;
pub mod stats;

/// A fuzz target: its name (also the corpus and regression folder name), its check, and
/// the tokens the mutator splices in.
#[derive(Clone, Copy)]
pub struct Target {
    /// The target's name on the command line.
    pub name: &'static str,
    /// Panics when a property does not hold for `input`.
    pub check: fn(&[u8]),
    /// Tokens worth inserting into inputs of this target.
    pub dictionary: &'static [&'static str],
}

/// Every target, in the order CI runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "normalize",
        check: normalize::check,
        dictionary: normalize::DICTIONARY,
    },
    Target {
        name: "route",
        check: route::check,
        dictionary: route::DICTIONARY,
    },
    Target {
        name: "auth",
        check: auth::check,
        dictionary: auth::DICTIONARY,
    },
    Target {
        name: "config",
        check: config::check,
        dictionary: config::DICTIONARY,
    },
    Target {
        name: "head",
        check: head::check,
        dictionary: head::DICTIONARY,
    },
    Target {
        name: "proxy_auth",
        check: proxy_auth::check,
        dictionary: proxy_auth::DICTIONARY,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}

/// The first byte that marks an input as structured.
pub const STRUCTURED: u8 = 0x00;

/// How a target reads its input.
pub enum Input<'a> {
    /// Driven through `Unstructured` (the input started with [`STRUCTURED`]).
    Structured(arbitrary::Unstructured<'a>),
    /// The bytes as they are.
    Literal(&'a [u8]),
}

impl<'a> Input<'a> {
    /// Splits off the mode byte.
    pub fn new(input: &'a [u8]) -> Self {
        match input.split_first() {
            Some((&STRUCTURED, rest)) => Input::Structured(arbitrary::Unstructured::new(rest)),
            _ => Input::Literal(input),
        }
    }
}
