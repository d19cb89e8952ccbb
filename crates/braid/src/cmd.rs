//! The work-graph commands: init, add, show, list, ready, tree, dep, claim,
//! update and the state changes, health. Each translates its arguments to a
//! braid-app operation and prints the answer, human or `--json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use braid_app::ops::{self, Transition};
use braid_app::wire::{
    ClaimIn, CommentIn, DepIn, ListIn, NewTaskIn, PatchIn, ShowView, TaskView, TreeRowView,
};
use braid_core::{DepKind, State, Task, TaskId, TaskType};
use braid_store::Store;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::exit;
use crate::project::{self, Project};
use crate::style::{Style, table};
use crate::{Cli, Global, Verb};

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
        crate::term::print_json(v)?;
        Ok(())
    }
}

pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        global: cli.global,
        style: Style::detect(),
    };
    match cli.command {
        Verb::Init(a) => init(&ctx, a),
        Verb::Add(a) => add(&ctx, a),
        Verb::Show(a) => show(&ctx, a),
        Verb::List(a) => list(&ctx, a),
        Verb::Ready(a) => ready(&ctx, a),
        Verb::Tree(a) => tree(&ctx, a),
        Verb::Dep(a) => dep(&ctx, a),
        Verb::Claim(a) => claim(&ctx, a),
        Verb::Update(a) => update(&ctx, a),
        Verb::Done(a) => transition(&ctx, &a.ids, Transition::Done, a.reason),
        Verb::Comment(a) => comment(&ctx, a),
        Verb::Fail(a) => transition(
            &ctx,
            std::slice::from_ref(&a.id),
            Transition::Fail,
            Some(a.reason),
        ),
        Verb::Reopen(a) => transition(&ctx, &a.ids, Transition::Reopen, None),
        Verb::Defer(a) => transition(&ctx, &a.ids, Transition::Defer, None),
        Verb::Cancel(a) => transition(&ctx, &a.ids, Transition::Cancel, a.reason),
        Verb::Health => health(&ctx),
        Verb::Cost(a) => cost(&ctx, a),
        Verb::Needs(a) => crate::attend::needs(&ctx, a),
        Verb::Answer(a) => crate::attend::answer(&ctx, a),
        Verb::Attach(a) => crate::attend::attach(&ctx, a),
        Verb::Events(a) => crate::events::run(&ctx, a),
        Verb::Import(a) => crate::transfer::import(&ctx, a),
        Verb::Export(a) => crate::transfer::export(&ctx, a),
        Verb::Snapshot(a) => crate::snapshot::run(&ctx, a),
        Verb::Doctor => crate::doctor::run(&ctx),
        Verb::Migrate(a) => crate::migrate::run(&ctx, a),
        Verb::Demo(a) => crate::demo::run(&ctx, a),
        Verb::Run(a) => crate::run::run(&ctx, a),
        Verb::Context(a) => crate::run::context(&ctx, a),
        Verb::Logs(a) => crate::run::logs(&ctx, a),
        Verb::Gc(a) => crate::gc::run(&ctx, a),
        Verb::Serve(a) => crate::serve::run(&ctx, a),
        Verb::Sync(a) => crate::serve::sync_once(&ctx, a),
        Verb::Mcp(a) => crate::serve::mcp(&ctx, a),
        Verb::Merge(a) => crate::merge::run(&ctx, a),
        Verb::Diff(a) => crate::review::diff(&ctx, a),
        Verb::Status => crate::status::run(&ctx),
        Verb::Epic(a) => crate::epic::run(&ctx, a),
        Verb::Config => {
            crate::term::write(crate::term::To::Out, crate::CONFIG_DOC);
            Ok(exit::OK)
        }
        Verb::Completions(a) => {
            let mut out = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "braid", &mut out);
            crate::term::write(crate::term::To::Out, &String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
        Verb::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out)?;
            crate::term::write(crate::term::To::Out, &String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
        Verb::Review(a) => crate::review::run(&ctx, a),
        Verb::Gate(a) => crate::run::gate(&ctx, a),
        Verb::Cache(a) => crate::run::cache(&ctx, a),
    }
}

/// An id as typed: checked here for its characters, resolved (a prefix,
/// any case) by the operation.
pub fn parse_id(s: &str) -> Result<TaskId, String> {
    TaskId::parse(s.trim()).map_err(|e| e.to_string())
}

fn parse_type(s: &str) -> Result<TaskType, String> {
    TaskType::parse(s).map_err(|e| e.to_string())
}

/// What `list --state` takes: a stored state, or `ready` / `blocked`
/// (derived: open work that can start, or that waits on something).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    Is(State),
    Ready,
    Blocked,
}

fn parse_state_filter(s: &str) -> Result<StateFilter, String> {
    match s.trim() {
        "ready" => Ok(StateFilter::Ready),
        "blocked" => Ok(StateFilter::Blocked),
        other => State::parse(other).map(StateFilter::Is).map_err(|e| {
            format!("{e} (or ready, blocked: open work that can start, or that waits)")
        }),
    }
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
fn parse_dep(s: &str) -> Result<DepIn, String> {
    match s.split_once(':') {
        Some((kind, id)) => Ok(DepIn {
            id: parse_id(id)?.to_string(),
            kind: Some(parse_kind(kind)?.as_str().to_owned()),
        }),
        None => Ok(DepIn {
            id: parse_id(s)?.to_string(),
            kind: None,
        }),
    }
}

fn parse_duration_secs(s: &str) -> Result<u64, String> {
    braid_app::units::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
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
    let done = project::init(&root, ctx.global.db.as_deref())?;
    let (p, created) = (&done.project, done.created);
    let db = match &p.url {
        Some(url) => braid_store::postgres::redact(url),
        None => p.db.display().to_string(),
    };
    if ctx.global.json {
        ctx.print_json(
            &json!({"db": db, "dir": p.dir, "created": created, "merge_into": done.merge_into}),
        )?;
    } else if created {
        outln!("Initialized braid in {} (database {db}).", p.dir.display());
        if let Some(b) = &done.merge_into {
            outln!(
                "Finished work lands on {b}: `braid run --merge` merges it in dependency order \
                 ([merge] into = {b:?} in {}; remove that table to leave work on its branches).",
                p.dir.join("config.toml").display()
            );
        }
        if p.url.is_none() && braid_git::repo_root(&root).is_some() {
            outln!(
                "Commit {0}/config.toml and {0}/.gitignore (the database, logs and worktrees stay out of git: {0}/.gitignore lists them).",
                p.dir.strip_prefix(&root).unwrap_or(&p.dir).display()
            );
        }
        outln!(
            "Next: braid add \"First task\"   then   braid ready   (`braid config` explains every setting)"
        );
    } else {
        outln!(
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
    #[arg(long = "dep", value_parser = parse_dep)]
    pub deps: Vec<DepIn>,
    /// A label. Repeatable.
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// A gate (name or command) this task must pass. Repeatable.
    #[arg(long = "gate")]
    pub gates: Vec<String>,
    /// What the task is about (Markdown; the agent is told it). `-` reads
    /// it from stdin.
    #[arg(long, short = 'd', value_name = "TEXT|-", conflicts_with_all = ["description_file", "edit"])]
    pub description: Option<String>,
    /// Read the description from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "edit")]
    pub description_file: Option<PathBuf>,
    /// Write the description in $VISUAL or $EDITOR.
    #[arg(long, short = 'e')]
    pub edit: bool,
    /// Acceptance criteria (what done means). `-` reads them from stdin.
    #[arg(long, value_name = "TEXT|-", conflicts_with = "acceptance_file")]
    pub acceptance: Option<String>,
    /// Read the acceptance criteria from this file.
    #[arg(long, value_name = "FILE")]
    pub acceptance_file: Option<PathBuf>,
    /// Who the task is for (a person or an agent's name).
    #[arg(long)]
    pub assignee: Option<String>,
    /// The agent that should do this task.
    #[arg(long)]
    pub agent: Option<String>,
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let input = NewTaskIn {
        title: a.title,
        description: long_text("description", a.description, a.description_file, a.edit, "")?
            .unwrap_or_default(),
        kind: Some(a.kind.as_str().to_owned()),
        priority: Some(i64::from(a.priority)),
        parent: a.parent.map(|p| p.to_string()),
        deps: a.deps,
        labels: a.labels,
        gates: a.gates,
        acceptance: long_text("acceptance", a.acceptance, a.acceptance_file, false, "")?
            .unwrap_or_default(),
        assignee: a.assignee,
        agent: a.agent,
    };
    let t = ops::add(&store, &ctx.actor(), input)?;
    if ctx.global.json {
        ctx.print_json(&t)?;
    } else {
        // An epic is never ready (it is not dispatched): its state says more.
        let status = if t.kind == TaskType::Epic {
            t.state.as_str()
        } else if t.ready {
            "ready"
        } else {
            "blocked"
        };
        outln!("{}  {}  ({status})", ctx.style.bold(&t.id), t.title);
    }
    Ok(exit::OK)
}

/// Long text from the command line: the value itself, `-` for stdin, a
/// file, or (with `edit`) what the user writes in `$VISUAL`/`$EDITOR`,
/// starting from `current`. `None`: not given.
pub fn long_text(
    field: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    edit: bool,
    current: &str,
) -> Result<Option<String>> {
    use std::io::Read as _;
    // Text from a file, stdin or an editor ends with a newline the user
    // did not mean as part of it.
    let trimmed = |t: String| Some(t.trim_end().to_owned());
    if edit {
        return edit_text(field, current).map(trimmed);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            exit::Failure::usage(format!("reading the {field} from {}: {e}", path.display()))
        })?;
        return Ok(trimmed(text));
    }
    match value.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                exit::Failure::usage(format!("reading the {field} from stdin: {e}"))
            })?;
            Ok(trimmed(text))
        }
        _ => Ok(value),
    }
}

/// Opens `$VISUAL` (else `$EDITOR`, else `vi`) on a temporary file holding
/// `current`, and answers what was saved. The editor is the user's own
/// command line: run through `sh -c` so `EDITOR="code --wait"` works.
fn edit_text(field: &str, current: &str) -> Result<String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let file = tempfile::Builder::new()
        .prefix("braid-")
        .suffix(".md")
        .tempfile()
        .context("making a file to edit")?;
    std::fs::write(file.path(), current).context("writing the file to edit")?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("starting the editor {editor:?}"))?;
    if !status.success() {
        return Err(exit::Failure::usage(format!(
            "the editor {editor:?} exited with {status}; the {field} was not changed"
        ))
        .into());
    }
    std::fs::read_to_string(file.path()).context("reading the edited file")
}

#[derive(Args, Debug)]
pub struct CostArgs {
    /// Sum by: task, agent, model or day (UTC).
    #[arg(long, default_value = "task", value_parser = parse_by)]
    pub by: ops::UsageBy,
    /// Only attempts since this long ago (`7d`, `24h`) or this UTC day
    /// (`2026-12-01`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<i64>,
    /// At most this many rows, the costliest first.
    #[arg(short = 'n', long, default_value_t = ops::COST_ROWS)]
    pub limit: usize,
}

fn parse_by(s: &str) -> Result<ops::UsageBy, String> {
    match s {
        "task" => Ok(ops::UsageBy::Task),
        "agent" => Ok(ops::UsageBy::Agent),
        "model" => Ok(ops::UsageBy::Model),
        "day" => Ok(ops::UsageBy::Day),
        _ => Err(format!("{s:?}: sum by task, agent, model or day")),
    }
}

/// A time as epoch ms: a span back from now (`7d`) or a UTC day.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(braid_core::clock::now_ms() - d.as_millis() as i64);
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| {
            d.at(0, 0, 0, 0)
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .ok()
        })
        .map(|z| z.timestamp().as_millisecond())
        .ok_or_else(|| format!("{s:?}: give a span back from now (7d, 24h) or a day (2026-12-01)"))
}

fn cost(ctx: &Ctx, a: CostArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let rows = ops::cost(&store, a.by, a.since, Some(a.limit))?;
    if ctx.global.json {
        ctx.print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        outln!("No agent attempt has reported its usage yet (agents of kind claude or codex do).");
        return Ok(exit::OK);
    }
    let key = match a.by {
        ops::UsageBy::Task => "TASK",
        ops::UsageBy::Agent => "AGENT",
        ops::UsageBy::Model => "MODEL",
        ops::UsageBy::Day => "DAY",
    };
    let usd = |c: f64| format!("${c:.4}");
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if r.key.is_empty() {
                    "?".into()
                } else {
                    r.key.clone()
                },
                r.attempts.to_string(),
                r.input_tokens.to_string(),
                r.output_tokens.to_string(),
                r.cache_read_tokens.to_string(),
                r.cache_write_tokens.to_string(),
                if r.unpriced > 0 {
                    format!("{} ({} unpriced)", usd(r.cost_usd), r.unpriced)
                } else {
                    usd(r.cost_usd)
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &ctx.style,
            &[
                key,
                "ATTEMPTS",
                "INPUT",
                "OUTPUT",
                "CACHE READ",
                "CACHE WRITE",
                "COST"
            ],
            &table_rows
        )
    );
    let total: f64 = rows.iter().map(|r| r.cost_usd).sum();
    outln!(
        "total {} over {} attempt(s)",
        usd(total),
        rows.iter().map(|r| r.attempts).sum::<i64>()
    );
    // Each budget against what was spent (a config that does not read
    // shows none: `braid run` says what is wrong with it).
    if let Ok(config) = crate::run::load_config(&project) {
        let runs = crate::run::paths(&project).runs();
        let live = braid_app::budget::live_run_spend(&runs);
        for b in config.budget.views(&store, live, store.now_ms())? {
            let whose = match (b.budget.as_str(), &b.task) {
                ("task_usd", Some(t)) => format!(" (the costliest task, {t})"),
                ("run_usd", _) if live.is_none() => " (no run is running)".to_owned(),
                ("day_usd", _) => " (today, UTC)".to_owned(),
                _ => String::new(),
            };
            outln!(
                "budget {}: {} of {}{whose}",
                b.budget,
                usd(b.spent_usd),
                usd(b.limit_usd)
            );
        }
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The tasks to show (ids or unique prefixes).
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// How many recent events to show per task.
    #[arg(long, default_value = "10")]
    pub events: usize,
}

#[derive(Args, Debug)]
pub struct CommentArgs {
    /// The task to comment on.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// The comment (Markdown); `-` reads it from stdin.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the comment from this file.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Who says it (default: --actor, $BRAID_ACTOR or $USER).
    #[arg(long = "as")]
    pub author: Option<String>,
}

fn comment(ctx: &Ctx, a: CommentArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let input = CommentIn {
        text: long_text("comment", a.text, a.file, false, "")?.unwrap_or_default(),
        author: a.author,
    };
    let c = ops::comment(&store, &ctx.actor(), a.id.as_str(), input)?;
    if ctx.global.json {
        ctx.print_json(&c)?;
    } else {
        outln!("Commented on {} (#{}).", a.id, c.seq);
    }
    Ok(exit::OK)
}

fn show(ctx: &Ctx, a: ShowArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let mut docs = Vec::new();
    for id in &a.ids {
        let mut shown = ops::show(&store, id.as_str(), a.events)?;
        shown.git = git_view(&project, &store, &shown.task.id);
        if ctx.global.json {
            docs.push(shown);
        } else {
            print_task(ctx, &shown);
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

/// A task's branch, when the project is in git (and the config reads).
fn git_view(project: &Project, store: &dyn Store, id: &str) -> Option<braid_app::wire::GitView> {
    let repo = crate::run::paths(project).repo?;
    let config = crate::run::load_config(project).ok()?;
    let target = config.merge_into.as_deref().unwrap_or("HEAD");
    let id = TaskId::parse(id).ok()?;
    braid_run::base::git_view(store, &repo, target, &id).ok()
}

fn print_task(ctx: &Ctx, shown: &ShowView) {
    let s = &ctx.style;
    let t = &shown.task;
    outln!("{}  {}", s.bold(&t.id), s.bold(&t.title));
    let field = |name: &str, value: String| {
        if !value.is_empty() {
            outln!("  {:<11} {value}", s.dim(name));
        }
    };
    field("state", s.state(t.state, t.ready, t.kind));
    field("type", t.kind.to_string());
    field("priority", format!("P{}", t.priority));
    field("parent", t.parent.clone().unwrap_or_default());
    field("labels", t.labels.join(", "));
    field("assignee", t.assignee.clone().unwrap_or_default());
    field("agent", t.agent.clone().unwrap_or_default());
    field("gates", t.gates.join(", "));
    field("branch", t.branch.clone().unwrap_or_default());
    if let Some(g) = &shown.git
        && g.exists
    {
        let base = match (&g.base, g.stacked.is_empty()) {
            (Some(b), true) => format!(", from {} at {}", g.target, &b[..b.len().min(10)]),
            (Some(b), false) => format!(
                ", from {} with {}'s work at {}",
                g.target,
                g.stacked.join(", "),
                &b[..b.len().min(10)]
            ),
            (None, _) => String::new(),
        };
        let landed = if g.landed {
            format!("landed on {}", g.target)
        } else {
            format!("not on {} yet", g.target)
        };
        field("git", format!("{}{base}; {landed}", g.branch));
    }
    field("created", t.created_at.clone());
    field("updated", t.updated_at.clone());
    if let Some(c) = &t.closed_at {
        field(
            "closed",
            format!("{c} {}", t.close_reason.clone().unwrap_or_default()),
        );
    }
    if let Some(l) = &t.lease {
        field(
            "lease",
            format!("attempt {}, expires {}", l.attempt, l.expires_at),
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
    for w in &shown.blocked_by {
        field("blocked", w.clone());
    }
    if !shown.children.is_empty() {
        field("children", shown.children.join(", "));
    }
    if !shown.dependents.is_empty() {
        let d: Vec<String> = shown
            .dependents
            .iter()
            .map(|d| format!("{} ({})", d.id, d.kind))
            .collect();
        field("unblocks", d.join(", "));
    }
    if !t.description.is_empty() {
        outln!("\n{}", indent(&t.description));
    }
    if !t.acceptance.is_empty() {
        outln!("\n  {}\n{}", s.dim("acceptance"), indent(&t.acceptance));
    }
    if !shown.events.is_empty() {
        outln!("\n  {}", s.dim("events"));
        for e in &shown.events {
            let what = e
                .clone()
                .into_event()
                .map(|ev| crate::run::describe(&ev))
                .unwrap_or_default();
            outln!(
                "    #{:<6} {}  {:<17} {:<10} {what}",
                e.seq,
                e.at,
                e.kind,
                e.actor
            );
        }
    }
    if !shown.attempts.is_empty() {
        outln!("\n  {} (${:.4} in all)", s.dim("attempts"), shown.cost_usd);
        for u in &shown.attempts {
            outln!(
                "    #{} {} {}  {} in / {} out / {} cache read / {} cache write  {}  {}",
                u.attempt
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into()),
                u.agent,
                u.model.as_deref().unwrap_or("?"),
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.cost_usd
                    .map(|c| format!("${c:.4}"))
                    .unwrap_or_else(|| "cost unknown".into()),
                u.outcome
            );
        }
    }
    if !shown.comments.is_empty() {
        outln!("\n  {}", s.dim("comments"));
        for c in &shown.comments {
            outln!("    {} {}", s.dim(&c.at), s.bold(&c.author));
            for line in c.text.lines() {
                outln!("      {line}");
            }
        }
    }
    outln!();
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
        outln!("{empty}");
    } else {
        out!("{}", task_rows(ctx, tasks));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only these states (repeatable, or comma-separated): open,
    /// in_progress, review, done, failed, cancelled, deferred; or ready,
    /// blocked (derived from dependencies).
    #[arg(long, short, value_parser = parse_state_filter, value_delimiter = ',')]
    pub state: Vec<StateFilter>,
    /// Only these types.
    #[arg(long = "type", short = 't', value_parser = parse_type, value_delimiter = ',')]
    pub kind: Vec<TaskType>,
    /// Only tasks with this label.
    #[arg(long, short)]
    pub label: Option<String>,
    /// Only direct children of this task.
    #[arg(long, value_parser = parse_id)]
    pub parent: Option<TaskId>,
    /// Only tasks assigned to this name.
    #[arg(long)]
    pub assignee: Option<String>,
    /// Only work that can start now (as `--state ready`).
    #[arg(long, conflicts_with = "blocked")]
    pub ready: bool,
    /// Only open work that waits on a dependency or an ancestor (as
    /// `--state blocked`).
    #[arg(long)]
    pub blocked: bool,
    /// At most this many tasks (default 1000).
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

fn list(ctx: &Ctx, a: ListArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let mut ready = a.ready.then_some(true);
    if a.blocked {
        ready = Some(false);
    }
    let mut states = Vec::new();
    for f in &a.state {
        match f {
            StateFilter::Is(s) => states.push(s.as_str().to_owned()),
            StateFilter::Ready => ready = Some(true),
            StateFilter::Blocked => ready = Some(false),
        }
    }
    let mut types: Vec<String> = a.kind.iter().map(|t| t.as_str().to_owned()).collect();
    if ready == Some(false) {
        // Blocked: open work that waits (an epic is never ready, and done
        // work is not blocked).
        if states.is_empty() {
            states.push(State::Open.as_str().to_owned());
        }
        if types.is_empty() {
            types = [TaskType::Task, TaskType::Bug, TaskType::Chore]
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect();
        }
    }
    let limit = ops::Page::TASKS.size(a.limit);
    let input = ListIn {
        states,
        types,
        label: a.label,
        parent: a.parent.map(|p| p.to_string()),
        assignee: a.assignee,
        ready,
        // One more than shown says whether there is more.
        limit: Some(limit + 1),
    };
    let mut tasks = ops::list_tasks(&store, input)?;
    let cut = tasks.len() > limit;
    tasks.truncate(limit);
    print_tasks(ctx, &tasks, "No tasks match.")?;
    if cut && !ctx.global.json {
        outln!("… more than {limit} match (--limit N shows more)");
    }
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
    let tasks = ops::ready_tasks(&store, a.limit)?;
    print_tasks(
        ctx,
        &tasks,
        "Nothing is ready. `braid list --blocked` shows what waits, `braid show ID` says why.",
    )?;
    if tasks.len() == a.limit && !ctx.global.json {
        // The ready count is a maintained counter: exact, and cheap.
        let more = ops::health(&store)?
            .ready
            .saturating_sub(tasks.len() as u64);
        if more > 0 {
            outln!("… {more} more (--limit N)");
        }
    }
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
    let root =
        a.id.map(|id| ops::resolve(&store, id.as_str()))
            .transpose()?;
    let rows = store.subtree(root.as_ref())?;
    let mut index: foldhash::HashMap<&TaskId, usize> = foldhash::HashMap::default();
    index.reserve(rows.len());
    index.extend(rows.iter().enumerate().map(|(i, r)| (&r.id, i)));
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
    let mut roots = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let is_root = root.as_ref() == Some(&r.id);
        match r.parent.as_ref().and_then(|p| index.get(p)) {
            Some(&p) if !is_root => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let mut out = crate::term::Lines::stdout();
    // One row at a time, written whole (the sanitizer sees a row's colour
    // codes in one piece).
    let mut row = String::new();
    // Depth-first with an explicit stack: (row, depth, is last sibling).
    let mut stack: Vec<(usize, usize, bool)> = Vec::new();
    for (k, &r) in roots.iter().enumerate().rev() {
        stack.push((r, 0, k + 1 == roots.len()));
    }
    let mut last_at: Vec<bool> = Vec::new();
    if ctx.global.json {
        out.text("[")?;
    }
    let mut first = true;
    while let Some((i, depth, last)) = stack.pop() {
        let r = &rows[i];
        if ctx.global.json {
            out.text(if first { "\n  " } else { ",\n  " })?;
            out.json(&TreeRowView::new(r, depth))?;
        } else {
            row.clear();
            last_at.truncate(depth);
            last_at.push(last);
            if depth > MAX_INDENT {
                row.push_str(&format!("[depth {depth}] "));
            } else {
                for &l in last_at.iter().take(depth).skip(1) {
                    row.push_str(if l { "   " } else { "│  " });
                }
                if depth > 0 {
                    row.push_str(if last { "└─ " } else { "├─ " });
                }
            }
            row.push_str(r.id.as_str());
            row.push_str("  ");
            let (code, label) = crate::style::state_label(r.state, r.ready, r.kind);
            ctx.style.push_painted(&mut row, code, label);
            if r.kind == TaskType::Epic {
                row.push(' ');
                ctx.style.push_painted(&mut row, "2", "epic");
            }
            row.push_str("  ");
            row.push_str(&r.title);
            row.push('\n');
            out.text(&row)?;
        }
        first = false;
        let kids = &children[i];
        for (k, &c) in kids.iter().enumerate().rev() {
            stack.push((c, depth + 1, k + 1 == kids.len()));
        }
    }
    if ctx.global.json {
        out.text("\n]\n")?;
    } else if first {
        out.text("No tasks yet. Add one with `braid add \"Title\"`.\n")?;
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Subcommand, Debug)]
pub enum DepCmd {
    /// Record that A depends on B (A cannot start until B is done, for `blocks`).
    Add {
        /// The task that waits (the dependent).
        #[arg(value_parser = parse_id)]
        a: TaskId,
        /// The task it waits for (the dependency).
        #[arg(value_parser = parse_id)]
        b: TaskId,
        /// blocks, related or discovered-from.
        #[arg(long, short, value_parser = parse_kind, default_value = "blocks")]
        kind: DepKind,
    },
    /// Remove the dependency of A on B.
    Rm {
        /// The dependent task.
        #[arg(value_parser = parse_id)]
        a: TaskId,
        /// The task it no longer depends on.
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
            let dep = DepIn {
                id: b.to_string(),
                kind: Some(kind.as_str().to_owned()),
            };
            let t = ops::dep_add(&store, &ctx.actor(), a.as_str(), dep)?;
            if ctx.global.json {
                ctx.print_json(&t)?;
            } else {
                let note = if t.ready { "ready" } else { "blocked" };
                outln!("{a} now depends on {b} ({kind}); {a} is {note}.");
            }
        }
        DepCmd::Rm { a, b } => {
            let t = ops::dep_rm(&store, &ctx.actor(), a.as_str(), b.as_str())?;
            if ctx.global.json {
                ctx.print_json(&t)?;
            } else {
                let note = if t.ready { "ready" } else { "still blocked" };
                outln!("{a} no longer depends on {b}; {a} is {note}.");
            }
        }
        DepCmd::Cycles => {
            let (named, edges) = ops::cycles(&store)?;
            if ctx.global.json {
                ctx.print_json(&named)?;
            } else if named.is_empty() {
                outln!("No cycles among {edges} blocks dependencies.");
            } else {
                for c in &named {
                    outln!("cycle: {} -> {}", c.join(" -> "), c[0]);
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
    /// How long the claim holds before it can be rescued (10s to 7d).
    #[arg(long, value_parser = parse_duration_secs, default_value = "30m")]
    pub lease: u64,
}

fn claim(ctx: &Ctx, a: ClaimArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let input = ClaimIn {
        assignee: a.assignee,
        lease_seconds: Some(a.lease),
    };
    let t = ops::claim(
        &store,
        &ctx.actor(),
        a.id.as_ref().map(TaskId::as_str),
        input,
    )?;
    if ctx.global.json {
        ctx.print_json(&t)?;
    } else {
        let attempt = t.lease.as_ref().map(|l| l.attempt).unwrap_or(1);
        outln!(
            "{} claimed {}  {}  (attempt {attempt})",
            t.assignee.as_deref().unwrap_or_default(),
            ctx.style.bold(&t.id),
            t.title
        );
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The task to change (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// New title.
    #[arg(long)]
    pub title: Option<String>,
    /// New description (Markdown). `-` reads it from stdin.
    #[arg(long, short = 'd', value_name = "TEXT|-", conflicts_with_all = ["description_file", "edit"])]
    pub description: Option<String>,
    /// Read the new description from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "edit")]
    pub description_file: Option<PathBuf>,
    /// Edit the description in $VISUAL or $EDITOR.
    #[arg(long, short = 'e')]
    pub edit: bool,
    /// New type: task, epic, bug or chore.
    #[arg(long = "type", value_parser = parse_type)]
    pub kind: Option<TaskType>,
    /// New priority: 0 (highest) to 4.
    #[arg(long, short, value_parser = parse_priority)]
    pub priority: Option<u8>,
    /// New parent; `none` moves the task to the top level.
    #[arg(long)]
    pub parent: Option<String>,
    /// Add a label (repeatable).
    #[arg(long = "add-label")]
    pub add_labels: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "remove-label")]
    pub remove_labels: Vec<String>,
    /// New assignee; empty clears it.
    #[arg(long)]
    pub assignee: Option<String>,
    /// New acceptance criteria. `-` reads them from stdin.
    #[arg(long, value_name = "TEXT|-", conflicts_with = "acceptance_file")]
    pub acceptance: Option<String>,
    /// Read the new acceptance criteria from this file.
    #[arg(long, value_name = "FILE")]
    pub acceptance_file: Option<PathBuf>,
    /// Dependencies are not changed here (hidden: says where they are).
    #[arg(long = "dep", hide = true, num_args = 0..)]
    pub dep: Option<Vec<String>>,
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

fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    if let Some(deps) = &a.dep {
        let on = deps.first().map_or("OTHER", String::as_str);
        return Err(exit::Failure::usage(format!(
            "update does not change dependencies: `braid dep add {} {on}` makes {} wait for {on} (`braid dep rm` removes one)",
            a.id, a.id
        ))
        .into());
    }
    let (_, store) = ctx.open()?;
    let current = if a.edit {
        ops::get(&store, a.id.as_str())?.description
    } else {
        String::new()
    };
    let description = long_text(
        "description",
        a.description,
        a.description_file,
        a.edit,
        &current,
    )?;
    let acceptance = long_text("acceptance", a.acceptance, a.acceptance_file, false, "")?;
    // An empty value (or `none` for the parent) clears the field.
    let input = PatchIn {
        title: a.title,
        description,
        kind: a.kind.map(|k| k.as_str().to_owned()),
        priority: a.priority.map(i64::from),
        parent: a.parent.map(Some),
        add_labels: a.add_labels,
        remove_labels: a.remove_labels,
        assignee: a.assignee.map(Some),
        acceptance,
        gates: a.gates,
        agent: a.agent.map(Some),
        branch: a.branch.map(Some),
    };
    let u = ops::update(&store, &ctx.actor(), a.id.as_str(), input)?;
    if ctx.global.json {
        ctx.print_json(&u.task)?;
    } else {
        outln!("Updated {}: {}", u.task.id, u.fields.join(", "));
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct IdsArgs {
    /// The tasks (ids or unique prefixes); all change or none.
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
}

/// Task ids and an optional reason (recorded as the close reason).
#[derive(Args, Debug)]
pub struct ReasonArgs {
    /// The tasks (ids or unique prefixes); all change or none.
    #[arg(required = true, value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// Why, recorded as the close reason and in the event.
    #[arg(long, short)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct FailArgs {
    /// The task that failed.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// What went wrong (required).
    #[arg(long, short)]
    pub reason: String,
}

/// Moves every named task in one transaction: all or none.
fn transition(ctx: &Ctx, ids: &[TaskId], t: Transition, reason: Option<String>) -> Result<i32> {
    let (project, store) = ctx.open()?;
    if matches!(t, Transition::Done | Transition::Cancel) {
        crate::run::sync_settings(&project, &store)?;
    }
    let ids: Vec<String> = ids.iter().map(TaskId::to_string).collect();
    let moved = ops::transition(&store, &ctx.actor(), &ids, t, reason)?;
    if ctx.global.json {
        let views: Vec<&TaskView> = moved.iter().map(|m| &m.task).collect();
        if views.len() == 1 {
            ctx.print_json(views[0])?;
        } else {
            ctx.print_json(&views)?;
        }
    } else {
        for m in &moved {
            outln!(
                "{}  {} -> {}  {}",
                ctx.style.bold(&m.task.id),
                m.from,
                t.to(),
                m.task.title
            );
        }
        if t.to().is_finished() {
            let h = store.health()?;
            outln!("{} ready now.", h.ready);
        }
    }
    Ok(exit::OK)
}

fn health(ctx: &Ctx) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let h = ops::health(&store)?;
    if ctx.global.json {
        ctx.print_json(&h)?;
    } else {
        let s = &ctx.style;
        outln!(
            "{} ({}): {} ready, {} blocked",
            crate::style::plural(h.total, "task", "tasks"),
            crate::style::plural(h.epics, "epic", "epics"),
            s.paint("32", &h.ready.to_string()),
            s.paint("33", &h.blocked.to_string())
        );
        let rows: Vec<Vec<String>> = State::ALL
            .iter()
            .filter_map(|st| {
                let n = h.by_state.get(st.as_str())?;
                Some(vec![st.as_str().to_owned(), n.to_string()])
            })
            .collect();
        out!("{}", table(s, &["STATE", "COUNT"], &rows));
    }
    Ok(exit::OK)
}
