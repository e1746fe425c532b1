//! `pkcv-proxy completions SHELL` and `pkcv-proxy man`: shell completions and the man page,
//! generated from the command-line definitions themselves, so they never drift from them.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

use super::Outcome;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  pkcv-proxy completions bash > /etc/bash_completion.d/pkcv-proxy\n  pkcv-proxy completions zsh > \"${fpath[1]}/_pkcv-proxy\""
)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub(crate) fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pkcv-proxy", &mut out);
    write_stdout(&out)
}

/// The man page (roff): every subcommand, the config file and the environment.
pub(crate) fn man() -> anyhow::Result<Outcome> {
    let command = Cli::command().after_long_help(MAN_EXTRA);
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    // Every subcommand's own synopsis and options, as sections of the one page.
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        out.extend_from_slice(
            format!(".SH \"PKCV-PROXY {}\"\n", sub.get_name().to_uppercase()).as_bytes(),
        );
        let page = clap_mangen::Man::new(sub.clone());
        page.render_description_section(&mut out)?;
        page.render_synopsis_section(&mut out)?;
        page.render_options_section(&mut out)?;
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<Outcome> {
    use std::io::Write as _;
    std::io::stdout().lock().write_all(bytes)?;
    Ok(Outcome::Success)
}

/// What the man page says beyond the options: the config file and the environment.
const MAN_EXTRA: &str = "\
CONFIGURATION
  A TOML file given with -c/--config or PKCV_CONFIG; every key, with its default, is in the
  example shipped as pkcv-proxy.example.toml (/usr/share/doc/pkcv-proxy/ in the package).
  Environment variables override it: PKCV_ + section + __ + key, e.g.
  PKCV_SERVER__LISTEN=127.0.0.1:8080, PKCV_SIGNING__TTL_SECS=60.

ENVIRONMENT
  PKCV_CONFIG          the config file
  PKCV_<SECTION>__<KEY> any config key
  RUST_LOG             the log filter (overrides [log] level)
  TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET
                       the Main API key, for `subaccount` and `keys`
  NOTIFY_SOCKET        systemd's readiness socket (Type=notify)

SIGNALS
  SIGHUP reloads accounts, keys and clients; SIGTERM/SIGINT drain (shutdown_grace_secs)
  and exit 0; a second signal exits at once.

EXIT STATUS
  0    done (serve: drained after SIGTERM/SIGINT)
  1    an error, or a command that said why it did not do what was asked (sign refused the
       request, explain does not know the code, healthcheck found the proxy not ready, a
       workflow step or the demo failed)
  2    the command line is wrong
  130  serve: a second signal cut the drain short

SEE ALSO
  pkcv-proxy explain CODE, the README and docs/ shipped in /usr/share/doc/pkcv-proxy/.";
