//! The run: RSA ceiling, upstream, proxy, the steps, the report.

use std::time::Duration;

use crate::cli::Args;
use crate::client::Target;
use crate::load::{self, Timing};
use crate::machine::Machine;
use crate::nginx::Nginx;
use crate::procfs::{self, Usage};
use crate::proxy::{self, Proxy};
use crate::report::{self, Measured, Report, Row};
use crate::rsa::SignTimes;
use crate::upstream::Upstream;

const OPENED: &str = "pkcv_proxy_upstream_connections_opened_total";
const MIB: f64 = 1024.0 * 1024.0;

/// The proxy and this process, at one instant.
#[derive(Default)]
struct Probe {
    proxy: Usage,
    bench: Usage,
    machine_busy: Duration,
}

struct Bench<'a> {
    upstream: &'a Upstream,
    proxy: &'a Proxy,
    nginx: Option<&'a Nginx>,
    timing: Timing,
}

/// The forwarder a step drives, whose CPU and memory the step reads.
#[derive(Clone, Copy)]
enum Watched<'a> {
    Proxy(&'a Proxy),
    Nginx(&'a Nginx),
}

impl Watched<'_> {
    fn usage(&self) -> Usage {
        match self {
            Watched::Proxy(proxy) => proxy.usage(),
            Watched::Nginx(nginx) => nginx.usage(),
        }
        .unwrap_or_default()
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.plot_only {
        let report = Report::read(&args.out_dir)?;
        print!("{}", report.text());
        return crate::plot::draw(&report, &args.out_dir.join("load.svg"));
    }
    anyhow::ensure!(!args.concurrency.is_empty(), "no concurrency given");
    raise_open_files_limit();
    let machine = Machine::detect();
    let binary = proxy::binary(args.proxy_bin.as_deref(), args.no_build)?;
    std::fs::create_dir_all(&args.out_dir)?;
    eprintln!("machine: {machine}\ntiming RSA-2048 signatures ...");
    let mut sign = SignTimes::default();
    sign.measure(args.rsa_time())?;

    let delay = Duration::from_millis(args.upstream_delay_ms);
    let upstream = Upstream::start(args.upstream_http1, delay).await?;
    let max_clients = args.concurrency.iter().copied().max().unwrap_or(1);
    let settings = proxy::Settings {
        max_clients,
        http2: args.proxy_http2,
        pem_on_pool: args.pem_on_pool,
        pkcs11_softhsm: args.pkcs11_softhsm,
        vault: None,
        kms: None,
        max_in_flight: args.max_in_flight,
        worker_threads: args.proxy_worker_threads,
    };
    let services = proxy::KeyServices {
        openbao: args.vault_openbao.as_deref(),
        moto: args.kms_moto.as_deref(),
    };
    let proxy = Proxy::start(&binary, &upstream, settings, services).await?;
    let idle = proxy.usage()?;
    let nginx = match &args.nginx_floor {
        Some(path) => Some(Nginx::start(path, &upstream, max_clients).await?),
        None => None,
    };
    let bench = Bench {
        upstream: &upstream,
        proxy: &proxy,
        nginx: nginx.as_ref(),
        timing: Timing {
            warmup: args.warmup(),
            measure: args.measure(),
        },
    };
    let steps = bench.steps(&args).await?;
    // Let the closed connections go before reading the idle footprint again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proxy.usage()?;
    proxy.stop().await?;
    if let Some(nginx) = nginx {
        nginx.stop().await?;
    }
    eprintln!("timing RSA-2048 signatures again ...");
    sign.measure(args.rsa_time())?;

    let report = build_report(&args, machine, &binary, &sign, (idle, after), &steps);
    print!("{}", report.text());
    report.write(&args.out_dir)?;
    crate::plot::draw(&report, &args.out_dir.join("load.svg"))?;
    eprintln!("wrote {}/load.{{txt,csv,json,svg}}", args.out_dir.display());
    Ok(())
}

impl Bench<'_> {
    async fn steps(&self, args: &Args) -> anyhow::Result<Vec<Measured>> {
        let direct = Target::direct(self.upstream.addr, self.upstream.ca_der.clone())?;
        let through = Target::proxy(self.proxy.listen)?;
        let nginx = match self.nginx {
            Some(nginx) => Some((Target::forwarder(nginx.listen, "nginx")?, nginx)),
            None => None,
        };
        let proxy = Watched::Proxy(self.proxy);
        let mut steps = Vec::new();
        for &clients in &args.concurrency {
            if !args.no_direct {
                steps.push(self.step(&direct, clients, proxy).await?);
            }
            if let Some((target, nginx)) = &nginx {
                steps.push(self.step(target, clients, Watched::Nginx(nginx)).await?);
            }
            steps.push(self.step(&through, clients, proxy).await?);
        }
        Ok(steps)
    }

    async fn step(
        &self,
        target: &Target,
        clients: usize,
        watched: Watched<'_>,
    ) -> anyhow::Result<Measured> {
        let (accepted, h2) = (
            self.upstream.connections_accepted(),
            self.upstream.h2_connections(),
        );
        let is_proxy = matches!(watched, Watched::Proxy(_)) && target.name() == "proxy";
        let opened = if is_proxy {
            self.proxy.metric(OPENED).await.ok()
        } else {
            None
        };
        let probe = || Probe {
            proxy: watched.usage(),
            bench: procfs::usage(None).unwrap_or_default(),
            machine_busy: procfs::machine_busy(),
        };
        let outcome = load::run(target, clients, self.timing, probe).await?;
        let opened_after = if is_proxy {
            self.proxy.metric(OPENED).await.ok()
        } else {
            None
        };
        let step = Measured {
            clients,
            mode: target.name(),
            seconds: outcome.measured.as_secs_f64(),
            proxy_cpu: outcome
                .after
                .proxy
                .cpu
                .saturating_sub(outcome.before.proxy.cpu),
            bench_cpu: outcome
                .after
                .bench
                .cpu
                .saturating_sub(outcome.before.bench.cpu),
            machine_busy: outcome
                .after
                .machine_busy
                .saturating_sub(outcome.before.machine_busy),
            proxy_rss: outcome.after.proxy.rss,
            proxy_threads: outcome.after.proxy.threads,
            upstream_accepted: self.upstream.connections_accepted() - accepted,
            upstream_h2: self.upstream.h2_connections() - h2,
            proxy_opened: opened
                .zip(opened_after)
                .map(|(before, after)| (after - before).max(0.0) as u64),
            connect_time: outcome.connect_time,
            tally: outcome.tally,
        };
        eprintln!("{}", progress(&step));
        Ok(step)
    }
}

fn progress(step: &Measured) -> String {
    format!(
        "c={:<5} {:<6} {:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  upstream conns {}",
        step.clients,
        step.mode,
        step.tally.ok as f64 / step.seconds.max(f64::EPSILON),
        step.tally.latency.value_at_quantile(0.5) as f64 / 1000.0,
        step.tally.latency.value_at_quantile(0.99) as f64 / 1000.0,
        step.tally.errors(),
        step.upstream_accepted
    )
}

fn build_report(
    args: &Args,
    machine: Machine,
    binary: &std::path::Path,
    sign: &SignTimes,
    (idle, after): (Usage, Usage),
    steps: &[Measured],
) -> Report {
    let sign_time = sign.median();
    let mut rows: Vec<Row> = steps.iter().map(|step| Row::new(step, sign_time)).collect();
    report::add_latency_deltas(&mut rows);
    report::add_nginx_floor(&mut rows);
    Report {
        ceiling_req_per_sec: machine.cores as f64 / sign_time.as_secs_f64().max(1e-9),
        machine,
        proxy_binary: binary.display().to_string(),
        upstream_alpn: if args.upstream_http1 {
            "http/1.1"
        } else {
            "h2, http/1.1"
        }
        .to_owned(),
        proxy_upstream_http2: args.proxy_http2,
        proxy_pem_on_pool: args.pem_on_pool,
        proxy_pkcs11_softhsm: args.pkcs11_softhsm,
        proxy_vault_openbao: args.vault_openbao.is_some(),
        proxy_kms_moto: args.kms_moto.is_some(),
        proxy_max_in_flight: args.max_in_flight,
        proxy_worker_threads: args.proxy_worker_threads,
        nginx_floor: args
            .nginx_floor
            .as_ref()
            .map(|path| path.display().to_string()),
        upstream_delay_ms: args.upstream_delay_ms,
        warmup_secs: args.warmup().as_secs_f64(),
        measure_secs: args.measure().as_secs_f64(),
        rsa2048_sign_us: sign_time.as_secs_f64() * 1e6,
        rsa2048_signs_timed: sign.count(),
        proxy_idle_rss_mib: idle.rss as f64 / MIB,
        proxy_idle_rss_after_mib: after.rss as f64 / MIB,
        proxy_peak_rss_mib: after.hwm as f64 / MIB,
        rows,
    }
}

/// 1,024 clients take 1,024 sockets to the proxy and, direct, 2,048 in this process: raise
/// the soft open-files limit to the hard one.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            eprintln!("note: could not raise the open-files limit");
        }
    }
}
