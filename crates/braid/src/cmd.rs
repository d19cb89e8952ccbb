//! The work-graph commands: init, add, show, list, ready, tree, dep, claim,
//! update and the state changes, health. Each builds a store command or
//! query and prints human or `--json` output.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use braid_core::{Dep, DepKind, NewTask, State, Task, TaskId, TaskPatch, TaskType};
use braid_store::{Command as StoreCmd, ListFilter, Store};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::exit::{self, Failure};
use crate::project::{self, Project};
use crate::style::{Style, table};
use crate::view::{EventView, TaskView, TreeRowView, ts};
use crate::{Cli, Command, Global};

/// What every command gets: the global flags, output style, and (once
/// opened) the store.
pub struct Ctx {
    pub global: Global,
    pub style: Style,
}

impl Ctx {
    pub fn actor(&self) -> String {
        self.global
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "braid".to_owned())
    }

    pub fn project(&self) -> Result<Project> {
        project::locate(self.global.db.as_deref())
    }

    pub fn open(&self) -> Result<(Project, braid_store::AnyStore)> {
        let p = self.project()?;
        let store = p.open()?;
        Ok((p, store))
    }

    pub fn print_json(&self, v: &impl serde::Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, v)?;
        writeln!(out)?;
        Ok(())
    }
}

pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        global: cli.global,
        style: Style::detect(),
    };
    match cli.command {
        Command::Init(a) => init(&ctx, a),
        Command::Add(a) => add(&ctx, a),
        Command::Show(a) => show(&ctx, a),
        Command::List(a) => list(&ctx, a),
        Command::Ready(a) => ready(&ctx, a),
        Command::Tree(a) => tree(&ctx, a),
        Command::Dep(a) => dep(&ctx, a),
        Command::Claim(a) => claim(&ctx, a),
        Command::Update(a) => update(&ctx, a),
        Command::Done(a) => transition(&ctx, &a.ids, State::Done, a.reason),
        Command::Comment(a) => comment(&ctx, a),
        Command::Fail(a) => transition(
            &ctx,
            std::slice::from_ref(&a.id),
            State::Failed,
            Some(a.reason),
        ),
        Command::Reopen(a) => transition(&ctx, &a.ids, State::Open, None),
        Command::Defer(a) => transition(&ctx, &a.ids, State::Deferred, None),
        Command::Cancel(a) => transition(&ctx, &a.ids, State::Cancelled, a.reason),
        Command::Health => health(&ctx),
        Command::Events(a) => crate::events::run(&ctx, a),
        Command::Import(a) => crate::transfer::import(&ctx, a),
        Command::Export(a) => crate::transfer::export(&ctx, a),
        Command::Snapshot(a) => crate::snapshot::run(&ctx, a),
        Command::Migrate(a) => crate::migrate::run(&ctx, a),
        Command::Demo(a) => crate::demo::run(&ctx, a),
        Command::Run(a) => crate::run::run(&ctx, a),
        Command::Context(a) => crate::run::context(&ctx, a),
        Command::Logs(a) => crate::run::logs(&ctx, a),
        Command::Gc => crate::run::gc(&ctx),
        Command::Serve(a) => crate::serve::run(&ctx, a),
        Command::Sync(a) => crate::serve::sync_once(&ctx, a),
        Command::Mcp(a) => crate::serve::mcp(&ctx, a),
        Command::Merge(a) => crate::merge::run(&ctx, a),
        Command::Gate(a) => crate::run::gate(&ctx, a),
        Command::Cache(a) => crate::run::cache(&ctx, a),
    }
}

pub fn parse_id(s: &str) -> Result<TaskId, String> {
    TaskId::parse(s).map_err(|e| e.to_string())
}

fn parse_type(s: &str) -> Result<TaskType, String> {
    TaskType::parse(s).map_err(|e| e.to_string())
}

fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).map_err(|e| e.to_string())
}

fn parse_kind(s: &str) -> Result<DepKind, String> {
    DepKind::parse(s).map_err(|e| e.to_string())
}

fn parse_priority(s: &str) -> Result<u8, String> {
    let s = s.trim().trim_start_matches(['p', 'P']);
    let n: i64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number 0-4"))?;
    braid_core::model::check_priority(n).map_err(|e| e.to_string())
}

/// `ID` or `KIND:ID` (e.g. `related:br-x1`).
fn parse_dep(s: &str) -> Result<Dep, String> {
    match s.split_once(':') {
        Some((kind, id)) => Ok(Dep {
            id: parse_id(id)?,
            kind: parse_kind(kind)?,
        }),
        None => Ok(Dep {
            id: parse_id(s)?,
            kind: DepKind::Blocks,
        }),
    }
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 15m, 2h: {e}"))
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to create .braid/ in (default: the current one).
    pub dir: Option<PathBuf>,
}

fn init(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    let root = match a.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let (p, created) = project::init(&root, ctx.global.db.as_deref())?;
    let db = match &p.url {
        Some(url) => braid_store::postgres::redact(url),
        None => p.db.display().to_string(),
    };
    if ctx.global.json {
        ctx.print_json(&json!({"db": db, "dir": p.dir, "created": created}))?;
    } else if created {
        println!("Initialized braid in {} (database {db}).", p.dir.display());
        println!("Next: braid add \"First task\"   then   braid ready");
    } else {
        println!(
            "braid is already set up here ({}); nothing changed.",
            p.db.display()
        );
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The task's title.
    pub title: String,
    /// task, epic, bug or chore.
    #[arg(long = "type", short = 't', value_parser = parse_type, default_value = "task")]
    pub kind: TaskType,
    /// 0 (highest) to 4.
    #[arg(long, short, value_parser = parse_priority, default_value = "2")]
    pub priority: u8,
    /// The epic (or task) this one belongs to.
    #[arg(long, value_parser = parse_id)]
    pub parent: Option<TaskId>,
    /// A task this one depends on: ID (blocks) or KIND:ID (related, discovered-from). Repeatable.
    #[arg(long = "dep", short = 'd', value_parser = parse_dep)]
    pub deps: Vec<Dep>,
    /// A label. Repeatable.
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// A gate (name or command) this task must pass. Repeatable.
    #[arg(long = "gate")]
    pub gates: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Acceptance criteria.
    #[arg(long, default_value = "")]
    pub acceptance: String,
    #[arg(long)]
    pub assignee: Option<String>,
    /// The agent that should do this task.
    #[arg(long)]
    pub agent: Option<String>,
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let new = NewTask {
        id: None,
        title: a.title,
        description: a.description,
        kind: Some(a.kind),
        priority: Some(a.priority),
        parent: a.parent,
        labels: a.labels,
        assignee: a.assignee,
        acceptance: a.acceptance,
        gates: a.gates,
        agent: a.agent,
        deps: a.deps,
    };
    let applied = store.apply(&ctx.actor(), StoreCmd::Add(new))?;
    let t = &applied.task;
    if ctx.global.json {
        ctx.print_json(&TaskView::from(t))?;
    } else {
        let status = if t.ready { "ready" } else { "blocked" };
        println!("{}  {}  ({status})", ctx.style.bold(t.id.as_str()), t.title);
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// How many recent events to show per task.
    #[arg(long, default_value = "10")]
    pub events: usize,
}

#[derive(Args, Debug)]
pub struct CommentArgs {
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// The comment (Markdown).
    pub text: String,
    /// Who says it (default: --actor, $BRAID_ACTOR or $USER).
    #[arg(long = "as")]
    pub author: Option<String>,
}

fn comment(ctx: &Ctx, a: CommentArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let author = a.author.unwrap_or_else(|| ctx.actor());
    let payload = braid_core::model::comment_payload(&author, &a.text)?;
    let applied = store.apply(
        &ctx.actor(),
        StoreCmd::Record {
            id: a.id.clone(),
            kind: braid_core::EventKind::Commented,
            payload,
        },
    )?;
    let e = applied.events.last().context("the comment was recorded")?;
    if ctx.global.json {
        ctx.print_json(&CommentView::from(e))?;
    } else {
        println!("Commented on {} (#{}).", a.id, e.seq);
    }
    Ok(exit::OK)
}

/// A comment as shown.
#[derive(serde::Serialize)]
pub struct CommentView {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub text: String,
}

impl From<&braid_core::Event> for CommentView {
    fn from(e: &braid_core::Event) -> Self {
        CommentView {
            seq: e.seq,
            at: ts(e.at),
            author: e.payload["author"].as_str().unwrap_or(&e.actor).to_owned(),
            text: e.payload["text"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

fn show(ctx: &Ctx, a: ShowArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let mut docs = Vec::new();
    for id in &a.ids {
        let t = store.task(id)?;
        let why = store.why_blocked(id)?;
        let events = store.task_events(id, a.events)?;
        let comments = store.comments(id, 50)?;
        let children = store.list(&ListFilter {
            parent: Some(id.clone()),
            ..ListFilter::default()
        })?;
        if ctx.global.json {
            let mut v = serde_json::to_value(TaskView::from(&t))?;
            v["blocked_by"] = json!(why);
            v["children"] = json!(
                children
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect::<Vec<_>>()
            );
            v["events"] = json!(events.iter().map(EventView::from).collect::<Vec<_>>());
            v["comments"] = json!(comments.iter().map(CommentView::from).collect::<Vec<_>>());
            docs.push(v);
        } else {
            print_task(ctx, &t, &why, &children, &events);
            if !comments.is_empty() {
                println!("  {}", ctx.style.dim("comments"));
                for c in comments.iter().map(CommentView::from) {
                    println!("    {} {}", ctx.style.dim(&c.at), ctx.style.bold(&c.author));
                    for line in c.text.lines() {
                        println!("      {line}");
                    }
                }
            }
        }
    }
    if ctx.global.json {
        if docs.len() == 1 {
            ctx.print_json(&docs[0])?;
        } else {
            ctx.print_json(&docs)?;
        }
    }
    Ok(exit::OK)
}

fn print_task(
    ctx: &Ctx,
    t: &Task,
    why: &[String],
    children: &[Task],
    events: &[braid_core::Event],
) {
    let s = &ctx.style;
    println!("{}  {}", s.bold(t.id.as_str()), s.bold(&t.title));
    let field = |name: &str, value: String| {
        if !value.is_empty() {
            println!("  {:<11} {value}", s.dim(name));
        }
    };
    field("state", s.state(t.state, t.ready, t.kind));
    field("type", t.kind.to_string());
    field("priority", format!("P{}", t.priority));
    field(
        "parent",
        t.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
    );
    field("labels", t.labels.join(", "));
    field("assignee", t.assignee.clone().unwrap_or_default());
    field("agent", t.agent.clone().unwrap_or_default());
    field("gates", t.gates.join(", "));
    field("branch", t.branch.clone().unwrap_or_default());
    field("created", ts(t.created_at));
    field("updated", ts(t.updated_at));
    if let Some(c) = t.closed_at {
        field(
            "closed",
            format!("{} {}", ts(c), t.close_reason.clone().unwrap_or_default()),
        );
    }
    if let Some(l) = &t.lease {
        field(
            "lease",
            format!("attempt {}, expires {}", l.attempt, ts(l.expires_at)),
        );
    }
    if !t.deps.is_empty() {
        let deps: Vec<String> = t
            .deps
            .iter()
            .map(|d| format!("{} ({})", d.id, d.kind))
            .collect();
        field("depends on", deps.join(", "));
    }
    for w in why {
        field("blocked", w.clone());
    }
    if !children.is_empty() {
        let c: Vec<String> = children
            .iter()
            .map(|c| format!("{} [{}]", c.id, c.state))
            .collect();
        field("children", c.join(", "));
    }
    if !t.description.is_empty() {
        println!("\n{}", indent(&t.description));
    }
    if !t.acceptance.is_empty() {
        println!("\n  {}\n{}", s.dim("acceptance"), indent(&t.acceptance));
    }
    if !events.is_empty() {
        println!("\n  {}", s.dim("events"));
        for e in events {
            println!("    #{:<6} {}  {:<13} {}", e.seq, ts(e.at), e.kind, e.actor);
        }
    }
    println!();
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn task_rows(ctx: &Ctx, tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                format!("P{}", t.priority),
                t.kind.to_string(),
                ctx.style.state(t.state, t.ready, t.kind),
                t.assignee.clone().unwrap_or_default(),
                t.title.clone(),
            ]
        })
        .collect();
    table(
        &ctx.style,
        &["ID", "PRI", "TYPE", "STATE", "ASSIGNEE", "TITLE"],
        &rows,
    )
}

fn print_tasks(ctx: &Ctx, tasks: &[Task], empty: &str) -> Result<()> {
    if ctx.global.json {
        let views: Vec<TaskView> = tasks.iter().map(TaskView::from).collect();
        ctx.print_json(&views)?;
    } else if tasks.is_empty() {
        println!("{empty}");
    } else {
        print!("{}", task_rows(ctx, tasks));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only these states (repeatable, or comma-separated).
    #[arg(long, short, value_parser = parse_state, value_delimiter = ',')]
    pub state: Vec<State>,
    /// Only these types.
    #[arg(long = "type", short = 't', value_parser = parse_type, value_delimiter = ',')]
    pub kind: Vec<TaskType>,
    #[arg(long, short)]
    pub label: Option<String>,
    /// Only direct children of this task.
    #[arg(long, value_parser = parse_id)]
    pub parent: Option<TaskId>,
    #[arg(long)]
    pub assignee: Option<String>,
    /// Only ready (or with --ready=false, only not ready) tasks.
    #[arg(long)]
    pub ready: Option<bool>,
    /// At most this many tasks.
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

fn list(ctx: &Ctx, a: ListArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let tasks = store.list(&ListFilter {
        states: a.state,
        kinds: a.kind,
        label: a.label,
        parent: a.parent,
        assignee: a.assignee,
        ready: a.ready,
        limit: a.limit,
    })?;
    print_tasks(ctx, &tasks, "No tasks match.")?;
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ReadyArgs {
    /// At most this many tasks.
    #[arg(long, short = 'n', default_value = "20")]
    pub limit: usize,
}

fn ready(ctx: &Ctx, a: ReadyArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let tasks = store.ready(a.limit)?;
    print_tasks(
        ctx,
        &tasks,
        "Nothing is ready. `braid list --state open` shows what waits, `braid show ID` says why.",
    )?;
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct TreeArgs {
    /// The root to show (default: every top-level task).
    #[arg(value_parser = parse_id)]
    pub id: Option<TaskId>,
}

/// Depth at which tree indentation stops growing (deep chains stay readable).
const MAX_INDENT: usize = 24;

fn tree(ctx: &Ctx, a: TreeArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let rows = store.subtree(a.id.as_ref())?;
    let mut index: foldhash::HashMap<&TaskId, usize> = foldhash::HashMap::default();
    index.reserve(rows.len());
    index.extend(rows.iter().enumerate().map(|(i, r)| (&r.id, i)));
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
    let mut roots = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let is_root = a.id.as_ref() == Some(&r.id);
        match r.parent.as_ref().and_then(|p| index.get(p)) {
            Some(&p) if !is_root => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    // Depth-first with an explicit stack: (row, depth, is last sibling).
    let mut stack: Vec<(usize, usize, bool)> = Vec::new();
    for (k, &r) in roots.iter().enumerate().rev() {
        stack.push((r, 0, k + 1 == roots.len()));
    }
    let mut last_at: Vec<bool> = Vec::new();
    if ctx.global.json {
        out.write_all(b"[")?;
    }
    let mut first = true;
    while let Some((i, depth, last)) = stack.pop() {
        let r = &rows[i];
        if ctx.global.json {
            if !first {
                out.write_all(b",")?;
            }
            out.write_all(b"\n  ")?;
            serde_json::to_writer(&mut out, &TreeRowView::new(r, depth))?;
        } else {
            last_at.truncate(depth);
            last_at.push(last);
            if depth > MAX_INDENT {
                write!(out, "[depth {depth}] ")?;
            } else {
                for &l in last_at.iter().take(depth).skip(1) {
                    out.write_all(if l {
                        "   ".as_bytes()
                    } else {
                        "│  ".as_bytes()
                    })?;
                }
                if depth > 0 {
                    out.write_all(if last {
                        "└─ ".as_bytes()
                    } else {
                        "├─ ".as_bytes()
                    })?;
                }
            }
            out.write_all(r.id.as_str().as_bytes())?;
            out.write_all(b"  ")?;
            let (code, label) = crate::style::state_label(r.state, r.ready, r.kind);
            ctx.style.write_painted(&mut out, code, label)?;
            if r.kind == TaskType::Epic {
                out.write_all(b" ")?;
                ctx.style.write_painted(&mut out, "2", "epic")?;
            }
            out.write_all(b"  ")?;
            out.write_all(r.title.as_bytes())?;
            out.write_all(b"\n")?;
        }
        first = false;
        let kids = &children[i];
        for (k, &c) in kids.iter().enumerate().rev() {
            stack.push((c, depth + 1, k + 1 == kids.len()));
        }
    }
    if ctx.global.json {
        out.write_all(b"\n]\n")?;
    } else if first {
        writeln!(out, "No tasks yet. Add one with `braid add \"Title\"`.")?;
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Subcommand, Debug)]
pub enum DepCmd {
    /// Record that A depends on B (A cannot start until B is done, for `blocks`).
    Add {
        #[arg(value_parser = parse_id)]
        a: TaskId,
        #[arg(value_parser = parse_id)]
        b: TaskId,
        /// blocks, related or discovered-from.
        #[arg(long, short, value_parser = parse_kind, default_value = "blocks")]
        kind: DepKind,
    },
    /// Remove the dependency of A on B.
    Rm {
        #[arg(value_parser = parse_id)]
        a: TaskId,
        #[arg(value_parser = parse_id)]
        b: TaskId,
    },
    /// Report cycles among `blocks` dependencies (exit 1 if any).
    Cycles,
}

fn dep(ctx: &Ctx, cmd: DepCmd) -> Result<i32> {
    let (_, store) = ctx.open()?;
    match cmd {
        DepCmd::Add { a, b, kind } => {
            let applied = store.apply(
                &ctx.actor(),
                StoreCmd::DepAdd {
                    from: a.clone(),
                    to: b.clone(),
                    kind,
                },
            )?;
            if ctx.global.json {
                ctx.print_json(&TaskView::from(&applied.task))?;
            } else {
                let note = if applied.task.ready {
                    "ready"
                } else {
                    "blocked"
                };
                println!("{a} now depends on {b} ({kind}); {a} is {note}.");
            }
        }
        DepCmd::Rm { a, b } => {
            let applied = store.apply(
                &ctx.actor(),
                StoreCmd::DepRm {
                    from: a.clone(),
                    to: b.clone(),
                },
            )?;
            if ctx.global.json {
                ctx.print_json(&TaskView::from(&applied.task))?;
            } else {
                let note = if applied.task.ready {
                    "ready"
                } else {
                    "still blocked"
                };
                println!("{a} no longer depends on {b}; {a} is {note}.");
            }
        }
        DepCmd::Cycles => {
            let edges = store.blocks_edges()?;
            let mut ids: Vec<&TaskId> = Vec::new();
            let mut index: HashMap<&TaskId, usize> = HashMap::new();
            let mut pairs = Vec::with_capacity(edges.len());
            for (a, b) in &edges {
                let mut idx = |id| {
                    *index.entry(id).or_insert_with(|| {
                        ids.push(id);
                        ids.len() - 1
                    })
                };
                let (x, y) = (idx(a), idx(b));
                pairs.push((x, y));
            }
            let cycles = braid_core::graph::find_cycles(ids.len(), &pairs, 100);
            let named: Vec<Vec<String>> = cycles
                .iter()
                .map(|c| c.iter().map(|&i| ids[i].to_string()).collect())
                .collect();
            if ctx.global.json {
                ctx.print_json(&named)?;
            } else if named.is_empty() {
                println!("No cycles among {} blocks dependencies.", edges.len());
            } else {
                for c in &named {
                    println!("cycle: {} -> {}", c.join(" -> "), c[0]);
                }
            }
            return Ok(if named.is_empty() {
                exit::OK
            } else {
                exit::FAILED
            });
        }
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ClaimArgs {
    /// The task to claim (default: the next ready one by priority).
    #[arg(value_parser = parse_id)]
    pub id: Option<TaskId>,
    /// Who takes it (default: the actor).
    #[arg(long = "as", value_name = "AGENT")]
    pub assignee: Option<String>,
    /// How long the claim holds before it can be rescued.
    #[arg(long, value_parser = parse_duration_ms, default_value = "30m")]
    pub lease: i64,
}

fn claim(ctx: &Ctx, a: ClaimArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let assignee = a.assignee.unwrap_or_else(|| ctx.actor());
    let applied = store.apply(
        &ctx.actor(),
        StoreCmd::Claim {
            id: a.id,
            assignee: assignee.clone(),
            lease_ms: a.lease,
        },
    )?;
    let t = &applied.task;
    if ctx.global.json {
        let mut v = serde_json::to_value(TaskView::from(t))?;
        if let (Some(token), Some(lease)) = (&applied.lease_token, &t.lease) {
            v["lease"] = json!({"token": token, "expires_at": ts(lease.expires_at), "attempt": lease.attempt});
        }
        ctx.print_json(&v)?;
    } else {
        let attempt = t.lease.as_ref().map(|l| l.attempt).unwrap_or(1);
        println!(
            "{} claimed {}  {}  (attempt {attempt})",
            assignee,
            ctx.style.bold(t.id.as_str()),
            t.title
        );
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "type", value_parser = parse_type)]
    pub kind: Option<TaskType>,
    #[arg(long, short, value_parser = parse_priority)]
    pub priority: Option<u8>,
    /// New parent; `none` moves the task to the top level.
    #[arg(long)]
    pub parent: Option<String>,
    #[arg(long = "add-label")]
    pub add_labels: Vec<String>,
    #[arg(long = "remove-label")]
    pub remove_labels: Vec<String>,
    /// New assignee; empty clears it.
    #[arg(long)]
    pub assignee: Option<String>,
    #[arg(long)]
    pub acceptance: Option<String>,
    /// Replace the gates (repeatable).
    #[arg(long = "gate")]
    pub gates: Option<Vec<String>>,
    /// Preferred agent; empty clears it.
    #[arg(long)]
    pub agent: Option<String>,
    /// Branch; empty clears it.
    #[arg(long)]
    pub branch: Option<String>,
}

fn clearable(v: Option<String>) -> Option<Option<String>> {
    v.map(|s| if s.is_empty() { None } else { Some(s) })
}

fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let parent = match a.parent.as_deref() {
        None => None,
        Some("none") | Some("") => Some(None),
        Some(p) => Some(Some(
            TaskId::parse(p).map_err(|e| Failure::usage(format!("--parent: {e}")))?,
        )),
    };
    let patch = TaskPatch {
        title: a.title,
        description: a.description,
        kind: a.kind,
        priority: a.priority,
        parent,
        add_labels: a.add_labels,
        remove_labels: a.remove_labels,
        assignee: clearable(a.assignee),
        acceptance: a.acceptance,
        gates: a.gates,
        agent: clearable(a.agent),
        branch: clearable(a.branch),
    };
    let applied = store.apply(&ctx.actor(), StoreCmd::Update { id: a.id, patch })?;
    if ctx.global.json {
        ctx.print_json(&TaskView::from(&applied.task))?;
    } else {
        let fields: Vec<String> = applied
            .events
            .iter()
            .flat_map(|e| {
                e.payload
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        println!("Updated {}: {}", applied.task.id, fields.join(", "));
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct IdsArgs {
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
}

/// Task ids and an optional reason (recorded as the close reason).
#[derive(Args, Debug)]
pub struct ReasonArgs {
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    #[arg(long, short)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct FailArgs {
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// What went wrong (required).
    #[arg(long, short)]
    pub reason: String,
}

/// Moves every named task to `to` in one transaction: all or none.
fn transition(ctx: &Ctx, ids: &[TaskId], to: State, reason: Option<String>) -> Result<i32> {
    if to == State::Failed && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(Failure::usage("--reason must say why the task failed").into());
    }
    let (_, store) = ctx.open()?;
    let cmds = ids
        .iter()
        .map(|id| StoreCmd::SetState {
            id: id.clone(),
            to,
            reason: reason.clone(),
        })
        .collect();
    let applied = store.apply_all(&ctx.actor(), cmds)?;
    if ctx.global.json {
        let views: Vec<TaskView> = applied.iter().map(|a| TaskView::from(&a.task)).collect();
        if views.len() == 1 {
            ctx.print_json(&views[0])?;
        } else {
            ctx.print_json(&views)?;
        }
    } else {
        for a in &applied {
            let from = a.events[0].payload["from"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            println!(
                "{}  {from} -> {}  {}",
                ctx.style.bold(a.task.id.as_str()),
                to,
                a.task.title
            );
        }
        if to.is_finished() {
            let h = store.health()?;
            println!("{} ready now.", h.ready);
        }
    }
    Ok(exit::OK)
}

fn health(ctx: &Ctx) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let h = store.health()?;
    if ctx.global.json {
        let by_state: serde_json::Map<String, serde_json::Value> = h
            .by_state
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
            .collect();
        ctx.print_json(&json!({
            "total": h.total, "epics": h.epics, "ready": h.ready, "blocked": h.blocked,
            "by_state": by_state, "last_seq": store.last_seq()?,
        }))?;
    } else {
        let s = &ctx.style;
        println!(
            "{} tasks ({} epics): {} ready, {} blocked",
            h.total,
            h.epics,
            s.paint("32", &h.ready.to_string()),
            s.paint("33", &h.blocked.to_string())
        );
        let rows: Vec<Vec<String>> = h
            .by_state
            .iter()
            .map(|(st, n)| vec![st.as_str().to_owned(), n.to_string()])
            .collect();
        print!("{}", table(s, &["STATE", "COUNT"], &rows));
    }
    Ok(exit::OK)
}
