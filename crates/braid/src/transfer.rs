//! `braid import` and `braid export`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_store::{ExportItem, ImportBatch, ImportOptions, Store};
use clap::Args;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};
use crate::formats::{self, Format, braid::Line};
use crate::term::Lines;
use braid_app::wire::{EventView, TaskView};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to read (`-` for standard input).
    pub file: PathBuf,
    /// The file's format (default: guessed from its name and content).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Import the valid entries and report each skipped one, instead of
    /// importing nothing when any entry is bad.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Check the file and report what would be imported; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Problems to print before "... and N more".
const SHOW_PROBLEMS: usize = 20;

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    let name = a.file.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| Failure::usage(format!("{name}: {e}")))?
    };
    let format = a.format.unwrap_or_else(|| formats::detect(&name, &text));
    let parsed = formats::parse(format, &name, &text);
    if !parsed.errors.is_empty() && !a.skip_invalid {
        let mut msg = format!(
            "nothing imported: {} bad entr{} in {name}",
            parsed.errors.len(),
            if parsed.errors.len() == 1 { "y" } else { "ies" }
        );
        for e in parsed.errors.iter().take(SHOW_PROBLEMS) {
            msg.push_str(&format!("\n  {e}"));
        }
        if parsed.errors.len() > SHOW_PROBLEMS {
            msg.push_str(&format!(
                "\n  ... and {} more",
                parsed.errors.len() - SHOW_PROBLEMS
            ));
        }
        msg.push_str("\n(use --skip-invalid to import the rest)");
        return Err(Failure::usage(msg).into());
    }
    let (project, store) = ctx.open()?;
    let origins = parsed.origins.clone();
    let batch = ImportBatch {
        tasks: parsed.tasks,
        events: parsed.events,
        source: format!("{name} ({format:?})").to_lowercase(),
    };
    if a.dry_run {
        if ctx.global.json {
            ctx.print_json(&json!({"dry_run": true, "tasks": batch.tasks.len(), "events": batch.events.len(), "errors": parsed.errors, "not_mapped": parsed.notes}))?;
        } else {
            outln!(
                "Would import {} tasks and {} events from {name} ({format:?}); nothing changed.",
                batch.tasks.len(),
                batch.events.len()
            );
        }
        return Ok(exit::OK);
    }
    // An import adds much at once: the database as it was stays a
    // restore away.
    let snapshot = crate::snapshot::before(&project, &store, "import")?;
    let report = store.import(
        &ctx.actor(),
        batch,
        ImportOptions {
            skip_invalid: a.skip_invalid,
        },
    );
    let report = match report {
        Ok(r) => r,
        Err(braid_store::Error::Import(problems)) => {
            let mut msg = format!("nothing imported: {} problem(s) in {name}", problems.len());
            for p in problems.iter().take(SHOW_PROBLEMS) {
                let at = origins
                    .get(p.index)
                    .cloned()
                    .unwrap_or_else(|| format!("entry {}", p.index + 1));
                let id = p.id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default();
                msg.push_str(&format!("\n  {at}{id}: {}", p.message));
            }
            if problems.len() > SHOW_PROBLEMS {
                msg.push_str(&format!(
                    "\n  ... and {} more",
                    problems.len() - SHOW_PROBLEMS
                ));
            }
            return Err(Failure::usage(msg).into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut skipped: Vec<String> = parsed.errors.clone();
    skipped.extend(report.skipped.iter().map(|p| {
        let at = origins
            .get(p.index)
            .cloned()
            .unwrap_or_else(|| format!("entry {}", p.index + 1));
        format!("{at}: {}", p.message)
    }));
    if ctx.global.json {
        ctx.print_json(&json!({
            "format": format!("{format:?}").to_lowercase(),
            "tasks": report.tasks, "deps": report.deps, "events": report.events,
            "skipped": skipped, "not_mapped": parsed.notes, "snapshot": snapshot,
        }))?;
    } else {
        outln!(
            "Imported {} tasks, {} dependencies, {} events from {name}.",
            report.tasks,
            report.deps,
            report.events
        );
        for s in &skipped {
            outln!("  skipped {s}");
        }
        if let Some(path) = &snapshot {
            outln!(
                "The database as it was before is snapshot {} (braid snapshot restore undoes the import).",
                path.display()
            );
        }
        if !parsed.notes.is_empty() {
            outln!("Not mapped exactly:");
            for (what, n) in &parsed.notes {
                outln!("  {what} ({n}x)");
            }
        }
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Include the event log.
    #[arg(long)]
    pub events: bool,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let file = a
        .output
        .as_deref()
        .map(|p| {
            braid_store::fsx::AtomicFile::create(p)
                .with_context(|| format!("creating {}", p.display()))
        })
        .transpose()?;
    // JSON lines, through the one writer: exact, and inert on a terminal.
    let mut out: Lines<Box<dyn Write + '_>> = match &file {
        Some(f) => Lines::new(Box::new(BufWriter::with_capacity(1 << 16, f.file())), false),
        None => Lines::stdout().boxed(),
    };
    out.json(&Line::BraidExport {
        version: formats::braid::VERSION,
    })?;
    out.text("\n")?;
    let mut n = 0usize;
    let io = |e: std::io::Error| braid_store::Error::io(Path::new("export"), e);
    store.export(a.events, &mut |item| {
        let line = match item {
            ExportItem::Task(t) => {
                let mut v = TaskView::from(&t);
                // Derived and transient fields are not part of an export.
                v.ready = false;
                v.lease = None;
                Line::Task(v)
            }
            ExportItem::Event(e) => Line::Event(EventView::from(&e)),
        };
        out.json(&line).map_err(io)?;
        out.text("\n").map_err(io)?;
        n += 1;
        Ok(())
    })?;
    out.flush()?;
    drop(out);
    if let (Some(f), Some(path)) = (file, &a.output) {
        f.commit()?;
        if !ctx.global.json {
            errln!("Wrote {n} records to {}.", path.display());
        }
    }
    Ok(exit::OK)
}
