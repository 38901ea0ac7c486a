//! Text output that prints manifest text (names, types, values quoted in messages): a name with
//! CR, LF or ESC could otherwise forge output lines or hide them with terminal escapes, so every
//! such line goes through [`push_line`] or [`escaped`].

use std::borrow::Cow;
use std::fmt::{Display, Write as _};

/// Whether `c` is shown escaped: control characters (C0, DEL, C1) and the invisible characters
/// that reorder or break lines (bidirectional overrides and isolates, line and paragraph
/// separators).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character escaped as Rust's `escape_debug` writes it (`\n`, `\r`,
/// `\0`, `\u{1b}`, …); anything else, quotes and backslashes included, unchanged.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Appends `line`, escaped, and a newline to `out`.
pub fn push_line(out: &mut String, line: impl Display) {
    out.push_str(&escaped(&line.to_string()));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_reordering_characters_are_escaped_and_nothing_else() {
        assert_eq!(
            escaped("a\u{1b}[2K\r\n\0\t\u{9b}\u{202e}b"),
            "a\\u{1b}[2K\\r\\n\\0\\t\\u{9b}\\u{202e}b"
        );
        assert!(matches!(escaped("plain \"quoted\" \\ é"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_pushed_line_is_one_line() {
        let mut out = String::new();
        push_line(&mut out, format_args!("ScaledJob {}", "x\nforged"));
        assert_eq!(out, "ScaledJob x\\nforged\n");
    }
}
