//! A configuration that does not parse, said for a person: the key as it is written in the
//! file (`[[accounts]] #1`, `[server]`) or the variable that set it (`PKCV_SERVER__LISTEN`),
//! the absolute path of the file, and a suggestion for a misspelt key. None of figment's
//! internals (the `default.` profile prefix, nested backticks) leak through.

use std::fmt::Write as _;

use figment::error::{Actual, Kind};
use figment::Source;

/// Every problem figment found, one sentence each.
pub(super) fn describe(error: &figment::Error) -> String {
    let mut text = String::new();
    for (n, one) in error.clone().into_iter().enumerate() {
        if n > 0 {
            text.push_str("; ");
        }
        text.push_str(&sentence(&one));
    }
    redact_pin_values(&text)
}

/// A TOML syntax error quotes the offending line; a line with a PKCS#11 URI's `pin-value`
/// (refused, but someone may write one) must not put the PIN into a log.
pub(crate) fn redact_pin_values(text: &str) -> String {
    const NAME: &str = "pin-value=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(NAME) {
        out.push_str(&rest[..at + NAME.len()]);
        out.push_str("<redacted>");
        rest = &rest[at + NAME.len()..];
        let end = rest
            .find(|c: char| matches!(c, '&' | '"' | '\'' | ';') || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn sentence(error: &figment::Error) -> String {
    let path: Vec<&str> = error
        .path
        .iter()
        .map(String::as_str)
        .skip_while(|part| *part == "default")
        .collect();
    let origin = origin(error, &path);
    match &error.kind {
        Kind::UnknownField(field, expected) => unknown_key(field, expected, &path, &origin),
        // `[accounts]` written for `[[accounts]]`: serde's "a sequence, not map" helps no one.
        Kind::InvalidType(Actual::Map, expected) if expected == "a sequence" => match &path[..] {
            [list] => format!("[{list}] {origin} is a single table: use [[{list}]] (an array of tables), one per entry"),
            _ => format!("{} {origin} must be a list [ … ], not a table", key_name(&path)),
        },
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "{} {origin} must be {}, not {}",
            key_name(&path),
            expected_for_people(expected),
            actual_for_people(actual)
        ),
        Kind::MissingField(field) => {
            format!("{} {origin} needs `{field}`", section(&path))
        }
        Kind::UnknownVariant(value, expected) => format!(
            "{} {origin}: '{value}' is not one of {}",
            key_name(&path),
            quoted(expected)
        ),
        // A TOML syntax error concerns no key: the file, then the parser's own words.
        other => {
            let key = key_name(&path);
            let lead = match (key.is_empty(), origin.is_empty()) {
                (true, true) => return other.to_string(),
                (true, false) => origin.strip_prefix("in ").unwrap_or(&origin).to_owned(),
                (false, true) => key,
                (false, false) => format!("{key} {origin}"),
            };
            format!("{lead}: {other}")
        }
    }
}

/// Where a value came from: the file (absolute) or the environment variable.
fn origin(error: &figment::Error, path: &[&str]) -> String {
    let Some(metadata) = &error.metadata else {
        return String::new();
    };
    match &metadata.source {
        Some(Source::File(file)) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            format!("in {}", file.display())
        }
        _ if metadata.name.contains("environment") => {
            let variable: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
            format!(
                "(from the environment variable PKCV_{})",
                variable.join("__")
            )
        }
        _ => format!("in {}", metadata.name),
    }
}

fn unknown_key(field: &str, expected: &[&str], path: &[&str], origin: &str) -> String {
    let within = section(&path[..path.len().saturating_sub(1)]);
    let mut text = format!("unknown key `{field}` in {within} {origin}");
    if field == "accounts_dir" && within != "the top level" {
        text.push_str(": accounts_dir is a top-level key; put it above the first [section]");
        return text;
    }
    if let Some(suggestion) = closest(field, expected) {
        let _ = write!(text, "; did you mean `{suggestion}`?");
    } else if !expected.is_empty() {
        let _ = write!(text, " (it takes {})", quoted(expected));
    }
    text
}

/// `[server]`, `[[accounts]] #1`, or the top level, for a path of keys.
fn section(path: &[&str]) -> String {
    match path {
        [] => "the top level".into(),
        [list, index, ..] if index.parse::<usize>().is_ok() => {
            let n = index.parse::<usize>().unwrap_or(0) + 1;
            format!("[[{list}]] #{n}")
        }
        [table, ..] => format!("[{table}]"),
    }
}

/// `server.max_body_bytes`, `[[accounts]] #1 credential_sid`.
fn key_name(path: &[&str]) -> String {
    match path {
        [list, index, key] if index.parse::<usize>().is_ok() => {
            format!("{} {key}", section(&[list, index]))
        }
        _ => path.join("."),
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a typo.
fn closest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|candidate| (distance(field, candidate), *candidate))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, for typo suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn expected_for_people(expected: &str) -> String {
    match expected {
        "u64" | "u32" | "usize" => "a whole number".into(),
        "a string" => "a string in quotes (such as \"127.0.0.1:8080\")".into(),
        "a boolean" => "true or false".into(),
        other => other.replace('`', ""),
    }
}

fn actual_for_people(actual: &Actual) -> String {
    match actual {
        Actual::Str(text) => format!("the text \"{text}\""),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => format!("{b}"),
        other => other.to_string().replace('`', ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_values_are_redacted_from_quoted_lines() {
        assert_eq!(
            redact_pin_values("4 | x = \"pkcs11:object=k?pin-value=1234&module-path=/m\" y"),
            "4 | x = \"pkcs11:object=k?pin-value=<redacted>&module-path=/m\" y"
        );
        assert_eq!(redact_pin_values("pin-value=1234"), "pin-value=<redacted>");
        assert_eq!(redact_pin_values("nothing"), "nothing");
    }
    use crate::config::RawConfig;

    fn error_for(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pkcv.toml");
        std::fs::write(&file, text).unwrap();
        // Read as `Config::load` reads it.
        let err = super::super::figment(Some(&file))
            .unwrap()
            .extract::<RawConfig>()
            .unwrap_err();
        describe(&err)
    }

    #[test]
    fn errors_name_the_key_the_file_and_a_fix() {
        let text = error_for(
            "[[accounts]]\naccount_sid = \"AC1\"\ncredentail_sid = \"CR1\"\nprivate_key_file = \"k\"\n",
        );
        assert!(
            text.starts_with("unknown key `credentail_sid` in [[accounts]] #1 in /"),
            "{text}"
        );
        assert!(
            text.ends_with("pkcv.toml; did you mean `credential_sid`?"),
            "{text}"
        );
        assert!(!text.contains("default."), "{text}");

        let text = error_for("[server]\naccounts_dir = \"accounts\"\n");
        assert!(text.contains("accounts_dir is a top-level key"), "{text}");

        let text = error_for("[server]\nmax_body_bytes = \"ten\"\n");
        assert!(
            text.starts_with("server.max_body_bytes in /")
                && text.ends_with("must be a whole number, not the text \"ten\""),
            "{text}"
        );
    }

    #[test]
    fn a_single_table_for_a_list_says_which_form_to_use() {
        let text = error_for("[accounts]\naccount_sid = \"AC1\"\n");
        assert!(
            text.starts_with("[accounts] in /")
                && text.ends_with(
                    "is a single table: use [[accounts]] (an array of tables), one per entry"
                ),
            "{text}"
        );
        assert!(!text.contains("sequence"), "{text}");
        let text = error_for("[clients]\nname = \"app\"\n");
        assert!(text.contains("use [[clients]]"), "{text}");
    }

    #[test]
    fn a_syntax_error_starts_with_the_file() {
        let text = error_for("[server\nlisten = 1\n");
        assert!(text.starts_with('/'), "{text}");
        assert!(
            text.contains("pkcv.toml: TOML parse error at line 1"),
            "{text}"
        );
    }

    #[test]
    fn typo_distance() {
        assert_eq!(distance("listn", "listen"), 1);
        assert_eq!(
            closest("credentail_sid", &["account_sid", "credential_sid"]),
            Some("credential_sid")
        );
        assert_eq!(closest("zzz", &["listen"]), None);
    }
}
