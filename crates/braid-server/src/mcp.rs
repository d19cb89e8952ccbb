//! `braid mcp`: the work graph as an MCP server over stdio, for coding
//! agents. Every tool goes through the store's single write path; every
//! answer fits a token budget (characters / 4): lists page with a cursor,
//! long text is cut with a marker saying how to get the rest. Errors are MCP
//! errors with a message naming the thing; the server keeps serving.

use std::sync::Arc;

use braid_app::ops::{self, Page};
use braid_app::wire::{
    AnswerIn, ApproveIn, ClaimIn, CommentIn, DepIn, DiffIn, NewTaskIn, PatchIn, ReasonIn, RejectIn,
    TaskView,
};
use braid_store::Store;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{
    ErrorData as McpError, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The default answer budget, in tokens (counted as characters / 4).
pub const DEFAULT_BUDGET: u64 = 8_000;

const INSTRUCTIONS: &str = "braid keeps the project's work as tasks with dependencies. \
Workflow: `ready` lists tasks that can start now (highest priority first); `claim` one \
(atomic: you get a lease token, nobody else gets the task); do the work (`context` tells \
you everything about the task, `show` its details); then `done`, or `fail` with a reason. \
Found more work? `add` it (with `deps` on what it waits for). Leave notes with `comment`.";

#[derive(Clone)]
pub struct BraidMcp {
    store: Arc<dyn Store>,
    actor: String,
    /// Characters an answer may take (the token budget × 4).
    budget: usize,
    /// Where review looks (`None` outside git: the review tools say so).
    review: Option<Arc<braid_app::review::Site>>,
    // Read by the code `#[tool_handler]` generates.
    #[allow(dead_code)]
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for BraidMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BraidMcp")
            .field("budget", &self.budget)
            .finish()
    }
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(
    store: Arc<dyn Store>,
    actor: String,
    budget_tokens: usize,
    review: Option<braid_app::review::Site>,
) -> Result<(), crate::Error> {
    let mut server = BraidMcp::new(store, actor, budget_tokens);
    server.review = review.map(Arc::new);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| crate::Error::Mcp(Box::new(e)))?;
    running
        .waiting()
        .await
        .map_err(|e| crate::Error::Mcp(Box::new(e)))?;
    Ok(())
}

fn err(e: braid_store::Error) -> McpError {
    if e.is_internal() {
        tracing::error!(error = %braid_core::error::chain(&e), "braid mcp: internal error");
        return McpError::internal_error("internal error (see the server's log)", None);
    }
    McpError::invalid_params(e.to_string(), None)
}

fn bad(msg: impl Into<String>) -> McpError {
    McpError::invalid_params(msg.into(), None)
}

fn text(s: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s)])
}

/// Cuts `s` to at most `max` characters (on a char boundary), saying so.
fn cut(s: &str, max: usize) -> (String, Option<usize>) {
    if s.chars().count() <= max {
        return (s.to_owned(), None);
    }
    let kept: String = s.chars().take(max).collect();
    (kept, Some(max))
}

/// A task in a list: just enough to choose.
fn summary(t: &TaskView) -> Value {
    let (title, _) = cut(&t.title, 200);
    let mut v =
        json!({"id": t.id, "title": title, "priority": t.priority, "type": t.kind.as_str()});
    if !t.labels.is_empty() {
        v["labels"] = json!(t.labels);
    }
    if let Some(p) = &t.parent {
        v["parent"] = json!(p);
    }
    v
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadyArgs {
    /// How many tasks (default 20, at most 200).
    pub limit: Option<usize>,
    /// From a previous answer's `next_cursor`, for the next page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ShowArgs {
    /// The task id (like br-a1b2).
    pub id: String,
    /// Where to start the description (when an earlier answer was cut).
    pub offset: Option<usize>,
}

/// `claim`'s arguments: the task (or none: the most urgent ready one) and
/// the claim (`as` names who takes it).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ClaimArgs {
    /// The task to take; without it, the most urgent ready task.
    pub id: Option<String>,
    #[serde(flatten)]
    pub claim: ClaimIn,
}

/// `update`'s arguments: the task and the changes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UpdateArgs {
    pub id: String,
    #[serde(flatten)]
    pub patch: PatchIn,
}

/// `done`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DoneArgs {
    pub id: String,
    /// What was done (optional).
    #[serde(flatten)]
    pub reason: ReasonIn,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FailArgs {
    pub id: String,
    /// Why it failed (required): what a next attempt needs to know.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DepAddArgs {
    /// The task that waits.
    pub id: String,
    /// The task it waits for.
    pub on: String,
    /// blocks (default) | related | discovered-from
    pub kind: Option<String>,
}

/// `comment`'s arguments: the task and the comment.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CommentArgs {
    pub id: String,
    #[serde(flatten)]
    pub comment: CommentIn,
}

/// `answer`'s arguments: the task and the answer.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AnswerArgs {
    pub id: String,
    #[serde(flatten)]
    pub answer: AnswerIn,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IdArgs {
    pub id: String,
}

/// `diff`'s arguments: the task, and which page or file.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DiffArgs {
    pub id: String,
    /// The first file of the page (the previous answer's `next`).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Only this file, however large.
    #[serde(default)]
    pub file: Option<String>,
}

/// `approve`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ApproveArgs {
    pub id: String,
    #[serde(flatten)]
    pub approve: ApproveIn,
}

/// `reject`'s arguments: the task, what to change, and line comments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RejectArgs {
    pub id: String,
    #[serde(flatten)]
    pub reject: RejectIn,
}

fn review_err(e: braid_app::review::Error) -> McpError {
    match e {
        braid_app::review::Error::Store(s) => err(s),
        braid_app::review::Error::Git(g) => {
            tracing::error!(error = %braid_core::error::chain(&g), "braid mcp: git failed");
            McpError::internal_error("git failed (see the server's log)", None)
        }
        other => bad(other.to_string()),
    }
}

impl BraidMcp {
    pub fn new(store: Arc<dyn Store>, actor: String, budget_tokens: usize) -> BraidMcp {
        BraidMcp {
            store,
            actor,
            budget: budget_tokens.max(500) * 4,
            review: None,
            tool_router: Self::tool_router(),
        }
    }

    fn site(&self) -> Result<&braid_app::review::Site, McpError> {
        self.review.as_deref().ok_or_else(|| {
            bad("this project is not in a git repository with a commit: there are no branches to review")
        })
    }

    /// An answer, guaranteed within the budget.
    fn answer(&self, v: &Value) -> Result<CallToolResult, McpError> {
        let s = v.to_string();
        if s.len() <= self.budget {
            return Ok(text(s));
        }
        // Last resort (lists and descriptions are sized before this).
        let (kept, _) = cut(&s, self.budget.saturating_sub(120));
        Ok(text(format!(
            "{kept}\n[cut at the answer budget of {} characters]",
            self.budget
        )))
    }

    fn task_brief(&self, t: &TaskView) -> Value {
        json!({"id": t.id, "title": t.title, "state": t.state.as_str(), "ready": t.ready})
    }
}

#[tool_router]
impl BraidMcp {
    #[tool(
        description = "Tasks that can start now, most urgent first, as compact summaries. Pages: pass `next_cursor` back as `cursor`. Then `claim` one."
    )]
    async fn ready(
        &self,
        Parameters(a): Parameters<ReadyArgs>,
    ) -> Result<CallToolResult, McpError> {
        let limit = Page::READY.size(a.limit);
        let offset = match a.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c
                .strip_prefix("r")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad(format!("cursor {c:?} is not one this server gave out")))?,
        };
        let store = self.store.as_ref();
        let tasks = ops::ready(store, offset + limit + 1).map_err(err)?;
        let total_ready = ops::health(store).map_err(err)?.ready;
        let page: Vec<&TaskView> = tasks.iter().skip(offset).take(limit).collect();
        let mut items: Vec<Value> = page.iter().map(|t| summary(t)).collect();
        // Fit the budget: fewer items per page, never a cut list.
        loop {
            let more = tasks.len() > offset + items.len() || items.len() < page.len();
            let next = more.then(|| format!("r{}", offset + items.len()));
            let v = json!({"tasks": items, "next_cursor": next, "total_ready": total_ready});
            if v.to_string().len() <= self.budget || items.len() <= 1 {
                return self.answer(&v);
            }
            items.truncate(items.len() / 2);
        }
    }

    #[tool(
        description = "A task's details: fields, description, dependencies with their states, why it is blocked, recent comments. A long description is cut; the answer says which `offset` gets the rest."
    )]
    async fn show(&self, Parameters(a): Parameters<ShowArgs>) -> Result<CallToolResult, McpError> {
        let store = self.store.as_ref();
        let shown = ops::show(store, &a.id, 0).map_err(err)?;
        let t = &shown.task;
        let mut deps = Vec::new();
        for d in &t.deps {
            let state = ops::get(store, &d.id)
                .map(|x| x.state.as_str())
                .unwrap_or("missing");
            deps.push(json!({"id": d.id, "kind": d.kind.as_str(), "state": state}));
        }
        let recent = shown.comments.len().saturating_sub(5);
        let comments: Vec<Value> = shown.comments[recent..]
            .iter()
            .map(|c| {
                let (text, _) = cut(&c.text, 500);
                json!({"author": c.author, "text": text})
            })
            .collect();
        let mut v = json!({
            "id": t.id, "title": t.title, "type": t.kind.as_str(), "priority": t.priority,
            "state": t.state.as_str(), "ready": t.ready, "parent": t.parent, "labels": t.labels,
            "assignee": t.assignee, "acceptance": t.acceptance, "deps": deps,
            "blocked_by": shown.blocked_by, "comments": comments,
        });
        let offset = a.offset.unwrap_or(0);
        let desc: String = t.description.chars().skip(offset).collect();
        let room = self.budget.saturating_sub(v.to_string().len() + 300);
        let (kept, cut_at) = cut(&desc, room);
        v["description"] = json!(kept);
        if let Some(n) = cut_at {
            let total = t.description.chars().count();
            v["description_cut"] = json!(format!(
                "[description cut: {} more of {total} characters; call show with {{\"id\":\"{}\",\"offset\":{}}} for the rest]",
                total - offset - n,
                t.id,
                offset + n
            ));
        }
        self.answer(&v)
    }

    #[tool(
        description = "Create a task. `deps`: ids it waits for (it becomes ready when they are done); `parent`: the epic it belongs to. Answers its id and whether it is ready."
    )]
    async fn add(&self, Parameters(a): Parameters<NewTaskIn>) -> Result<CallToolResult, McpError> {
        let t = ops::add(self.store.as_ref(), &self.actor, a).map_err(err)?;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Take a task (atomically: nobody else gets it). Without `id`, the most urgent ready task. Answers the task and its lease (token, expiry, attempt). Then work, and call `done` or `fail`."
    )]
    async fn claim(
        &self,
        Parameters(a): Parameters<ClaimArgs>,
    ) -> Result<CallToolResult, McpError> {
        let t =
            ops::claim(self.store.as_ref(), &self.actor, a.id.as_deref(), a.claim).map_err(err)?;
        let v = json!({
            "id": t.id, "title": t.title, "state": t.state.as_str(), "lease": t.lease,
            "next": "do the work (`context` has everything about the task), then `done` or `fail` with a reason",
        });
        self.answer(&v)
    }

    #[tool(
        description = "Change a task's fields: title, description, type, priority, parent, labels, assignee, acceptance criteria, gates, agent."
    )]
    async fn update(
        &self,
        Parameters(a): Parameters<UpdateArgs>,
    ) -> Result<CallToolResult, McpError> {
        let u = ops::update(self.store.as_ref(), &self.actor, &a.id, a.patch).map_err(err)?;
        self.answer(&self.task_brief(&u.task))
    }

    #[tool(
        description = "Mark a task done; tasks waiting on it may become ready (the answer lists them)."
    )]
    async fn done(&self, Parameters(a): Parameters<DoneArgs>) -> Result<CallToolResult, McpError> {
        let store = self.store.as_ref();
        let moved = ops::transition(
            store,
            &self.actor,
            &[a.id],
            ops::Transition::Done,
            a.reason.reason,
        )
        .map_err(err)?;
        let t = &moved[0].task;
        let id = braid_core::TaskId::trusted(t.id.clone());
        let mut v = self.task_brief(t);
        let now_ready: Vec<Value> = ops::unblocked_by(store, &id, 50)
            .map_err(err)?
            .iter()
            .map(summary)
            .collect();
        v["now_ready"] = json!(now_ready);
        self.answer(&v)
    }

    #[tool(
        description = "Mark a task failed, with the reason (what a next attempt needs to know)."
    )]
    async fn fail(&self, Parameters(a): Parameters<FailArgs>) -> Result<CallToolResult, McpError> {
        let moved = ops::transition(
            self.store.as_ref(),
            &self.actor,
            &[a.id],
            ops::Transition::Fail,
            Some(a.reason),
        )
        .map_err(err)?;
        self.answer(&self.task_brief(&moved[0].task))
    }

    #[tool(
        description = "Make task `id` wait for task `on` (kind blocks by default). A dependency that would make a cycle is refused, naming the cycle."
    )]
    async fn dep_add(
        &self,
        Parameters(a): Parameters<DepAddArgs>,
    ) -> Result<CallToolResult, McpError> {
        let dep = DepIn {
            id: a.on,
            kind: a.kind,
        };
        let t = ops::dep_add(self.store.as_ref(), &self.actor, &a.id, dep).map_err(err)?;
        self.answer(&self.task_brief(&t))
    }

    #[tool(description = "Leave a note on a task (shown to people and agents with the task).")]
    async fn comment(
        &self,
        Parameters(a): Parameters<CommentArgs>,
    ) -> Result<CallToolResult, McpError> {
        let c = ops::comment(self.store.as_ref(), &self.actor, &a.id, a.comment).map_err(err)?;
        let id = ops::resolve(self.store.as_ref(), &a.id).map_err(err)?;
        self.answer(&json!({"id": id, "commented": true, "seq": c.seq}))
    }

    #[tool(
        description = "Tasks waiting for a person: an agent stopped to ask (a permission it was refused, a question), a budget or braid handed it over. Each with the question."
    )]
    async fn needs(&self) -> Result<CallToolResult, McpError> {
        let rows = ops::needs_you(self.store.as_ref(), 50).map_err(err)?;
        self.answer(&json!(rows))
    }

    #[tool(
        name = "answer",
        description = "Answer a task that waits for a person (see `needs`): the answer is recorded, the task is open again, and its agent's session resumes with the answer at the next dispatch."
    )]
    async fn answer_task(
        &self,
        Parameters(a): Parameters<AnswerArgs>,
    ) -> Result<CallToolResult, McpError> {
        let t = ops::answer(self.store.as_ref(), &self.actor, &a.id, a.answer).map_err(err)?;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Tasks in review (finished, gates passed, waiting to land): each branch's size, whether it is approved, its line comments."
    )]
    async fn review_list(&self) -> Result<CallToolResult, McpError> {
        let site = self.site()?;
        let rows = braid_app::review::list(self.store.as_ref(), site, 100).map_err(review_err)?;
        self.answer(&json!(rows))
    }

    #[tool(
        description = "What to look at before a task's branch lands: its files with counts, gate results, attempts, approvals and requests for changes, line comments (outdated ones marked), and the merge plan's view. `diff` gives the diff itself."
    )]
    async fn review_show(
        &self,
        Parameters(a): Parameters<IdArgs>,
    ) -> Result<CallToolResult, McpError> {
        let site = self.site()?;
        let v = braid_app::review::show(self.store.as_ref(), site, &a.id).map_err(review_err)?;
        self.answer(&json!(v))
    }

    #[tool(
        description = "A task's branch against where it started, as a unified diff, a page at a time: `next` in the answer is the `offset` of the following page. Large files come only when named with `file`."
    )]
    async fn diff(&self, Parameters(a): Parameters<DiffArgs>) -> Result<CallToolResult, McpError> {
        let site = self.site()?;
        // A page sized to the answer budget (about 60 characters a line).
        let input = DiffIn {
            offset: a.offset,
            file: a.file,
            lines: Some((self.budget / 60).max(20)),
            ..DiffIn::default()
        };
        let mut v = braid_app::review::diff(self.store.as_ref(), site, &a.id, &input)
            .map_err(review_err)?;
        let patch = v.patch.take().unwrap_or_default();
        let room = self.budget.saturating_sub(json!(v).to_string().len() + 300);
        let (kept, cut_at) = cut(&patch, room);
        v.patch = Some(match cut_at {
            None => kept,
            Some(n) => {
                format!("{kept}\n[patch cut at {n} characters; ask for one `file` at a time]")
            }
        });
        self.answer(&json!(v))
    }

    #[tool(
        description = "Approve a task's branch as it stands (the task must be in review): the merge queue takes it. A branch that changes afterwards needs a new approval."
    )]
    async fn approve(
        &self,
        Parameters(a): Parameters<ApproveArgs>,
    ) -> Result<CallToolResult, McpError> {
        let site = self.site()?;
        let d =
            braid_app::review::approve(self.store.as_ref(), site, &self.actor, &a.id, &a.approve)
                .map_err(review_err)?;
        self.answer(&json!(d))
    }

    #[tool(
        description = "Send a task's work back (it must be in review) with a message and comments on lines of its branch ({file, line, text}; line as the branch has the file, from 1). The task is open again; its next attempt is told the message and each comment with its code."
    )]
    async fn reject(
        &self,
        Parameters(a): Parameters<RejectArgs>,
    ) -> Result<CallToolResult, McpError> {
        let site = self.site()?;
        let t = braid_app::review::reject(self.store.as_ref(), site, &self.actor, &a.id, &a.reject)
            .map_err(review_err)?;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Everything an agent needs to do a task, as text: title, description, acceptance, its parent chain, the state of its dependencies, and the last failure's output on a retry."
    )]
    async fn context(&self, Parameters(a): Parameters<IdArgs>) -> Result<CallToolResult, McpError> {
        let store = self.store.as_ref();
        let tid = ops::resolve(store, &a.id).map_err(err)?;
        let prompt = braid_app::prompt::build(store, &tid).map_err(err)?;
        let (kept, cut_at) = cut(&prompt, self.budget.saturating_sub(200));
        Ok(text(match cut_at {
            None => kept,
            Some(n) => format!(
                "{kept}\n[context cut at {n} of {} characters; `show` with an offset reads a long description]",
                prompt.chars().count()
            ),
        }))
    }
}

#[tool_handler]
impl ServerHandler for BraidMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("braid", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
