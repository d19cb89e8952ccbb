//! Human output: colour only on a terminal and never with NO_COLOR, and
//! aligned tables that fit the terminal's width.

use braid_core::{State, TaskType};

use crate::term::{self, To};

#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
    pub width: usize,
}

impl Style {
    /// The style of standard output: colour when [`term::colour`] says so.
    pub fn detect() -> Style {
        let tty = term::is_terminal(To::Out);
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(if tty { 100 } else { 200 });
        Style {
            color: term::colour(To::Out),
            width,
        }
    }

    /// The style of what goes to standard error (errors, warnings).
    pub fn for_stderr() -> Style {
        Style {
            color: term::colour(To::Err),
            ..Style::detect()
        }
    }

    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Appends text in a colour (or plain) to a line being built.
    pub fn push_painted(&self, out: &mut String, code: &str, text: &str) {
        if self.color {
            out.push_str("\x1b[");
            out.push_str(code);
            out.push('m');
            out.push_str(text);
            out.push_str("\x1b[0m");
        } else {
            out.push_str(text);
        }
    }

    /// A task's state as people think of it: open work shows as ready or
    /// blocked; an epic (never ready itself) shows its stored state.
    pub fn state(&self, s: State, ready: bool, kind: TaskType) -> String {
        let (code, label) = state_label(s, ready, kind);
        self.paint(code, label)
    }
}

/// The colour code and word for a task's state (see [`Style::state`]).
pub fn state_label(s: State, ready: bool, kind: TaskType) -> (&'static str, &'static str) {
    match s {
        State::Open if kind == TaskType::Epic => ("0", "open"),
        State::Open if ready => ("32", "ready"),
        State::Open => ("33", "blocked"),
        State::InProgress => ("36", "in_progress"),
        State::Review => ("35", "review"),
        State::Done => ("2", "done"),
        State::Failed => ("31", "failed"),
        State::Cancelled => ("2", "cancelled"),
        State::Deferred => ("2", "deferred"),
    }
}

/// Display width of text that may hold colour codes.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_esc = false;
    for c in s.chars() {
        match (in_esc, c) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Prints rows as aligned columns; the last column is cut to fit the width.
/// Cells are measured as they will be shown ([`term::clean`]: an escape
/// in a title takes the room of its visible form).
pub fn table(style: &Style, header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| term::clean(c, style.color).into_owned())
                .collect()
        })
        .collect();
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(cols - 1) {
            widths[i] = widths[i].max(visible_len(c));
        }
    }
    let used: usize = widths[..cols - 1].iter().map(|w| w + 2).sum();
    let last_max = style.width.saturating_sub(used).max(20);
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cols {
                out.push_str(&truncate(c, last_max));
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(widths[i] - visible_len(c) + 2));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| style.bold(h)).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

/// `1 epic`, `2 epics`: a count with its noun in the right number.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}
