//! Import formats: braid's own JSONL export, beads' `issues.jsonl` and
//! task-master's `tasks.json`. Each parser turns a file into tasks for the
//! store's all-or-nothing import, remembering where each task came from
//! (file:line) and noting what it could not map.

pub mod beads;
pub mod braid;
pub mod taskmaster;

use std::collections::BTreeMap;

use braid_core::{Event, Task};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Braid,
    Beads,
    Taskmaster,
}

/// A parsed import file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub tasks: Vec<Task>,
    /// `file:line` (or `file: task N`) of each task, by position.
    pub origins: Vec<String>,
    pub events: Vec<Event>,
    /// Entries that could not be read at all, as `file:line: why`.
    pub errors: Vec<String>,
    /// What was not mapped, with how often.
    pub notes: BTreeMap<String, usize>,
}

impl Parsed {
    pub fn note(&mut self, what: impl Into<String>) {
        *self.notes.entry(what.into()).or_insert(0) += 1;
    }
}

/// Guesses the format from the name and first bytes.
pub fn detect(name: &str, text: &str) -> Format {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.contains("\"braid-export\"") {
        Format::Braid
    } else if name.ends_with(".jsonl") {
        if first.contains("\"issue_type\"") || first.contains("\"status\"") {
            Format::Beads
        } else {
            Format::Braid
        }
    } else {
        Format::Taskmaster
    }
}

pub fn parse(format: Format, name: &str, text: &str) -> Parsed {
    match format {
        Format::Braid => braid::parse(name, text),
        Format::Beads => beads::parse(name, text),
        Format::Taskmaster => taskmaster::parse(name, text),
    }
}
