//! `braid merge plan|run`: the order in which finished branches merge into
//! the target — levels by dependency, conflict-free batches inside a level,
//! and the conflict matrix — and the run that lands them through their
//! gates, for tasks in review or for a plan file of plain branches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_core::TaskId;
use braid_run::merge::{Plan, PlanFile, PlanInput};
use braid_store::Store;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cmd::{Ctx, parse_id};
use crate::exit::{self, Failure};
use crate::style::plural;

#[derive(Subcommand, Debug)]
pub enum MergeCmd {
    /// Show how finished branches would merge: levels (after their
    /// dependencies), conflict-free batches, and the conflict matrix
    /// (pairs checked with `git merge-tree`; nothing is touched).
    Plan(PlanArgs),
    /// Land finished branches: each batch is merged onto the target in a
    /// temporary commit (your worktree and index are not touched), its
    /// gates run, and the target moves only when they pass. A failing
    /// batch is bisected to find the branches that break it; the rest land.
    /// A failing branch's task goes back for another attempt with the
    /// gate's output; a conflicting one gets a task to resolve the
    /// conflict. Killed midway, it continues where it was when run again.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Branches tested together at most (default: [merge] max_batch, else 8).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Show what would happen: the batches, what is already known to pass
    /// or fail, the conflicts. Runs no gate and changes nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Only these tasks (default: every task in review with a branch).
    #[arg(value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// The branch to merge into (default: [merge] into, else main).
    #[arg(long)]
    pub into: Option<String>,
    /// Plan these plain branches instead of tasks: a JSON file
    /// `{"into": "main", "branches": [{"name": "x", "deps": ["y"]}]}`
    /// (schema: docs/merge-plan.schema.json).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Checks (merge-tree, candidates' gates) at once (default: [run] jobs).
    #[arg(long)]
    pub jobs: Option<usize>,
}

pub fn run(ctx: &Ctx, cmd: MergeCmd) -> Result<i32> {
    match cmd {
        MergeCmd::Plan(a) => plan(ctx, a),
        MergeCmd::Run(a) => merge_run(ctx, a),
    }
}

/// The branches of tasks in review (or `only`), as the merge plan takes
/// them ([`braid_app::plan::task_inputs`]). With a `remote` (and its
/// target), every node's pushed branches are fetched first and this
/// clone's follow them.
fn task_inputs(
    store: &dyn Store,
    repo: &Path,
    only: &[TaskId],
    remote: Option<(&str, &str)>,
    require_approval: bool,
) -> Result<(Vec<PlanInput>, Vec<String>)> {
    if let Some((remote, into)) = remote {
        braid_run::remote::fetch_work(repo, remote, into)?;
    }
    let take = braid_app::plan::Take {
        only,
        require_approval,
    };
    braid_app::plan::task_inputs(store, repo, take, |b| -> Result<()> {
        if let Some((remote, _)) = remote {
            braid_run::remote::follow(repo, remote, b)?;
        }
        Ok(())
    })
}

/// The git repository the project lives in.
fn repo_of(project: &crate::project::Project) -> Result<PathBuf> {
    let root = project.dir.parent().unwrap_or(Path::new("."));
    braid_git::repo_root(root).ok_or_else(|| {
        Failure::usage(format!(
            "{} is not in a git repository; merging needs one",
            root.display()
        ))
        .into()
    })
}

/// What to merge: the repository, the branches (from tasks or a plan
/// file), notes on what was left out, and the target.
struct Inputs {
    repo: PathBuf,
    project: crate::project::Project,
    config: braid_run::Config,
    inputs: Vec<PlanInput>,
    notes: Vec<String>,
    into: String,
    jobs: usize,
}

fn inputs(ctx: &Ctx, a: &PlanArgs) -> Result<Inputs> {
    let project = ctx.project()?;
    let repo = repo_of(&project)?;
    let config = crate::run::load_config(&project)?;
    let (inputs, notes, file_into) = match &a.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let f: PlanFile = serde_json::from_str(&text)
                .map_err(|e| Failure::usage(format!("{}:{}: {e}", path.display(), e.line())))?;
            (f.branches, Vec::new(), f.into)
        }
        None => {
            let (_, store) = ctx.open()?;
            let into = a.into.clone().or(config.merge_into.clone());
            let remote = config.remote.as_deref().zip(into.as_deref());
            let (i, n) = task_inputs(&store, &repo, &a.ids, remote, config.merge.require_approval)?;
            (i, n, None)
        }
    };
    let into = a
        .into
        .clone()
        .or(file_into)
        .or(config.merge_into.clone())
        .unwrap_or_else(|| "main".to_owned());
    if a.jobs == Some(0) {
        return Err(Failure::usage("--jobs must be at least 1").into());
    }
    let jobs = a.jobs.unwrap_or(config.run.jobs);
    Ok(Inputs {
        repo,
        project,
        config,
        inputs,
        notes,
        into,
        jobs,
    })
}

fn plan(ctx: &Ctx, a: PlanArgs) -> Result<i32> {
    let i = inputs(ctx, &a)?;
    let plan =
        braid_run::merge::plan(&i.repo, &i.into, &i.inputs, i.jobs).map_err(|e| match e {
            braid_run::merge::PlanError::Input(m) => anyhow::Error::from(Failure::usage(m)),
            other => anyhow::Error::from(other),
        })?;
    if ctx.global.json {
        let mut v = serde_json::to_value(&plan)?;
        v["notes"] = json!(i.notes);
        ctx.print_json(&v)?;
    } else {
        print_plan(ctx, &plan, &i.notes);
    }
    Ok(exit::OK)
}

fn merge_run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    if a.max_batch == Some(0) {
        return Err(Failure::usage("--max-batch must be at least 1").into());
    }
    let i = inputs(ctx, &a.plan)?;
    let store = i.project.open()?;
    crate::run::sync_settings(&i.project, &store)?;
    let settings = settings(
        &i.project,
        &i.config,
        &i.into,
        i.jobs,
        ctx.actor(),
        a.max_batch,
        a.dry_run,
    );
    let json_out = ctx.global.json;
    let s = ctx.style;
    for n in &i.notes {
        if !json_out {
            outln!("{} {n}", s.dim("note:"));
        }
    }
    let mut on_step = |step: braid_run::integrate::Step| {
        if !json_out {
            print_step(&s, &step);
        }
    };
    let run = braid_run::integrate::Run::new(&i.repo, &store, settings, &mut on_step)
        .map_err(run_error)?;
    let outcome = run.run(&i.inputs).map_err(run_error)?;
    if json_out {
        let mut v = serde_json::to_value(&outcome)?;
        v["notes"] = json!(i.notes);
        ctx.print_json(&v)?;
    } else {
        print_outcome(&s, &outcome);
    }
    Ok(if outcome.rejected.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// How a merge run goes, from the project's configuration.
fn settings(
    project: &crate::project::Project,
    c: &braid_run::Config,
    into: &str,
    jobs: usize,
    actor: String,
    max_batch: Option<usize>,
    dry_run: bool,
) -> braid_run::integrate::Settings {
    braid_run::integrate::Settings {
        into: into.to_owned(),
        jobs,
        max_batch: max_batch.unwrap_or(c.merge.max_batch),
        dry_run,
        gates: c
            .gates
            .iter()
            .filter(|g| c.merge.gates.is_empty() || c.merge.gates.contains(&g.name))
            .cloned()
            .collect(),
        cache: c.cache.enabled.then(|| c.cache.clone()),
        kill_grace: c.run.kill_grace,
        work_dir: project.dir.join("merge"),
        log_dir: project.dir.join("logs").join("merge"),
        procs: Some(braid_run::supervise::Registry::new(
            project.dir.join("procs"),
        )),
        max_attempts: c.run.max_attempts,
        failure_tail: c.run.failure_tail,
        actor,
        remote: c.remote.clone(),
    }
}

/// One merge pass over every task in review (`braid run --merge` runs one
/// each time work reaches review). Steps are printed unless `quiet`.
pub fn pass(
    project: &crate::project::Project,
    config: &braid_run::Config,
    actor: String,
    style: crate::style::Style,
    quiet: bool,
    said: &mut std::collections::HashSet<String>,
) -> Result<braid_run::integrate::Outcome> {
    let repo = repo_of(project)?;
    let store = project.open()?;
    let into = config.merge_into.clone().unwrap_or_else(|| "main".into());
    let remote = config.remote.as_deref().map(|r| (r, into.as_str()));
    let (inputs, _) = task_inputs(&store, &repo, &[], remote, config.merge.require_approval)?;
    let settings = settings(project, config, &into, config.run.jobs, actor, None, false);
    let mut on_step = |step: braid_run::integrate::Step| {
        if let braid_run::integrate::Step::Note(n) = &step
            && !said.insert((*n).to_owned())
        {
            return;
        }
        if !quiet {
            print_step(&style, &step);
        }
    };
    let run =
        braid_run::integrate::Run::new(&repo, &store, settings, &mut on_step).map_err(run_error)?;
    run.run(&inputs).map_err(run_error)
}

fn run_error(e: braid_run::integrate::RunError) -> anyhow::Error {
    use braid_run::integrate::RunError;
    match e {
        RunError::Input(m) => Failure::usage(m).into(),
        RunError::Conflict(m) => Failure {
            code: exit::CONFLICT,
            message: m,
        }
        .into(),
        other => anyhow::Error::from(other),
    }
}

fn short(c: &str) -> &str {
    &c[..c.len().min(10)]
}

fn print_step(s: &crate::style::Style, step: &braid_run::integrate::Step) {
    use braid_run::integrate::Step;
    match step {
        Step::Batch { level, branches } => {
            outln!(
                "{} level {level}: [{}]",
                s.bold("batch"),
                branches.join(" ")
            )
        }
        Step::Round { round, candidates } => {
            outln!("  round {round}: testing {candidates} candidate(s)")
        }
        Step::Tested(t) => {
            let how = if t.from_journal {
                " (recorded earlier)".to_owned()
            } else if t.gate_runs == 0 && t.passed {
                " (cached)".to_owned()
            } else {
                String::new()
            };
            let verdict = if t.passed {
                s.paint("32", "pass")
            } else {
                s.paint("31", "fail")
            };
            let why = t
                .failure
                .as_ref()
                .map(|f| match f {
                    braid_run::integrate::Failure::Gate { gate, exit, .. } => {
                        format!(": gate {gate} ({exit})")
                    }
                    braid_run::integrate::Failure::Conflict { files } => {
                        format!(": conflict in {}", files.join(", "))
                    }
                })
                .unwrap_or_default();
            outln!("    {verdict} [{}]{how}{why}", t.branches.join(" "));
        }
        Step::Landed { branches, from, to } => outln!(
            "  {} {} ({} -> {})",
            s.paint("32", "landed"),
            branches.join(" "),
            short(from),
            short(to)
        ),
        Step::Rejected(r) => {
            let task = r
                .task
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            if let Some(why) = &r.needs_human {
                outln!(
                    "  {} {}{task}: {why}",
                    s.paint("33", "needs a person"),
                    r.branch
                );
                return;
            }
            match (&r.resolve_task, &r.with) {
                (Some(rt), Some(with)) => outln!(
                    "  {} {}{task} conflicts with {with}: {rt} resolves it",
                    s.paint("31", "conflict"),
                    r.branch
                ),
                _ => outln!(
                    "  {} {}{task}: {}",
                    s.paint("31", "rejected"),
                    r.branch,
                    match r.task_state.as_deref() {
                        Some(st) => format!("{}; the task is {st}", r.failure.describe()),
                        None => r.failure.describe(),
                    }
                ),
            }
        }
        Step::TargetMoved { from, to } => outln!(
            "  the target moved ({} -> {}) while the candidate was tested; rebuilding on it",
            short(from),
            short(to)
        ),
        Step::Note(n) => outln!("{} {n}", s.dim("note:")),
    }
}

fn print_outcome(s: &crate::style::Style, o: &braid_run::integrate::Outcome) {
    if o.dry_run {
        outln!("{} nothing was changed and no gate ran", s.bold("dry run:"));
        for w in &o.would {
            outln!("  {w}");
        }
        return;
    }
    outln!(
        "{}: {} landed, {} rejected, {} waiting; {} at {} (was {}); {} batch(es), {} round(s), {} candidate(s), {} gate run(s), {} cached, {} recorded earlier",
        s.bold(&o.into),
        o.landed.len(),
        o.rejected.len(),
        o.waiting.len(),
        o.into,
        short(&o.to),
        short(&o.from),
        o.batches,
        o.rounds,
        o.candidates,
        o.gate_runs,
        o.cached,
        o.from_journal
    );
}

fn print_plan(ctx: &Ctx, p: &Plan, notes: &[String]) {
    let s = &ctx.style;
    outln!(
        "Merge plan into {} ({}): {}, {}, {} ({} share files, each checked with merge-tree)",
        s.bold(&p.into),
        &p.target[..p.target.len().min(10)],
        plural(p.branches.len() as u64, "branch", "branches"),
        plural(p.order.len() as u64, "level", "levels"),
        plural(
            p.conflicts.len() as u64,
            "conflicting pair",
            "conflicting pairs"
        ),
        plural(p.pairs_checked as u64, "pair", "pairs")
    );
    if p.branches.is_empty() {
        outln!("Nothing to merge.");
    }
    // The pyramid: the last level on top, level 0 (merged first) at the base.
    let rows: Vec<String> = p
        .order
        .iter()
        .map(|l| {
            l.batches
                .iter()
                .map(|b| format!("[{}]", b.join(" ")))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect();
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    outln!();
    for (l, row) in rows.iter().enumerate().rev() {
        let pad = (width - row.chars().count()) / 2;
        outln!("  level {l:<3} {}{row}", " ".repeat(pad));
    }
    if !p.conflicts.is_empty() {
        outln!("\n{}", s.bold("conflicts"));
        let names: Vec<&str> = p.branches.iter().map(|b| b.name.as_str()).collect();
        if names.len() <= 16 {
            // The matrix: x where a pair conflicts.
            let w = names.iter().map(|n| n.len()).max().unwrap_or(0);
            for (i, a) in names.iter().enumerate() {
                let cells: String = names
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        if i == j {
                            " ·"
                        } else if p
                            .conflicts
                            .iter()
                            .any(|c| (c.a == *a && c.b == *b) || (c.a == *b && c.b == *a))
                        {
                            " x"
                        } else {
                            "  "
                        }
                    })
                    .collect();
                outln!("  {a:<w$} {cells}   {}", s.dim(&format!("#{}", i + 1)));
            }
        }
        for c in &p.conflicts {
            outln!("  {} x {}: {}", c.a, c.b, c.files.join(", "));
        }
    }
    for n in notes {
        outln!("{} {n}", s.dim("note:"));
    }
}
