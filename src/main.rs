//! `pkcv-proxy`: parse the command line, run, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pkcv-proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}
