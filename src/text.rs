//! Text from outside made safe to show: anything crown did not write itself (a backend's
//! values, a lease's fields, ids read back) passes through [`escape`] before it reaches a
//! terminal or a log line.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a log line raw: control characters (C0 including
/// ESC, BEL, CR, LF, TAB; DEL; C1) and the bidirectional overrides that reorder what is shown.
pub(crate) fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` made safe to print as text: control characters are escaped as Rust does (`\n`,
/// `\u{1b}`), so a value read from a backend can neither drive the terminal (set its title,
/// clear the screen) nor forge a log line. Everything else, emoji included, is kept; a string
/// with nothing to escape is borrowed as is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_text_and_escapes_controls() {
        assert!(matches!(escape("p1 👑 über-host"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\u{1b}]0;title\u{7}b\u{1b}[2J\nINFO forged\r\t\u{7f}\u{9b}\u{202e}"),
            "a\\u{1b}]0;title\\u{7}b\\u{1b}[2J\\nINFO forged\\r\\t\\u{7f}\\u{9b}\\u{202e}"
        );
    }
}
