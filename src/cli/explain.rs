//! `pkcv-proxy explain CODE`: what one of the proxy's error codes (790xx), or one of Twilio's
//! codes on the road to Twilio (20003, 20151, …), means and what to do, from the error-code
//! tables built into the binary (`docs/error-codes.md`), so the answer is there wherever the
//! proxy runs, with no network.

use clap::Args;

use super::Outcome;

/// The error-code reference, as shipped.
const TABLE: &str = include_str!("../../docs/error-codes.md");

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  pkcv-proxy explain 79006")]
pub(crate) struct ExplainArgs {
    /// A code from an error's `code` field: the proxy's (790xx, e.g. 79006) or Twilio's
    /// (e.g. 20151).
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

/// One row of the Twilio-codes table: code, Twilio's name, meaning, what to do.
fn twilio_rows() -> impl Iterator<Item = [&'static str; 4]> {
    TABLE.lines().filter_map(|line| {
        let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
        let row = [cells.next()?, cells.next()?, cells.next()?, cells.next()?];
        let is_code = row[0].len() == 5 && row[0].bytes().all(|b| b.is_ascii_digit());
        (is_code && !row[0].starts_with("790")).then_some(row)
    })
}

pub(crate) fn run(args: ExplainArgs) -> anyhow::Result<Outcome> {
    let code = args.code.to_string();
    if let Some([code, name, meaning, action]) = twilio_rows().find(|row| row[0] == code) {
        out!("{code} (Twilio: {name}): {meaning}. What to do: {action}. https://www.twilio.com/docs/errors/{code}");
        return Ok(Outcome::Success);
    }
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
                "pkcv-proxy: {code} is not one of the proxy's error codes ({}) nor one of Twilio's codes on the road to Twilio (docs/error-codes.md); codes outside 79000–79999 come from Twilio: https://www.twilio.com/docs/errors/{code}",
                known.join(", ")
            );
            Ok(Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_in_the_docs_is_the_one_the_proxy_advises_from() {
        let documented: Vec<[&str; 4]> = twilio_rows().collect();
        let built_in = pkcv_proxy::rejection::TWILIO_CODES;
        assert_eq!(documented.len(), built_in.len());
        for (row, entry) in documented.iter().zip(built_in) {
            assert_eq!(
                *row,
                [
                    entry.code.to_string().as_str(),
                    entry.name,
                    entry.meaning,
                    entry.action
                ]
            );
        }
    }
}
