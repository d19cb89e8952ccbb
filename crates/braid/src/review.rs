//! `braid diff` and `braid review list|show|approve|reject`: a task's branch
//! against where it started, and a person's decision on it — approve (the
//! merge queue takes it) or send it back with line comments the next
//! attempt is told.

use anyhow::Result;
use braid_app::review::{self, Site};
use braid_app::wire::{ApproveIn, DiffIn, LineCommentIn, RejectIn};
use braid_core::{ErrorKind, TaskId};
use clap::{Args, Subcommand};

use crate::cmd::{Ctx, parse_id};
use crate::exit::{self, Failure};
use crate::style::plural;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The task whose branch to show (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// Only the files changed, with lines added and removed.
    #[arg(long)]
    pub stat: bool,
    /// Only this file (a large one is shown too).
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ReviewCmd {
    /// The tasks in review: each branch's size, whether it is approved,
    /// its line comments.
    List(ListArgs),
    /// What to look at before a branch lands: its files, gates, attempts,
    /// decisions and line comments (outdated ones marked), and the merge
    /// plan's view of it. `braid diff ID` shows the diff itself.
    Show(IdArg),
    /// Approve a task's branch as it stands: the merge queue takes it (with
    /// `[merge] require_approval = true`, nothing lands without this). A
    /// branch that changes afterwards needs a new approval.
    Approve(ApproveArgs),
    /// Send work back: the task is open again, and its next attempt (or
    /// its resumed session) is told your message and each line comment
    /// with the code it points at.
    Reject(RejectArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// At most this many tasks, the longest waiting first.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// The task (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The task in review (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// A note kept with the approval (shown as a comment).
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(Args, Debug)]
pub struct RejectArgs {
    /// The task in review (an id or a unique prefix).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// What to change, for the agent.
    #[arg(short, long)]
    pub message: String,
    /// A comment on one line of the branch's file: FILE:LINE:TEXT (LINE as
    /// the branch has the file, from 1). Repeat for more.
    #[arg(long = "comment", value_name = "FILE:LINE:TEXT", value_parser = parse_comment)]
    pub comments: Vec<LineCommentIn>,
}

/// `src/lib.rs:12:use the cache here` → a line comment. The file ends at
/// the first `:` followed by digits and another `:`, so a path may hold
/// colons.
fn parse_comment(s: &str) -> Result<LineCommentIn, String> {
    let bad =
        || format!("{s:?} is not FILE:LINE:TEXT (for example src/lib.rs:12:\"use the cache\")");
    let mut from = 0;
    while let Some(i) = s[from..].find(':').map(|i| i + from) {
        let rest = &s[i + 1..];
        if let Some(j) = rest.find(':') {
            let (num, text) = (&rest[..j], &rest[j + 1..]);
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && i > 0 {
                let line = num.parse().map_err(|_| bad())?;
                if line == 0 {
                    return Err(format!("{s:?}: lines count from 1"));
                }
                if text.trim().is_empty() {
                    return Err(format!("{s:?}: say something after FILE:LINE:"));
                }
                return Ok(LineCommentIn {
                    file: s[..i].to_owned(),
                    line,
                    text: text.to_owned(),
                });
            }
        }
        from = i + 1;
    }
    Err(bad())
}

/// Where review looks for this project: its repository, `[merge] into`
/// (else `HEAD`), `require_approval`, and `[run] jobs` for the plan.
pub fn site(project: &crate::project::Project) -> Result<Site> {
    let root = project.dir.parent().unwrap_or(std::path::Path::new("."));
    let repo = braid_git::repo_root(root)
        .filter(|r| braid_git::has_head(r))
        .ok_or_else(|| {
            Failure::usage(format!(
                "{} is not in a git repository with a commit: there are no branches to review",
                root.display()
            ))
        })?;
    let config = crate::run::load_config(project)?;
    Ok(Site {
        repo,
        target: config.merge_into.clone().unwrap_or_else(|| "HEAD".into()),
        require_approval: config.merge.require_approval,
        jobs: config.run.jobs,
    })
}

/// A review error as the command line reports it (exit 3 without a
/// branch, 4 when the task is not in review).
fn lift(e: review::Error) -> anyhow::Error {
    match e {
        review::Error::Store(s) => s.into(),
        review::Error::Git(g) => g.into(),
        other => {
            let code = match other.kind() {
                Some(ErrorKind::NotFound) => exit::NOT_FOUND,
                Some(ErrorKind::Conflict) => exit::CONFLICT,
                _ => exit::USAGE,
            };
            Failure {
                code,
                message: other.to_string(),
            }
            .into()
        }
    }
}

/// Prints a task's diff (all pages), or its files with `--stat`.
pub fn diff(ctx: &Ctx, a: DiffArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let site = site(&project)?;
    let input = DiffIn {
        stat: a.stat,
        file: a.file,
        ..DiffIn::default()
    };
    let first = review::diff(&store, &site, a.id.as_str(), &input).map_err(lift)?;
    if a.stat {
        if ctx.global.json {
            ctx.print_json(&first)?;
        } else {
            print_stat(ctx, &first);
        }
        return Ok(exit::OK);
    }
    // Every page, so the whole diff is printed (large files too: named
    // one by one).
    let mut pages = vec![first];
    while let Some(next) = pages.last().and_then(|p| p.next) {
        let page = review::diff(
            &store,
            &site,
            a.id.as_str(),
            &DiffIn {
                offset: Some(next),
                ..DiffIn::default()
            },
        )
        .map_err(lift)?;
        pages.push(page);
    }
    if input.file.is_none() {
        let large: Vec<String> = pages[0]
            .files
            .iter()
            .filter(|f| f.large)
            .map(|f| f.path.clone())
            .collect();
        for path in large {
            let page = review::diff(
                &store,
                &site,
                a.id.as_str(),
                &DiffIn {
                    file: Some(path),
                    ..DiffIn::default()
                },
            )
            .map_err(lift)?;
            pages.push(page);
        }
    }
    let mut view = pages.remove(0);
    let mut patch = view.patch.take().unwrap_or_default();
    for p in pages {
        patch.push_str(p.patch.as_deref().unwrap_or_default());
    }
    if ctx.global.json {
        view.patch = Some(patch);
        view.next = None;
        ctx.print_json(&view)?;
        return Ok(exit::OK);
    }
    let s = ctx.style;
    for line in patch.lines() {
        // Branch text is untrusted: term escapes control characters.
        let painted = if line.starts_with("+++") || line.starts_with("---") {
            s.bold(line)
        } else if line.starts_with('+') {
            s.paint("32", line)
        } else if line.starts_with('-') {
            s.paint("31", line)
        } else if line.starts_with("@@") {
            s.paint("36", line)
        } else if line.starts_with("diff --git") {
            s.bold(line)
        } else {
            line.to_owned()
        };
        outln!("{painted}");
    }
    Ok(exit::OK)
}

fn print_stat(ctx: &Ctx, d: &braid_app::wire::DiffView) {
    let s = ctx.style;
    let width = d.files.iter().map(|f| f.path.len()).max().unwrap_or(0);
    for f in &d.files {
        let counts = if f.binary {
            "binary".to_owned()
        } else {
            format!(
                "{} {}",
                s.paint("32", &format!("+{}", f.added)),
                s.paint("31", &format!("-{}", f.removed))
            )
        };
        let from = f
            .old_path
            .as_deref()
            .map(|o| format!(" (from {o})"))
            .unwrap_or_default();
        outln!("{:<width$}  {counts}  {}{from}", f.path, f.status);
    }
    outln!(
        "{} changed on {} since {}: +{} -{}",
        plural(d.files.len() as u64, "file", "files"),
        d.branch,
        &d.base[..d.base.len().min(10)],
        d.added,
        d.removed
    );
}

pub fn run(ctx: &Ctx, cmd: ReviewCmd) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let site = site(&project)?;
    let actor = ctx.actor();
    let s = ctx.style;
    match cmd {
        ReviewCmd::List(a) => {
            let rows = review::list(&store, &site, a.limit.clamp(1, 10_000)).map_err(lift)?;
            if ctx.global.json {
                ctx.print_json(&rows)?;
                return Ok(exit::OK);
            }
            if rows.is_empty() {
                outln!("Nothing waits for review.");
                return Ok(exit::OK);
            }
            for r in &rows {
                outln!(
                    "{}  {}  {} +{} -{}{}{}",
                    s.bold(&r.id),
                    r.title,
                    plural(r.files as u64, "file", "files"),
                    r.added,
                    r.removed,
                    if r.approved { "  approved" } else { "" },
                    if r.comments > 0 {
                        format!("  {}", plural(r.comments as u64, "comment", "comments"))
                    } else {
                        String::new()
                    }
                );
            }
            outln!(
                "`braid review show ID` and `braid diff ID` to look; `braid review approve ID` or `braid review reject ID -m \"…\"` to decide."
            );
        }
        ReviewCmd::Show(a) => {
            let v = review::show(&store, &site, a.id.as_str()).map_err(lift)?;
            if ctx.global.json {
                ctx.print_json(&v)?;
                return Ok(exit::OK);
            }
            outln!(
                "{}  {}  [{}]",
                s.bold(&v.task.id),
                v.task.title,
                v.task.state
            );
            outln!(
                "{}: {}{}",
                v.diff.branch,
                if v.approved {
                    "approved as it stands"
                } else {
                    "not approved"
                },
                if v.require_approval {
                    " (approval required to land)"
                } else {
                    ""
                }
            );
            print_stat(ctx, &v.diff);
            if !v.gates.is_empty() {
                outln!("\nGates:");
                for g in &v.gates {
                    outln!(
                        "  attempt {}  {}  {}{}",
                        g.attempt.map_or("-".into(), |a| a.to_string()),
                        g.gate,
                        if g.passed { "passed" } else { "FAILED" },
                        if g.cached { " (cached)" } else { "" }
                    );
                }
            }
            if !v.attempts.is_empty() {
                outln!("\nAttempts:");
                for u in &v.attempts {
                    outln!(
                        "  {}  {}  {}{}",
                        u.attempt.map_or("-".into(), |a| a.to_string()),
                        u.agent,
                        u.outcome,
                        u.cost_usd.map(|c| format!("  ${c:.4}")).unwrap_or_default()
                    );
                }
            }
            for d in &v.decisions {
                outln!(
                    "\n{} by {} at {}{}",
                    d.kind.replace('_', " "),
                    d.by,
                    d.at,
                    d.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                );
            }
            if !v.comments.is_empty() {
                outln!("\nLine comments:");
                for c in &v.comments {
                    outln!(
                        "  {}:{}{}  {}: {}",
                        c.file,
                        c.line,
                        if c.outdated { " (outdated)" } else { "" },
                        c.author,
                        c.text
                    );
                    outln!("      | {}", c.code);
                }
            }
            let m = &v.merge;
            outln!("\nMerge plan:");
            if let Some(e) = &m.error {
                outln!("  cannot plan: {e}");
            } else if m.planned {
                outln!(
                    "  level {}, batch {}",
                    m.level.unwrap_or(0),
                    m.batch.join(", ")
                );
            }
            for c in &m.conflicts {
                outln!("  conflicts with {} in {}", c.with, c.files.join(", "));
            }
            for w in &m.waits {
                outln!("  {w}");
            }
        }
        ReviewCmd::Approve(a) => {
            let d = review::approve(
                &store,
                &site,
                &actor,
                a.id.as_str(),
                &ApproveIn { message: a.message },
            )
            .map_err(lift)?;
            if ctx.global.json {
                ctx.print_json(&d)?;
            } else {
                outln!(
                    "Approved {} at {}: the merge queue takes it (`braid merge run`, or a running `braid run --merge`).",
                    a.id,
                    &d.head[..d.head.len().min(10)]
                );
            }
        }
        ReviewCmd::Reject(a) => {
            let n = a.comments.len();
            let t = review::reject(
                &store,
                &site,
                &actor,
                a.id.as_str(),
                &RejectIn {
                    message: a.message,
                    comments: a.comments,
                },
            )
            .map_err(lift)?;
            if ctx.global.json {
                ctx.print_json(&t)?;
            } else {
                outln!(
                    "Sent {} back with {}; it is {} again, and its next attempt is told what to change (`braid context {}` shows it).",
                    t.id,
                    plural(n as u64, "line comment", "line comments"),
                    t.state,
                    t.id
                );
            }
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::parse_comment;

    #[test]
    fn a_comment_reads_file_line_and_text_and_a_path_may_hold_colons() {
        let c = parse_comment("src/a:b.rs:12:use the cache: it is there").unwrap();
        assert_eq!(
            (c.file.as_str(), c.line, c.text.as_str()),
            ("src/a:b.rs", 12, "use the cache: it is there")
        );
        assert!(
            parse_comment("src/lib.rs:0:x")
                .unwrap_err()
                .contains("from 1")
        );
        assert!(
            parse_comment("src/lib.rs:12:")
                .unwrap_err()
                .contains("say something")
        );
        assert!(
            parse_comment("no line here")
                .unwrap_err()
                .contains("FILE:LINE:TEXT")
        );
        assert!(parse_comment(":3:x").is_err());
    }
}
