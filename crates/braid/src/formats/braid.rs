//! braid's own JSONL: a header line, one `task` line per task (dependencies
//! inside), then optionally one `event` line per event. `braid export`
//! writes it and `braid import` reads it back exactly.

use serde::{Deserialize, Serialize};

use super::Parsed;
use crate::view::{EventView, TaskView};

pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Line {
    BraidExport { version: u32 },
    Task(TaskView),
    Event(EventView),
}

pub fn parse(name: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
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
