//! Strings a peer chose (hello names, goodbye reasons, text senders, file names) are
//! data, never terminal or log input: wherever one is printed or logged it goes through
//! [`Escaped`], which writes control characters (newlines, ESC, C1 codes), Unicode
//! format characters (category Cf: bidirectional overrides, zero-width joiners, the
//! byte-order mark) and line separators as `\u{…}` escapes. So a peer cannot forge a
//! log line, restyle or clear a terminal, or make a name read backwards.

use std::fmt;

use unicode_general_category::{get_general_category, GeneralCategory};

/// Whether `c` must not reach a terminal or a log as it is: a control character
/// (category Cc), a format character (Cf), or a line or paragraph separator.
pub fn is_unsafe_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control()
        || matches!(
            get_general_category(c),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Displays a peer-chosen string with every [`is_unsafe_char`] written as an escape
/// (`\n`, `\u{1b}`, `\u{202e}`), and nothing else changed. Writes runs of safe
/// characters whole: no allocation, and few calls into the formatter.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut run = 0;
        for (i, c) in s.char_indices() {
            if is_unsafe_char(c) {
                f.write_str(&s[run..i])?;
                for e in c.escape_default() {
                    fmt::Write::write_char(f, e)?;
                }
                run = i + c.len_utf8();
            }
        }
        f.write_str(&s[run..])
    }
}

/// `Escaped(s)`, for use in format strings: `format!("{}", escaped(&name))`.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_characters_and_separators_are_escaped_the_rest_kept() {
        let hostile = "a\nINFO forged\r\x1b[2J\x07\u{85}b\u{202e}txt.exe\u{feff}\u{200d}\u{2028}";
        let shown = escaped(hostile).to_string();
        assert_eq!(
            shown,
            "a\\nINFO forged\\r\\u{1b}[2J\\u{7}\\u{85}b\\u{202e}txt.exe\\u{feff}\\u{200d}\\u{2028}"
        );
        assert!(!shown.chars().any(is_unsafe_char), "{shown:?}");
        // Letters of every script, emoji, spaces and tabs-free punctuation pass as they are.
        let fine = "Grüße, 東京 — café ☕ ü ∑ ok";
        assert_eq!(escaped(fine).to_string(), fine);
    }

    #[test]
    fn every_cf_and_cc_character_is_unsafe() {
        for c in (0u32..0x11_0000).filter_map(char::from_u32) {
            let cat = get_general_category(c);
            let must = matches!(
                cat,
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            );
            assert_eq!(is_unsafe_char(c), must, "{:?} ({cat:?})", c as u32);
        }
    }
}
