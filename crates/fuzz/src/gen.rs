//! Strings built from `Unstructured` and biased towards the bytes that matter to URLs, form
//! encoding, header values and TOML: `%` and escapes (valid, invalid, upper- and lower-case
//! hex, overlong and truncated UTF-8), `+ / . ? & = : [ ] @ *`, CR, LF, NUL and multibyte
//! UTF-8, with a target's own words (hosts, keys, SIDs) mixed in.

use arbitrary::{Result, Unstructured};

/// Punctuation with a meaning in a URL, a form, a header or TOML.
pub const PUNCT: &[&str] = &[
    "%", "+", "/", ".", "?", "&", "=", ":", "[", "]", "@", "*", "~", " ", "#", "!", "'", "(", ")",
    ";", ",", "\\", "\"", "-", "_", "{", "}", "$", "..", "//", "/./", "/../",
];

/// Control characters: CR, LF, NUL, tab and friends.
pub const CONTROL: &[&str] = &["\r", "\n", "\0", "\t", "\r\n", "\x7f", "\x0b", "\x0c"];

/// Percent escapes, valid and not.
pub const ESCAPES: &[&str] = &[
    "%2F",
    "%2f",
    "%2E",
    "%2e",
    "%25",
    "%20",
    "%2B",
    "%2b",
    "%7E",
    "%7e",
    "%3F",
    "%23",
    "%26",
    "%3D",
    "%3d",
    "%2A",
    "%21",
    "%00",
    "%0D%0A",
    "%C3%A9",
    "%c3%a9",
    "%E2%98%83",
    "%F0%9F%98%80",
    "%FF",
    "%C3",
    "%C0%AF",
    "%ED%A0%80",
    "%",
    "%%",
    "%2",
    "%G0",
    "%zz",
    "%%32%46",
    "%252F",
    "%257E",
];

/// Multibyte UTF-8, including characters that case-fold or look like a dot.
pub const MULTIBYTE: &[&str] = &[
    "é",
    "☃",
    "😀",
    "\u{80}",
    "\u{7ff}",
    "\u{800}",
    "\u{ffff}",
    "\u{10ffff}",
    "\u{feff}",
    "\u{200b}",
    "\u{212a}",
    "İ",
    "ſ",
    "\u{ff0e}",
    "\u{3002}",
];

/// Hex digits in both cases.
pub const HEX: &[u8] = b"0123456789abcdefABCDEF";

/// Plain characters, so that the special ones sit between ordinary text.
const PLAIN: &[u8] = b"aAzZ09-_xXkK";

/// One piece of text: a special character, an escape, a word from `words`, or a plain
/// character.
fn piece(u: &mut Unstructured<'_>, words: &[&str], out: &mut Vec<u8>) -> Result<()> {
    match u.int_in_range(0u8..=19)? {
        0..=3 => out.extend_from_slice(u.choose(PUNCT)?.as_bytes()),
        4..=5 => out.extend_from_slice(u.choose(ESCAPES)?.as_bytes()),
        6 => {
            out.push(b'%');
            out.push(*u.choose(HEX)?);
            out.push(*u.choose(HEX)?);
        }
        7 => out.extend_from_slice(u.choose(MULTIBYTE)?.as_bytes()),
        8 => out.extend_from_slice(u.choose(CONTROL)?.as_bytes()),
        9 => out.push(*u.choose(HEX)?),
        10..=14 => out.push(*u.choose(PLAIN)?),
        15..=17 if !words.is_empty() => out.extend_from_slice(u.choose(words)?.as_bytes()),
        15..=17 => out.push(*u.choose(PLAIN)?),
        18 => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(u.arbitrary::<char>()?.encode_utf8(&mut buf).as_bytes());
        }
        _ => out.push(u.arbitrary::<u8>()?),
    }
    Ok(())
}

/// Up to `max_pieces` pieces as bytes (not necessarily UTF-8).
pub fn bytes(u: &mut Unstructured<'_>, words: &[&str], max_pieces: usize) -> Result<Vec<u8>> {
    let count = u.int_in_range(0..=max_pieces)?;
    let mut out = Vec::new();
    for _ in 0..count {
        if u.is_empty() {
            break;
        }
        piece(u, words, &mut out)?;
    }
    Ok(out)
}

/// Up to `max_pieces` pieces as text (invalid UTF-8 replaced).
pub fn text(u: &mut Unstructured<'_>, words: &[&str], max_pieces: usize) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(u, words, max_pieces)?).into_owned())
}

/// One of `pool`, or (one time in `1 / (odd + 1)`) a biased string.
pub fn word_or_text(
    u: &mut Unstructured<'_>,
    pool: &[&str],
    odd: u8,
    max_pieces: usize,
) -> Result<String> {
    if u.int_in_range(0..=odd)? == 0 {
        text(u, pool, max_pieces)
    } else {
        Ok((*u.choose(pool)?).to_owned())
    }
}

/// Upper- or lower-cases some ASCII letters of `text`.
pub fn flip_case(u: &mut Unstructured<'_>, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphabetic() && u.ratio(1u8, 4)? {
            out.push(if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Splits a literal input into lines (LF), each without its LF.
pub fn lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    input.split(|b| *b == b'\n')
}
