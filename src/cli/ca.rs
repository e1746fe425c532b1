//! `pkcv-proxy ca init`: the local interception CA for `HTTPS_PROXY` clients, and the
//! environment each kind of client needs to use it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use pkcv_proxy::intercept::init_ca;
use pkcv_proxy::Config;

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a CA (key 0600, name-constrained to Twilio's domain, path length 0).
    #[command(
        after_help = "Example:\n  pkcv-proxy ca init -c config/pkcv-proxy.toml --out-dir ca    # then set [intercept] ca_cert_file and ca_key_file"
    )]
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write pkcv-proxy-ca.pem and pkcv-proxy-ca-key.pem.
    #[arg(long)]
    out_dir: PathBuf,
    /// Domains the CA may sign for (X.509 name constraint). Repeatable.
    #[arg(long = "permit", default_value = "twilio.com")]
    permit: Vec<String>,
    /// Lifetime of the CA certificate in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=825))]
    days: i64,
}

pub(crate) fn run(config_path: Option<&Path>, command: CaCommand) -> anyhow::Result<Outcome> {
    let CaCommand::Init(args) = command;
    let listen = match config_path {
        Some(path) => Config::load(Some(path))?.server.listen.to_string(),
        None => "127.0.0.1:8080".to_owned(),
    };
    let files = init_ca(&args.out_dir, &args.permit, args.days)?;
    let cert = std::fs::canonicalize(&files.cert_file).context("locating the CA certificate")?;
    let key = std::fs::canonicalize(&files.key_file).context("locating the CA key")?;
    let cert = cert.display();
    out!("# Created {cert} and {} (0600).", key.display());
    out!("# In the proxy's config:");
    out!("#   [intercept]\n#   enabled = true\n#   ca_cert_file = \"{cert}\"\n#   ca_key_file = \"{}\"", key.display());
    // Plain KEY=value lines (comments on their own lines), so the block can be pasted into
    // a shell, an .env file or a systemd EnvironmentFile alike.
    out!("# In the environment of each app that talks to Twilio through the proxy:");
    out!("HTTPS_PROXY=http://{listen}");
    out!("# twilio-node reads only this one (for https:// URLs too):");
    out!("HTTP_PROXY=http://{listen}");
    out!("# Hosts the app reaches directly (the proxy tunnels only Twilio hosts and refuses the rest):");
    out!("NO_PROXY=localhost,127.0.0.1");
    out!("# Python requests (twilio-python):");
    out!("REQUESTS_CA_BUNDLE={cert}");
    out!("# Node.js (twilio-node):");
    out!("NODE_EXTRA_CA_CERTS={cert}");
    out!("# OpenSSL-based clients (Ruby, Go, curl) read these; PHP needs curl.cainfo in php.ini:");
    out!("SSL_CERT_FILE={cert}");
    out!("CURL_CA_BUNDLE={cert}");
    out!("# A bundle variable replaces the app's default roots: for other HTTPS services, give it");
    out!("# a bundle of the system roots plus this certificate.");
    out!("# Java: keytool -importcert -alias pkcv-proxy -file {cert} -keystore <truststore>");
    Ok(Outcome::Success)
}
