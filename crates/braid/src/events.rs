//! `braid events`: print the log after a seq; `--follow` keeps printing as
//! other processes append, woken by the store's change feed (every
//! committed write pings it), not by querying in a loop.

use std::io::Write;

use anyhow::{Context, Result};
use braid_core::Event;
use braid_store::Store;
use clap::Args;

use crate::cmd::Ctx;
use crate::exit;
use crate::term::Lines;
use braid_app::wire::{EventView, ts};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events after this sequence number.
    #[arg(long, default_value = "0")]
    pub after: i64,
    /// Keep waiting for new events (stop with Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// At most this many events (without --follow).
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

const PAGE: usize = 1000;

fn print(ctx: &Ctx, out: &mut Lines<impl Write>, e: &Event) -> Result<()> {
    if ctx.global.json {
        out.json(&EventView::from(e))?;
        out.text("\n")?;
    } else {
        let task = e.task.as_ref().map(|t| t.to_string()).unwrap_or_default();
        // The payload as JSON shows a control character escaped; DEL and
        // C1 too once through json_safe.
        let shown = braid_app::wire::payload_view(e.kind, &e.payload);
        let mut payload = crate::term::json_safe(&shown.to_string()).into_owned();
        if payload.len() > 120 {
            let mut cut = 117;
            while !payload.is_char_boundary(cut) {
                cut -= 1;
            }
            payload.truncate(cut);
            payload.push_str("...");
        }
        out.text(&format!(
            "#{:<7} {:<24}  {:<17} {:<10} {:<10} {}\n",
            e.seq,
            ts(e.at),
            e.kind.as_str(),
            task,
            e.actor,
            ctx.style.dim(&payload)
        ))?;
    }
    Ok(())
}

/// Prints every event after `after`, page by page; returns the last seq.
fn drain(ctx: &Ctx, store: &dyn Store, mut after: i64, mut budget: Option<usize>) -> Result<i64> {
    let mut out = Lines::stdout();
    loop {
        let page = budget.map_or(PAGE, |b| b.min(PAGE));
        if page == 0 {
            break;
        }
        let events = store.events(after, page)?;
        for e in &events {
            print(ctx, &mut out, e)?;
            after = e.seq;
        }
        if let Some(b) = budget.as_mut() {
            *b -= events.len();
        }
        if events.len() < page {
            break;
        }
    }
    out.flush()?;
    Ok(after)
}

pub fn run(ctx: &Ctx, a: EventsArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    if !a.follow {
        drain(ctx, &store, a.after, a.limit)?;
        return Ok(exit::OK);
    }
    // Listen first, then read: nothing appended in between is missed.
    let changes = store.changes().context("following the event log")?;
    let mut after = drain(ctx, &store, a.after, None)?;
    while changes.recv().is_ok() {
        // A burst of commits is one read.
        changes.drain();
        after = drain(ctx, &store, after, None)?;
    }
    Err(anyhow::anyhow!("the database's change feed stopped"))
}
