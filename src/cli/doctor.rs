//! `pkcv-proxy doctor`: checks the whole setup against Twilio and says, for each check, ✓ or
//! what to do. The Main key comes from the environment, as for `subaccount` and `keys`; it is
//! read here, at the edge, and never printed.

use std::path::Path;

use clap::Args;
use pkcv_proxy::doctor::{verdict, Check, Doctor, MainCredentials, Outcome, Verdict};
use pkcv_proxy::Config;

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Check only this account (AC…).
    #[arg(long, value_name = "SID")]
    account: Option<String>,
    /// One JSON object per check, one per line (for CI).
    #[arg(long)]
    json: bool,
}

/// The Main key when all three variables are set.
fn main_from_env() -> Option<MainCredentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(MainCredentials::new(
        &var("TWILIO_ACCOUNT_SID")?,
        &var("TWILIO_MAIN_KEY")?,
        &var("TWILIO_MAIN_SECRET")?,
    ))
}

pub(crate) async fn run(
    config_path: Option<&Path>,
    args: DoctorArgs,
) -> anyhow::Result<super::Outcome> {
    let checks = match Config::load(config_path) {
        Ok(config) => {
            let doctor = Doctor {
                config: &config,
                main: main_from_env(),
                only: args.account.clone(),
            };
            let mut checks = vec![Check::passed("config", None, "loaded".into())];
            checks.extend(doctor.run().await);
            checks
        }
        Err(err) => vec![Check::failed(
            "config",
            None,
            err.to_string(),
            "fix the config file (`pkcv-proxy check-config` says the same)",
        )],
    };
    for check in &checks {
        if args.json {
            out!("{}", check.to_json());
        } else {
            print_human(check, "")?;
        }
    }
    if !args.json {
        let count = |outcome| checks.iter().filter(|c| c.outcome == outcome).count();
        out!(
            "{} passed, {} failed, {} not run",
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::NotRun)
        );
    }
    Ok(match verdict(&checks) {
        Verdict::AllPassed => super::Outcome::Success,
        Verdict::SomeNotRun => super::Outcome::Incomplete,
        Verdict::SomeFailed => super::Outcome::Failed,
    })
}

/// One check for a person: ✓, ✗ or - , what was found, and what to do.
pub(crate) fn print_human(check: &Check, indent: &str) -> anyhow::Result<()> {
    let mark = match check.outcome {
        Outcome::Passed => "✓",
        Outcome::Failed => "✗",
        Outcome::NotRun => "-",
    };
    let about = check
        .account
        .as_deref()
        .map(|account| format!(" {account}"))
        .unwrap_or_default();
    let not_run = if check.outcome == Outcome::NotRun {
        "not run: "
    } else {
        ""
    };
    out!(
        "{indent}{mark} {}{about}: {not_run}{}",
        check.name,
        check.detail
    );
    if let Some(advice) = &check.advice {
        out!("{indent}    → {advice}");
    }
    Ok(())
}
