//! `pkcv-proxy`: parse the command line, run, map the outcome to an exit code. Exit codes
//! and the printing of a top-level error live here and nowhere else (tests/it/layout.rs
//! checks it): 0 success, 1 an error or [`Outcome::Failed`], 2 a wrong command line
//! ([`Outcome::Usage`]) or checks that could not all run ([`Outcome::Incomplete`]), 130
//! [`Outcome::Interrupted`]. The man page's EXIT STATUS says the
//! same.

mod cli;

use std::process::ExitCode;

use cli::Outcome;

fn main() -> ExitCode {
    match cli::run() {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        // What clap itself would exit with; and `doctor`'s "nothing failed, some not run".
        Ok(Outcome::Usage | Outcome::Incomplete) => ExitCode::from(2),
        // The reader of stdout went away (`check-config | head`): not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pkcv-proxy: {}", sentence(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line, each cause said once: library errors already name
/// their cause in their own message, and a context added at the edge may not.
fn sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
