//! `pkcv-fuzz`: runs one fuzz target for a bounded time on the stable toolchain.
//!
//! ```text
//! pkcv-fuzz <target> [--seconds N] [--runs N] [--corpus DIR]... [--seed N]
//!                    [--crashes DIR] [--max-len N] [--timeout-secs N] [--strict]
//! pkcv-fuzz <target> --reproduce FILE
//! pkcv-fuzz list
//! ```
//!
//! Without `--corpus`, the seeds are `crates/fuzz/corpus/<target>` and
//! `crates/fuzz/regressions/<target>`. Exit status: 0 when no property failed, 1 when an
//! input failed (it is written to the crashes folder, default `crates/fuzz/crashes`), 2 on
//! a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pkcv_fuzz::runner::{self, Options, Outcome};
use pkcv_fuzz::{known, stats, Target, TARGETS};

const USAGE: &str = "usage: pkcv-fuzz <target> [--seconds N] [--runs N] [--corpus DIR]... [--seed N] [--crashes DIR] [--max-len N] [--timeout-secs N] [--strict]
       pkcv-fuzz <target> --reproduce FILE
       pkcv-fuzz list";

/// What the command line asks for.
enum Command {
    List,
    Reproduce(&'static Target, PathBuf),
    Fuzz(&'static Target, Options, bool),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::List) => {
            for target in TARGETS {
                println!("{}", target.name);
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Reproduce(target, file)) => reproduce(target, &file),
        Ok(Command::Fuzz(target, options, strict)) => fuzz(target, &options, strict),
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(args: &[String]) -> Result<Command, String> {
    let name = args.first().ok_or("no target given")?;
    if name == "list" {
        return Ok(Command::List);
    }
    let target = pkcv_fuzz::target(name).ok_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!("no target {name:?}; targets: {}", names.join(", "))
    })?;
    let mut options = Options {
        seconds: 60.0,
        runs: None,
        corpus: Vec::new(),
        seed: default_seed(),
        crashes: manifest_dir().join("crashes"),
        max_len: 4096,
        timeout: Duration::from_secs(10),
    };
    let mut strict = false;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => options.seconds = number(flag, value()?)?,
            "--runs" => options.runs = Some(number(flag, value()?)?),
            "--corpus" => options.corpus.push(PathBuf::from(value()?)),
            "--seed" => options.seed = number(flag, value()?)?,
            "--crashes" => options.crashes = PathBuf::from(value()?),
            "--max-len" => options.max_len = number(flag, value()?)?,
            "--timeout-secs" => options.timeout = Duration::from_secs(number(flag, value()?)?),
            "--reproduce" => return Ok(Command::Reproduce(target, PathBuf::from(value()?))),
            "--strict" => strict = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if options.corpus.is_empty() {
        for dir in ["corpus", "regressions"] {
            options
                .corpus
                .push(manifest_dir().join(dir).join(target.name));
        }
    }
    Ok(Command::Fuzz(target, options, strict))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a number"))
}

/// A seed from the clock, printed so that a run can be repeated.
fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn reproduce(target: &Target, file: &PathBuf) -> ExitCode {
    let input = match std::fs::read(file) {
        Ok(input) => input,
        Err(err) => {
            eprintln!("cannot read {}: {err}", file.display());
            return ExitCode::from(2);
        }
    };
    // No catch_unwind: a failure panics here with the full message (and RUST_BACKTRACE).
    (target.check)(&input);
    println!("{}: {} passes every property", target.name, file.display());
    ExitCode::SUCCESS
}

fn fuzz(target: &Target, options: &Options, strict: bool) -> ExitCode {
    known::tolerate(!strict);
    eprintln!(
        "{}: seed {}, up to {}s{}, corpus {:?}",
        target.name,
        options.seed,
        options.seconds,
        options
            .runs
            .map_or(String::new(), |r| format!(" or {r} runs")),
        options.corpus
    );
    let outcome = match runner::run(target, options) {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("{}: {err}", target.name);
            return ExitCode::from(2);
        }
    };
    let counters: Vec<String> = stats::counters(target.name)
        .iter()
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    eprintln!("{}: reached: {}", target.name, counters.join(", "));
    for (bug, hits) in known::hits() {
        if bug.targets.contains(&target.name) && hits > 0 {
            eprintln!(
                "{}: known bug {} hit {hits} times (let pass)",
                target.name, bug.id
            );
        }
    }
    match outcome {
        Outcome::Clean(stats) => {
            println!(
                "{}: ok: {} inputs ({} seeds) in {:.1}s, {:.0} execs/s, pool {}, seed {}",
                target.name,
                stats.execs,
                stats.corpus_files,
                stats.elapsed.as_secs_f64(),
                stats.rate(),
                stats.pool,
                options.seed
            );
            ExitCode::SUCCESS
        }
        Outcome::Crashed(stats, crash) => {
            eprintln!(
                "{}: FAILED after {} inputs ({:.1}s, seed {}):\n  {}\n  input: {:?}\n  saved to {}",
                target.name,
                stats.execs,
                stats.elapsed.as_secs_f64(),
                options.seed,
                crash.message,
                String::from_utf8_lossy(&crash.input),
                crash.saved.display()
            );
            let file = match &crash.minimized {
                Some((small, path)) => {
                    eprintln!(
                        "  minimized: {:?}\n  saved to {}",
                        String::from_utf8_lossy(small),
                        path.display()
                    );
                    path
                }
                None => &crash.saved,
            };
            eprintln!(
                "reproduce: cargo run -p pkcv-fuzz -- {} --reproduce {}\nas a regression test: copy it to crates/fuzz/regressions/{}/",
                target.name,
                file.display(),
                target.name
            );
            ExitCode::FAILURE
        }
    }
}
