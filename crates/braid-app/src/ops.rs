//! The operations on the work graph, each written once for every front-end
//! (command line, HTTP, MCP, task files): take wire input, check it, resolve
//! ids, apply one store command batch, answer with views. Every policy
//! lives here and nowhere else: lease bounds, required reasons, defaults,
//! how an id typed short is resolved.

use std::time::Duration;

use braid_core::{Dep, DepKind, EventKind, NewTask, State, Task, TaskId, TaskPatch, TaskType};
use braid_store::{Applied, Command, Error, ListFilter, Result, Store};

use crate::wire::*;

/// A claim holds this long unless asked otherwise.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// The shortest claim: less could expire before the holder says anything.
pub const LEASE_MIN: Duration = Duration::from_secs(10);
/// The longest claim: a holder that died keeps its task at most this long.
pub const LEASE_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Comments shown with a task.
pub const SHOW_COMMENTS: usize = 50;
/// Candidates listed when an id prefix is ambiguous.
const AMBIGUOUS_LISTED: usize = 10;

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Domain(braid_core::Error::invalid(field, message))
}

/// The lease for a claim asked for `seconds` (default 30 min), within
/// 10 s to 7 days.
pub fn lease(seconds: Option<u64>) -> Result<Duration> {
    let d = seconds.map_or(LEASE_DEFAULT, Duration::from_secs);
    if d < LEASE_MIN || d > LEASE_MAX {
        return Err(invalid(
            "lease",
            format!(
                "{} is out of range; a claim holds 10 s to 7 days",
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(d)
}

/// Resolves an id as typed: the exact id, else a unique prefix of one, in
/// any case, with or without `br-` (`8nxt`, `BR-8NXT`, `br-8n`). An
/// ambiguous prefix is an error listing the candidates. Costs one index
/// range read per spelling tried.
pub fn resolve(store: &dyn Store, raw: &str) -> Result<TaskId> {
    let typed = raw.trim();
    // Checks the characters (and says which one is wrong).
    TaskId::parse(typed)?;
    let lower = typed.to_ascii_lowercase();
    let mut spellings = vec![typed.to_owned()];
    if lower != typed {
        spellings.push(lower.clone());
    }
    if !lower.starts_with(braid_core::id::PREFIX) {
        spellings.push(format!("{}{lower}", braid_core::id::PREFIX));
    }
    for s in &spellings {
        let found = store.ids_with_prefix(s, AMBIGUOUS_LISTED + 1)?;
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(one.clone()),
            // An exact id sorts before every longer id it prefixes.
            [first, ..] if first.as_str() == s => return Ok(first.clone()),
            _ => {
                let more = found.len() > AMBIGUOUS_LISTED;
                let mut candidates = found;
                candidates.truncate(AMBIGUOUS_LISTED);
                return Err(Error::Ambiguous {
                    prefix: typed.to_owned(),
                    candidates,
                    more,
                });
            }
        }
    }
    Err(braid_core::Error::NotFound(TaskId::parse(typed)?).into())
}

/// Resolves every id, failing on the first that does not resolve.
pub fn resolve_all(store: &dyn Store, raws: &[String]) -> Result<Vec<TaskId>> {
    raws.iter().map(|r| resolve(store, r)).collect()
}

fn kind_of(s: Option<&str>) -> Result<DepKind> {
    Ok(s.map(DepKind::parse)
        .transpose()?
        .unwrap_or(DepKind::Blocks))
}

fn deps_of(store: &dyn Store, deps: &[DepIn]) -> Result<Vec<Dep>> {
    deps.iter()
        .map(|d| {
            Ok(Dep {
                id: resolve(store, &d.id)?,
                kind: kind_of(d.kind.as_deref())?,
            })
        })
        .collect()
}

fn priority_of(p: Option<i64>) -> Result<Option<u8>> {
    Ok(p.map(braid_core::model::check_priority).transpose()?)
}

fn type_of(s: Option<&str>) -> Result<Option<TaskType>> {
    Ok(s.map(TaskType::parse).transpose()?)
}

/// `None`/`""` clears an optional text field.
fn clearable(v: Option<Option<String>>) -> Option<Option<String>> {
    v.map(|o| o.filter(|s| !s.is_empty()))
}

fn one(applied: Vec<Applied>) -> Applied {
    applied.into_iter().last().expect("one command, one result")
}

fn new_task(store: &dyn Store, input: NewTaskIn) -> Result<NewTask> {
    Ok(NewTask {
        id: None,
        deps: deps_of(store, &input.deps)?,
        kind: type_of(input.kind.as_deref())?,
        priority: priority_of(input.priority)?,
        parent: input
            .parent
            .as_deref()
            .map(|p| resolve(store, p))
            .transpose()?,
        title: input.title,
        description: input.description,
        labels: input.labels,
        assignee: input.assignee.filter(|a| !a.is_empty()),
        acceptance: input.acceptance,
        gates: input.gates,
        agent: input.agent.filter(|a| !a.is_empty()),
    })
}

/// Creates a task.
pub fn add(store: &dyn Store, actor: &str, input: NewTaskIn) -> Result<TaskView> {
    let new = new_task(store, input)?;
    let a = store.apply(actor, Command::Add(new))?;
    Ok(TaskView::from(&a.task))
}

/// A change made, and the fields it changed.
#[derive(Clone, Debug)]
pub struct Updated {
    pub task: TaskView,
    pub fields: Vec<String>,
}

fn fields_changed(applied: &[Applied]) -> Vec<String> {
    applied
        .iter()
        .flat_map(|a| &a.events)
        .filter(|e| e.kind == EventKind::Updated)
        .flat_map(|e| {
            e.payload
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn patch_of(store: &dyn Store, input: PatchIn) -> Result<TaskPatch> {
    let parent = match input.parent {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) if p.is_empty() || p == "none" => Some(None),
        Some(Some(p)) => Some(Some(resolve(store, &p)?)),
    };
    Ok(TaskPatch {
        title: input.title,
        description: input.description,
        kind: type_of(input.kind.as_deref())?,
        priority: priority_of(input.priority)?,
        parent,
        add_labels: input.add_labels,
        remove_labels: input.remove_labels,
        assignee: clearable(input.assignee),
        acceptance: input.acceptance,
        gates: input.gates,
        agent: clearable(input.agent),
        branch: clearable(input.branch),
    })
}

/// Changes a task's own fields.
pub fn update(store: &dyn Store, actor: &str, id: &str, input: PatchIn) -> Result<Updated> {
    let id = resolve(store, id)?;
    let patch = patch_of(store, input)?;
    let applied = store.apply_all(actor, vec![Command::Update { id, patch }])?;
    let fields = fields_changed(&applied);
    Ok(Updated {
        task: TaskView::from(&one(applied).task),
        fields,
    })
}

/// A state change asked for by a person or an agent (not the engine's
/// lease-bound ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Done,
    Fail,
    Reopen,
    Defer,
    Cancel,
}

impl Transition {
    pub const ALL: [Transition; 5] = [
        Transition::Done,
        Transition::Fail,
        Transition::Reopen,
        Transition::Defer,
        Transition::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Done => "done",
            Transition::Fail => "fail",
            Transition::Reopen => "reopen",
            Transition::Defer => "defer",
            Transition::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn to(self) -> State {
        match self {
            Transition::Done => State::Done,
            Transition::Fail => State::Failed,
            Transition::Reopen => State::Open,
            Transition::Defer => State::Deferred,
            Transition::Cancel => State::Cancelled,
        }
    }
}

/// A task moved, and where from.
#[derive(Clone, Debug)]
pub struct Moved {
    pub task: TaskView,
    pub from: State,
}

/// Moves every named task, all in one transaction or none. A failure needs
/// a reason (what a next attempt needs to know).
pub fn transition(
    store: &dyn Store,
    actor: &str,
    ids: &[String],
    t: Transition,
    reason: Option<String>,
) -> Result<Vec<Moved>> {
    let reason = reason.filter(|r| !r.trim().is_empty());
    if t == Transition::Fail && reason.is_none() {
        return Err(invalid("reason", "a failure needs a reason saying why"));
    }
    if let Some(r) = &reason {
        braid_core::model::check_text("reason", r)?;
    }
    let ids = resolve_all(store, ids)?;
    let cmds = ids
        .into_iter()
        .map(|id| Command::SetState {
            id,
            to: t.to(),
            reason: reason.clone(),
        })
        .collect();
    Ok(store
        .apply_all(actor, cmds)?
        .iter()
        .map(|a| Moved {
            task: TaskView::from(&a.task),
            from: a
                .events
                .first()
                .and_then(|e| e.payload["from"].as_str())
                .and_then(|s| State::parse(s).ok())
                .unwrap_or(a.task.state),
        })
        .collect())
}

/// Claims `id`, or the next ready task, for `input.assignee` (default:
/// the actor). The answer's lease carries the claim's token.
pub fn claim(store: &dyn Store, actor: &str, id: Option<&str>, input: ClaimIn) -> Result<TaskView> {
    let lease_ms = lease(input.lease_seconds)?.as_millis() as i64;
    let id = id.map(|i| resolve(store, i)).transpose()?;
    let assignee = input
        .assignee
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| actor.to_owned());
    let a = store.apply(
        actor,
        Command::Claim {
            id,
            assignee,
            lease_ms,
        },
    )?;
    let mut v = TaskView::from(&a.task);
    if let Some(l) = v.lease.as_mut() {
        l.token = a.lease_token;
    }
    Ok(v)
}

/// Makes `from` depend on `dep.id`.
pub fn dep_add(store: &dyn Store, actor: &str, from: &str, dep: DepIn) -> Result<TaskView> {
    let from = resolve(store, from)?;
    let to = resolve(store, &dep.id)?;
    let kind = kind_of(dep.kind.as_deref())?;
    let a = store.apply(actor, Command::DepAdd { from, to, kind })?;
    Ok(TaskView::from(&a.task))
}

/// Removes the dependency of `from` on `to`.
pub fn dep_rm(store: &dyn Store, actor: &str, from: &str, to: &str) -> Result<TaskView> {
    let (from, to) = (resolve(store, from)?, resolve(store, to)?);
    let a = store.apply(actor, Command::DepRm { from, to })?;
    Ok(TaskView::from(&a.task))
}

/// Comments on a task (a `commented` event); the author defaults to the
/// actor.
pub fn comment(store: &dyn Store, actor: &str, id: &str, input: CommentIn) -> Result<CommentView> {
    let id = resolve(store, id)?;
    let author = input
        .author
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| actor.to_owned());
    let payload = braid_core::model::comment_payload(&author, &input.text)?;
    let a = store.apply(
        actor,
        Command::Record {
            id,
            kind: EventKind::Commented,
            payload,
        },
    )?;
    let e = a
        .events
        .last()
        .ok_or_else(|| Error::backend("a comment was recorded without its event"))?;
    Ok(CommentView::from(e))
}

/// The label on work braid will not try again by itself: a person must
/// look (a conflict a resolve task could not settle, say). Removing it
/// hands the task back to braid.
pub const NEEDS_HUMAN: &str = "needs-human";
/// The label on a task braid made to resolve a merge conflict.
pub const MERGE_CONFLICT: &str = "merge-conflict";

/// What a task waits on a person for: the question as asked, why it was
/// asked (`question`, `denied`, `budget`, `escalation`), and the agent
/// session an answer resumes.
#[derive(Clone, Debug, Default)]
pub struct Attention {
    pub question: String,
    pub reason: &'static str,
    pub agent: Option<String>,
    pub session: Option<String>,
}

/// Questions longer than this are cut (the agent's log keeps it whole).
const MAX_QUESTION: usize = 4000;

/// The commands that hand `id` to a person, after whatever moved it (the
/// engine's finish, under its lease): the `needs-human` label (unless
/// `labelled`), an `attention` event and a comment with the question. The
/// question is text braid did not choose (an agent's words, file names):
/// control characters in it are written visibly, not refused.
pub fn attention_commands(
    actor: &str,
    id: &TaskId,
    labelled: bool,
    a: &Attention,
) -> Result<Vec<Command>> {
    let q = braid_core::text::escape(a.question.trim(), braid_core::text::Lines::Many);
    let mut q = q.into_owned();
    if q.len() > MAX_QUESTION {
        let mut end = MAX_QUESTION;
        while !q.is_char_boundary(end) {
            end -= 1;
        }
        q.truncate(end);
        q.push_str(" …");
    }
    if q.is_empty() {
        q = "(no question given)".into();
    }
    let mut cmds = Vec::new();
    if !labelled {
        cmds.push(Command::Update {
            id: id.clone(),
            patch: TaskPatch {
                add_labels: vec![NEEDS_HUMAN.to_owned()],
                ..TaskPatch::default()
            },
        });
    }
    cmds.push(Command::Record {
        id: id.clone(),
        kind: EventKind::Attention,
        payload: serde_json::json!({
            "question": q, "reason": a.reason, "agent": a.agent, "session": a.session,
        }),
    });
    cmds.push(Command::Record {
        id: id.clone(),
        kind: EventKind::Commented,
        payload: braid_core::model::comment_payload(actor, &q)?,
    });
    Ok(cmds)
}

/// Hands a task to a person: the `needs-human` label, an `attention`
/// event and a comment saying why, in one transaction. A task already
/// labelled gets nothing more when `why` is not new to it (so a pass that
/// finds the same thing again adds nothing). Answers the events written.
/// `why` is braid's own sentence around names it did not choose (files
/// and branches from git): a control character in one is written visibly
/// rather than refusing the hand-over.
pub fn escalate(
    store: &dyn Store,
    actor: &str,
    id: &TaskId,
    why: &str,
) -> Result<Vec<braid_core::Event>> {
    if why.trim().is_empty() {
        return Err(invalid("text", "say why the task needs a person"));
    }
    let escaped = &*braid_core::text::escape(why.trim(), braid_core::text::Lines::Many);
    let t = store.task(id)?;
    let labelled = t.labels.iter().any(|l| l == NEEDS_HUMAN);
    if labelled
        && store
            .comments(id, SHOW_COMMENTS)?
            .iter()
            .any(|e| e.payload["text"] == escaped)
    {
        return Ok(Vec::new());
    }
    let cmds = attention_commands(
        actor,
        id,
        labelled,
        &Attention {
            question: why.to_owned(),
            reason: "escalation",
            ..Attention::default()
        },
    )?;
    let applied = store.apply_all(actor, cmds)?;
    Ok(applied.into_iter().flat_map(|a| a.events).collect())
}

/// A person answers a task that waits on one: the answer is recorded (an
/// `answered` event and a comment), the `needs-human` label comes off and
/// a task parked for the question (deferred) is open again, all in one
/// transaction. The engine then resumes the agent's session with the
/// answer. A task not waiting for an answer is an error, and changes
/// nothing.
pub fn answer(store: &dyn Store, actor: &str, id: &str, input: AnswerIn) -> Result<TaskView> {
    let id = resolve(store, id)?;
    let t = store.task(&id)?;
    let text = input.text.trim();
    if text.is_empty() {
        return Err(invalid("text", "an answer needs some text"));
    }
    braid_core::model::check_text("text", text)?;
    if !t.labels.iter().any(|l| l == NEEDS_HUMAN) {
        return Err(invalid(
            "id",
            format!(
                "{id} is not waiting for an answer (it has no {NEEDS_HUMAN} label; `braid list --label {NEEDS_HUMAN}` shows those that are)"
            ),
        ));
    }
    let mut cmds = vec![
        Command::Record {
            id: id.clone(),
            kind: EventKind::Commented,
            payload: braid_core::model::comment_payload(actor, text)?,
        },
        Command::Record {
            id: id.clone(),
            kind: EventKind::Answered,
            payload: serde_json::json!({"text": text, "by": actor}),
        },
        Command::Update {
            id: id.clone(),
            patch: TaskPatch {
                remove_labels: vec![NEEDS_HUMAN.to_owned()],
                ..TaskPatch::default()
            },
        },
    ];
    if t.state == State::Deferred {
        cmds.push(Command::SetState {
            id: id.clone(),
            to: State::Open,
            reason: Some("answered".into()),
        });
    }
    let mut applied = store.apply_all(actor, cmds)?;
    let last = applied.pop().expect("one result per command");
    Ok(TaskView::from(&last.task))
}

/// The latest agent attempt on a task that reported a session (the one
/// `braid attach` continues), from the ledger.
pub fn last_session(store: &dyn Store, id: &str) -> Result<Option<UsageView>> {
    let id = resolve(store, id)?;
    Ok(store
        .task_usage(&id)?
        .iter()
        .rev()
        .find(|r| r.session.is_some())
        .map(UsageView::from))
}

/// The tasks waiting for a person (labelled `needs-human`), each with what
/// was asked, the newest question first; at most `limit`.
pub fn needs_you(store: &dyn Store, limit: usize) -> Result<Vec<AttentionView>> {
    let tasks = store.list(&ListFilter {
        label: Some(NEEDS_HUMAN.to_owned()),
        limit: Some(limit),
        ..ListFilter::default()
    })?;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let asked = store
            .task_events(&t.id, 50)?
            .into_iter()
            .rev()
            .find(|e| e.kind == EventKind::Attention);
        let p = asked.as_ref().map(|e| &e.payload);
        let field = |k: &str| p.and_then(|p| p[k].as_str()).map(str::to_owned);
        out.push(AttentionView {
            id: t.id.to_string(),
            title: t.title.clone(),
            state: t.state.as_str().to_owned(),
            question: field("question").unwrap_or_else(|| {
                format!(
                    "labelled {NEEDS_HUMAN}; see its comments (`braid show {}`)",
                    t.id
                )
            }),
            reason: field("reason").unwrap_or_else(|| "escalation".into()),
            agent: field("agent"),
            session: field("session"),
            at: asked.as_ref().map(|e| ts(e.at)),
        });
    }
    out.sort_by(|a, b| b.at.cmp(&a.at));
    Ok(out)
}

/// One task. The exact id costs one read; a prefix one more.
pub fn get(store: &dyn Store, id: &str) -> Result<TaskView> {
    Ok(TaskView::from(&task(store, id)?))
}

/// One task as stored (for front-ends that render it themselves).
pub fn task(store: &dyn Store, id: &str) -> Result<Task> {
    if let Ok(exact) = TaskId::parse(id.trim()) {
        match store.task(&exact) {
            Err(Error::Domain(braid_core::Error::NotFound(_))) => {}
            found => return found,
        }
    }
    store.task(&resolve(store, id)?)
}

/// A task in full: why it is not ready, its children, its latest `events`
/// and comments.
pub fn show(store: &dyn Store, id: &str, events: usize) -> Result<ShowView> {
    let t = task(store, id)?;
    let blocked_by = if t.ready {
        Vec::new()
    } else {
        store.why_blocked(&t.id)?
    };
    let children = store
        .list(&ListFilter {
            parent: Some(t.id.clone()),
            ..ListFilter::default()
        })?
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    let attempts: Vec<UsageView> = store
        .task_usage(&t.id)?
        .iter()
        .map(UsageView::from)
        .collect();
    Ok(ShowView {
        blocked_by,
        children,
        dependents: store
            .dependents_of(&t.id, 100)?
            .into_iter()
            .map(|(id, kind)| DepView {
                id: id.to_string(),
                kind,
            })
            .collect(),
        events: store
            .task_events(&t.id, events)?
            .iter()
            .map(EventView::from)
            .collect(),
        comments: store
            .comments(&t.id, SHOW_COMMENTS)?
            .iter()
            .map(CommentView::from)
            .collect(),
        cost_usd: attempts.iter().filter_map(|a| a.cost_usd).sum(),
        attempts,
        git: None,
        task: TaskView::from(&t),
    })
}

/// What to sum the cost ledger by (`braid cost --by`).
pub use braid_store::UsageBy;

/// The cost ledger summed by task, agent, model or day, since a time
/// (epoch ms), the costliest first; at most `limit` rows ([`COST_ROWS`]
/// when not given, at most [`COST_ROWS_MAX`]).
pub fn cost(
    store: &dyn Store,
    by: UsageBy,
    since: Option<i64>,
    limit: Option<usize>,
) -> Result<Vec<CostView>> {
    let limit = limit.unwrap_or(COST_ROWS).clamp(1, COST_ROWS_MAX);
    Ok(store
        .usage_totals(&braid_store::UsageQuery {
            by,
            since,
            task: None,
            limit,
        })?
        .iter()
        .map(CostView::from)
        .collect())
}

/// The cost summary the board shows: the total, each task's, each
/// parent's over its descendants (each ancestor read once), and the
/// budgets with what was spent against them (`run_spent`: what the
/// costliest live run has spent, if one runs).
pub fn cost_summary(
    store: &dyn Store,
    budget: &crate::budget::Budget,
    run_spent: Option<f64>,
) -> Result<CostSummaryView> {
    let rows = store.usage_totals(&braid_store::UsageQuery {
        by: UsageBy::Task,
        since: None,
        task: None,
        limit: COST_ROWS_MAX,
    })?;
    let mut parents: std::collections::HashMap<TaskId, Option<TaskId>> =
        std::collections::HashMap::new();
    let mut epics: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut tasks = std::collections::BTreeMap::new();
    for r in &rows {
        tasks.insert(r.key.clone(), r.cost_usd);
        let Ok(mut cur) = TaskId::parse(&r.key) else {
            continue;
        };
        // Up the hierarchy (bounded: hierarchy loops are refused, and the
        // walk stops at 100 levels regardless).
        for _ in 0..100 {
            let parent = match parents.get(&cur) {
                Some(p) => p.clone(),
                None => {
                    let p = store.task(&cur).ok().and_then(|t| t.parent);
                    parents.insert(cur.clone(), p.clone());
                    p
                }
            };
            let Some(p) = parent else { break };
            *epics.entry(p.to_string()).or_default() += r.cost_usd;
            cur = p;
        }
    }
    Ok(CostSummaryView {
        total_usd: rows.iter().map(|r| r.cost_usd).sum(),
        attempts: rows.iter().map(|r| r.attempts).sum(),
        tasks,
        epics,
        budgets: budget.views(store, run_spent, store.now_ms())?,
    })
}

/// Rows `cost` answers unless asked, and at most.
pub const COST_ROWS: usize = 50;
pub const COST_ROWS_MAX: usize = 10_000;

fn filter_of(store: &dyn Store, input: ListIn) -> Result<ListFilter> {
    let states = input
        .states
        .iter()
        .map(|s| State::parse(s))
        .collect::<braid_core::Result<_>>()?;
    let kinds = input
        .types
        .iter()
        .map(|s| TaskType::parse(s))
        .collect::<braid_core::Result<_>>()?;
    Ok(ListFilter {
        states,
        kinds,
        label: input.label,
        parent: input
            .parent
            .as_deref()
            .map(|p| resolve(store, p))
            .transpose()?,
        assignee: input.assignee,
        ready: input.ready,
        limit: input.limit,
    })
}

/// Tasks, filtered, in creation order.
pub fn list(store: &dyn Store, input: ListIn) -> Result<Vec<TaskView>> {
    Ok(list_tasks(store, input)?
        .iter()
        .map(TaskView::from)
        .collect())
}

/// [`list`] as stored tasks, for a front-end that renders only a few
/// fields of many tasks (a table): a view formats every time and copies
/// every text, which at 10,000 tasks costs a fifth of `braid list`.
pub fn list_tasks(store: &dyn Store, input: ListIn) -> Result<Vec<Task>> {
    let filter = filter_of(store, input)?;
    store.list(&filter)
}

/// The ready queue's head, highest priority first, then oldest.
pub fn ready(store: &dyn Store, limit: usize) -> Result<Vec<TaskView>> {
    Ok(ready_tasks(store, limit)?
        .iter()
        .map(TaskView::from)
        .collect())
}

/// [`ready`] as stored tasks (see [`list_tasks`]).
pub fn ready_tasks(store: &dyn Store, limit: usize) -> Result<Vec<Task>> {
    store.ready(limit)
}

/// Ready tasks that depend on `id` (what finishing it let start), at most
/// `limit` of the ready queue's head.
pub fn unblocked_by(store: &dyn Store, id: &TaskId, limit: usize) -> Result<Vec<TaskView>> {
    Ok(store
        .ready(limit)?
        .iter()
        .filter(|r| r.deps.iter().any(|d| &d.id == id))
        .map(TaskView::from)
        .collect())
}

/// Counts by state, ready and blocked (maintained counters, instant).
pub fn health(store: &dyn Store) -> Result<HealthView> {
    let h = store.health()?;
    Ok(HealthView {
        total: h.total,
        epics: h.epics,
        ready: h.ready,
        blocked: h.blocked,
        by_state: h
            .by_state
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect(),
        last_seq: store.last_seq()?,
    })
}

/// Why a task is not ready, and which unfinished tasks block it.
pub fn why(store: &dyn Store, id: &str) -> Result<WhyView> {
    let t = task(store, id)?;
    let reasons = if t.ready {
        Vec::new()
    } else {
        store.why_blocked(&t.id)?
    };
    let mut blocked_by = Vec::new();
    for d in t.deps.iter().filter(|d| d.kind == DepKind::Blocks) {
        if !store.task(&d.id)?.state.is_finished() {
            blocked_by.push(d.id.to_string());
        }
    }
    Ok(WhyView {
        id: t.id.to_string(),
        ready: t.ready,
        reasons,
        blocked_by,
    })
}

/// A task's subtree (at most `limit` nodes) and the dependencies of those
/// tasks (edges may point outside the subtree).
pub fn graph(store: &dyn Store, id: &str, limit: usize) -> Result<GraphView> {
    let root = task(store, id)?.id;
    let mut rows = store.subtree(Some(&root))?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    let ids: Vec<TaskId> = rows.iter().map(|r| r.id.clone()).collect();
    let edges = store.deps_of(&ids)?;
    Ok(GraphView {
        root: root.to_string(),
        nodes: rows
            .into_iter()
            .map(|r| NodeView {
                id: r.id.to_string(),
                title: r.title,
                kind: r.kind.as_str().to_owned(),
                state: r.state.as_str().to_owned(),
                parent: r.parent.map(|p| p.to_string()),
                ready: r.ready,
            })
            .collect(),
        edges: edges
            .into_iter()
            .map(|(from, to, kind)| EdgeView {
                from: from.to_string(),
                to: to.to_string(),
                kind: kind.as_str().to_owned(),
            })
            .collect(),
        truncated,
    })
}

/// The log after `after`, oldest first.
pub fn events(store: &dyn Store, after: i64, limit: usize) -> Result<Vec<EventView>> {
    Ok(store
        .events(after, limit)?
        .iter()
        .map(EventView::from)
        .collect())
}

/// One task's latest events, oldest first.
pub fn task_events(store: &dyn Store, id: &str, limit: usize) -> Result<Vec<EventView>> {
    let id = task(store, id)?.id;
    Ok(store
        .task_events(&id, limit)?
        .iter()
        .map(EventView::from)
        .collect())
}

/// One task's latest comments, oldest first.
pub fn comments(store: &dyn Store, id: &str, limit: usize) -> Result<Vec<CommentView>> {
    let id = task(store, id)?.id;
    Ok(store
        .comments(&id, limit)?
        .iter()
        .map(CommentView::from)
        .collect())
}

/// Cycles among `blocks` dependencies, each as the ids around it (at most
/// 100), and how many such dependencies there are. The write path refuses
/// a cycle; this finds any an import or an older braid let in.
pub fn cycles(store: &dyn Store) -> Result<(Vec<Vec<String>>, usize)> {
    let edges = store.blocks_edges()?;
    let mut ids: Vec<&TaskId> = Vec::new();
    let mut index: std::collections::HashMap<&TaskId, usize> = std::collections::HashMap::new();
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
    let named = braid_core::graph::find_cycles(ids.len(), &pairs, 100)
        .iter()
        .map(|c| c.iter().map(|&i| ids[i].to_string()).collect())
        .collect();
    Ok((named, edges.len()))
}

/// Records that a task file was refused (nothing was applied): a
/// `sync_rejected` event naming the file, its task and why.
pub fn reject_file(
    store: &dyn Store,
    actor: &str,
    file: &str,
    task: Option<&str>,
    error: &str,
) -> Result<()> {
    let payload = serde_json::json!({"file": file, "task": task, "error": error});
    store.note(actor, EventKind::SyncRejected, payload)?;
    Ok(())
}

/// The commands that make `t` what `doc` says, in order: fields, then
/// dependencies removed and added, then the state.
fn doc_commands(store: &dyn Store, t: &Task, doc: &TaskDoc) -> Result<Vec<Command>> {
    let mut patch = TaskPatch::default();
    if doc.title != t.title {
        patch.title = Some(doc.title.clone());
    }
    let body = doc.description.trim_end();
    if body != t.description.trim_end() {
        patch.description = Some(body.to_owned());
    }
    if let Some(k) = type_of(doc.kind.as_deref())?
        && k != t.kind
    {
        patch.kind = Some(k);
    }
    if let Some(p) = priority_of(doc.priority)?
        && p != t.priority
    {
        patch.priority = Some(p);
    }
    let parent = doc
        .parent
        .as_deref()
        .map(|p| resolve(store, p))
        .transpose()?;
    if parent != t.parent {
        patch.parent = Some(parent);
    }
    let (mut want, mut have) = (doc.labels.clone(), t.labels.clone());
    want.sort();
    want.dedup();
    have.sort();
    if want != have {
        patch.add_labels = want.iter().filter(|l| !have.contains(l)).cloned().collect();
        patch.remove_labels = have.iter().filter(|l| !want.contains(l)).cloned().collect();
    }
    if doc.assignee != t.assignee {
        patch.assignee = Some(doc.assignee.clone());
    }
    let acceptance = doc.acceptance.clone().unwrap_or_default();
    if acceptance != t.acceptance {
        patch.acceptance = Some(acceptance);
    }
    if doc.gates != t.gates {
        patch.gates = Some(doc.gates.clone());
    }
    if doc.agent != t.agent {
        patch.agent = Some(doc.agent.clone());
    }
    let mut cmds = Vec::new();
    if !patch.is_empty() {
        cmds.push(Command::Update {
            id: t.id.clone(),
            patch,
        });
    }
    let deps = deps_of(store, &doc.deps)?;
    for d in &t.deps {
        if !deps.iter().any(|x| x.id == d.id && x.kind == d.kind) {
            cmds.push(Command::DepRm {
                from: t.id.clone(),
                to: d.id.clone(),
            });
        }
    }
    for d in &deps {
        if !t.deps.iter().any(|x| x.id == d.id && x.kind == d.kind) {
            cmds.push(Command::DepAdd {
                from: t.id.clone(),
                to: d.id.clone(),
                kind: d.kind,
            });
        }
    }
    if let Some(s) = &doc.state {
        let s = State::parse(s)?;
        if s != t.state {
            cmds.push(Command::SetState {
                id: t.id.clone(),
                to: s,
                reason: None,
            });
        }
    }
    Ok(cmds)
}

/// Makes the task `t` (as read) what `doc` says, in one transaction.
/// `None`: nothing differs.
pub fn put(store: &dyn Store, actor: &str, t: &Task, doc: &TaskDoc) -> Result<Option<Task>> {
    let cmds = doc_commands(store, t, doc)?;
    if cmds.is_empty() {
        return Ok(None);
    }
    let applied = store.apply_all(actor, cmds)?;
    Ok(applied.into_iter().last().map(|a| a.task))
}

/// Creates the task `doc` describes, under `id` when given, in its state,
/// in one transaction.
pub fn create(store: &dyn Store, actor: &str, id: Option<TaskId>, doc: &TaskDoc) -> Result<Task> {
    let mut new = new_task(
        store,
        NewTaskIn {
            title: doc.title.clone(),
            description: doc.description.trim_end().to_owned(),
            kind: doc.kind.clone(),
            priority: doc.priority,
            parent: doc.parent.clone(),
            deps: doc.deps.clone(),
            labels: doc.labels.clone(),
            gates: doc.gates.clone(),
            acceptance: doc.acceptance.clone().unwrap_or_default(),
            assignee: doc.assignee.clone(),
            agent: doc.agent.clone(),
        },
    )?;
    let state = doc.state.as_deref().map(State::parse).transpose()?;
    let Some(to) = state.filter(|s| *s != State::Open) else {
        new.id = id;
        return Ok(one(store.apply_all(actor, vec![Command::Add(new)])?).task);
    };
    // Added and moved in one transaction, so the id is chosen here; a
    // fresh one that happens to be taken is drawn again, longer.
    let mut len = braid_core::id::MIN_RANDOM_LEN;
    loop {
        let chosen = id.clone().unwrap_or_else(|| TaskId::random(len));
        new.id = Some(chosen.clone());
        let cmds = vec![
            Command::Add(new.clone()),
            Command::SetState {
                id: chosen.clone(),
                to,
                reason: None,
            },
        ];
        match store.apply_all(actor, cmds) {
            Ok(applied) => return Ok(one(applied).task),
            Err(Error::Invalid(m)) if id.is_none() && m.contains("already taken") && len < 16 => {
                len += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many items one answer holds when the caller does not say, and at
/// most, by what is listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub default: usize,
    pub max: usize,
}

impl Page {
    pub const TASKS: Page = Page {
        default: 1000,
        max: 10_000,
    };
    pub const READY: Page = Page {
        default: 20,
        max: 1000,
    };
    pub const EVENTS: Page = Page {
        default: 1000,
        max: 10_000,
    };
    /// One task's events or comments.
    pub const TASK_EVENTS: Page = Page {
        default: 100,
        max: 1000,
    };
    /// Nodes of a task's dependency graph.
    pub const GRAPH: Page = Page {
        default: 500,
        max: 5000,
    };

    /// The size of a page asked for as `asked`: the default, or what was
    /// asked within 1 and the most.
    pub fn size(self, asked: Option<usize>) -> usize {
        asked.unwrap_or(self.default).clamp(1, self.max)
    }
}
