//! `pkcv-proxy explain CODE`: what one of the proxy's error codes means and what to do, from
//! the error-code table built into the binary (`docs/error-codes.md`), so the answer is there
//! wherever the proxy runs, with no network.

use clap::Args;

use super::Outcome;

/// The error-code reference, as shipped.
const TABLE: &str = include_str!("../../docs/error-codes.md");

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  pkcv-proxy explain 79006")]
pub(crate) struct ExplainArgs {
    /// A 790xx code from an error's `code` field (e.g. 79006).
    code: u32,
}

/// One row of the table: code, HTTP status, meaning, what to do.
struct Row {
    code: &'static str,
    status: &'static str,
    meaning: &'static str,
    what_to_do: &'static str,
}

fn rows() -> impl Iterator<Item = Row> {
    TABLE.lines().filter_map(|line| {
        let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
        let row = Row {
            code: cells.next()?,
            status: cells.next()?,
            meaning: cells.next()?,
            what_to_do: cells.next()?,
        };
        row.code.starts_with("790").then_some(row)
    })
}

pub(crate) fn run(args: ExplainArgs) -> anyhow::Result<Outcome> {
    let code = args.code.to_string();
    match rows().find(|row| row.code == code) {
        Some(row) => {
            let status = match row.status {
                "—" | "-" => "no HTTP answer".to_owned(),
                status => format!("HTTP {status}"),
            };
            out!("{} ({status}): {}", row.code, row.meaning);
            out!("What to do: {}", row.what_to_do);
            Ok(Outcome::Success)
        }
        None => {
            let known: Vec<&str> = rows().map(|row| row.code).collect();
            eprintln!(
                "pkcv-proxy: {code} is not one of the proxy's error codes ({}); codes outside 79000–79999 come from Twilio: https://www.twilio.com/docs/errors/{code}",
                known.join(", ")
            );
            Ok(Outcome::Failed)
        }
    }
}
