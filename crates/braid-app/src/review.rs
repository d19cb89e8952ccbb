//! Review: a task's branch as a person sees it before it lands — the diff
//! against where it started, its gates and attempts, the merge plan's view
//! of it — and the decisions. An approval names the commit it approves (a
//! branch that moves after it needs a new one); a request for changes
//! carries a message and line comments, each kept with the code it points
//! at, and sends the task back to `open`, where its next attempt is told
//! them ([`crate::prompt`]).

use std::collections::HashMap;
use std::path::PathBuf;

use braid_core::{Event, EventKind, State, Task, TaskId};
use braid_store::{Command, Store};
use serde_json::json;

use crate::ops;
use crate::plan;
use crate::wire::*;

/// Changed lines a page of a diff holds by default.
pub const PAGE_LINES: usize = 5000;
/// A file with more changed lines than this is summarised until asked
/// for by name.
pub const LARGE_FILE: u64 = 2500;
/// Files a page of a diff holds at most.
pub const PAGE_FILES: usize = 300;
/// Line comments one request for changes may carry.
pub const MAX_COMMENTS: usize = 200;
/// Events read to find a task's decisions, gates and comments.
const HISTORY: usize = 2000;
/// A commented line is kept up to this many bytes.
const MAX_CODE: usize = 1000;

/// Where review looks: the repository, the branch work lands on, and the
/// merge settings that decide what the plan takes.
#[derive(Clone, Debug)]
pub struct Site {
    pub repo: PathBuf,
    /// `[merge] into`, else `HEAD`.
    pub target: String,
    /// `[merge] require_approval`.
    pub require_approval: bool,
    /// merge-tree checks at once when the plan is made.
    pub jobs: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] braid_store::Error),
    #[error(transparent)]
    Git(#[from] braid_git::Error),
    /// No agent has worked on the task yet (or its branch was removed).
    #[error("{id} has no branch {branch} (no agent has committed work for it yet)")]
    NoBranch { id: TaskId, branch: String },
    /// Decisions are taken on work in review.
    #[error(
        "{id} is {state}, not in review: only finished work waiting to land is approved or sent back"
    )]
    NotInReview { id: TaskId, state: State },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The broad class, for exit codes and HTTP statuses; `None`: braid's
    /// own failure (git could not be run).
    pub fn kind(&self) -> Option<braid_core::ErrorKind> {
        match self {
            Error::Store(e) => Some(e.kind()),
            Error::Git(_) => None,
            Error::NoBranch { .. } => Some(braid_core::ErrorKind::NotFound),
            Error::NotInReview { .. } => Some(braid_core::ErrorKind::Conflict),
        }
    }
}

impl From<braid_core::Error> for Error {
    fn from(e: braid_core::Error) -> Self {
        Error::Store(e.into())
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Store(braid_store::Error::Domain(braid_core::Error::invalid(
        field, message,
    )))
}

/// The branch a task's work is on.
pub fn branch_of(t: &Task) -> String {
    t.branch
        .clone()
        .unwrap_or_else(|| format!("braid/{}", t.id))
}

/// Where `id`'s branch started, as its first attempt recorded it (the
/// `base` of its `dispatched` event).
pub fn recorded(store: &dyn Store, id: &TaskId) -> braid_store::Result<Option<serde_json::Value>> {
    Ok(store
        .task_events(id, 200)?
        .into_iter()
        .filter(|e| e.kind == EventKind::Dispatched)
        .find_map(|e| e.payload.get("base").cloned()))
}

/// The tip of `t`'s branch, if it has one.
fn head_of(site: &Site, t: &Task) -> Result<Option<String>> {
    let branch = branch_of(t);
    if !braid_git::rev_exists(&site.repo, &branch) {
        return Ok(None);
    }
    Ok(Some(braid_git::rev_parse(&site.repo, &branch)?))
}

fn head_or_err(site: &Site, t: &Task) -> Result<String> {
    head_of(site, t)?.ok_or_else(|| Error::NoBranch {
        id: t.id.clone(),
        branch: branch_of(t),
    })
}

/// What `head` is compared with: where the branch started (so work it was
/// stacked on is not shown as its own), else where it meets the target.
fn base_of(store: &dyn Store, site: &Site, t: &Task, head: &str) -> Result<String> {
    if let Some(b) = recorded(store, &t.id)?
        && let Some(c) = b["commit"].as_str()
        && braid_git::rev_exists(&site.repo, c)
        && braid_git::is_ancestor(&site.repo, c, head)?
    {
        return Ok(c.to_owned());
    }
    if braid_git::rev_exists(&site.repo, &site.target)
        && let Some(b) = braid_git::merge_base(&site.repo, &site.target, head)?
    {
        return Ok(b);
    }
    Err(invalid(
        "branch",
        format!(
            "{} shares no history with {}: nothing to compare it with",
            branch_of(t),
            site.target
        ),
    ))
}

fn file_view(c: &braid_git::FileChange) -> DiffFileView {
    let binary = c.added.is_none() && c.removed.is_none();
    let (added, removed) = (c.added.unwrap_or(0), c.removed.unwrap_or(0));
    DiffFileView {
        path: c.path.clone(),
        old_path: c.old_path.clone(),
        status: match c.status {
            'A' => "added",
            'D' => "deleted",
            'R' => "renamed",
            'C' => "copied",
            'T' => "type changed",
            _ => "modified",
        }
        .to_owned(),
        added,
        removed,
        binary,
        large: !binary && added + removed > LARGE_FILE,
    }
}

/// A task's branch against where it started: every file it changed with
/// its counts and, unless `stat`, the unified diff of one page of files
/// (about [`PAGE_LINES`] changed lines from `offset`; a large file only
/// when named by `file`).
pub fn diff(store: &dyn Store, site: &Site, raw: &str, input: &DiffIn) -> Result<DiffView> {
    let t = ops::task(store, raw)?;
    let head = head_or_err(site, &t)?;
    let base = base_of(store, site, &t, &head)?;
    let files: Vec<DiffFileView> = braid_git::diff_files(&site.repo, &base, &head)?
        .iter()
        .map(file_view)
        .collect();
    let mut view = DiffView {
        id: t.id.to_string(),
        branch: branch_of(&t),
        added: files.iter().map(|f| f.added).sum(),
        removed: files.iter().map(|f| f.removed).sum(),
        base,
        head,
        files,
        patch: None,
        offset: 0,
        next: None,
    };
    if input.stat {
        return Ok(view);
    }
    let paths_of = |f: &DiffFileView| {
        let mut p = vec![f.path.clone()];
        p.extend(f.old_path.clone());
        p
    };
    let (offset, paths, next) = match &input.file {
        Some(name) => {
            let Some(i) = view.files.iter().position(|f| &f.path == name) else {
                return Err(invalid(
                    "file",
                    format!("{name:?} is not among the files {} changed", view.branch),
                ));
            };
            (i, paths_of(&view.files[i]), None)
        }
        None => {
            let offset = input.offset.unwrap_or(0);
            if offset > view.files.len() {
                return Err(invalid(
                    "offset",
                    format!(
                        "{offset} is past the last file ({} changed)",
                        view.files.len()
                    ),
                ));
            }
            let budget = input.lines.unwrap_or(PAGE_LINES).max(1) as u64;
            let (mut lines, mut paths, mut i) = (0u64, Vec::new(), offset);
            while i < view.files.len() && i - offset < PAGE_FILES {
                let f = &view.files[i];
                let n = f.added + f.removed;
                if i > offset && lines + n > budget {
                    break;
                }
                if !f.large {
                    lines += n;
                    paths.extend(paths_of(f));
                }
                i += 1;
            }
            (offset, paths, (i < view.files.len()).then_some(i))
        }
    };
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    view.patch = Some(if refs.is_empty() {
        String::new()
    } else {
        braid_git::diff_patch(&site.repo, &view.base, &view.head, &refs)?
    });
    view.offset = offset;
    view.next = next;
    Ok(view)
}

/// Why `id`'s branch at `head` may not land under `require_approval`, in
/// the merge plan's words; `None`: a person approved it as it stands.
pub fn unapproved(
    store: &dyn Store,
    id: &TaskId,
    head: &str,
) -> braid_store::Result<Option<String>> {
    let events = store.task_events(id, HISTORY)?;
    for e in events.iter().rev() {
        match e.kind {
            EventKind::Approved if e.payload["head"] == head => return Ok(None),
            EventKind::Approved => {
                return Ok(Some(format!(
                    "changed since it was approved; it waits for a new approval (`braid review approve {id}`)"
                )));
            }
            EventKind::ChangesRequested => break,
            _ => {}
        }
    }
    Ok(Some(format!(
        "waits for an approval (`braid review approve {id}`)"
    )))
}

fn in_review(t: &Task) -> Result<()> {
    if t.state == State::Review {
        Ok(())
    } else {
        Err(Error::NotInReview {
            id: t.id.clone(),
            state: t.state,
        })
    }
}

fn decision(e: &Event) -> DecisionView {
    DecisionView {
        seq: e.seq,
        at: ts(e.at),
        by: e.payload["by"].as_str().unwrap_or(&e.actor).to_owned(),
        kind: e.kind.as_str().to_owned(),
        message: e.payload["message"].as_str().map(str::to_owned),
        head: e.payload["head"].as_str().unwrap_or_default().to_owned(),
        comments: e.payload["comments"].as_array().map_or(0, Vec::len),
    }
}

/// A person approves a task's branch as it stands: an `approved` event
/// naming the commit (and the message as a comment). The merge queue then
/// takes it; with `require_approval`, nothing else does.
pub fn approve(
    store: &dyn Store,
    site: &Site,
    actor: &str,
    raw: &str,
    input: &ApproveIn,
) -> Result<DecisionView> {
    let t = ops::task(store, raw)?;
    in_review(&t)?;
    let head = head_or_err(site, &t)?;
    let message = input
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let mut cmds = vec![Command::Record {
        id: t.id.clone(),
        kind: EventKind::Approved,
        payload: json!({"by": actor, "head": head, "message": message}),
    }];
    if let Some(m) = message {
        cmds.push(Command::Record {
            id: t.id.clone(),
            kind: EventKind::Commented,
            payload: braid_core::model::comment_payload(actor, &format!("Approved: {m}"))?,
        });
    }
    let applied = store.apply_all(actor, cmds).map_err(Error::Store)?;
    let e = applied
        .iter()
        .flat_map(|a| &a.events)
        .find(|e| e.kind == EventKind::Approved)
        .expect("the approval's event");
    Ok(decision(e))
}

/// The lines of a text file, or why a comment cannot point into it.
fn lines_of(bytes: &[u8], file: &str) -> Result<Vec<String>> {
    if bytes.contains(&0) {
        return Err(invalid(
            "comments",
            format!("{file} is a binary file; comment on the task instead"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_CODE {
        return s.to_owned();
    }
    let mut end = MAX_CODE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &s[..end])
}

/// A person sends work back: each line comment becomes a `commented` event
/// holding its file, line and the code there; a `changes_requested` event
/// carries the message and the comments; the task is `open` again, all in
/// one transaction. A comment on a file or line the branch does not have
/// is refused, and nothing is recorded.
pub fn reject(
    store: &dyn Store,
    site: &Site,
    actor: &str,
    raw: &str,
    input: &RejectIn,
) -> Result<TaskView> {
    let t = ops::task(store, raw)?;
    let message = input.message.trim();
    if message.is_empty() {
        return Err(invalid(
            "message",
            "say what to change (the agent is told this)",
        ));
    }
    braid_core::model::check_text("message", message)?;
    if input.comments.len() > MAX_COMMENTS {
        return Err(invalid(
            "comments",
            format!(
                "{} line comments; at most {MAX_COMMENTS} go with one request",
                input.comments.len()
            ),
        ));
    }
    in_review(&t)?;
    let head = head_or_err(site, &t)?;
    let mut files: HashMap<&str, Vec<String>> = HashMap::new();
    let mut cmds = Vec::new();
    let mut sent = Vec::new();
    for (i, c) in input.comments.iter().enumerate() {
        let at = format!("comment {} ({}:{})", i + 1, c.file, c.line);
        if !files.contains_key(c.file.as_str()) {
            let Some(bytes) = braid_git::file_at(&site.repo, &head, &c.file)? else {
                return Err(invalid(
                    "comments",
                    format!("{at}: {} has no file {:?}", branch_of(&t), c.file),
                ));
            };
            files.insert(&c.file, lines_of(&bytes, &c.file)?);
        }
        let lines = &files[c.file.as_str()];
        if c.line == 0 || c.line as usize > lines.len() {
            return Err(invalid(
                "comments",
                format!(
                    "{at}: {} has {} line(s) on {}; lines count from 1",
                    c.file,
                    lines.len(),
                    branch_of(&t)
                ),
            ));
        }
        let n = c.line as usize;
        let start = n.saturating_sub(2).max(1);
        let end = (n + 2).min(lines.len());
        let code = clip(&lines[n - 1]);
        let snippet = lines[start - 1..end]
            .iter()
            .map(|l| clip(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut payload = braid_core::model::comment_payload(actor, &c.text)
            .map_err(|e| invalid("comments", format!("{at}: {e}")))?;
        payload["file"] = json!(c.file);
        payload["line"] = json!(c.line);
        payload["code"] = json!(code);
        payload["snippet"] = json!(snippet);
        payload["start"] = json!(start);
        payload["commit"] = json!(head);
        sent.push(json!({"file": c.file, "line": c.line, "text": payload["text"], "code": code, "snippet": snippet, "start": start}));
        cmds.push(Command::Record {
            id: t.id.clone(),
            kind: EventKind::Commented,
            payload,
        });
    }
    cmds.push(Command::Record {
        id: t.id.clone(),
        kind: EventKind::ChangesRequested,
        payload: json!({"by": actor, "head": head, "message": message, "comments": sent}),
    });
    cmds.push(Command::Record {
        id: t.id.clone(),
        kind: EventKind::Commented,
        payload: braid_core::model::comment_payload(
            actor,
            &format!("Changes requested: {message}"),
        )?,
    });
    cmds.push(Command::SetState {
        id: t.id.clone(),
        to: State::Open,
        reason: Some("changes requested".into()),
    });
    let mut applied = store.apply_all(actor, cmds)?;
    let last = applied.pop().expect("one result per command");
    Ok(TaskView::from(&last.task))
}

/// The line comments made on a task, oldest first, each marked outdated
/// when its line reads differently at `head` (or is gone).
fn line_comments(
    site: &Site,
    events: &[Event],
    head: Option<&str>,
) -> Result<Vec<LineCommentView>> {
    let mut files: HashMap<String, Option<Vec<String>>> = HashMap::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Commented) {
        let p = &e.payload;
        let (Some(file), Some(line)) = (p["file"].as_str(), p["line"].as_u64()) else {
            continue;
        };
        let code = p["code"].as_str().unwrap_or_default();
        let commit = p["commit"].as_str().unwrap_or_default();
        let outdated = match head {
            None => false,
            Some(h) if h == commit => false,
            Some(h) => {
                if !files.contains_key(file) {
                    let text = braid_git::file_at(&site.repo, h, file)?
                        .map(|b| lines_of(&b, file))
                        .transpose()
                        .unwrap_or(None);
                    files.insert(file.to_owned(), text);
                }
                match &files[file] {
                    Some(lines) => lines
                        .get(line.saturating_sub(1) as usize)
                        .is_none_or(|l| clip(l) != code),
                    None => true,
                }
            }
        };
        out.push(LineCommentView {
            seq: e.seq,
            at: ts(e.at),
            author: p["author"].as_str().unwrap_or(&e.actor).to_owned(),
            file: file.to_owned(),
            line,
            text: p["text"].as_str().unwrap_or_default().to_owned(),
            code: code.to_owned(),
            snippet: p["snippet"].as_str().unwrap_or_default().to_owned(),
            start: p["start"].as_u64().unwrap_or(line),
            commit: commit.to_owned(),
            outdated,
        });
    }
    Ok(out)
}

/// Each gate result, with the attempt it belongs to (the `dispatched`
/// event before it) and its log's name.
fn gate_runs(events: &[Event]) -> Vec<GateRunView> {
    let mut attempt = None;
    let mut out = Vec::new();
    for e in events {
        match e.kind {
            EventKind::Dispatched => attempt = e.payload["attempt"].as_i64(),
            EventKind::GateFinished => {
                let p = &e.payload;
                let gate = p["gate"].as_str().unwrap_or_default().to_owned();
                let cached = p["cached"] == true;
                let ran = !cached && p["infrastructure"] != true;
                out.push(GateRunView {
                    attempt,
                    log: attempt
                        .filter(|_| ran)
                        .map(|a| format!("{a}-gate-{gate}.log")),
                    gate,
                    passed: p["passed"] == true,
                    cached,
                    exit: p["exit"].as_str().map(str::to_owned),
                    duration_ms: p["duration_ms"].as_i64().unwrap_or(0),
                    at: ts(e.at),
                });
            }
            _ => {}
        }
    }
    out
}

/// What the merge plan makes of `t`'s branch now.
fn merge_view(store: &dyn Store, site: &Site, t: &Task) -> Result<MergeView> {
    let branch = branch_of(t);
    let mut view = MergeView {
        planned: false,
        level: None,
        batch: Vec::new(),
        conflicts: Vec::new(),
        waits: Vec::new(),
        error: None,
    };
    if t.state == State::Done
        && braid_git::rev_exists(&site.repo, &branch)
        && braid_git::rev_exists(&site.repo, &site.target)
        && braid_git::is_ancestor(&site.repo, &branch, &site.target)?
    {
        view.waits
            .push(format!("{} is done: its work is on {}", t.id, site.target));
        return Ok(view);
    }
    if t.state != State::Review {
        view.waits
            .push(format!("{} is {}, not in review", t.id, t.state));
        return Ok(view);
    }
    let take = plan::Take {
        only: &[],
        require_approval: site.require_approval,
    };
    let (inputs, notes) = plan::task_inputs(store, &site.repo, take, |_| Ok::<(), Error>(()))?;
    if !inputs.iter().any(|i| i.name == branch) {
        let id = t.id.as_str();
        view.waits = notes
            .into_iter()
            .filter(|n| n.starts_with(&branch) || n.starts_with(id))
            .collect();
        return Ok(view);
    }
    let plan = match plan::plan(&site.repo, &site.target, &inputs, site.jobs) {
        Ok(p) => p,
        Err(plan::PlanError::Input(m)) => {
            view.error = Some(m);
            return Ok(view);
        }
        Err(plan::PlanError::Git(g)) => return Err(g.into()),
    };
    view.planned = true;
    view.level = plan
        .branches
        .iter()
        .find(|b| b.name == branch)
        .map(|b| b.level);
    view.batch = plan
        .order
        .iter()
        .flat_map(|l| &l.batches)
        .find(|b| b.contains(&branch))
        .cloned()
        .unwrap_or_default();
    view.conflicts = plan
        .conflicts
        .iter()
        .filter_map(|c| {
            let with = if c.a == branch {
                &c.b
            } else if c.b == branch {
                &c.a
            } else {
                return None;
            };
            Some(ConflictView {
                with: with.clone(),
                files: c.files.clone(),
            })
        })
        .collect();
    Ok(view)
}

/// Everything a reviewer looks at for one task with a branch (in review
/// or not).
pub fn show(store: &dyn Store, site: &Site, raw: &str) -> Result<ReviewView> {
    let t = ops::task(store, raw)?;
    let diff = diff(
        store,
        site,
        t.id.as_str(),
        &DiffIn {
            stat: true,
            ..DiffIn::default()
        },
    )?;
    let events = store.task_events(&t.id, HISTORY)?;
    let approved = unapproved(store, &t.id, &diff.head)?.is_none();
    Ok(ReviewView {
        decisions: events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Approved | EventKind::ChangesRequested))
            .map(decision)
            .collect(),
        comments: line_comments(site, &events, Some(&diff.head))?,
        gates: gate_runs(&events),
        attempts: store
            .task_usage(&t.id)?
            .iter()
            .map(UsageView::from)
            .collect(),
        merge: merge_view(store, site, &t)?,
        approved,
        require_approval: site.require_approval,
        task: TaskView::from(&t),
        diff,
    })
}

/// The tasks in review, oldest change first, each with its diff's size,
/// whether it is approved, and how many line comments it has; at most
/// `limit`.
pub fn list(store: &dyn Store, site: &Site, limit: usize) -> Result<Vec<ReviewItemView>> {
    let tasks = store.list(&braid_store::ListFilter {
        states: vec![State::Review],
        limit: Some(limit),
        ..braid_store::ListFilter::default()
    })?;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let head = head_of(site, &t)?;
        let (files, added, removed, approved) = match &head {
            Some(h) => {
                let base = base_of(store, site, &t, h)?;
                let files = braid_git::diff_files(&site.repo, &base, h)?;
                (
                    files.len(),
                    files.iter().filter_map(|f| f.added).sum(),
                    files.iter().filter_map(|f| f.removed).sum(),
                    unapproved(store, &t.id, h)?.is_none(),
                )
            }
            None => (0, 0, 0, false),
        };
        let comments = store
            .comments(&t.id, 1000)?
            .iter()
            .filter(|e| e.payload["file"].is_string())
            .count();
        out.push(ReviewItemView {
            id: t.id.to_string(),
            title: t.title.clone(),
            state: t.state.as_str().to_owned(),
            branch: branch_of(&t),
            approved,
            files,
            added,
            removed,
            comments,
            updated_at: ts(t.updated_at),
        });
    }
    out.sort_by(|a, b| a.updated_at.cmp(&b.updated_at));
    Ok(out)
}

/// What a reviewer asked for, for the agent: the message and each line
/// comment with its file, line and the code around it. From the latest
/// request for changes, unless an approval came after it.
pub fn asked_for(events: &[Event]) -> Option<String> {
    let e = events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, EventKind::Approved | EventKind::ChangesRequested))
        .filter(|e| e.kind == EventKind::ChangesRequested)?;
    let p = &e.payload;
    let mut s = format!(
        "{} asked for changes:\n\n{}\n",
        p["by"].as_str().unwrap_or(&e.actor),
        p["message"].as_str().unwrap_or_default().trim()
    );
    let comments = p["comments"].as_array().cloned().unwrap_or_default();
    if !comments.is_empty() {
        s.push_str("\nComments on lines of your branch:\n");
    }
    for c in &comments {
        let file = c["file"].as_str().unwrap_or_default();
        let line = c["line"].as_u64().unwrap_or(0);
        let start = c["start"].as_u64().unwrap_or(line);
        s.push_str(&format!(
            "\n- {file}:{line}: {}\n\n",
            c["text"].as_str().unwrap_or_default().trim()
        ));
        for (i, l) in c["snippet"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            let n = start + i as u64;
            let mark = if n == line { ">" } else { " " };
            s.push_str(&format!("    {mark}{n:>5} | {l}\n"));
        }
    }
    Some(s)
}
