//! The one way braid's output reaches a terminal: every text passes
//! [`clean`], so what came from people, imports and agents (titles,
//! comments, agent and gate output) is shown and never executed.
//!
//! As `less -R` does, only SGR sequences (`ESC [ params m`: colour and
//! weight) pass, and only to a terminal that takes colour; every other
//! control character or escape sequence is written visibly and inertly
//! (`\e]52;c;…\a`, `\u{9b}2J`, `\x01`), as [`braid_core::text`] writes
//! them. braid's own colours are SGR sequences painted only when colour
//! is on, so whole lines pass through here, not only the data in them.
//!
//! A print site uses [`outln!`], [`out!`] or [`errln!`] (for
//! `println!`, `print!`, `eprintln!`, which clippy refuses in this crate),
//! [`Lines`] for many lines or JSON lines to one stream, and [`print_json`]
//! for one JSON document. JSON stays exact: serde escapes C0, and
//! [`json_safe`] escapes DEL and C1 (which JSON may hold raw) as `\u00XX`.
//! Text handed to another writer (the live progress of `braid run`) is
//! passed through [`clean`] first.

use std::borrow::Cow;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::OnceLock;

use braid_core::text::{self, is_control, push_visible};

/// One of the process's output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    Out,
    Err,
}

/// Whether a stream is a terminal.
#[allow(clippy::disallowed_methods)]
pub fn is_terminal(to: To) -> bool {
    match to {
        To::Out => io::stdout().is_terminal(),
        To::Err => io::stderr().is_terminal(),
    }
}

/// Whether colour (SGR) may reach a stream: it is a terminal and
/// `NO_COLOR` is unset or empty. Asked once per stream.
pub fn colour(to: To) -> bool {
    static OUT: OnceLock<bool> = OnceLock::new();
    static ERR: OnceLock<bool> = OnceLock::new();
    let detect = || is_terminal(to) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match to {
        To::Out => *OUT.get_or_init(detect),
        To::Err => *ERR.get_or_init(detect),
    }
}

/// `text` as it may reach a terminal: printable text, `\n` and `\t` as
/// they are; SGR sequences as they are when `sgr_ok` (colour set by the
/// text is reset at its end, so it does not spill onto what follows);
/// every other control character written visibly, so an escape sequence
/// shows as its characters (`\e]0;title\a`) and does nothing.
pub fn clean(text: &str, sgr_ok: bool) -> Cow<'_, str> {
    let Some((start, _)) = text::first_control(text, text::Lines::Many) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..start]);
    let mut rest = &text[start..];
    // An SGR sequence passed that set something not reset since.
    let mut open = false;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}'
            && sgr_ok
            && let Some(n) = sgr_len(rest)
        {
            let seq = &rest[..n];
            out.push_str(seq);
            open = !matches!(seq, "\x1b[m" | "\x1b[0m");
            rest = &rest[n..];
            continue;
        }
        if is_control(c) && c != '\n' && c != '\t' {
            push_visible(&mut out, c);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if open {
        out.push_str("\x1b[0m");
    }
    Cow::Owned(out)
}

/// The length of the SGR sequence `rest` starts with (`ESC [`, digits,
/// `;` or `:`, then `m`), if it starts with one. A private or otherwise
/// marked sequence (`ESC [ ? … m`, `ESC [ > … m`) is not SGR.
fn sgr_len(rest: &str) -> Option<usize> {
    let b = rest.as_bytes();
    if b.get(..2)? != b"\x1b[" {
        return None;
    }
    let params = b[2..]
        .iter()
        .take_while(|&&c| c.is_ascii_digit() || c == b';' || c == b':')
        .count();
    (b.get(2 + params) == Some(&b'm')).then_some(2 + params + 1)
}

/// How much of `bytes` (the end of a log still being written) can be shown
/// now: all but a UTF-8 character or an SGR sequence cut off at the end,
/// which waits for the next read. At most 64 bytes wait: anything longer
/// is shown as it is.
pub fn complete_len(bytes: &[u8]) -> usize {
    const MAX_WAIT: usize = 64;
    let tail_from = bytes.len().saturating_sub(MAX_WAIT);
    // A character cut off: `from_utf8` says the error is an end too soon.
    let mut end = bytes.len();
    if let Err(e) = std::str::from_utf8(&bytes[tail_from..])
        && e.error_len().is_none()
    {
        end = tail_from + e.valid_up_to();
    }
    // An escape cut off: the last ESC, if what follows it could still
    // become an SGR sequence.
    if let Some(esc) = bytes[tail_from..end].iter().rposition(|&b| b == 0x1b) {
        let esc = tail_from + esc;
        let after = &bytes[esc + 1..end];
        let could_be_sgr = match after.split_first() {
            None => true,
            Some((b'[', params)) => params
                .iter()
                .all(|&c| c.is_ascii_digit() || c == b';' || c == b':'),
            Some(_) => false,
        };
        if could_be_sgr {
            end = esc;
        }
    }
    end
}

/// JSON as it may reach a terminal, exactly the same document: DEL and C1
/// characters, which JSON strings may hold raw (and some terminals read
/// as controls), escaped as `\u00XX`. They can only be inside strings.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    if !json.bytes().any(|b| b == 0x7f || b == 0xc2) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if matches!(c, '\u{7f}'..='\u{9f}') {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes `text`, cleaned, to a stream, as `print!` would: a failure to
/// write panics (a closed pipe ends the process quietly; see `main`).
pub fn write(to: To, text: &str) {
    let text = clean(text, colour(to));
    // The one place this crate writes to the streams itself.
    #[allow(clippy::disallowed_methods)]
    let r = match to {
        To::Out => io::stdout().lock().write_all(text.as_bytes()),
        To::Err => io::stderr().lock().write_all(text.as_bytes()),
    };
    if let Err(e) = r {
        let name = if to == To::Out { "stdout" } else { "stderr" };
        panic!("failed printing to {name}: {e}");
    }
}

/// Standard error as the log's writer (`tracing`): each event, written
/// whole, passes [`clean`] like any other line.
#[derive(Clone, Copy, Debug)]
pub struct ErrWriter;

impl Write for ErrWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        #[allow(clippy::disallowed_methods)]
        io::stderr()
            .lock()
            .write_all(clean(&text, colour(To::Err)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        #[allow(clippy::disallowed_methods)]
        io::stderr().flush()
    }
}

/// `println!` through [`clean`].
macro_rules! outln {
    () => {
        $crate::term::write($crate::term::To::Out, "\n")
    };
    ($($arg:tt)*) => {
        $crate::term::write($crate::term::To::Out, &format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`clean`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::term::write($crate::term::To::Out, &format!($($arg)*))
    };
}

/// `eprintln!` through [`clean`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::term::write($crate::term::To::Err, &format!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints one JSON document (pretty) and a line break to stdout.
pub fn print_json(v: &impl serde::Serialize) -> io::Result<()> {
    let mut lines = Lines::stdout();
    lines.json_pretty(v)?;
    lines.text("\n")?;
    lines.flush()
}

/// Many lines to one stream, buffered: `braid tree`, `events`, `logs`,
/// `export`. Text passes [`clean`], JSON [`json_safe`].
pub struct Lines<W: Write> {
    out: W,
    sgr_ok: bool,
    buf: Vec<u8>,
}

impl Lines<BufWriter<io::StdoutLock<'static>>> {
    pub fn stdout() -> Self {
        #[allow(clippy::disallowed_methods)]
        let out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
        Lines::new(out, colour(To::Out))
    }
}

impl<W: Write> Lines<W> {
    /// Lines to `out`, which takes colour when `sgr_ok`.
    pub fn new(out: W, sgr_ok: bool) -> Self {
        Lines {
            out,
            sgr_ok,
            buf: Vec::new(),
        }
    }

    pub fn text(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(clean(text, self.sgr_ok).as_bytes())
    }

    /// One JSON value on one line (no line break).
    pub fn json(&mut self, v: &impl serde::Serialize) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, v)?;
        self.write_json()
    }

    pub fn json_pretty(&mut self, v: &impl serde::Serialize) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer_pretty(&mut self.buf, v)?;
        self.write_json()
    }

    fn write_json(&mut self) -> io::Result<()> {
        // serde_json writes UTF-8.
        let json = std::str::from_utf8(&self.buf).map_err(io::Error::other)?;
        self.out.write_all(json_safe(json).as_bytes())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }

    /// The same lines behind a `dyn Write` (one type for a file or stdout).
    pub fn boxed<'a>(self) -> Lines<Box<dyn Write + 'a>>
    where
        W: 'a,
    {
        Lines {
            out: Box::new(self.out),
            sgr_ok: self.sgr_ok,
            buf: self.buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No control character acts in `s`: none but `\n` and `\t`, and ESC
    /// only at the start of an SGR sequence.
    fn inert(s: &str) -> bool {
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if c == '\u{1b}' {
                let Some(n) = sgr_len(rest) else {
                    return false;
                };
                rest = &rest[n..];
                continue;
            }
            if is_control(c) && c != '\n' && c != '\t' {
                return false;
            }
            rest = &rest[c.len_utf8()..];
        }
        true
    }

    #[test]
    fn sgr_passes_only_to_a_terminal() {
        let red = "a \x1b[31mred\x1b[0m b \x1b[1;38;5;208mbold\x1b[m";
        assert_eq!(clean(red, true), red);
        assert_eq!(
            clean(red, false),
            "a \\e[31mred\\e[0m b \\e[1;38;5;208mbold\\e[m"
        );
        // Colour left on is reset at the end of the text.
        assert_eq!(clean("\x1b[8mhidden", true), "\x1b[8mhidden\x1b[0m");
        assert_eq!(clean("\x1b[38:2:1:2:3mx", true), "\x1b[38:2:1:2:3mx\x1b[0m");
    }

    #[test]
    fn every_other_escape_is_shown_not_run() {
        for sgr_ok in [true, false] {
            let cases = [
                // OSC 0 (window title) and OSC 52 (clipboard), BEL and ST ends.
                ("\x1b]0;owned\x07", "\\e]0;owned\\a"),
                ("\x1b]52;c;cm0gLXJm\x1b\\", "\\e]52;c;cm0gLXJm\\e\\"),
                // DCS.
                ("\x1bP1$qm\x1b\\", "\\eP1$qm\\e\\"),
                // CSI that moves the cursor, clears, or is private.
                ("\x1b[2J\x1b[1;1H\x1b[A", "\\e[2J\\e[1;1H\\e[A"),
                ("\x1b[?1049h", "\\e[?1049h"),
                ("\x1b[>4;2m", "\\e[>4;2m"),
                // A lone ESC, and one at the very end.
                ("a\x1bb\x1b", "a\\eb\\e"),
                // C1 CSI and OSC, as UTF-8.
                ("\u{9b}31m\u{9d}0;t\u{9c}", "\\u{9b}31m\\u{9d}0;t\\u{9c}"),
                ("tab\tand\nline", "tab\tand\nline"),
                ("cr\rdel\x7fnul\0bs\x08", "cr\\rdel\\x7fnul\\0bs\\b"),
            ];
            for (raw, shown) in cases {
                assert_eq!(clean(raw, sgr_ok), shown, "{raw:?} sgr_ok={sgr_ok}");
            }
        }
    }

    #[test]
    fn no_code_point_up_to_0x9f_survives_raw() {
        let all: String = (0..=0x9f_u32).filter_map(char::from_u32).collect();
        for sgr_ok in [true, false] {
            let shown = clean(&all, sgr_ok);
            assert!(inert(&shown), "{shown:?}");
            assert!(
                !shown
                    .chars()
                    .any(|c| is_control(c) && !matches!(c, '\n' | '\t' | '\u{1b}')),
                "{shown:?}"
            );
            // Each control character one by one, and before `[31m`.
            for c in (0..=0x9f_u32).filter_map(char::from_u32) {
                for s in [format!("x{c}y"), format!("{c}[31mz"), format!("\x1b[{c}m")] {
                    let shown = clean(&s, sgr_ok);
                    assert!(inert(&shown), "{s:?} -> {shown:?}");
                }
            }
        }
        assert!(matches!(clean("plain ünïcødé", true), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_exact_and_inert() {
        let title = "esc \x1b]0;owned\x07 c1 \u{9b}2J del \x7f nbsp \u{a0}";
        let v = serde_json::json!({"title": title});
        let mut lines = Lines::new(Vec::new(), true);
        lines.json(&v).unwrap();
        let out = String::from_utf8(lines.into_inner()).unwrap();
        assert!(!out.chars().any(is_control), "{out:?}");
        assert!(out.contains("\\u001b]0;owned\\u0007"), "{out}");
        assert!(
            out.contains("\\u009b2J") && out.contains("\\u007f"),
            "{out}"
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["title"], title);
    }

    #[test]
    fn a_log_read_mid_write_waits_for_a_cut_off_character_or_sgr() {
        assert_eq!(complete_len(b"done\n"), 5);
        assert_eq!(complete_len(b"ab\x1b"), 2);
        assert_eq!(complete_len(b"ab\x1b[3"), 2);
        assert_eq!(complete_len(b"ab\x1b[31m"), 7);
        assert_eq!(complete_len(b"ab\x1b]0;x"), 7, "not SGR: shown now");
        assert_eq!(complete_len("ab\u{e9}".as_bytes()), 4);
        assert_eq!(complete_len(&"ab\u{e9}".as_bytes()[..3]), 2);
        assert_eq!(complete_len(&"ab\u{9b}".as_bytes()[..3]), 2);
    }
}
