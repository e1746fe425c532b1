//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

/// Load benchmark for pkcv-proxy: direct vs through the proxy, against a loopback TLS
/// upstream, with the machine's RSA-2048 sign rate as the ceiling.
///
/// Unless --proxy-bin or --no-build is given, it first runs
/// `cargo build --release -p pkcv-proxy --no-default-features --bin pkcv-proxy`
/// in the workspace and runs target/release/pkcv-proxy.
#[derive(Debug, clap::Parser)]
#[command(name = "pkcv-bench", version)]
pub(crate) struct Args {
    /// Concurrent clients per step (comma-separated).
    #[arg(
        long,
        short = 'c',
        value_delimiter = ',',
        default_value = "1,4,16,64,256,1024"
    )]
    pub(crate) concurrency: Vec<usize>,

    /// Seconds of load before measuring, per step (connections are opened before it).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup_secs: f64,

    /// Seconds measured per step.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) measure_secs: f64,

    /// Seconds of RSA signing timed, before and again after the load steps.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rsa_secs: f64,

    /// The pkcv-proxy binary to run (skips the cargo build).
    #[arg(long)]
    pub(crate) proxy_bin: Option<PathBuf>,

    /// Do not run cargo build; use target/release/pkcv-proxy as it is.
    #[arg(long)]
    pub(crate) no_build: bool,

    /// Offer only HTTP/1.1 upstream (by default the upstream offers h2 and http/1.1 by ALPN,
    /// as Twilio's edge does; the proxy takes h2 only with --proxy-http2).
    #[arg(long)]
    pub(crate) upstream_http1: bool,

    /// Milliseconds the upstream waits before answering each request (0: at once). A real
    /// API takes a while to answer; a delay keeps more requests in flight upstream.
    #[arg(long, default_value_t = 0)]
    pub(crate) upstream_delay_ms: u64,

    /// Set `upstream.http2 = true` in the proxy's config (the proxy speaks HTTP/1.1 upstream
    /// by default, as the SDKs do; with this, ALPN offers h2 and one connection multiplexes).
    #[arg(long)]
    pub(crate) proxy_http2: bool,

    /// Set `signing.pem_on_pool = true`: RSA signatures run on the proxy's signing pool
    /// instead of inline on the runtime's workers (compare the two side by side).
    #[arg(long)]
    pub(crate) pem_on_pool: bool,

    /// Set the proxy's `server.max_in_flight` (by default far above the clients, so nothing is
    /// refused): an overload step, where requests beyond it get 503 (79050) at once; the
    /// report gives the refusals' count and latency beside the admitted requests' p99.
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,

    /// Set the proxy's `server.worker_threads` (default: one per core), to see what
    /// cross-thread wake-ups cost.
    #[arg(long)]
    pub(crate) proxy_worker_threads: Option<usize>,

    /// Sign through PKCS#11 with a key generated inside a SoftHSM2 token made for the run
    /// (needs softhsm2; the module at /usr/lib/softhsm/libsofthsm2.so): the HSM backend's
    /// throughput beside the in-process one.
    #[arg(long)]
    pub(crate) pkcs11_softhsm: bool,

    /// Sign through Vault's transit engine: an OpenBao dev server (`bao`, this path; e.g.
    /// target/keyservices-venv/bin/bao from tests/keyservices/setup.sh) started on loopback
    /// for the run, the key made by the proxy's own `keygen --vault-transit`. The numbers
    /// describe that local server, not a production Vault.
    #[arg(long, value_name = "BAO", conflicts_with = "pkcs11_softhsm")]
    pub(crate) vault_openbao: Option<PathBuf>,

    /// Sign through AWS KMS as moto serves it: `moto_server` (this path; e.g.
    /// target/keyservices-venv/bin/moto_server) started on loopback for the run, the key made
    /// by the proxy's own `keygen --aws-kms` (the proxy must be built with `--features
    /// aws-kms`). moto is a Python test double: the numbers describe it, not KMS.
    #[arg(long, value_name = "MOTO_SERVER", conflicts_with_all = ["pkcs11_softhsm", "vault_openbao"])]
    pub(crate) kms_moto: Option<PathBuf>,

    /// Where load.txt, load.csv, load.json and load.svg go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub(crate) out_dir: PathBuf,

    /// Measure nothing: redraw load.svg (and print the table) from the load.json in --out-dir.
    #[arg(long)]
    pub(crate) plot_only: bool,

    /// The nginx floor: also run nginx (this binary; /usr/sbin/nginx if none is given) as a
    /// forward proxy to the same upstream, drive the same load through it at each
    /// concurrency, and set its worker's CPU per request beside the proxy's cost beyond the
    /// RSA signature.
    #[arg(
        long,
        value_name = "NGINX",
        num_args = 0..=1,
        default_missing_value = crate::nginx::DEFAULT_BINARY
    )]
    pub(crate) nginx_floor: Option<PathBuf>,

    /// Skip the direct (no proxy) baseline.
    #[arg(long)]
    pub(crate) no_direct: bool,
}

impl Args {
    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_secs.max(0.0))
    }

    pub(crate) fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.measure_secs.max(0.1))
    }

    pub(crate) fn rsa_time(&self) -> Duration {
        Duration::from_secs_f64(self.rsa_secs.max(0.05))
    }
}
