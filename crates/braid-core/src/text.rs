//! Text braid keeps and shows: which control characters a field may hold,
//! and how one is written so that it can be seen but never acts.
//!
//! A terminal reads a control character as a command: ESC starts an escape
//! sequence (OSC 0 sets the window title, OSC 52 writes the clipboard, CSI
//! moves the cursor), and so does C1 CSI (U+009B) on many terminals. Text
//! that came from a person, an import or an agent must therefore never hold
//! one where braid will print it: fields refuse them on the way in
//! ([`first_control`] for the checks in [`crate::model`]), and what is
//! shown anyway (text stored earlier, agent output, names from git) is
//! written with [`push_visible`].

use std::borrow::Cow;

/// A C0 control (U+0000–U+001F), DEL (U+007F) or a C1 control
/// (U+0080–U+009F): what a terminal may act on rather than show.
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Which text a field holds: one line (a title, a label, a name) or
/// several (a description, a comment), where line feeds and tabs belong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// The first control character `text` may not hold, with its byte offset:
/// any, on one line; any but `\n` and `\t`, over several. A carriage
/// return is refused too: alone it rewrites the line it is on.
pub fn first_control(text: &str, lines: Lines) -> Option<(usize, char)> {
    // Every control character is below U+00A0: text without such a byte
    // (most of it) is not decoded.
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2) {
        return None;
    }
    text.char_indices()
        .find(|&(_, c)| is_control(c) && !(lines == Lines::Many && matches!(c, '\n' | '\t')))
}

/// Writes a control character so that it is seen and does nothing: the
/// escapes people know by name (`\e` for ESC, `\a`, `\b`, `\f`, `\v`,
/// `\r`, `\0`, and `\n`, `\t` where they are not wanted), `\xNN` for the
/// other C0 controls and DEL, `\u{NN}` for C1. Any other character is
/// written as it is.
pub fn push_visible(out: &mut String, c: char) {
    let named = match c {
        '\u{0}' => "\\0",
        '\u{7}' => "\\a",
        '\u{8}' => "\\b",
        '\t' => "\\t",
        '\n' => "\\n",
        '\u{b}' => "\\v",
        '\u{c}' => "\\f",
        '\r' => "\\r",
        '\u{1b}' => "\\e",
        _ => "",
    };
    if !named.is_empty() {
        out.push_str(named);
    } else if c < '\u{80}' && is_control(c) {
        out.push_str(&format!("\\x{:02x}", c as u32));
    } else if is_control(c) {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// `text` with every control character it may not hold written visibly
/// ([`push_visible`]): for text braid composes from names it did not
/// choose (files and branches from git), which is kept rather than refused.
pub fn escape(text: &str, lines: Lines) -> Cow<'_, str> {
    let Some((start, _)) = first_control(text, lines) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..start]);
    for c in text[start..].chars() {
        if is_control(c) && !(lines == Lines::Many && matches!(c, '\n' | '\t')) {
            push_visible(&mut out, c);
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
    fn control_characters_are_c0_del_and_c1() {
        let controls: Vec<u32> = (0..0x200)
            .filter_map(char::from_u32)
            .filter(|&c| is_control(c))
            .map(|c| c as u32)
            .collect();
        let expected: Vec<u32> = (0x00..=0x1f).chain(0x7f..=0x9f).collect();
        assert_eq!(controls, expected);
    }

    #[test]
    fn one_line_refuses_every_control_and_many_keep_newline_and_tab() {
        for c in (0..=0x9f)
            .filter_map(char::from_u32)
            .filter(|&c| is_control(c))
        {
            let text = format!("ab{c}cd");
            assert_eq!(first_control(&text, Lines::One), Some((2, c)), "{c:?}");
            let many = first_control(&text, Lines::Many);
            if c == '\n' || c == '\t' {
                assert_eq!(many, None);
            } else {
                assert_eq!(many, Some((2, c)), "{c:?}");
            }
        }
        assert_eq!(first_control("ünïcødé and emoji 🦀", Lines::One), None);
        assert_eq!(
            first_control("a\u{a0}b", Lines::One),
            None,
            "NBSP is not C1"
        );
    }

    #[test]
    fn escape_leaves_no_control_character_and_shows_each() {
        let all: String = (0..=0x9f).filter_map(char::from_u32).collect();
        let one = escape(&all, Lines::One);
        assert!(!one.chars().any(is_control), "{one:?}");
        let many = escape(&all, Lines::Many);
        assert!(
            !many
                .chars()
                .any(|c| is_control(c) && c != '\n' && c != '\t'),
            "{many:?}"
        );
        assert_eq!(
            escape("\u{1b}]52;c;aGk=\u{7}x\u{9b}2J\u{7f}\r\u{1}", Lines::One),
            "\\e]52;c;aGk=\\ax\\u{9b}2J\\x7f\\r\\x01"
        );
        assert!(matches!(escape("plain", Lines::One), Cow::Borrowed(_)));
    }
}
