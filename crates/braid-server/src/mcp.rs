//! `braid mcp`: the work graph as an MCP server over stdio, for coding
//! agents. Every tool goes through the store's single write path; every
//! answer fits a token budget (characters / 4): lists page with a cursor,
//! long text is cut with a marker saying how to get the rest. Errors are MCP
//! errors with a message naming the thing; the server keeps serving.

use std::sync::Arc;

use braid_core::{Dep, DepKind, EventKind, NewTask, State, Task, TaskId, TaskPatch, TaskType};
use braid_store::{Command, Store};
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
) -> Result<(), String> {
    let server = BraidMcp::new(store, actor, budget_tokens);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("starting MCP on stdio: {e}"))?;
    running.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn err(e: braid_store::Error) -> McpError {
    if e.is_internal() {
        eprintln!("braid mcp: internal error: {e}");
        return McpError::internal_error("internal error (see the server's stderr)", None);
    }
    McpError::invalid_params(e.to_string(), None)
}

fn bad(msg: impl Into<String>) -> McpError {
    McpError::invalid_params(msg.into(), None)
}

fn id(s: &str) -> Result<TaskId, McpError> {
    TaskId::parse(s.trim()).map_err(|e| bad(format!("id {s:?}: {e}")))
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
fn summary(t: &Task) -> Value {
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    pub title: String,
    pub description: Option<String>,
    /// task (default) | bug | chore | epic
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// 0 (most urgent) to 4; default 2.
    pub priority: Option<i64>,
    /// The epic or task this belongs under.
    pub parent: Option<String>,
    /// Ids of tasks that must be done before this one can start.
    pub deps: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    /// What "done" means for this task.
    pub acceptance: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ClaimArgs {
    /// The task to take; without it, the most urgent ready task.
    pub id: Option<String>,
    /// Who takes it (your agent name).
    #[serde(rename = "as")]
    pub assignee: Option<String>,
    /// How long the claim lasts without being finished (default 1800 s).
    pub lease_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UpdateArgs {
    pub id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<i64>,
    pub add_labels: Option<Vec<String>>,
    pub remove_labels: Option<Vec<String>>,
    pub acceptance: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DoneArgs {
    pub id: String,
    /// What was done (optional).
    pub reason: Option<String>,
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CommentArgs {
    pub id: String,
    pub text: String,
    /// Who says it (default: the server's actor).
    pub author: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IdArgs {
    pub id: String,
}

impl BraidMcp {
    pub fn new(store: Arc<dyn Store>, actor: String, budget_tokens: usize) -> BraidMcp {
        BraidMcp {
            store,
            actor,
            budget: budget_tokens.max(500) * 4,
            tool_router: Self::tool_router(),
        }
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

    fn task_brief(&self, t: &Task) -> Value {
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
        let limit = a.limit.unwrap_or(20).clamp(1, 200);
        let offset = match a.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c
                .strip_prefix("r")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad(format!("cursor {c:?} is not one this server gave out")))?,
        };
        let tasks = self.store.ready(offset + limit + 1).map_err(err)?;
        let total_ready = self.store.health().map_err(err)?.ready;
        let page: Vec<&Task> = tasks.iter().skip(offset).take(limit).collect();
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
        let tid = id(&a.id)?;
        let t = self.store.task(&tid).map_err(err)?;
        let why = if t.ready {
            Vec::new()
        } else {
            self.store.why_blocked(&tid).map_err(err)?
        };
        let mut deps = Vec::new();
        for d in &t.deps {
            let state = self
                .store
                .task(&d.id)
                .map(|x| x.state.as_str())
                .unwrap_or("missing");
            deps.push(json!({"id": d.id, "kind": d.kind.as_str(), "state": state}));
        }
        let comments: Vec<Value> = self
            .store
            .comments(&tid, 5)
            .map_err(err)?
            .iter()
            .map(|e| {
                let (text, _) = cut(e.payload["text"].as_str().unwrap_or_default(), 500);
                json!({"author": e.payload["author"], "text": text})
            })
            .collect();
        let mut v = json!({
            "id": t.id, "title": t.title, "type": t.kind.as_str(), "priority": t.priority,
            "state": t.state.as_str(), "ready": t.ready, "parent": t.parent, "labels": t.labels,
            "assignee": t.assignee, "acceptance": t.acceptance, "deps": deps,
            "blocked_by": why, "comments": comments,
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
    async fn add(&self, Parameters(a): Parameters<AddArgs>) -> Result<CallToolResult, McpError> {
        let deps = a
            .deps
            .unwrap_or_default()
            .iter()
            .map(|d| {
                Ok(Dep {
                    id: id(d)?,
                    kind: DepKind::Blocks,
                })
            })
            .collect::<Result<Vec<_>, McpError>>()?;
        let new = NewTask {
            id: None,
            title: a.title,
            description: a.description.unwrap_or_default(),
            kind: a
                .kind
                .as_deref()
                .map(TaskType::parse)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            priority: a
                .priority
                .map(braid_core::model::check_priority)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            parent: a.parent.as_deref().map(id).transpose()?,
            labels: a.labels.unwrap_or_default(),
            assignee: None,
            acceptance: a.acceptance.unwrap_or_default(),
            gates: Vec::new(),
            agent: None,
            deps,
        };
        let t = self
            .store
            .apply(&self.actor, Command::Add(new))
            .map_err(err)?
            .task;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Take a task (atomically: nobody else gets it). Without `id`, the most urgent ready task. Answers the task and its lease (token, expiry, attempt). Then work, and call `done` or `fail`."
    )]
    async fn claim(
        &self,
        Parameters(a): Parameters<ClaimArgs>,
    ) -> Result<CallToolResult, McpError> {
        let tid = a.id.as_deref().map(id).transpose()?;
        let assignee = a.assignee.unwrap_or_else(|| self.actor.clone());
        let lease_ms = (a.lease_seconds.unwrap_or(1800).clamp(10, 7 * 86_400) * 1000) as i64;
        let applied = self
            .store
            .apply(
                &self.actor,
                Command::Claim {
                    id: tid,
                    assignee,
                    lease_ms,
                },
            )
            .map_err(err)?;
        let t = &applied.task;
        let lease = t.lease.as_ref();
        let v = json!({
            "id": t.id, "title": t.title, "state": t.state.as_str(),
            "lease": {"token": applied.lease_token, "expires_at": lease.map(|l| l.expires_at), "attempt": lease.map(|l| l.attempt)},
            "next": "do the work (`context` has everything about the task), then `done` or `fail` with a reason",
        });
        self.answer(&v)
    }

    #[tool(
        description = "Change a task's title, description, priority, labels or acceptance criteria."
    )]
    async fn update(
        &self,
        Parameters(a): Parameters<UpdateArgs>,
    ) -> Result<CallToolResult, McpError> {
        let tid = id(&a.id)?;
        let patch = TaskPatch {
            title: a.title,
            description: a.description,
            priority: a
                .priority
                .map(braid_core::model::check_priority)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            add_labels: a.add_labels.unwrap_or_default(),
            remove_labels: a.remove_labels.unwrap_or_default(),
            acceptance: a.acceptance,
            ..TaskPatch::default()
        };
        let t = self
            .store
            .apply(&self.actor, Command::Update { id: tid, patch })
            .map_err(err)?
            .task;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Mark a task done; tasks waiting on it may become ready (the answer lists them)."
    )]
    async fn done(&self, Parameters(a): Parameters<DoneArgs>) -> Result<CallToolResult, McpError> {
        let tid = id(&a.id)?;
        let t = self
            .store
            .apply(
                &self.actor,
                Command::SetState {
                    id: tid.clone(),
                    to: State::Done,
                    reason: a.reason,
                },
            )
            .map_err(err)?
            .task;
        let mut v = self.task_brief(&t);
        let now_ready: Vec<Value> = self
            .store
            .ready(50)
            .map_err(err)?
            .iter()
            .filter(|r| r.deps.iter().any(|d| d.id == tid))
            .map(summary)
            .collect();
        v["now_ready"] = json!(now_ready);
        self.answer(&v)
    }

    #[tool(
        description = "Mark a task failed, with the reason (what a next attempt needs to know)."
    )]
    async fn fail(&self, Parameters(a): Parameters<FailArgs>) -> Result<CallToolResult, McpError> {
        let tid = id(&a.id)?;
        if a.reason.trim().is_empty() {
            return Err(bad("fail needs a reason saying why"));
        }
        let t = self
            .store
            .apply(
                &self.actor,
                Command::SetState {
                    id: tid,
                    to: State::Failed,
                    reason: Some(a.reason),
                },
            )
            .map_err(err)?
            .task;
        self.answer(&self.task_brief(&t))
    }

    #[tool(
        description = "Make task `id` wait for task `on` (kind blocks by default). A dependency that would make a cycle is refused, naming the cycle."
    )]
    async fn dep_add(
        &self,
        Parameters(a): Parameters<DepAddArgs>,
    ) -> Result<CallToolResult, McpError> {
        let (from, to) = (id(&a.id)?, id(&a.on)?);
        let kind = a
            .kind
            .as_deref()
            .map(DepKind::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?
            .unwrap_or(DepKind::Blocks);
        let t = self
            .store
            .apply(&self.actor, Command::DepAdd { from, to, kind })
            .map_err(err)?
            .task;
        self.answer(&self.task_brief(&t))
    }

    #[tool(description = "Leave a note on a task (shown to people and agents with the task).")]
    async fn comment(
        &self,
        Parameters(a): Parameters<CommentArgs>,
    ) -> Result<CallToolResult, McpError> {
        let tid = id(&a.id)?;
        let author = a.author.unwrap_or_else(|| self.actor.clone());
        let payload =
            braid_core::model::comment_payload(&author, &a.text).map_err(|e| bad(e.to_string()))?;
        let applied = self
            .store
            .apply(
                &self.actor,
                Command::Record {
                    id: tid.clone(),
                    kind: EventKind::Commented,
                    payload,
                },
            )
            .map_err(err)?;
        let seq = applied.events.last().map(|e| e.seq);
        self.answer(&json!({"id": tid, "commented": true, "seq": seq}))
    }

    #[tool(
        description = "Everything an agent needs to do a task, as text: title, description, acceptance, its parent chain, the state of its dependencies, and the last failure's output on a retry."
    )]
    async fn context(&self, Parameters(a): Parameters<IdArgs>) -> Result<CallToolResult, McpError> {
        let tid = id(&a.id)?;
        let prompt = braid_run::prompt::build(self.store.as_ref(), &tid).map_err(err)?;
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
