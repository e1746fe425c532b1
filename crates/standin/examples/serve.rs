//! The Twilio stand-in as a process of its own, on loopback: for checks that run the proxy
//! where the test harness cannot start it in-process (`.ci/image.sh` sends a request through
//! the container image to it). Test-only: an example, so nothing ships it.
//!
//! Configured by environment, so that the API key secret is on no command line:
//! `STANDIN_ACCOUNT_SID`, `STANDIN_CREDENTIAL_SID`, `STANDIN_API_KEY_SID`,
//! `STANDIN_API_KEY_SECRET`, `STANDIN_PUBLIC_KEY` (a PEM file, registered as the credential)
//! and `STANDIN_CA_FILE` (where the CA certificate clients must trust is written); optionally
//! `STANDIN_DELAY_MS`, how long every answer is held back (to have a request in flight while
//! the proxy is stopped).
//!
//! Prints `listening ADDR` once it serves on 127.0.0.1 (a port the OS picks). On SIGTERM or
//! Ctrl-C it prints `verified N rejected M` and exits 0, or 1 when it verified nothing or
//! rejected anything, so a caller can check the outcome from the exit status alone.

use std::error::Error;
use std::process::ExitCode;

use pkcv_standin::{Registry, StandIn};
use tokio::signal::unix::{signal, SignalKind};

fn var(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name).map_err(|e| format!("{name}: {e}").into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let account_sid = var("STANDIN_ACCOUNT_SID")?;
    let public_key_file = var("STANDIN_PUBLIC_KEY")?;
    // A public key: small, but bounded all the same.
    let metadata = std::fs::metadata(&public_key_file)?;
    if metadata.len() > 64 * 1024 {
        return Err(format!("{public_key_file}: larger than 64 KiB").into());
    }
    let public_key = std::fs::read(&public_key_file)?;
    let mut registry = Registry::default();
    registry.add_public_key_pem(&var("STANDIN_CREDENTIAL_SID")?, &account_sid, &public_key)?;
    registry.add_api_key(
        &var("STANDIN_API_KEY_SID")?,
        &account_sid,
        &var("STANDIN_API_KEY_SECRET")?,
    );
    let standin = StandIn::start(registry).await?;
    standin.write_ca(std::path::Path::new(&var("STANDIN_CA_FILE")?))?;
    if let Ok(delay) = std::env::var("STANDIN_DELAY_MS") {
        standin.set_delay(std::time::Duration::from_millis(delay.parse()?));
    }
    println!("listening {}", standin.addr());

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    let (verified, rejected) = (standin.verified(), standin.rejected());
    println!("verified {verified} rejected {rejected}");
    Ok(if verified > 0 && rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
