//! The HTTP/JSON API and the dashboard.
//!
//! Every handler parses its input, sends one typed [`Request`] to the core
//! and awaits its reply, so the API sees exactly the scheduler's state and a
//! reader can follow each call into the scheduler. Writes need a bearer token
//! when the master has tokens; a submit is answered only once the job is
//! committed. Errors are `{"error": "..."}` with a 4xx status that says whose
//! fault it was.

// Handlers return an HTTP response as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use crate::enroll::Enrollment;
use crate::events::{Event, LogRead, Reply, Request};
use crate::scheduler::RequestError;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drqueue_common::graph::Graph;
use drqueue_common::model::{ApiError, JobId, JobSpec, JobStatus, TaskKey, TaskStatus};
use drqueue_common::model::{EngineAccepted, EngineView, JoinTokenView};
use drqueue_common::now_millis;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct ApiState {
    events: mpsc::UnboundedSender<Event>,
    tokens: Arc<Vec<String>>,
    access: EngineAccess,
}

/// Who may join the farm: shared with the router's session table, which
/// consults it at every handshake.
#[derive(Clone)]
pub struct EngineAccess {
    pub enrollment: Arc<Mutex<Enrollment>>,
    pub master_public: [u8; 32],
}

impl EngineAccess {
    fn lock(&self) -> std::sync::MutexGuard<'_, Enrollment> {
        self.enrollment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(
    events: mpsc::UnboundedSender<Event>,
    tokens: Vec<String>,
    access: EngineAccess,
) -> Router {
    let state = ApiState {
        events,
        tokens: Arc::new(tokens),
        access,
    };
    Router::new()
        .route("/", get(dashboard))
        .route(
            "/api/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/api/jobs", get(list_jobs).post(submit))
        .route("/api/graphs", post(submit_graph))
        .route("/api/jobs/{id}", get(show_job).delete(delete_job))
        .route("/api/jobs/{id}/tasks", get(list_tasks))
        .route("/api/jobs/{id}/tasks/{index}/log", get(task_log))
        .route("/api/jobs/{id}/tasks/{index}/attempts", get(task_attempts))
        .route("/api/jobs/{id}/{action}", post(control_job))
        .route("/api/engines", get(list_engines))
        .route("/api/engines/{id}", get(show_engine))
        .route("/api/engines/{id}/{action}", post(control_engine))
        .route("/api/join-tokens", post(join_token))
        .route("/api/pools", get(list_pools))
        .route("/api/limits", get(list_limits))
        .route("/api/limits/{name}", axum::routing::put(set_limit))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API path; see README.md for the API",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

type ApiResult = Result<Response, Response>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ApiError { error: msg.into() })).into_response()
}

fn request_error(e: RequestError) -> Response {
    let status = match e {
        RequestError::NoJob(_)
        | RequestError::NoEngine(_)
        | RequestError::NoTask(_)
        | RequestError::NoAttempt { .. } => StatusCode::NOT_FOUND,
        RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

fn shutting_down() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down",
    )
}

/// Sends a request to the core and awaits its reply. `make` builds the
/// request around the reply channel.
async fn ask<T>(state: &ApiState, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    state
        .events
        .send(Event::Request(make(tx)))
        .map_err(|_| shutting_down())?;
    rx.await.map_err(|_| shutting_down())
}

/// As [`ask`], for requests the scheduler may refuse.
async fn ask_core<T>(
    state: &ApiState,
    make: impl FnOnce(Reply<Result<T, RequestError>>) -> Request,
) -> Result<T, Response> {
    ask(state, make).await?.map_err(request_error)
}

/// Waits for the store thread's answer to a read.
async fn store_answer<T>(
    rx: oneshot::Receiver<crate::store::StoreResult<T>>,
) -> Result<T, Response> {
    rx.await
        .map_err(|_| shutting_down())?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A JSON body, or 400 naming what was expected and what was wrong.
fn json_body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, Response> {
    body.map(|Json(v)| v).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad {what}: {}", e.body_text()),
        )
    })
}

fn json(value: impl Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    req: HttpRequest,
    next: Next,
) -> Response {
    if state.tokens.is_empty() || matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t)
            if state
                .tokens
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), t.as_bytes())) =>
        {
            next.run(req).await
        }
        Some(_) => error(
            StatusCode::UNAUTHORIZED,
            "the token is not valid for this master: check DRQUEUE_TOKEN",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "this master needs a token for changes: set DRQUEUE_TOKEN",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct StatusFilter {
    status: Option<String>,
}

fn parse_status<T: std::str::FromStr<Err = String>>(
    s: Option<String>,
) -> Result<Option<T>, Response> {
    s.map(|s| {
        s.parse::<T>()
            .map_err(|e| error(StatusCode::BAD_REQUEST, e))
    })
    .transpose()
}

fn parse_id(id: &str) -> Result<JobId, Response> {
    id.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a job id (a number)"),
        )
    })
}

fn parse_action<T: std::str::FromStr<Err = String>>(action: &str) -> Result<T, Response> {
    action
        .parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, e))
}

async fn list_jobs(State(s): State<ApiState>, Query(q): Query<StatusFilter>) -> ApiResult {
    let status: Option<JobStatus> = parse_status(q.status)?;
    json(ask(&s, |reply| Request::ListJobs { status, reply }).await?)
}

async fn submit(
    State(s): State<ApiState>,
    body: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult {
    let spec = Box::new(json_body(body, "job")?);
    let mut views = ask_core(&s, |reply| Request::Submit { spec, reply }).await?;
    if views.is_empty() {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "job vanished after submit",
        ));
    }
    Ok((StatusCode::CREATED, Json(views.remove(0))).into_response())
}

/// A graph of jobs (`drqueue submit --file`, `--then`): all or nothing.
async fn submit_graph(
    State(s): State<ApiState>,
    body: Result<Json<Graph>, JsonRejection>,
) -> ApiResult {
    let graph = json_body(body, "job graph")?;
    let views = ask_core(&s, |reply| Request::SubmitGraph { graph, reply }).await?;
    Ok((StatusCode::CREATED, Json(views)).into_response())
}

async fn show_job(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    json(ask_core(&s, |reply| Request::ShowJob { id, reply }).await?)
}

async fn list_tasks(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<StatusFilter>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let status: Option<TaskStatus> = parse_status(q.status)?;
    json(ask_core(&s, |reply| Request::ListTasks { id, status, reply }).await?)
}

#[derive(Deserialize)]
struct LogQuery {
    attempt: Option<u32>,
    #[serde(default)]
    offset: u64,
}

/// The log of one attempt (the latest by default) as bytes. Headers tell a
/// follower which attempt it is and whether the task is still going.
async fn task_log(
    State(s): State<ApiState>,
    Path((id, index)): Path<(String, u32)>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let task = TaskKey {
        job: parse_id(&id)?,
        index,
    };
    let (bytes, bytes_rx) = oneshot::channel();
    let read = LogRead {
        task,
        attempt: q.attempt,
        offset: q.offset,
        bytes,
    };
    let target = ask_core(&s, |reply| Request::TaskLog { read, reply }).await?;
    let bytes = store_answer(bytes_rx).await?;
    let t = &target.task;
    let live =
        target.attempt == t.attempts && !t.status.is_terminal() && t.status != TaskStatus::Ready;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-drqueue-attempt", target.attempt.to_string())
        .header("x-drqueue-task-status", t.status.as_str())
        .header("x-drqueue-live", if live { "1" } else { "0" })
        .body(Body::from(bytes))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn task_attempts(
    State(s): State<ApiState>,
    Path((id, index)): Path<(String, u32)>,
) -> ApiResult {
    let task = TaskKey {
        job: parse_id(&id)?,
        index,
    };
    let (attempts, rx) = oneshot::channel();
    ask_core(&s, |reply| Request::TaskAttempts {
        task,
        reply,
        attempts,
    })
    .await?;
    json(store_answer(rx).await?)
}

#[derive(Deserialize)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn control_job(
    State(s): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let action = parse_action(&action)?;
    json(ask_core(&s, |reply| Request::ControlJob { id, action, reply }).await?)
}

async fn delete_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let force = q.force;
    ask_core(&s, |reply| Request::DeleteJob { id, force, reply }).await?;
    json(serde_json::json!({ "deleted": id }))
}

/// The engines the scheduler knows, then those waiting to be accepted.
async fn list_engines(State(s): State<ApiState>) -> ApiResult {
    let mut engines = ask(&s, |reply| Request::ListEngines { reply }).await?;
    engines.extend(
        s.access
            .lock()
            .pending()
            .into_iter()
            .map(|p| EngineView::pending(p.engine, p.name, p.fingerprint, p.last_seen_ms)),
    );
    json(engines)
}

/// `drqueue engine accept NAME`: enrolls a pending engine's key.
fn accept_engine(s: &ApiState, name: &str) -> ApiResult {
    let p = s
        .access
        .lock()
        .accept(name, now_millis())
        .map_err(|e| error(StatusCode::NOT_FOUND, e))?;
    json(EngineAccepted {
        accepted: p.engine,
        name: p.name,
        fingerprint: p.fingerprint,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinTokenBody {
    /// How many engines may enroll with it.
    #[serde(default = "one")]
    uses: u32,
    /// Seconds it stays good; 0: until used up.
    #[serde(default = "a_day")]
    expires_secs: u64,
}

fn one() -> u32 {
    1
}

fn a_day() -> u64 {
    24 * 3600
}

/// `drqueue engine join-token`: a token an engine enrolls itself with.
async fn join_token(
    State(s): State<ApiState>,
    body: Result<Json<JoinTokenBody>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body, "join-token request (fields: uses, expires_secs)")?;
    let expires_ms = match body.expires_secs {
        0 => 0,
        secs => now_millis().saturating_add(secs.saturating_mul(1000)),
    };
    let token = s
        .access
        .lock()
        .join_token(&s.access.master_public, body.uses, expires_ms)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    json(JoinTokenView {
        token,
        uses: body.uses,
        expires_ms,
        master_fingerprint: drqueue_common::keys::fingerprint(&s.access.master_public),
    })
}

async fn show_engine(State(s): State<ApiState>, Path(engine): Path<String>) -> ApiResult {
    json(ask_core(&s, |reply| Request::ShowEngine { engine, reply }).await?)
}

async fn control_engine(
    State(s): State<ApiState>,
    Path((engine, action)): Path<(String, String)>,
) -> ApiResult {
    if action == "accept" {
        return accept_engine(&s, &engine);
    }
    let action = parse_action(&action)?;
    json(
        ask_core(&s, |reply| Request::ControlEngine {
            engine,
            action,
            reply,
        })
        .await?,
    )
}

async fn list_pools(State(s): State<ApiState>) -> ApiResult {
    json(ask(&s, |reply| Request::ListPools { reply }).await?)
}

async fn list_limits(State(s): State<ApiState>) -> ApiResult {
    json(ask(&s, |reply| Request::ListLimits { reply }).await?)
}

#[derive(Deserialize)]
struct LimitBody {
    count: u32,
}

async fn set_limit(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<LimitBody>, JsonRejection>,
) -> ApiResult {
    let LimitBody { count } = json_body(body, "limit (send {\"count\": N})")?;
    json(ask_core(&s, |reply| Request::SetLimit { name, count, reply }).await?)
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
