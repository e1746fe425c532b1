//! The numbers of one run: computed from the steps, printed as a table, written as CSV and
//! JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::Tally;
use crate::machine::Machine;

/// One step's raw measurements.
pub(crate) struct Measured {
    pub(crate) clients: usize,
    pub(crate) mode: &'static str,
    pub(crate) tally: Tally,
    /// The window's length, between the two probes.
    pub(crate) seconds: f64,
    pub(crate) proxy_cpu: Duration,
    pub(crate) bench_cpu: Duration,
    /// Busy CPU time of the whole machine in the window.
    pub(crate) machine_busy: Duration,
    pub(crate) proxy_rss: u64,
    pub(crate) proxy_threads: u64,
    pub(crate) upstream_accepted: u64,
    pub(crate) upstream_h2: u64,
    pub(crate) proxy_opened: Option<u64>,
    pub(crate) connect_time: Duration,
}

const MIB: f64 = 1024.0 * 1024.0;

/// One step (one mode at one concurrency).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) clients: usize,
    pub(crate) mode: String,
    pub(crate) requests: u64,
    pub(crate) req_per_sec: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    /// Proxy minus direct at the same concurrency (proxy rows only).
    pub(crate) added_p50_us: Option<i64>,
    pub(crate) added_p99_us: Option<i64>,
    pub(crate) added_p999_us: Option<i64>,
    /// The forwarder's CPU time (user + system) per successful request: the proxy's on proxy
    /// rows, the nginx worker's on nginx rows (none on direct rows).
    pub(crate) proxy_cpu_per_request_us: Option<f64>,
    /// RSA-2048 sign time ÷ proxy CPU per request.
    pub(crate) efficiency: Option<f64>,
    /// Cores the proxy kept busy during the window.
    pub(crate) proxy_cores: f64,
    /// Cores this process (load generator + upstream) kept busy during the window.
    pub(crate) loadgen_upstream_cores: f64,
    /// Cores busy in every other process on the machine during the window (not ours).
    pub(crate) other_cores: f64,
    /// TCP connections the upstream accepted during the step.
    pub(crate) upstream_connections_accepted: u64,
    /// Of those, the ones that negotiated HTTP/2.
    pub(crate) upstream_connections_h2: u64,
    /// `pkcv_proxy_upstream_connections_opened_total` over the step (proxy rows only).
    pub(crate) proxy_upstream_connections_opened: Option<u64>,
    pub(crate) proxy_rss_mib: f64,
    pub(crate) proxy_threads: u64,
    pub(crate) errors: u64,
    /// Non-2xx statuses, I/O errors, timeouts and failed connects, spelled out.
    pub(crate) error_detail: String,
    pub(crate) connect_secs: f64,
    /// 503 answers (overload refusals) in the window, and their p50 and p99 latency, µs.
    #[serde(default)]
    pub(crate) refused: u64,
    #[serde(default)]
    pub(crate) refused_p50_us: u64,
    #[serde(default)]
    pub(crate) refused_p99_us: u64,
    /// Proxy rows: CPU per request minus the RSA-2048 sign time measured in the same run,
    /// the proxy's cost of everything but the signature.
    #[serde(default)]
    pub(crate) not_rsa_cpu_per_request_us: Option<f64>,
    /// Proxy rows: the nginx worker's CPU per request at the same concurrency (the floor).
    #[serde(default)]
    pub(crate) nginx_cpu_per_request_us: Option<f64>,
    /// Proxy rows: not-RSA CPU ÷ nginx CPU per request (issue #23's target: ≤ 2).
    #[serde(default)]
    pub(crate) not_rsa_over_nginx: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) proxy_binary: String,
    /// What the upstream offers by ALPN.
    pub(crate) upstream_alpn: String,
    /// Whether the proxy was told `upstream.http2 = true`.
    pub(crate) proxy_upstream_http2: bool,
    /// Whether the proxy signed on its signing pool (`signing.pem_on_pool = true`).
    #[serde(default)]
    pub(crate) proxy_pem_on_pool: bool,
    /// Whether the key was in a SoftHSM2 token, signing through PKCS#11.
    #[serde(default)]
    pub(crate) proxy_pkcs11_softhsm: bool,
    /// Whether the key was in Vault transit (a local OpenBao dev server).
    #[serde(default)]
    pub(crate) proxy_vault_openbao: bool,
    /// Whether the key was in AWS KMS as a local moto server serves it.
    #[serde(default)]
    pub(crate) proxy_kms_moto: bool,
    /// `server.max_in_flight`, when the run set it (an overload run).
    #[serde(default)]
    pub(crate) proxy_max_in_flight: Option<usize>,
    /// The proxy's runtime worker threads, when the run set them.
    #[serde(default)]
    pub(crate) proxy_worker_threads: Option<usize>,
    /// The nginx binary run as the floor (`--nginx-floor`), if any.
    #[serde(default)]
    pub(crate) nginx_floor: Option<String>,
    /// How long the upstream waits before each answer.
    pub(crate) upstream_delay_ms: u64,
    pub(crate) warmup_secs: f64,
    pub(crate) measure_secs: f64,
    /// Median RSA-2048 PKCS#1 v1.5 SHA-256 sign time, one thread, aws-lc-rs.
    pub(crate) rsa2048_sign_us: f64,
    pub(crate) rsa2048_signs_timed: usize,
    /// cores ÷ sign time.
    pub(crate) ceiling_req_per_sec: f64,
    pub(crate) proxy_idle_rss_mib: f64,
    pub(crate) proxy_idle_rss_after_mib: f64,
    pub(crate) proxy_peak_rss_mib: f64,
    pub(crate) rows: Vec<Row>,
}

impl Row {
    pub(crate) fn new(step: &Measured, sign: Duration) -> Row {
        let tally = &step.tally;
        let seconds = step.seconds.max(f64::EPSILON);
        let is_proxy = step.mode == "proxy";
        let cpu_per_request = (step.mode != "direct" && tally.ok > 0)
            .then(|| step.proxy_cpu.as_secs_f64() * 1e6 / tally.ok as f64);
        let sign_us = sign.as_secs_f64() * 1e6;
        Row {
            clients: step.clients,
            mode: step.mode.to_owned(),
            requests: tally.ok,
            req_per_sec: tally.ok as f64 / seconds,
            p50_us: tally.latency.value_at_quantile(0.50),
            p99_us: tally.latency.value_at_quantile(0.99),
            p999_us: tally.latency.value_at_quantile(0.999),
            max_us: tally.latency.max(),
            added_p50_us: None,
            added_p99_us: None,
            added_p999_us: None,
            proxy_cpu_per_request_us: cpu_per_request,
            efficiency: cpu_per_request
                .filter(|_| is_proxy)
                .map(|cpu| sign_us / cpu),
            proxy_cores: step.proxy_cpu.as_secs_f64() / seconds,
            loadgen_upstream_cores: step.bench_cpu.as_secs_f64() / seconds,
            other_cores: (step.machine_busy.as_secs_f64()
                - step.proxy_cpu.as_secs_f64()
                - step.bench_cpu.as_secs_f64())
            .max(0.0)
                / seconds,
            upstream_connections_accepted: step.upstream_accepted,
            upstream_connections_h2: step.upstream_h2,
            proxy_upstream_connections_opened: step.proxy_opened.filter(|_| is_proxy),
            proxy_rss_mib: step.proxy_rss as f64 / MIB,
            proxy_threads: step.proxy_threads,
            errors: tally.errors(),
            error_detail: error_detail(step),
            connect_secs: step.connect_time.as_secs_f64(),
            refused: tally.refused_latency.len(),
            refused_p50_us: tally.refused_latency.value_at_quantile(0.5),
            refused_p99_us: tally.refused_latency.value_at_quantile(0.99),
            not_rsa_cpu_per_request_us: cpu_per_request
                .filter(|_| is_proxy)
                .map(|cpu| cpu - sign_us),
            nginx_cpu_per_request_us: None,
            not_rsa_over_nginx: None,
        }
    }
}

fn error_detail(step: &Measured) -> String {
    let tally = &step.tally;
    let mut parts: Vec<String> = tally
        .statuses
        .iter()
        .map(|(status, count)| format!("{count}x{status}"))
        .collect();
    for (count, what) in [
        (tally.io_errors, "io"),
        (tally.timeouts, "timeout"),
        (tally.connect_failures, "connect-failed"),
    ] {
        if count > 0 {
            parts.push(format!("{count}x{what}"));
        }
    }
    parts.join(" ")
}

/// Fills the proxy rows' added latency from the direct row at the same concurrency.
pub(crate) fn add_latency_deltas(rows: &mut [Row]) {
    let direct: Vec<(usize, u64, u64, u64)> = rows
        .iter()
        .filter(|row| row.mode == "direct" && row.requests > 0)
        .map(|row| (row.clients, row.p50_us, row.p99_us, row.p999_us))
        .collect();
    let delta =
        |a: u64, b: u64| i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(0);
    for row in rows
        .iter_mut()
        .filter(|row| row.mode == "proxy" && row.requests > 0)
    {
        if let Some(&(_, p50, p99, p999)) = direct.iter().find(|d| d.0 == row.clients) {
            row.added_p50_us = Some(delta(row.p50_us, p50));
            row.added_p99_us = Some(delta(row.p99_us, p99));
            row.added_p999_us = Some(delta(row.p999_us, p999));
        }
    }
}

/// Fills the proxy rows' nginx floor from the nginx row at the same concurrency.
pub(crate) fn add_nginx_floor(rows: &mut [Row]) {
    let nginx: Vec<(usize, f64)> = rows
        .iter()
        .filter(|row| row.mode == "nginx")
        .filter_map(|row| Some((row.clients, row.proxy_cpu_per_request_us?)))
        .collect();
    for row in rows.iter_mut().filter(|row| row.mode == "proxy") {
        if let Some(&(_, floor)) = nginx.iter().find(|n| n.0 == row.clients) {
            row.nginx_cpu_per_request_us = Some(floor);
            row.not_rsa_over_nginx = row
                .not_rsa_cpu_per_request_us
                .map(|not_rsa| not_rsa / floor.max(f64::EPSILON));
        }
    }
}

impl Report {
    /// The header and the table, as printed on stdout.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let _ = writeln!(
            out,
            "{:>7} {:<6} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8} {:>5} {:>8} {:>8} {:>6} {:>14} {:>12} {:>7} {:>6}",
            "clients", "mode", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "+p50 ms", "+p99 ms",
            "+p99.9 ms", "CPU/req", "eff.", "not-RSA", "nginx", "ratio", "cores p/g/o",
            "upstr. conns", "RSS MiB", "errors"
        );
        for row in &self.rows {
            let _ = writeln!(out, "{}", row_text(row));
        }
        let _ = writeln!(
            out,
            "CPU/req: the proxy's user+system CPU per request (µs); eff.: RSA sign time ÷ CPU/req; \
             cores p/g/o: cores busy in the proxy / in the load generator and upstream (this \
             process) / in other processes (on nginx rows, p is the nginx worker); not-RSA: the \
             proxy's CPU/req minus the RSA sign time above; nginx: the nginx worker's CPU/req at \
             the same concurrency (the floor); ratio: not-RSA ÷ nginx; upstr. conns: TCP+TLS connections the upstream \
             accepted during the step (h2 or h1 by ALPN); \
             RSS: the proxy's (nginx rows: the worker's), at the end of the window."
        );
        for row in self.rows.iter().filter(|row| row.refused > 0) {
            let _ = writeln!(
                out,
                "c={} {}: {} refused with 503 in the window ({:.0}/s), answered in p50 {:.2} ms, p99 {:.2} ms; the admitted requests' latency is the row's",
                row.clients,
                row.mode,
                row.refused,
                row.refused as f64 / self.measure_secs.max(f64::EPSILON),
                row.refused_p50_us as f64 / 1000.0,
                row.refused_p99_us as f64 / 1000.0,
            );
        }
        out
    }

    fn header(&self, out: &mut String) {
        let _ = writeln!(out, "machine: {}", self.machine);
        let _ = writeln!(
            out,
            "proxy: {} (RS256, RSA-2048, upstream.http2 = {}, signing.pem_on_pool = {}, key: {})\n\
             upstream: loopback TLS offering {}, answering after {} ms",
            self.proxy_binary,
            self.proxy_upstream_http2,
            self.proxy_pem_on_pool,
            if self.proxy_pkcs11_softhsm {
                "PKCS#11 (SoftHSM2)"
            } else if self.proxy_vault_openbao {
                "Vault transit (local OpenBao dev server)"
            } else if self.proxy_kms_moto {
                "AWS KMS (local moto server)"
            } else {
                "PEM"
            },
            self.upstream_alpn,
            self.upstream_delay_ms
        );
        if let Some(nginx) = &self.nginx_floor {
            let _ = writeln!(
                out,
                "nginx floor: {nginx}, one worker, proxy_pass https:// with upstream keepalive, \
                 TLS verified, sessions reused, no access log"
            );
        }
        if let Some(threads) = self.proxy_worker_threads {
            let _ = writeln!(out, "proxy: server.worker_threads = {threads}");
        }
        if let Some(limit) = self.proxy_max_in_flight {
            let _ = writeln!(out, "overload run: server.max_in_flight = {limit}");
        }
        let _ = writeln!(
            out,
            "RSA-2048 sign (aws-lc-rs, 1 thread, median of {}): {:.0} µs -> ceiling {} cores / sign = {:.0} req/s",
            self.rsa2048_signs_timed, self.rsa2048_sign_us, self.machine.cores, self.ceiling_req_per_sec
        );
        let _ = writeln!(
            out,
            "proxy RSS: {:.1} MiB idle at start, {:.1} MiB idle after the steps, {:.1} MiB peak",
            self.proxy_idle_rss_mib, self.proxy_idle_rss_after_mib, self.proxy_peak_rss_mib
        );
        let _ = writeln!(
            out,
            "steps: {:.0} s warm-up + {:.0} s measured each; the load generator, the upstream and \
             the proxy share these {} cores, so compare rows of one run, not runs.\n",
            self.warmup_secs, self.measure_secs, self.machine.cores
        );
    }

    /// Reads a load.json written by an earlier run.
    pub(crate) fn read(dir: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(dir.join("load.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes load.json and load.csv into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(
            dir.join("load.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("load.csv"), self.csv())?;
        std::fs::write(dir.join("load.txt"), self.text())?;
        Ok(())
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "clients,mode,requests,req_per_sec,p50_us,p99_us,p999_us,max_us,added_p50_us,added_p99_us,\
             added_p999_us,proxy_cpu_per_request_us,efficiency,proxy_cores,loadgen_upstream_cores,\
             other_cores,upstream_connections_accepted,upstream_connections_h2,\
             proxy_upstream_connections_opened,proxy_rss_mib,\
             proxy_threads,errors,error_detail,rsa2048_sign_us,ceiling_req_per_sec,\
             not_rsa_cpu_per_request_us,nginx_cpu_per_request_us,not_rsa_over_nginx\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{:.1},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{},{},{},{:.1},{},{},{},{:.1},{:.0},{},{},{}",
                r.clients, r.mode, r.requests, r.req_per_sec, r.p50_us, r.p99_us, r.p999_us,
                r.max_us, opt(r.added_p50_us), opt(r.added_p99_us), opt(r.added_p999_us),
                opt(r.proxy_cpu_per_request_us.map(|v| format!("{v:.1}"))),
                opt(r.efficiency.map(|v| format!("{v:.3}"))), r.proxy_cores,
                r.loadgen_upstream_cores, r.other_cores, r.upstream_connections_accepted,
                r.upstream_connections_h2,
                opt(r.proxy_upstream_connections_opened), r.proxy_rss_mib, r.proxy_threads,
                r.errors, r.error_detail, self.rsa2048_sign_us, self.ceiling_req_per_sec,
                opt(r.not_rsa_cpu_per_request_us.map(|v| format!("{v:.1}"))),
                opt(r.nginx_cpu_per_request_us.map(|v| format!("{v:.1}"))),
                opt(r.not_rsa_over_nginx.map(|v| format!("{v:.2}"))),
            );
        }
        out
    }
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(String::new, |v| v.to_string())
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn added(micros: Option<i64>) -> String {
    micros.map_or_else(|| "-".into(), |v| format!("{:+.2}", v as f64 / 1000.0))
}

fn upstream_conns(r: &Row) -> String {
    let (all, h2) = (r.upstream_connections_accepted, r.upstream_connections_h2);
    match (all, h2) {
        (0, _) => "0".into(),
        (all, 0) => format!("{all} h1"),
        (all, h2) if h2 == all => format!("{all} h2"),
        (all, h2) => format!("{all} ({h2} h2)"),
    }
}

fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.0} µs"))
}

fn row_text(r: &Row) -> String {
    format!(
        "{:>7} {:<6} {:>8.0} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8} {:>5} {:>8} {:>8} {:>6} {:>14} {:>12} {:>7} {:>6}{}",
        r.clients,
        r.mode,
        r.req_per_sec,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        added(r.added_p50_us),
        added(r.added_p99_us),
        added(r.added_p999_us),
        micros(r.proxy_cpu_per_request_us),
        r.efficiency.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        micros(r.not_rsa_cpu_per_request_us),
        micros(r.nginx_cpu_per_request_us),
        r.not_rsa_over_nginx.map_or_else(|| "-".into(), |v| format!("{v:.1}x")),
        format!(
            "{:.2}/{:.2}/{:.2}",
            r.proxy_cores, r.loadgen_upstream_cores, r.other_cores
        ),
        upstream_conns(r),
        if r.mode != "direct" { format!("{:.1}", r.proxy_rss_mib) } else { "-".into() },
        r.errors,
        if r.error_detail.is_empty() { String::new() } else { format!("  ({})", r.error_detail) },
    )
}
