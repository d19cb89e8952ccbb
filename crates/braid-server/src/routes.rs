//! Routes and handlers. The store is synchronous (SQLite); each call runs on
//! the blocking pool so the async workers never wait on a disk. Layers:
//! request metrics, per-IP rate limit, token auth, then (API only) body
//! size and request timeouts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use braid_core::{Dep, DepKind, NewTask, State as TaskState, TaskId, TaskPatch, TaskType};
use braid_store::{Command, ListFilter, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use utoipa::OpenApi;

use crate::api::*;
use crate::auth::Auth;
use crate::config::Limits;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::PeerIp;
use crate::{board, logs, metric, streams};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Recorded as the actor of writes made through the API.
    pub actor: String,
    /// Fans the event log out to streams; woken after every write.
    pub hub: Arc<Hub>,
    /// Where the engine writes attempt logs (`.braid/logs`), if anywhere.
    pub logs_dir: Option<PathBuf>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Store calls in flight at once. More would only queue on the store's
    /// connections as blocked threads; past this, requests wait as tasks.
    slots: Arc<tokio::sync::Semaphore>,
    /// Recent `/api/ready` answers as (seq, limit, body); at most 8.
    ready_cache: Arc<std::sync::Mutex<Vec<(i64, usize, axum::body::Bytes)>>>,
}

impl AppState {
    /// `slots`: store calls at once (the store's connections, plus one).
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, actor: String, slots: usize) -> AppState {
        AppState {
            store,
            actor,
            hub,
            logs_dir: None,
            metrics: None,
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            ready_cache: Arc::default(),
        }
    }
}

/// How the application guards itself.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    pub auth: Auth,
    pub limits: Limits,
}

type Result<T> = std::result::Result<T, ApiError>;

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&dyn Store) -> std::result::Result<T, braid_store::Error> + Send + 'static,
) -> Result<T> {
    let store = st.store.clone();
    let _slot = st.slots.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// Runs a short indexed query (a task, the ready queue's head, counters, a
/// page of events) right on this worker: from SQLite's page cache it takes
/// microseconds, less than a hop to the blocking pool and back, which under
/// load is mostly context switches. Writes and long reads use [`blocking`].
pub(crate) fn query<T>(
    st: &AppState,
    f: impl FnOnce(&dyn Store) -> std::result::Result<T, braid_store::Error>,
) -> Result<T> {
    f(st.store.as_ref()).map_err(ApiError::from)
}

fn body<T>(b: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    b.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "too_large",
                message:
                    "the request body is larger than this server accepts (see [server] max_body)"
                        .into(),
            }
        } else {
            ApiError::invalid(e.body_text())
        }
    })
}

pub(crate) fn id(s: &str) -> Result<TaskId> {
    TaskId::parse(s).map_err(ApiError::from)
}

fn kind(s: Option<&str>) -> Result<DepKind> {
    s.map(DepKind::parse)
        .transpose()
        .map_err(ApiError::from)
        .map(|k| k.unwrap_or(DepKind::Blocks))
}

fn priority(p: Option<i64>) -> Result<Option<u8>> {
    p.map(braid_core::model::check_priority)
        .transpose()
        .map_err(ApiError::from)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "braid",
        description = "The work graph of braid: tasks, dependencies, the ready queue, claims, events."
    ),
    paths(
        list_tasks,
        create_task,
        get_task,
        patch_task,
        transition,
        claim,
        add_dep,
        remove_dep,
        ready,
        health,
        events,
        why,
        graph,
        task_events,
        comments,
        add_comment,
        crate::logs::runs,
        crate::logs::list,
        crate::logs::tail,
        crate::streams::ws,
        crate::streams::sse
    )
)]
pub struct ApiDoc;

/// The application: every route, ready to serve or to test with `oneshot`.
pub fn app(state: AppState, opts: &AppOptions) -> Router {
    let api = Router::new()
        .route("/api/tasks", get(list_tasks).post(create_task))
        .route("/api/tasks/{id}", get(get_task).patch(patch_task))
        .route("/api/tasks/{id}/claim", post(claim))
        .route("/api/tasks/{id}/deps", post(add_dep).delete(remove_dep))
        .route("/api/tasks/{id}/why", get(why))
        .route("/api/tasks/{id}/graph", get(graph))
        .route("/api/tasks/{id}/events", get(task_events))
        .route("/api/tasks/{id}/comments", get(comments).post(add_comment))
        .route("/api/tasks/{id}/logs", get(logs::list))
        .route("/api/tasks/{id}/logs/{name}", get(logs::tail))
        .route("/api/tasks/{id}/{action}", post(transition))
        .route("/api/runs", get(logs::runs))
        .route("/api/ready", get(ready))
        .route("/api/health", get(health))
        .route("/api/events", get(events))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            opts.limits.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(opts.limits.max_body));
    let streams = Router::new()
        .route("/ws", get(streams::ws))
        .route("/events", get(streams::sse))
        .route("/api/tasks/{id}/logs/{name}/follow", get(logs::follow));
    let guarded = api
        .merge(streams)
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(middleware::from_fn_with_state(
            Arc::new(opts.auth.clone()),
            crate::auth::require,
        ))
        .layer(middleware::from_fn_with_state(
            state.hub.clone(),
            wake_after_write,
        ));
    let governor = tower_governor::governor::GovernorConfigBuilder::default()
        .period(Duration::from_nanos(
            1_000_000_000 / u64::from(opts.limits.rate_per_second.max(1)),
        ))
        .burst_size(opts.limits.rate_burst.max(1))
        .key_extractor(PeerIp)
        .finish()
        .expect("period and burst are positive");
    let limiter = governor.limiter().clone();
    // The limiter keeps a bucket per IP; forget idle ones so the map stays
    // the size of the active clients.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            limiter.retain_recent();
        }
    });
    let rated = guarded.layer(
        tower_governor::GovernorLayer::new(governor).error_handler(|e| {
            let (wait, headers) = match e {
                tower_governor::GovernorError::TooManyRequests { wait_time, headers } => {
                    (wait_time, headers)
                }
                _ => (1, None),
            };
            let mut r = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: format!("too many requests from your address; retry in {wait}s"),
            }
            .into_response();
            if let Some(h) = headers {
                r.headers_mut().extend(h);
            }
            r.headers_mut()
                .insert(header::RETRY_AFTER, wait.max(1).into());
            r
        }),
    );
    rated
        .route("/", get(board::page))
        .route("/board.js", get(board::script))
        .route("/board.css", get(board::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn(record_request))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "no such route; the API is described at /openapi.json".into(),
            }
        })
        .with_state(state)
}

/// Records each request's latency by route template (never by raw path,
/// which would make a series per task id).
async fn record_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    metric::request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// After a write, the hub reads the log and fans the new events out.
async fn wake_after_write(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let resp = next.run(req).await;
    if write {
        hub.wake();
    }
    resp
}

async fn metrics(State(st): State<AppState>) -> Response {
    match &st.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "metrics are not exported by this server".into(),
        }
        .into_response(),
    }
}

async fn readyz(State(st): State<AppState>) -> Result<&'static str> {
    query(&st, |s| s.last_seq())?;
    Ok("ready")
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated states.
    state: Option<String>,
    /// Comma-separated types.
    #[serde(rename = "type")]
    kind: Option<String>,
    label: Option<String>,
    parent: Option<String>,
    assignee: Option<String>,
    ready: Option<bool>,
    limit: Option<usize>,
}

/// List tasks, filtered.
#[utoipa::path(get, path = "/api/tasks", params(ListQuery), responses((status = 200, body = [TaskOut]), (status = 400, body = ErrorOut)))]
async fn list_tasks(
    State(st): State<AppState>,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TaskOut>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let split = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let filter = ListFilter {
        states: split(&q.state)
            .iter()
            .map(|s| TaskState::parse(s))
            .collect::<std::result::Result<_, _>>()?,
        kinds: split(&q.kind)
            .iter()
            .map(|s| TaskType::parse(s))
            .collect::<std::result::Result<_, _>>()?,
        label: q.label,
        parent: q.parent.as_deref().map(id).transpose()?,
        assignee: q.assignee,
        ready: q.ready,
        limit: Some(q.limit.unwrap_or(1000).min(10_000)),
    };
    let tasks = blocking(&st, move |s| s.list(&filter)).await?;
    Ok(Json(tasks.iter().map(TaskOut::from).collect()))
}

/// Create a task.
#[utoipa::path(post, path = "/api/tasks", request_body = NewTaskIn, responses((status = 201, body = TaskOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn create_task(
    State(st): State<AppState>,
    b: std::result::Result<Json<NewTaskIn>, JsonRejection>,
) -> Result<(StatusCode, Json<TaskOut>)> {
    let b = body(b)?;
    let deps = b
        .deps
        .iter()
        .map(|d| {
            Ok(Dep {
                id: id(&d.id)?,
                kind: kind(d.kind.as_deref())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let new = NewTask {
        id: None,
        title: b.title,
        description: b.description,
        kind: b.kind.as_deref().map(TaskType::parse).transpose()?,
        priority: priority(b.priority)?,
        parent: b.parent.as_deref().map(id).transpose()?,
        labels: b.labels,
        assignee: b.assignee,
        acceptance: b.acceptance,
        gates: b.gates,
        agent: b.agent,
        deps,
    };
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| s.apply(&actor, Command::Add(new))).await?;
    Ok((StatusCode::CREATED, Json(TaskOut::from(&applied.task))))
}

/// One task.
#[utoipa::path(get, path = "/api/tasks/{id}", params(("id" = String, Path)), responses((status = 200, body = TaskOut), (status = 404, body = ErrorOut)))]
async fn get_task(State(st): State<AppState>, Path(raw): Path<String>) -> Result<Json<TaskOut>> {
    let tid = id(&raw)?;
    let t = query(&st, move |s| s.task(&tid))?;
    Ok(Json(TaskOut::from(&t)))
}

/// Change a task's fields.
#[utoipa::path(patch, path = "/api/tasks/{id}", params(("id" = String, Path)), request_body = PatchIn, responses((status = 200, body = TaskOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn patch_task(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<PatchIn>, JsonRejection>,
) -> Result<Json<TaskOut>> {
    let tid = id(&raw)?;
    let b = body(b)?;
    let patch = TaskPatch {
        title: b.title,
        description: b.description,
        kind: b.kind.as_deref().map(TaskType::parse).transpose()?,
        priority: priority(b.priority)?,
        parent: b
            .parent
            .map(|p| p.as_deref().map(id).transpose())
            .transpose()?,
        add_labels: b.add_labels,
        remove_labels: b.remove_labels,
        assignee: b.assignee,
        acceptance: b.acceptance,
        gates: b.gates,
        agent: b.agent,
        branch: b.branch,
    };
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| {
        s.apply(&actor, Command::Update { id: tid, patch })
    })
    .await?;
    Ok(Json(TaskOut::from(&applied.task)))
}

/// Move a task: `done`, `fail` (reason required), `reopen`, `defer`, `cancel`.
#[utoipa::path(post, path = "/api/tasks/{id}/{action}", params(("id" = String, Path), ("action" = String, Path, description = "done | fail | reopen | defer | cancel")), request_body = ReasonIn, responses((status = 200, body = TaskOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut), (status = 409, body = ErrorOut)))]
async fn transition(
    State(st): State<AppState>,
    Path((raw, action)): Path<(String, String)>,
    b: Option<Json<ReasonIn>>,
) -> Result<Json<TaskOut>> {
    let tid = id(&raw)?;
    let reason = b.and_then(|Json(r)| r.reason);
    let to = match action.as_str() {
        "done" => TaskState::Done,
        "fail" => TaskState::Failed,
        "reopen" => TaskState::Open,
        "defer" => TaskState::Deferred,
        "cancel" => TaskState::Cancelled,
        other => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!(
                    "no action {other:?}; actions are done, fail, reopen, defer, cancel, claim, deps"
                ),
            });
        }
    };
    if to == TaskState::Failed && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::invalid("fail needs a \"reason\" saying why"));
    }
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| {
        s.apply(
            &actor,
            Command::SetState {
                id: tid,
                to,
                reason,
            },
        )
    })
    .await?;
    Ok(Json(TaskOut::from(&applied.task)))
}

/// Claim a task (atomic). The answer's `lease.token` is the claim.
#[utoipa::path(post, path = "/api/tasks/{id}/claim", params(("id" = String, Path)), request_body = ClaimIn, responses((status = 200, body = TaskOut), (status = 404, body = ErrorOut), (status = 409, body = ErrorOut)))]
async fn claim(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: Option<Json<ClaimIn>>,
) -> Result<Json<TaskOut>> {
    let tid = id(&raw)?;
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let assignee = b.assignee.unwrap_or_else(|| st.actor.clone());
    let lease_ms = (b.lease_seconds.unwrap_or(1800).min(7 * 86_400) * 1000) as i64;
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| {
        s.apply(
            &actor,
            Command::Claim {
                id: Some(tid),
                assignee,
                lease_ms,
            },
        )
    })
    .await?;
    let mut out = TaskOut::from(&applied.task);
    if let Some(l) = out.lease.as_mut() {
        l.token = applied.lease_token;
    }
    Ok(Json(out))
}

/// Add a dependency: the task depends on `id`.
#[utoipa::path(post, path = "/api/tasks/{id}/deps", params(("id" = String, Path)), request_body = DepIn, responses((status = 200, body = TaskOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn add_dep(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<DepIn>, JsonRejection>,
) -> Result<Json<TaskOut>> {
    let from = id(&raw)?;
    let b = body(b)?;
    let (to, kind) = (id(&b.id)?, kind(b.kind.as_deref())?);
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| {
        s.apply(&actor, Command::DepAdd { from, to, kind })
    })
    .await?;
    Ok(Json(TaskOut::from(&applied.task)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DepQuery {
    /// The dependency to remove.
    on: String,
}

/// Remove a dependency (`?on=ID`).
#[utoipa::path(delete, path = "/api/tasks/{id}/deps", params(("id" = String, Path), DepQuery), responses((status = 200, body = TaskOut), (status = 404, body = ErrorOut)))]
async fn remove_dep(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: std::result::Result<Query<DepQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskOut>> {
    let from = id(&raw)?;
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let to = id(&q.on)?;
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| s.apply(&actor, Command::DepRm { from, to })).await?;
    Ok(Json(TaskOut::from(&applied.task)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LimitQuery {
    limit: Option<usize>,
}

/// The ready queue, highest priority first.
#[utoipa::path(get, path = "/api/ready", params(LimitQuery), responses((status = 200, body = [TaskOut])))]
async fn ready(State(st): State<AppState>, Query(q): Query<LimitQuery>) -> Result<Response> {
    let limit = q.limit.unwrap_or(50).min(1000);
    // Every change to a task appends an event, so an answer read at the
    // log's current seq is still the answer: the hot read is served from
    // memory until the next write.
    let seq = query(&st, |s| s.last_seq())?;
    let cached = st.ready_cache.lock().ok().and_then(|c| {
        c.iter()
            .find(|(s, l, _)| *s == seq && *l == limit)
            .map(|(_, _, b)| b.clone())
    });
    let body = match cached {
        Some(b) => b,
        None => {
            let tasks = query(&st, move |s| s.ready(limit))?;
            let out: Vec<TaskOut> = tasks.iter().map(TaskOut::from).collect();
            let b = axum::body::Bytes::from(
                serde_json::to_vec(&out).map_err(|_| ApiError::internal())?,
            );
            if let Ok(mut c) = st.ready_cache.lock() {
                c.retain(|(s, l, _)| *s == seq && *l != limit);
                if c.len() >= 8 {
                    c.remove(0);
                }
                c.push((seq, limit, b.clone()));
            }
            b
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Counts by state, ready and blocked (maintained counters).
#[utoipa::path(get, path = "/api/health", responses((status = 200, body = HealthOut)))]
async fn health(State(st): State<AppState>) -> Result<Json<HealthOut>> {
    let (h, last_seq) = query(&st, |s| Ok((s.health()?, s.last_seq()?)))?;
    Ok(Json(HealthOut {
        total: h.total,
        epics: h.epics,
        ready: h.ready,
        blocked: h.blocked,
        by_state: h
            .by_state
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect(),
        last_seq,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events after this seq.
    after: Option<i64>,
    limit: Option<usize>,
}

/// The event log after a seq, oldest first.
#[utoipa::path(get, path = "/api/events", params(EventsQuery), responses((status = 200, body = [EventOut])))]
async fn events(
    State(st): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<EventOut>>> {
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let evs = query(&st, move |s| s.events(after, limit))?;
    Ok(Json(evs.iter().map(EventOut::from).collect()))
}

/// Why a task is not ready, and which unfinished tasks block it.
#[utoipa::path(get, path = "/api/tasks/{id}/why", params(("id" = String, Path)), responses((status = 200, body = WhyOut), (status = 404, body = ErrorOut)))]
async fn why(State(st): State<AppState>, Path(raw): Path<String>) -> Result<Json<WhyOut>> {
    let tid = id(&raw)?;
    let out = blocking(&st, move |s| {
        let t = s.task(&tid)?;
        let reasons = if t.ready {
            Vec::new()
        } else {
            s.why_blocked(&tid)?
        };
        let mut blocked_by = Vec::new();
        for d in t.deps.iter().filter(|d| d.kind == DepKind::Blocks) {
            if !s.task(&d.id)?.state.is_finished() {
                blocked_by.push(d.id.to_string());
            }
        }
        Ok(WhyOut {
            id: t.id.to_string(),
            ready: t.ready,
            reasons,
            blocked_by,
        })
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GraphQuery {
    /// At most this many nodes (default 500, at most 5000).
    limit: Option<usize>,
}

/// An epic's dependency graph: its subtree and the dependencies of those
/// tasks (edges may point outside the subtree).
#[utoipa::path(get, path = "/api/tasks/{id}/graph", params(("id" = String, Path), GraphQuery), responses((status = 200, body = GraphOut), (status = 404, body = ErrorOut)))]
async fn graph(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Json<GraphOut>> {
    let root = id(&raw)?;
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let out = blocking(&st, move |s| {
        s.task(&root)?;
        let mut rows = s.subtree(Some(&root))?;
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        let ids: Vec<TaskId> = rows.iter().map(|r| r.id.clone()).collect();
        let edges = s.deps_of(&ids)?;
        Ok(GraphOut {
            root: root.to_string(),
            nodes: rows
                .into_iter()
                .map(|r| NodeOut {
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
                .map(|(from, to, kind)| EdgeOut {
                    from: from.to_string(),
                    to: to.to_string(),
                    kind: kind.as_str().to_owned(),
                })
                .collect(),
            truncated,
        })
    })
    .await?;
    Ok(Json(out))
}

/// One task's latest events, oldest first.
#[utoipa::path(get, path = "/api/tasks/{id}/events", params(("id" = String, Path), LimitQuery), responses((status = 200, body = [EventOut]), (status = 404, body = ErrorOut)))]
async fn task_events(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<EventOut>>> {
    let tid = id(&raw)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let evs = blocking(&st, move |s| {
        s.task(&tid)?;
        s.task_events(&tid, limit)
    })
    .await?;
    Ok(Json(evs.iter().map(EventOut::from).collect()))
}

/// A task's comments, oldest first (the latest `limit`, default 100).
#[utoipa::path(get, path = "/api/tasks/{id}/comments", params(("id" = String, Path), LimitQuery), responses((status = 200, body = [CommentOut]), (status = 404, body = ErrorOut)))]
async fn comments(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<CommentOut>>> {
    let tid = id(&raw)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let cs = query(&st, move |s| {
        s.task(&tid)?;
        s.comments(&tid, limit)
    })?;
    Ok(Json(cs.iter().map(CommentOut::from).collect()))
}

/// Comment on a task (recorded as a `commented` event).
#[utoipa::path(post, path = "/api/tasks/{id}/comments", params(("id" = String, Path)), request_body = CommentIn, responses((status = 201, body = CommentOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn add_comment(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<CommentIn>, JsonRejection>,
) -> Result<(StatusCode, Json<CommentOut>)> {
    let tid = id(&raw)?;
    let b = body(b)?;
    let author = b.author.unwrap_or_else(|| st.actor.clone());
    let payload = braid_core::model::comment_payload(&author, &b.text)?;
    let actor = st.actor.clone();
    let applied = blocking(&st, move |s| {
        s.apply(
            &actor,
            Command::Record {
                id: tid,
                kind: braid_core::EventKind::Commented,
                payload,
            },
        )
    })
    .await?;
    let e = applied.events.last().ok_or_else(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(CommentOut::from(e))))
}
