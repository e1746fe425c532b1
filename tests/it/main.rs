//! The integration tests, one binary (as ripgrep's `tests/`), so the support module and the
//! crate are compiled once. Tests that need a server or tool from Debian or PyPI/npm are
//! `#[ignore]`d with what to install in the reason; `cargo test --all-targets --
//! --include-ignored` runs them too, and there a missing tool fails the test, never skips it.
//!
//! - [`support`]: the SDK vectors, test accounts, the proxy-before-stand-in harness, and one
//!   helper each for Basic auth, running the `pkcv-proxy` binary, writing a config, waiting
//!   for a state and capturing the proxy's logs.
//! - [`availability`]: hostile clients cannot starve anyone: a client that never reads its
//!   response frees its upstream slot.
//! - `aws_kms` (with `--features aws-kms`): keys in AWS KMS against moto's KMS: RS256
//!   verified by the stand-in, RSA-4096 and ECC keys refused at load naming the key, KMS
//!   out of reach (503 79053 for its account only, then recovery without a restart) and
//!   throttling (503 79055) (`#[ignore]`d: PyPI `moto[server]`, which `.ci/run` installs).
//! - [`cli`]: the binary as a user runs it: `demo`, `check-config`, `sign`, `ca init`, and
//!   start-up refusals.
//! - [`clients`]: client authentication: `Proxy-Authorization` on requests and `CONNECT`s,
//!   tunnels inheriting their client, per-client account limits, curl's `--proxy-user`,
//!   clients reloaded on `SIGHUP`, and the warning for a network listener without clients.
//! - [`device`]: a signing device that fails while the proxy runs (injected through the
//!   public `Device` trait): 503 79053 for its account only, degraded readiness, recovery.
//! - [`doctor`]: `pkcv-proxy doctor` against the stand-in, with each injected fault named
//!   with its cause and fix, human and `--json`, exit codes 0 / 2 / 1.
//! - [`egress`]: upstream connections through a corporate HTTP proxy: a real squid, with and
//!   without proxy authentication (`#[ignore]`d: squid, apache2-utils), and each failure of
//!   the corporate proxy with its own code; `no_proxy`, `proxy_from_env`, `check-config`.
//! - [`e2e`]: HTTP clients → proxy → the verifying stand-in: normalization, bodies, routing,
//!   several accounts, refusals, upstream failures, pooling, PS256.
//! - [`hostile`]: raw bytes: malformed request heads get the JSON error (79023, 79024), and
//!   every head on a keep-alive connection is checked.
//! - [`hsm`]: key custody in SoftHSM2 through PKCS#11: keys generated in the token and never
//!   extractable, RS256 tokens identical to the PEM backend's, PS256, clear start-up errors
//!   (PIN, token, label, size, key type), 64 clients at once (`#[ignore]`d: SoftHSM2, OpenSC).
//! - [`intercept`]: `HTTPS_PROXY` clients: `CONNECT`, TLS with the local CA, HTTP/2 in the
//!   tunnel, passthrough, and the `CONNECT`s that must not be honoured.
//! - [`layout`]: `src/` has no import cycle, and the stand-in is not part of the proxy.
//! - [`nginx`]: what goes upstream, against nginx as a strict HTTP/2 server: HTTP/1.1 by
//!   default, `:authority` alone with `upstream.http2` (`#[ignore]`d: nginx-light).
//! - [`normalize_props`]: property tests: normalization is idempotent and canonical under
//!   twilio-java's, twilio-python's and twilio-node's rules.
//! - `otlp` (built only with `--features otlp`): span export over OTLP/HTTP to a collector on
//!   loopback: the request span under the client's `traceparent`, no secret in it, flushed on
//!   `SIGTERM`; a collector that is down is logged once and costs clients nothing.
//! - [`operations`]: the admin port and metrics after known traffic, readiness during a drain,
//!   `SIGHUP` through the real binary, Kubernetes-style Secret mounts, the connection and
//!   in-flight caps, the idempotent retry, and the idle and head deadlines.
//! - [`packaging`]: the man page and completions committed for the Debian package are what
//!   the binary prints now.
//! - [`recipes`]: every client recipe of docs/clients.md run for real (Java's three HTTP
//!   clients, Go, Ruby, PHP, Python async), with and without client authentication
//!   (`#[ignore]`d; toolchains from `tests/sdk/clients-setup.sh`).
//! - [`rejections`]: Twilio's own 401/403 codes counted, logged once a minute and shown in
//!   `/readyz`, the body passed on unchanged (gzip-encoded too; one that does not decompress
//!   counted as `encoded`).
//! - [`sdk`]: the official twilio-python and twilio-node through the proxy (`#[ignore]`d:
//!   `tests/sdk/setup.sh` installs them).
//! - [`soak`]: a bounded soak (`#[ignore]`d; a step of its own in `.ci/run`): hundreds of
//!   clients, a stream of `SIGHUP`s and a key rotation; nothing unsigned or stale, RSS flat.
//! - [`standin`]: the stand-in itself refuses what Twilio refuses.
//! - [`systemd`]: `READY=1`, `RELOADING=1`, `STOPPING=1` on `NOTIFY_SOCKET`.
//! - [`trace`]: W3C trace context: a client's `traceparent` logged (human and JSON) and not
//!   forwarded by default; forwarded with `[telemetry] propagate_upstream`.
//! - [`vault`]: keys in Vault's transit engine against OpenBao: keygen, RS256 and PS256
//!   verified, a revoked token, the server gone and back, throttling, a key changed under the
//!   proxy (`#[ignore]`d: `tests/keyservices/setup.sh` installs OpenBao).
//! - [`vault_more`]: more of Vault against OpenBao: Kubernetes auth for real (a fake
//!   Kubernetes TokenReview API on loopback, the token renewed before its lease ends, a
//!   deleted role refused), the least-privilege policy proven enough, and `subaccount create`
//!   / `keys rotate --vault-transit` with a running proxy (`#[ignore]`d like [`vault`]).
//! - [`vectors`]: the official SDKs' canonical requests and tokens, reproduced byte for byte.
//! - [`workflow`]: `subaccount`, `keys` and `keygen` against the stand-in, with a running
//!   proxy picking up every account change without a restart.

mod support;

mod availability;
#[cfg(feature = "aws-kms")]
mod aws_kms;
mod cli;
mod clients;
mod device;
mod doctor;
mod e2e;
mod egress;
mod hostile;
mod hsm;
mod intercept;
mod layout;
mod nginx;
mod normalize_props;
mod operations;
#[cfg(feature = "otlp")]
mod otlp;
mod packaging;
mod recipes;
mod rejections;
mod sdk;
mod soak;
mod standin;
mod systemd;
mod trace;
mod vault;
mod vault_more;
mod vectors;
mod workflow;
