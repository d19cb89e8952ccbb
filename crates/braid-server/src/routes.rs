//! Routes and handlers. The store is synchronous (SQLite); each call runs on
//! the blocking pool so the async workers never wait on a disk. Layers,
//! outermost first: who may talk at all (`Host`, `Origin`, security
//! headers: [`crate::guard`]), request metrics, per-IP rate limit, token
//! auth, then (API only) body size and request timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use braid_app::ops::{self, Page};
use braid_app::wire::*;
use braid_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use utoipa::OpenApi;

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
    /// The project's places (attempt logs under `.braid/logs`), if any.
    pub paths: Option<braid_app::Paths>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// `[budget]`, shown against what was spent (`/api/cost`).
    pub budget: braid_app::budget::Budget,
    /// The repository and merge settings review reads (`None` outside git:
    /// the review routes answer 404).
    pub review: Option<Arc<braid_app::review::Site>>,
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
            paths: None,
            metrics: None,
            budget: Default::default(),
            review: None,
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
    /// Who may talk to the server at all (`Host`, `Origin`), and the
    /// security headers: in front of every route.
    pub guard: crate::guard::Guard,
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
        answer,
        needs,
        cost,
        review_list,
        review_show,
        diff,
        approve,
        reject,
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
        .route("/api/tasks/{id}/answer", post(answer))
        .route("/api/tasks/{id}/approve", post(approve))
        .route("/api/tasks/{id}/reject", post(reject))
        .route("/api/tasks/{id}/review", get(review_show))
        .route("/api/tasks/{id}/diff", get(diff))
        .route("/api/review", get(review_list))
        .route("/api/needs", get(needs))
        .route("/api/cost", get(cost))
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
        .route("/vendor/{name}", get(board::vendor))
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
        .layer(middleware::from_fn_with_state(
            Arc::new(opts.guard.clone()),
            crate::guard::check,
        ))
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

fn split(s: Option<&str>) -> Vec<String> {
    s.map(|v| {
        v.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// List tasks, filtered.
#[utoipa::path(get, path = "/api/tasks", params(ListQuery), responses((status = 200, body = [TaskView]), (status = 400, body = ErrorView)))]
async fn list_tasks(
    State(st): State<AppState>,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TaskView>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let input = ListIn {
        states: split(q.state.as_deref()),
        types: split(q.kind.as_deref()),
        label: q.label,
        parent: q.parent,
        assignee: q.assignee,
        ready: q.ready,
        limit: Some(Page::TASKS.size(q.limit)),
    };
    Ok(Json(blocking(&st, move |s| ops::list(s, input)).await?))
}

/// Create a task.
#[utoipa::path(post, path = "/api/tasks", request_body = NewTaskIn, responses((status = 201, body = TaskView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn create_task(
    State(st): State<AppState>,
    b: std::result::Result<Json<NewTaskIn>, JsonRejection>,
) -> Result<(StatusCode, Json<TaskView>)> {
    let input = body(b)?;
    let actor = st.actor.clone();
    let t = blocking(&st, move |s| ops::add(s, &actor, input)).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// One task (by id, or a unique prefix of one).
#[utoipa::path(get, path = "/api/tasks/{id}", params(("id" = String, Path)), responses((status = 200, body = TaskView), (status = 404, body = ErrorView)))]
async fn get_task(State(st): State<AppState>, Path(raw): Path<String>) -> Result<Json<TaskView>> {
    Ok(Json(query(&st, move |s| ops::get(s, &raw))?))
}

/// Change a task's fields.
#[utoipa::path(patch, path = "/api/tasks/{id}", params(("id" = String, Path)), request_body = PatchIn, responses((status = 200, body = TaskView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn patch_task(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<PatchIn>, JsonRejection>,
) -> Result<Json<TaskView>> {
    let input = body(b)?;
    let actor = st.actor.clone();
    let u = blocking(&st, move |s| ops::update(s, &actor, &raw, input)).await?;
    Ok(Json(u.task))
}

/// Move a task: `done`, `fail` (reason required), `reopen`, `defer`, `cancel`.
#[utoipa::path(post, path = "/api/tasks/{id}/{action}", params(("id" = String, Path), ("action" = String, Path, description = "done | fail | reopen | defer | cancel")), request_body = ReasonIn, responses((status = 200, body = TaskView), (status = 400, body = ErrorView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
async fn transition(
    State(st): State<AppState>,
    Path((raw, action)): Path<(String, String)>,
    b: Option<Json<ReasonIn>>,
) -> Result<Json<TaskView>> {
    let Some(t) = ops::Transition::parse(&action) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "no action {action:?}; actions are done, fail, reopen, defer, cancel, claim, deps"
            ),
        });
    };
    let reason = b.and_then(|Json(r)| r.reason);
    let actor = st.actor.clone();
    let mut moved = blocking(&st, move |s| ops::transition(s, &actor, &[raw], t, reason)).await?;
    Ok(Json(moved.remove(0).task))
}

/// Claim a task (atomic). The answer's `lease.token` is the claim.
#[utoipa::path(post, path = "/api/tasks/{id}/claim", params(("id" = String, Path)), request_body = ClaimIn, responses((status = 200, body = TaskView), (status = 400, body = ErrorView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
async fn claim(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: Option<Json<ClaimIn>>,
) -> Result<Json<TaskView>> {
    let input = b.map(|Json(b)| b).unwrap_or_default();
    let actor = st.actor.clone();
    Ok(Json(
        blocking(&st, move |s| ops::claim(s, &actor, Some(&raw), input)).await?,
    ))
}

/// Add a dependency: the task depends on `id`.
#[utoipa::path(post, path = "/api/tasks/{id}/deps", params(("id" = String, Path)), request_body = DepIn, responses((status = 200, body = TaskView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn add_dep(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<DepIn>, JsonRejection>,
) -> Result<Json<TaskView>> {
    let dep = body(b)?;
    let actor = st.actor.clone();
    Ok(Json(
        blocking(&st, move |s| ops::dep_add(s, &actor, &raw, dep)).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DepQuery {
    /// The dependency to remove.
    on: String,
}

/// Remove a dependency (`?on=ID`).
#[utoipa::path(delete, path = "/api/tasks/{id}/deps", params(("id" = String, Path), DepQuery), responses((status = 200, body = TaskView), (status = 404, body = ErrorView)))]
async fn remove_dep(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: std::result::Result<Query<DepQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskView>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let actor = st.actor.clone();
    Ok(Json(
        blocking(&st, move |s| ops::dep_rm(s, &actor, &raw, &q.on)).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LimitQuery {
    limit: Option<usize>,
}

/// The ready queue, highest priority first.
#[utoipa::path(get, path = "/api/ready", params(LimitQuery), responses((status = 200, body = [TaskView])))]
async fn ready(State(st): State<AppState>, Query(q): Query<LimitQuery>) -> Result<Response> {
    let limit = Page::READY.size(q.limit);
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
            let out = query(&st, move |s| ops::ready(s, limit))?;
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
#[utoipa::path(get, path = "/api/health", responses((status = 200, body = HealthView)))]
async fn health(State(st): State<AppState>) -> Result<Json<HealthView>> {
    Ok(Json(query(&st, ops::health)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events after this seq.
    after: Option<i64>,
    limit: Option<usize>,
}

/// The event log after a seq, oldest first.
#[utoipa::path(get, path = "/api/events", params(EventsQuery), responses((status = 200, body = [EventView])))]
async fn events(
    State(st): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<EventView>>> {
    let (after, limit) = (q.after.unwrap_or(0), Page::EVENTS.size(q.limit));
    Ok(Json(query(&st, move |s| ops::events(s, after, limit))?))
}

/// Why a task is not ready, and which unfinished tasks block it.
#[utoipa::path(get, path = "/api/tasks/{id}/why", params(("id" = String, Path)), responses((status = 200, body = WhyView), (status = 404, body = ErrorView)))]
async fn why(State(st): State<AppState>, Path(raw): Path<String>) -> Result<Json<WhyView>> {
    Ok(Json(blocking(&st, move |s| ops::why(s, &raw)).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GraphQuery {
    /// At most this many nodes (default 500, at most 5000).
    limit: Option<usize>,
}

/// An epic's dependency graph: its subtree and the dependencies of those
/// tasks (edges may point outside the subtree).
#[utoipa::path(get, path = "/api/tasks/{id}/graph", params(("id" = String, Path), GraphQuery), responses((status = 200, body = GraphView), (status = 404, body = ErrorView)))]
async fn graph(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Json<GraphView>> {
    let limit = Page::GRAPH.size(q.limit);
    Ok(Json(
        blocking(&st, move |s| ops::graph(s, &raw, limit)).await?,
    ))
}

/// One task's latest events, oldest first.
#[utoipa::path(get, path = "/api/tasks/{id}/events", params(("id" = String, Path), LimitQuery), responses((status = 200, body = [EventView]), (status = 404, body = ErrorView)))]
async fn task_events(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<EventView>>> {
    let limit = Page::TASK_EVENTS.size(q.limit);
    Ok(Json(
        blocking(&st, move |s| ops::task_events(s, &raw, limit)).await?,
    ))
}

/// A task's comments, oldest first (the latest `limit`, default 100).
#[utoipa::path(get, path = "/api/tasks/{id}/comments", params(("id" = String, Path), LimitQuery), responses((status = 200, body = [CommentView]), (status = 404, body = ErrorView)))]
async fn comments(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<CommentView>>> {
    let limit = Page::TASK_EVENTS.size(q.limit);
    Ok(Json(query(&st, move |s| ops::comments(s, &raw, limit))?))
}

/// Comment on a task (recorded as a `commented` event).
#[utoipa::path(post, path = "/api/tasks/{id}/comments", params(("id" = String, Path)), request_body = CommentIn, responses((status = 201, body = CommentView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn add_comment(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<CommentIn>, JsonRejection>,
) -> Result<(StatusCode, Json<CommentView>)> {
    let input = body(b)?;
    let actor = st.actor.clone();
    let c = blocking(&st, move |s| ops::comment(s, &actor, &raw, input)).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Answer a task that waits for a person: the agent's session resumes with
/// the answer at the next dispatch.
#[utoipa::path(post, path = "/api/tasks/{id}/answer", request_body = AnswerIn,
    params(("id" = String, Path, description = "task id or unique prefix")),
    responses((status = 200, body = TaskView), (status = 400, description = "not waiting for an answer, or an empty answer")))]
async fn answer(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<AnswerIn>, JsonRejection>,
) -> Result<Json<TaskView>> {
    let input = body(b)?;
    let actor = st.actor.clone();
    Ok(Json(
        blocking(&st, move |s| ops::answer(s, &actor, &raw, input)).await?,
    ))
}

/// Runs a review call on the blocking pool (git and the store both block).
async fn reviewing<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&dyn Store, &braid_app::review::Site) -> braid_app::review::Result<T>
    + Send
    + 'static,
) -> Result<T> {
    let Some(site) = st.review.clone() else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message:
                "this server's project is not in a git repository: there are no branches to review"
                    .into(),
        });
    };
    let store = st.store.clone();
    let _slot = st.slots.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || f(store.as_ref(), &site))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// The tasks in review, oldest first: each branch's size, approval and
/// line comments.
#[utoipa::path(get, path = "/api/review", responses((status = 200, body = Vec<ReviewItemView>)))]
async fn review_list(State(st): State<AppState>) -> Result<Json<Vec<ReviewItemView>>> {
    Ok(Json(
        reviewing(&st, |s, site| braid_app::review::list(s, site, 200)).await?,
    ))
}

/// Everything to review a task's branch: the diff's files, decisions and
/// line comments across attempts (outdated ones marked), gates with their
/// logs, attempts with their cost, and the merge plan's view.
#[utoipa::path(get, path = "/api/tasks/{id}/review",
    params(("id" = String, Path, description = "task id or unique prefix")),
    responses((status = 200, body = ReviewView), (status = 404, body = ErrorView, description = "no such task, or it has no branch")))]
async fn review_show(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ReviewView>> {
    Ok(Json(
        reviewing(&st, move |s, site| braid_app::review::show(s, site, &raw)).await?,
    ))
}

/// A task's branch against where it started: the files and, unless
/// `stat`, the unified diff of a page of them (`next` says where the next
/// page starts; a large file comes only when named by `file`).
#[utoipa::path(get, path = "/api/tasks/{id}/diff",
    params(("id" = String, Path, description = "task id or unique prefix"),
        ("stat" = Option<bool>, Query, description = "only the files and counts"),
        ("offset" = Option<usize>, Query, description = "the page's first file"),
        ("lines" = Option<usize>, Query, description = "changed lines a page holds (default 5000)"),
        ("file" = Option<String>, Query, description = "only this file, however large")),
    responses((status = 200, body = DiffView), (status = 404, body = ErrorView)))]
async fn diff(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: std::result::Result<Query<DiffIn>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DiffView>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    Ok(Json(
        reviewing(&st, move |s, site| {
            braid_app::review::diff(s, site, &raw, &q)
        })
        .await?,
    ))
}

/// Approve a task's branch as it stands: the merge queue takes it (with
/// `[merge] require_approval`, only approved work lands).
#[utoipa::path(post, path = "/api/tasks/{id}/approve", request_body = ApproveIn,
    params(("id" = String, Path, description = "task id or unique prefix")),
    responses((status = 200, body = DecisionView), (status = 409, body = ErrorView, description = "not in review")))]
async fn approve(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<ApproveIn>, JsonRejection>,
) -> Result<Json<DecisionView>> {
    let input = body(b)?;
    let actor = st.actor.clone();
    Ok(Json(
        reviewing(&st, move |s, site| {
            braid_app::review::approve(s, site, &actor, &raw, &input)
        })
        .await?,
    ))
}

/// Send a task's work back with a message and line comments: it is open
/// again, and its next attempt is told each comment with its code.
#[utoipa::path(post, path = "/api/tasks/{id}/reject", request_body = RejectIn,
    params(("id" = String, Path, description = "task id or unique prefix")),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorView, description = "no message, or a comment on a line the branch does not have"), (status = 409, body = ErrorView, description = "not in review")))]
async fn reject(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    b: std::result::Result<Json<RejectIn>, JsonRejection>,
) -> Result<Json<TaskView>> {
    let input = body(b)?;
    let actor = st.actor.clone();
    Ok(Json(
        reviewing(&st, move |s, site| {
            braid_app::review::reject(s, site, &actor, &raw, &input)
        })
        .await?,
    ))
}

/// What waits for a person, the newest question first.
#[utoipa::path(get, path = "/api/needs", responses((status = 200, body = Vec<AttentionView>)))]
async fn needs(State(st): State<AppState>) -> Result<Json<Vec<AttentionView>>> {
    Ok(Json(blocking(&st, |s| ops::needs_you(s, 200)).await?))
}

/// What agents cost: the total, per task, per epic, and the budgets.
#[utoipa::path(get, path = "/api/cost", responses((status = 200, body = CostSummaryView)))]
async fn cost(State(st): State<AppState>) -> Result<Json<CostSummaryView>> {
    let budget = st.budget;
    let runs = st.paths.as_ref().map(|p| p.runs());
    Ok(Json(
        blocking(&st, move |s| {
            let run_spent = runs.as_deref().and_then(braid_app::budget::live_run_spend);
            ops::cost_summary(s, &budget, run_spent)
        })
        .await?,
    ))
}
