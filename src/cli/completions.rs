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
    let mut command = documented();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pkcv-proxy", &mut out);
    write_stdout(&out)
}

/// The man page (roff): every subcommand, the config file and the environment.
pub(crate) fn man() -> anyhow::Result<Outcome> {
    let command = documented().after_long_help(MAN_EXTRA);
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

/// The command line the man page and the completions describe: the packaged binary's, which
/// is built without the demo. So they print the same with or without the `demo` feature, and
/// the copies committed under `deploy/debian/` (what `cargo deb` packages) match either build.
fn documented() -> clap::Command {
    let full = Cli::command();
    if full.find_subcommand("demo").is_none() {
        return full;
    }
    // clap cannot drop a subcommand: the root is rebuilt around all the others, with every
    // property the generators read (checked against the full command in the tests below).
    // The name and version as `#[command(name, version)]` on `Cli` sets them (clap takes
    // only static strings here).
    let mut root = clap::Command::new("pkcv-proxy")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|sub| sub.get_name() != "demo")
                .cloned(),
        );
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        root = root.long_about(about.clone());
    }
    if let Some(help) = full.get_after_help() {
        root = root.after_help(help.clone());
    }
    if let Some(help) = full.get_after_long_help() {
        root = root.after_long_help(help.clone());
    }
    if let Some(help) = full.get_before_help() {
        root = root.before_help(help.clone());
    }
    root
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

#[cfg(test)]
mod tests {
    use super::*;

    fn man(command: clap::Command) -> String {
        let mut out = Vec::new();
        clap_mangen::Man::new(command).render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_documented_command_is_the_full_one_without_the_demo() {
        let full = Cli::command();
        let documented = documented();
        assert!(documented.find_subcommand("demo").is_none());
        assert_eq!(documented.get_name(), full.get_name());
        assert_eq!(documented.get_version(), full.get_version());
        let names = |c: &clap::Command| -> Vec<String> {
            c.get_subcommands()
                .map(|s| s.get_name().to_owned())
                .filter(|n| n != "demo")
                .collect()
        };
        assert_eq!(names(&documented), names(&full));
        assert!(names(&documented).len() > 5);
        let ids = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(ids(&documented), ids(&full));
        // The rendered root page equals the full command's with the demo hidden.
        let shown = if full.find_subcommand("demo").is_some() {
            full.mut_subcommand("demo", |demo| demo.hide(true))
        } else {
            full
        };
        assert_eq!(man(documented), man(shown));
    }
}
