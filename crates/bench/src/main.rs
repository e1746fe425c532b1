//! `pkcv-bench`: the load benchmark for pkcv-proxy.
//!
//! One run, on one machine, side by side:
//!
//! 1. the machine's own RSA-2048 PKCS#1 v1.5 SHA-256 sign time (aws-lc-rs, one thread), which
//!    sets the ceiling: `cores / sign time` signed requests per second;
//! 2. a loopback HTTPS upstream inside this process (hyper + rustls, a throwaway CA, a fixed
//!    small JSON answer, counting the TCP connections it accepts);
//! 3. the real `pkcv-proxy` binary as a separate process, pointed at that upstream;
//! 4. for each concurrency: closed-loop keep-alive HTTP/1.1 clients straight to the upstream
//!    over TLS (direct), then the same clients through the proxy (plain HTTP, origin form);
//!    latencies in HDR histograms, the proxy's CPU time and RSS from `/proc`, its upstream
//!    connections from its `/metrics`.
//!
//! Output: a table on stdout, and `load.csv`, `load.json` and `load.svg` in the output
//! directory. The load generator, the upstream and the proxy share the machine's cores, so
//! absolute numbers are lower than on a dedicated box; ratios within one run are the point.

mod cli;
mod client;
mod load;
mod machine;
mod nginx;
mod plot;
mod procfs;
mod proxy;
mod report;
mod rsa;
mod run;
mod upstream;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::run(args))
}
