//! braid's own JSONL: a header line, one `task` line per task (dependencies
//! inside), then optionally one `event` line per event. `braid export`
//! writes it and `braid import` reads it back exactly.

use serde::{Deserialize, Serialize};

use super::Parsed;
use braid_app::wire::{EventView, TaskView};

pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Line {
    BraidExport { version: u32 },
    Task(TaskView),
    Event(EventView),
}

/// Parses in two halves on two threads (JSON decoding dominates a large
/// import), then joins them in file order.
pub fn parse(name: &str, text: &str) -> Parsed {
    const SPLIT_ABOVE: usize = 1 << 20;
    if text.len() < SPLIT_ABOVE {
        return parse_from(name, text, 0);
    }
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid += 1;
    }
    let mid = text[mid..].find('\n').map_or(text.len(), |p| mid + p + 1);
    let (head, tail) = text.split_at(mid);
    let head_lines = head.lines().count();
    let (mut a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| parse_from(name, head, 0));
        let b = parse_from(name, tail, head_lines);
        (h.join().expect("parser thread"), b)
    });
    a.tasks.extend(b.tasks);
    a.origins.extend(b.origins);
    a.events.extend(b.events);
    a.errors.extend(b.errors);
    for (k, v) in b.notes {
        *a.notes.entry(k).or_insert(0) += v;
    }
    a
}

fn parse_from(name: &str, text: &str, first_line: usize) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let i = i + first_line;
        let at = format!("{name}:{}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(line) {
            Ok(Line::BraidExport { version }) if version > VERSION => out.errors.push(format!(
                "{at}: export format version {version} is newer than this braid reads ({VERSION})"
            )),
            Ok(Line::BraidExport { .. }) => {}
            Ok(Line::Task(t)) => match t.into_task() {
                Ok(task) => {
                    out.tasks.push(task);
                    out.origins.push(at);
                }
                Err(e) => out.errors.push(format!("{at}: {e}")),
            },
            Ok(Line::Event(e)) => match e.into_event() {
                Ok(ev) => out.events.push(ev),
                Err(e) => out.errors.push(format!("{at}: {e}")),
            },
            Err(e) => out.errors.push(format!("{at}: {e}")),
        }
    }
    out
}
