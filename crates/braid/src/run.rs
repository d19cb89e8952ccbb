//! `braid run`, `braid context`, `braid logs` and `braid gc`: the engine's
//! commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_core::{Event, State, TaskId};
use braid_run::{Config, Engine, Paths, RunOptions};
use braid_store::Store;
use clap::Args;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};
use crate::project::Project;
use crate::term;
use braid_app::wire::{EventView, ts};

fn parse_id(s: &str) -> Result<TaskId, String> {
    TaskId::parse(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Keep running and wait for new work instead of exiting when idle.
    #[arg(long, short)]
    pub follow: bool,
    /// Dispatch at most this many tasks.
    #[arg(long)]
    pub max_tasks: Option<usize>,
    /// Only run these tasks (when ready).
    #[arg(long, value_parser = parse_id, num_args = 1..)]
    pub only: Vec<TaskId>,
    /// Merge as work reaches review (as `braid merge run` does, needs
    /// [merge] into), so dependents become ready and a whole epic flows
    /// from ready to merged.
    #[arg(long)]
    pub merge: bool,
}

pub fn load_config(project: &Project) -> Result<Config> {
    Config::load(&project.dir.join("config.toml")).map_err(|e| Failure::usage(e.to_string()).into())
}

/// Hands the write path the project settings it reads (`[run]
/// close_epics`), from the config as it is now. A config that does not
/// read changes nothing here (the command that needs it says why).
pub fn sync_settings(project: &Project, store: &dyn Store) -> Result<()> {
    if let Ok(config) = load_config(project) {
        let close = if config.run.close_epics {
            "true"
        } else {
            "false"
        };
        store.set_setting(braid_store::CLOSE_EPICS, close)?;
    }
    Ok(())
}

/// The config as `braid run` needs it: read, and checked against this
/// machine and project before anything is claimed (every program found,
/// the merge target there, workspaces possible). Exit 2 otherwise.
pub fn load_run_config(project: &Project) -> Result<Config> {
    let config = load_config(project)?;
    let file = project.dir.join("config.toml").display().to_string();
    braid_run::preflight::check(&config, &file, &paths(project))
        .map_err(|e| Failure::usage(format!("{e}\n(nothing was claimed)")))?;
    Ok(config)
}

pub fn paths(project: &Project) -> Paths {
    let root = project
        .dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = braid_git::repo_root(&root).filter(|r| braid_git::has_head(r));
    Paths {
        braid_dir: project.dir.clone(),
        db: project.db.clone(),
        repo,
    }
}

/// `; stopped 2 leftover processes: sleep, node`, when an attempt left any.
fn leftovers(p: &serde_json::Value) -> String {
    let names: Vec<&str> = p["leftovers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    if names.is_empty() {
        return String::new();
    }
    format!(
        "; stopped {}: {}",
        crate::style::plural(names.len() as u64, "leftover process", "leftover processes"),
        names.join(", ")
    )
}

pub(crate) fn describe(e: &Event) -> String {
    let p = &e.payload;
    let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
    match e.kind.as_str() {
        "claimed" => format!("claimed by {} (attempt {})", s("assignee"), p["attempt"]),
        "dispatched" => format!(
            "agent {} started (attempt {}{})",
            s("agent"),
            p["attempt"],
            p["resumed"]
                .as_str()
                .map(|r| format!(", resuming session {r}"))
                .unwrap_or_default()
        ),
        "agent_finished" => format!(
            "agent {} finished: {} in {} ms{}{}",
            s("agent"),
            s("exit"),
            p["duration_ms"],
            p["usage"]["cost_usd"]
                .as_f64()
                .map(|c| format!(", ${c:.4}"))
                .unwrap_or_default(),
            leftovers(p)
        ),
        "activity" => format!("agent {}: {}", s("agent"), s("action")),
        "attention" => format!(
            "NEEDS YOU ({}): {} — answer with `braid answer {} \"…\"`",
            s("reason"),
            s("question").lines().next().unwrap_or(""),
            e.task.as_ref().map(|t| t.as_str()).unwrap_or("ID")
        ),
        "answered" => format!("answered by {}: {}", s("by"), s("text")),
        "approved" => format!("approved by {}", s("by")),
        "epic_completed" => format!(
            "epic done: every child is done ({} of {})",
            p["done"], p["children"]
        ),
        "changes_requested" => format!(
            "changes requested by {} ({}): {}",
            s("by"),
            crate::style::plural(
                p["comments"].as_array().map_or(0, Vec::len) as u64,
                "line comment",
                "line comments"
            ),
            s("message").lines().next().unwrap_or("")
        ),
        "gate_finished" => format!(
            "gate {} {} in {} ms{}{}",
            s("gate"),
            if p["passed"] == true {
                "passed"
            } else {
                "FAILED"
            },
            p["duration_ms"],
            if p["cached"] == true { " (cached)" } else { "" },
            leftovers(p)
        ),
        "retrying" => format!(
            "attempt {} failed ({}); retrying in {} ms",
            p["attempt"],
            s("failed"),
            p["backoff_ms"]
        ),
        "cooldown" => format!(
            "agent {} is rate limited; cooling down {} s",
            s("agent"),
            p["seconds"]
        ),
        "state_changed" => format!(
            "{} -> {}{}",
            s("from"),
            s("to"),
            p["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        "released" => format!("released back to open ({})", s("reason")),
        "rescued" => "rescued: its previous runner's lease expired".to_owned(),
        other => other.to_owned(),
    }
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    if let Some(s) = store.sqlite() {
        s.checkpoint_in_background()?;
    }
    let config = load_run_config(&project)?;
    sync_settings(&project, &store)?;
    // What nobody needs goes now and daily while the run lasts.
    let _gc = crate::gc::periodic(project.clone(), config.gc_keep)?;
    // A snapshot of the database every [snapshot] every while it runs.
    let _snapshots =
        crate::snapshot::periodic(&project, config.snapshot_every, config.snapshot_keep)?;
    if config.agents.is_empty() {
        return Err(Failure::usage(format!(
            "no [[agent]] in {}: add one, e.g.\n\n[[agent]]\nname = \"claude\"\ncommand = [\"claude\", \"-p\", \"{{prompt}}\"]\n\n(see docs/config.md)",
            project.dir.join("config.toml").display()
        ))
        .into());
    }
    let json = ctx.global.json;
    let style = ctx.style;
    let line = move |e: &Event| {
        let task = e.task.as_ref().map(|t| t.to_string()).unwrap_or_default();
        let time = ts(e.at);
        format!(
            "{} {}  {}",
            style.dim(&time[11..19.min(time.len())]),
            style.bold(&task),
            describe(e)
        )
    };
    let on_event: Box<dyn FnMut(&Event)> = if json {
        Box::new(|e: &Event| {
            let mut out = term::Lines::stdout();
            let _ = out.json(&EventView::from(e));
            let _ = out.text("\n");
            let _ = out.flush();
        })
    } else if term::is_terminal(term::To::Out) {
        Box::new(live_progress(project.open()?, line, style.color))
    } else {
        Box::new(move |e: &Event| outln!("{}", line(e)))
    };
    if a.merge && config.merge_into.is_none() {
        return Err(Failure::usage(format!(
            "--merge needs a target branch: add\n\n[merge]\ninto = \"main\"\n\nto {}",
            project.dir.join("config.toml").display()
        ))
        .into());
    }
    let merger = a.merge.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let hook = braid_run::MergeHook {
            requested: Default::default(),
            active: Default::default(),
            wake: tx,
        };
        // Work already in review is merged first.
        hook.requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = hook.wake.send(());
        (hook, rx)
    });
    let opts = RunOptions {
        follow: a.follow,
        max_tasks: a.max_tasks,
        only: a.only,
        actor: ctx.actor(),
        merge: merger.as_ref().map(|(h, _)| h.clone()),
    };
    let engine = Engine::new(&store, config.clone(), paths(&project), opts, on_event);
    let waker = engine.waker();
    let merged = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize, 0usize, 0usize)));
    let merge_thread = merger.map(|(hook, rx)| {
        let (project, config, actor) = (project.clone(), config.clone(), ctx.actor());
        let merged = merged.clone();
        // The thread keeps no sender: the channel closes when the engine,
        // which holds the last one, is gone.
        let flags = (hook.requested.clone(), hook.active.clone());
        drop(hook);
        std::thread::Builder::new()
            .name("braid-merge".into())
            .spawn(move || {
                merge_loop(
                    &project, &config, actor, style, json, &flags, &rx, &waker, &merged,
                )
            })
            .expect("spawning the merge thread")
    });
    let report = engine.run()?;
    if let Some(t) = merge_thread {
        let _ = t.join();
    }
    let (landed, rejected, failed_by_merge, needs_human) =
        *merged.lock().unwrap_or_else(|p| p.into_inner());
    if json {
        // The summary goes to stderr so stdout stays pure JSON lines.
        let latency = report
            .latency_ms
            .map(|(p50, p99)| json!({"p50": p50, "p99": p99}));
        errln!(
            "{}",
            term::json_safe(&json!({"dispatched": report.dispatched, "review": report.review, "done": report.done, "failed": report.failed, "released": report.released, "waiting": report.waiting, "interrupted": report.interrupted, "halted": report.halted, "stopped": report.stopped, "dispatch_latency_ms": latency, "merged": landed, "merge_rejected": rejected, "needs_human": needs_human}).to_string())
        );
    } else {
        outln!(
            "Run finished: {} dispatched, {} done, {} in review, {} failed, {} released, {} waiting for you.",
            report.dispatched,
            report.done,
            report.review,
            report.failed,
            report.released,
            report.waiting
        );
        if report.waiting > 0 {
            outln!(
                "{} for an answer: `braid needs` lists them, `braid answer ID \"…\"` answers.",
                crate::style::plural(report.waiting as u64, "task waits", "tasks wait")
            );
        }
        // Where the work went.
        match &config.merge_into {
            Some(target) if a.merge => {
                outln!("{landed} landed on {target}.");
                let waiting = report.review.saturating_sub(landed);
                if waiting > 0 {
                    outln!(
                        "{waiting} waiting in review on braid/<id> (`braid merge run` lands them on {target})."
                    );
                }
            }
            Some(target) if report.review > 0 => outln!(
                "{} waiting in review on braid/<id> branches: `braid merge run` lands them on {target} (or run with --merge).",
                report.review
            ),
            None if report.done > 0 => outln!(
                "{} done on branches braid/<id>: nothing lands without a [merge] target (dependents start from this work; add [merge] into = \"main\" to land it).",
                report.done
            ),
            _ => {}
        }
        if a.merge {
            outln!(
                "Merged {}; {rejected} sent back or blocked by a conflict.",
                crate::style::plural(landed as u64, "branch", "branches")
            );
            if needs_human > 0 {
                outln!(
                    "{} a person: see `braid list --label needs-human`.",
                    crate::style::plural(needs_human as u64, "conflict needs", "conflicts need")
                );
            }
        }
        if let Some(why) = &report.halted {
            outln!("Stopped dispatching: {why}.");
        }
        if !report.stopped.is_empty() {
            outln!(
                "Stopped {} process group(s) another braid left working:",
                report.stopped.len()
            );
            for s in &report.stopped {
                outln!("  {s}");
            }
        }
    }
    Ok(if failed_by_merge > 0 {
        exit::FAILED
    } else {
        report.exit_code()
    })
}

/// The merger beside the engine: a pass each time it is woken, until the
/// engine is gone (its end of the channel dropped).
#[allow(clippy::too_many_arguments)]
fn merge_loop(
    project: &Project,
    config: &Config,
    actor: String,
    style: crate::style::Style,
    quiet: bool,
    (requested, active): &(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ),
    rx: &std::sync::mpsc::Receiver<()>,
    engine: &braid_run::Waker,
    merged: &std::sync::Mutex<(usize, usize, usize, usize)>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    // Notes already printed by an earlier pass: a branch that waits is
    // said once per run, not once per pass.
    let mut said = std::collections::HashSet::new();
    while rx.recv().is_ok() {
        while rx.try_recv().is_ok() {}
        active.store(true, SeqCst);
        requested.store(false, SeqCst);
        match crate::merge::pass(project, config, actor.clone(), style, quiet, &mut said) {
            Ok(o) => {
                let mut m = merged.lock().unwrap_or_else(|p| p.into_inner());
                m.0 += o.landed.len();
                m.1 += o.rejected.len();
                m.2 += o
                    .rejected
                    .iter()
                    .filter(|r| r.task_state.as_deref() == Some("failed"))
                    .count();
                m.3 += o
                    .rejected
                    .iter()
                    .filter(|r| r.needs_human.is_some())
                    .count();
            }
            Err(e) => errln!("braid: merge: {e:#}"),
        }
        active.store(false, SeqCst);
        engine.wake();
    }
}

/// On a terminal: a status line (ready, running, review, done, failed) and
/// one line per running agent, with event lines scrolling above them.
/// indicatif draws them; what it is given has passed [`term::clean`].
fn live_progress(
    status_store: braid_store::AnyStore,
    line: impl Fn(&Event) -> String,
    sgr_ok: bool,
) -> impl FnMut(&Event) {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let mp = MultiProgress::new();
    let status = mp.add(ProgressBar::new_spinner());
    status.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    status.enable_steady_tick(std::time::Duration::from_millis(120));
    let agent_style =
        ProgressStyle::with_template("  {spinner} {msg} ({elapsed})").expect("valid template");
    let mut running: std::collections::HashMap<String, ProgressBar> =
        std::collections::HashMap::new();
    move |e: &Event| {
        let task = e.task.as_ref().map(|t| t.to_string()).unwrap_or_default();
        // An agent's latest action shows on its own line of the display,
        // not as a line of history.
        if e.kind.as_str() != "activity" {
            let _ = mp.println(term::clean(&line(e), sgr_ok));
        }
        match e.kind.as_str() {
            "activity" => {
                if let Some(bar) = running.get(&task) {
                    let agent = e.payload["agent"].as_str().unwrap_or("?");
                    let action = e.payload["action"].as_str().unwrap_or("");
                    bar.set_message(
                        term::clean(&format!("{task}  {agent}: {action}"), sgr_ok).into_owned(),
                    );
                }
            }
            "dispatched" => {
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_style(agent_style.clone());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                let agent = e.payload["agent"].as_str().unwrap_or("?");
                bar.set_message(
                    term::clean(
                        &format!("{task}  {agent} (attempt {})", e.payload["attempt"]),
                        sgr_ok,
                    )
                    .into_owned(),
                );
                if let Some(old) = running.insert(task, bar) {
                    old.finish_and_clear();
                }
            }
            "agent_finished" => {
                if let Some(bar) = running.get(&task) {
                    bar.set_message(format!("{task}  gates"));
                }
            }
            "state_changed" | "released" | "rescued" | "retrying" | "cooldown" => {
                if e.kind.as_str() != "retrying" {
                    if let Some(bar) = running.remove(&task) {
                        bar.finish_and_clear();
                    }
                } else if let Some(bar) = running.get(&task) {
                    bar.set_message(format!("{task}  waiting to retry"));
                }
            }
            _ => {}
        }
        if let Ok(h) = status_store.health() {
            let n = |s: State| h.by_state.get(&s).copied().unwrap_or(0);
            status.set_message(format!(
                "ready {} · running {} · review {} · done {} · failed {}",
                h.ready,
                running.len(),
                n(State::Review),
                n(State::Done),
                n(State::Failed)
            ));
        }
    }
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    /// The task (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
}

pub fn context(ctx: &Ctx, a: ContextArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let prompt = braid_app::prompt::build(&store, &a.id)?;
    if ctx.global.json {
        ctx.print_json(&json!({"id": a.id, "prompt": prompt}))?;
    } else {
        out!("{prompt}");
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The task whose logs to show.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// Keep printing as the logs grow.
    #[arg(long, short)]
    pub follow: bool,
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let attempt: u32 = name
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (attempt, name)
    });
    files
}

/// Agent and gate output as it may reach a terminal: through
/// [`term::Lines`], so an escape sequence an agent printed is shown, not
/// run (its colours pass to a terminal that takes them). Following, a
/// character or colour code cut off at the end of what was written so far
/// waits for the next read.
pub fn logs(ctx: &Ctx, a: LogsArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    store.task(&a.id)?;
    let dir = paths(&project).logs(&a.id);
    let mut offsets: std::collections::HashMap<PathBuf, u64> = std::collections::HashMap::new();
    let follow = a.follow;
    let print_new = |offsets: &mut std::collections::HashMap<PathBuf, u64>| -> Result<()> {
        let mut out = term::Lines::stdout();
        for f in log_files(&dir) {
            let start = offsets.get(&f).copied().unwrap_or(0);
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            if (bytes.len() as u64) > start {
                let mut chunk = &bytes[start as usize..];
                if follow {
                    chunk = &chunk[..term::complete_len(chunk)];
                    if chunk.is_empty() {
                        continue;
                    }
                }
                let text = String::from_utf8_lossy(chunk);
                if ctx.global.json {
                    // One JSON line per chunk: {"path", "text"}.
                    out.json(&json!({"path": f, "text": text}))?;
                    out.text("\n")?;
                } else {
                    if start == 0 {
                        let head = format!("==> {} <==", f.display());
                        out.text(&format!("{}\n", ctx.style.bold(&head)))?;
                    }
                    out.text(&text)?;
                }
                offsets.insert(f, start + chunk.len() as u64);
            }
        }
        out.flush()?;
        Ok(())
    };
    if !a.follow {
        return print_attempts(ctx, &store, &a.id, &dir);
    }
    use notify::Watcher;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |_res| {
        let _ = tx.send(());
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    print_new(&mut offsets)?;
    while rx.recv().is_ok() {
        while rx.try_recv().is_ok() {}
        print_new(&mut offsets)?;
    }
    Ok(exit::OK)
}

/// One log an attempt made (or would have made): whose, how it ended,
/// and its file.
struct AttemptLog {
    attempt: Option<u64>,
    /// `agent NAME` or `gate NAME`, or the file's name for a log no event
    /// names.
    name: String,
    outcome: String,
    path: Option<PathBuf>,
}

/// Every attempt's agent and gate logs with their outcome, from the
/// task's events (so one that could not start is listed too), then any
/// other log file in its folder.
fn attempt_logs(store: &dyn Store, id: &TaskId, dir: &Path) -> Result<Vec<AttemptLog>> {
    let mut out: Vec<AttemptLog> = Vec::new();
    let mut attempt = None;
    let mut agent_at = None;
    for e in store.task_events(id, 2000)? {
        let p = &e.payload;
        match e.kind {
            braid_core::EventKind::Dispatched => {
                attempt = p["attempt"].as_u64();
                let agent = p["agent"].as_str().unwrap_or("?");
                let path = p["log"]
                    .as_str()
                    .map(PathBuf::from)
                    .or_else(|| attempt.map(|n| dir.join(format!("{n}-{agent}.log"))));
                agent_at = Some(out.len());
                out.push(AttemptLog {
                    attempt,
                    name: format!("agent {agent}"),
                    outcome: "running".into(),
                    path,
                });
            }
            braid_core::EventKind::AgentFinished => {
                if let Some(i) = agent_at.take() {
                    out[i].outcome = p["exit"].as_str().unwrap_or("ended").to_owned();
                }
            }
            braid_core::EventKind::Released => {
                // Given back before its agent ended: it could not start,
                // or the run stopped.
                if let Some(i) = agent_at.take() {
                    out[i].outcome =
                        format!("given back: {}", p["reason"].as_str().unwrap_or("released"));
                }
            }
            braid_core::EventKind::GateFinished => {
                let gate = p["gate"].as_str().unwrap_or("?");
                let outcome = if p["cached"] == true {
                    "passed (cached)".to_owned()
                } else if p["passed"] == true {
                    "passed".to_owned()
                } else {
                    format!("FAILED: {}", p["exit"].as_str().unwrap_or("?"))
                };
                out.push(AttemptLog {
                    attempt,
                    name: format!("gate {gate}"),
                    outcome,
                    path: attempt.map(|n| dir.join(format!("{n}-gate-{gate}.log"))),
                });
            }
            _ => {}
        }
    }
    for f in log_files(dir) {
        if !out.iter().any(|l| l.path.as_deref() == Some(f.as_path())) {
            out.push(AttemptLog {
                attempt: None,
                name: f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                outcome: String::new(),
                path: Some(f),
            });
        }
    }
    Ok(out)
}

fn print_attempts(ctx: &Ctx, store: &dyn Store, id: &TaskId, dir: &Path) -> Result<i32> {
    let logs = attempt_logs(store, id, dir)?;
    let mut out = term::Lines::stdout();
    if logs.is_empty() {
        if ctx.global.json {
            // JSON lines: none.
            return Ok(exit::OK);
        }
        outln!("No logs for {id} yet: no attempt has started.");
        return Ok(exit::OK);
    }
    for l in &logs {
        let text = match &l.path {
            Some(p) => match std::fs::read(p) {
                Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
            },
            None => None,
        };
        if ctx.global.json {
            out.json(&json!({
                "attempt": l.attempt, "name": l.name, "outcome": l.outcome,
                "path": l.path, "text": text,
            }))?;
            out.text("\n")?;
            continue;
        }
        let mut head = String::from("==> ");
        if let Some(n) = l.attempt {
            head.push_str(&format!("attempt {n} · "));
        }
        head.push_str(&l.name);
        if !l.outcome.is_empty() {
            head.push_str(&format!(" · {}", l.outcome));
        }
        match (&l.path, &text) {
            (Some(p), Some(_)) => head.push_str(&format!(" · {}", p.display())),
            _ => head.push_str(" · no log"),
        }
        head.push_str(" <==");
        out.text(&format!("{}\n", ctx.style.bold(&head)))?;
        match text.as_deref() {
            Some("") => out.text("(empty)\n")?,
            Some(t) => {
                out.text(t)?;
                if !t.ends_with('\n') {
                    out.text("\n")?;
                }
            }
            None => {}
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Sizes as people read them: `512 B`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// With a remote: deletes there the branches of tasks that are done and
/// whose work is on the target (nobody needs them). Answers their names.
pub fn delete_landed_remote_branches(
    project: &Project,
    store: &dyn Store,
    config: &Config,
) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    let Some(repo) = paths(project).repo else {
        return Ok(deleted);
    };
    let (Some(remote), Some(into)) = (&config.remote, &config.merge_into) else {
        return Ok(deleted);
    };
    braid_run::remote::fetch_work(&repo, remote, into)?;
    let target = braid_run::remote::tracking(remote, into);
    let prefix = format!("{}/", braid_run::remote::tracking(remote, "braid"));
    for (name, commit) in braid_git::refs_under(&repo, &prefix)? {
        let done = TaskId::parse(&name)
            .ok()
            .and_then(|id| store.task(&id).ok())
            .is_some_and(|t| matches!(t.state, State::Done | State::Cancelled));
        if !done || !braid_git::is_ancestor(&repo, &commit, &target)? {
            continue;
        }
        let branch = format!("braid/{name}");
        match braid_run::remote::retry("push --delete", || {
            braid_git::delete_remote_branch(&repo, remote, &branch)
        }) {
            Ok(()) => deleted.push(branch),
            Err(e) => errln!("could not delete {branch} on {remote}: {e}"),
        }
    }
    Ok(deleted)
}

#[derive(clap::Subcommand, Debug)]
pub enum GateCmd {
    /// Run a task's gates now, in its workspace (or the project's root when
    /// it has none), answering from the cache when possible.
    Run {
        /// The task whose gates to run (in its worktree).
        #[arg(value_parser = parse_id)]
        id: TaskId,
        /// Ignore the cache (and do not record results in it).
        #[arg(long)]
        no_cache: bool,
    },
}

pub fn gate(ctx: &Ctx, cmd: GateCmd) -> Result<i32> {
    let GateCmd::Run { id, no_cache } = cmd;
    let (project, store) = ctx.open()?;
    let config = load_config(&project)?;
    let task = store.task(&id)?;
    let gates: Vec<_> = config
        .gates
        .iter()
        .filter(|g| task.gates.is_empty() || task.gates.contains(&g.name))
        .cloned()
        .collect();
    if gates.is_empty() {
        return Err(Failure::usage(format!(
            "{id} has no gates to run: add [[gate]] entries to config.toml"
        ))
        .into());
    }
    let p = paths(&project);
    let ws = p.workspace(&id);
    let dir = if ws.exists() {
        ws
    } else {
        project
            .dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let mut cache = if no_cache || !config.cache.enabled {
        None
    } else {
        Some(braid_run::cache::Cache::open(&config.cache)?)
    };
    let log_dir = p.logs(&id).join("manual");
    let outcomes = braid_run::gates::run_gates(
        &gates,
        &dir,
        &log_dir,
        config.run.jobs,
        config.run.kill_grace,
        cache.as_mut(),
        None,
    );
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if ctx.global.json {
        let v: Vec<_> = outcomes
            .iter()
            .map(|o| json!({"gate": o.name, "passed": o.passed, "cached": o.cached, "duration_ms": o.duration_ms, "exit": o.exit, "log": o.log}))
            .collect();
        ctx.print_json(&v)?;
    } else {
        for o in &outcomes {
            let status = if o.passed {
                ctx.style.paint("32", "pass")
            } else {
                ctx.style.paint("31", "FAIL")
            };
            let cached = if o.cached { " (cached)" } else { "" };
            outln!(
                "{status}  {}  {} ms{cached}  {}",
                o.name,
                o.duration_ms,
                o.exit
            );
            if !o.passed
                && let Some(log) = &o.log
            {
                outln!("{}", braid_run::supervise::tail(log, 2048));
            }
        }
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

#[derive(clap::Subcommand, Debug)]
pub enum CacheCmd {
    /// Entries and bytes, by namespace (read from the index, instantly).
    Stats,
    /// Delete entries past the TTL, then the least recently used past the size limit.
    Prune,
}

pub fn cache(ctx: &Ctx, cmd: CacheCmd) -> Result<i32> {
    // The cache is per developer: a project is only needed for its config.
    let config = match ctx.project() {
        Ok(p) => load_config(&p)?,
        Err(_) => Config::default(),
    };
    let mut cache = braid_run::cache::Cache::open(&config.cache)?;
    let pruned = match cmd {
        CacheCmd::Prune => Some(cache.prune()?),
        CacheCmd::Stats => None,
    };
    let s = cache.stats()?;
    if ctx.global.json {
        ctx.print_json(&json!({
            "dir": cache.dir(), "entries": s.entries, "bytes": s.size, "rebuilt": s.rebuilt, "pruned": pruned,
            "namespaces": s.namespaces.iter().map(|(n, c, b)| json!({"namespace": n, "entries": c, "bytes": b})).collect::<Vec<_>>(),
        }))?;
    } else {
        if let Some(n) = pruned {
            outln!("Pruned {n} entries.");
        }
        if s.rebuilt {
            outln!("(The index was corrupted and has been rebuilt from the entries.)");
        }
        outln!(
            "{}: {} entries, {} bytes",
            cache.dir().display(),
            s.entries,
            s.size
        );
        for (n, c, b) in &s.namespaces {
            outln!("  {n}: {c} entries, {b} bytes");
        }
    }
    Ok(exit::OK)
}
