//! The HTTP/JSON API and the dashboard.
//!
//! Every handler turns into a closure run on the [`Core`], so the API sees
//! exactly the scheduler's state. Writes need a bearer token when the master
//! has tokens; a submit is answered only once the job is committed. Errors are
//! `{"error": "..."}` with a 4xx status that says whose fault it was.

// Handlers return an HTTP response as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use crate::core::{ApiCall, Core, Event};
use crate::scheduler::{Effects, RequestError, Scheduler};
use crate::store::writer::WriterMsg;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drqueue_common::graph::Graph;
use drqueue_common::model::{
    ApiError, JobId, JobSpec, JobStatus, JobView, PoolView, TaskKey, TaskStatus,
};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::Millis;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct ApiState {
    events: mpsc::UnboundedSender<Event>,
    tokens: Arc<Vec<String>>,
}

pub fn router(events: mpsc::UnboundedSender<Event>, tokens: Vec<String>) -> Router {
    let state = ApiState {
        events,
        tokens: Arc::new(tokens),
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
        RequestError::NoJob(_) | RequestError::NoEngine(_) => StatusCode::NOT_FOUND,
        RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

/// Waits for the store thread's answer to a read.
async fn store_answer<T>(
    rx: oneshot::Receiver<crate::store::StoreResult<T>>,
) -> Result<T, Response> {
    rx.await
        .map_err(|_| shutting_down())?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn shutting_down() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down",
    )
}

/// Runs `f` on the core and returns its answer.
async fn on_core<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&mut Core) -> T + Send + 'static,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let call: ApiCall = Box::new(move |core| {
        let _ = tx.send(f(core));
    });
    state.events.send(Event::Api(call)).map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        )
    })?;
    rx.await.map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        )
    })
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    req: Request,
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

async fn list_jobs(State(s): State<ApiState>, Query(q): Query<StatusFilter>) -> ApiResult {
    let status: Option<JobStatus> = parse_status(q.status)?;
    let jobs = on_core(&s, move |c| c.sched.job_views(status, c.now)).await?;
    Ok(Json(jobs).into_response())
}

async fn submit(
    State(s): State<ApiState>,
    body: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult {
    let Json(spec) = body.map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad job: {}", e.body_text()),
        )
    })?;
    let mut views = create(&s, move |sched, now, fx| {
        sched.submit(spec, now, fx).map(|id| vec![id])
    })
    .await?;
    Ok((StatusCode::CREATED, Json(views.remove(0))).into_response())
}

/// A graph of jobs (`drqueue submit --file`, `--then`): all or nothing.
async fn submit_graph(
    State(s): State<ApiState>,
    body: Result<Json<Graph>, JsonRejection>,
) -> ApiResult {
    let Json(graph) = body.map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad job graph: {}", e.body_text()),
        )
    })?;
    let views = create(&s, move |sched, now, fx| {
        sched
            .submit_graph(graph, now, fx)
            .map(|jobs| jobs.into_iter().map(|(_, id)| id).collect())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(views)).into_response())
}

/// Runs a submission on the core and answers once the new jobs are committed.
async fn create(
    s: &ApiState,
    f: impl FnOnce(&mut Scheduler, Millis, &mut Effects) -> Result<Vec<JobId>, RequestError>
        + Send
        + 'static,
) -> Result<Vec<JobView>, Response> {
    let (tx, rx) = oneshot::channel();
    on_core(s, move |c| {
        let mut fx = Effects::default();
        match f(&mut c.sched, c.now, &mut fx) {
            Ok(ids) => {
                c.fx.messages.append(&mut fx.messages);
                c.fx.ended_jobs.append(&mut fx.ended_jobs);
                let views: Vec<JobView> = ids
                    .iter()
                    .filter_map(|id| c.sched.job_view(*id, c.now))
                    .collect();
                tracing::info!(jobs = ?ids, "submitted");
                c.after_commit(move || {
                    let _ = tx.send(Ok(views));
                });
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })
    .await?;
    match rx.await {
        Ok(Ok(views)) if !views.is_empty() => Ok(views),
        Ok(Ok(_)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "job vanished after submit",
        )),
        Ok(Err(e)) => Err(request_error(e)),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        )),
    }
}

async fn show_job(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    match on_core(&s, move |c| c.sched.job_view(id, c.now)).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(request_error(RequestError::NoJob(id))),
    }
}

async fn list_tasks(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<StatusFilter>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let status: Option<TaskStatus> = parse_status(q.status)?;
    match on_core(&s, move |c| c.sched.task_views(id, status)).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(request_error(RequestError::NoJob(id))),
    }
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
    let id = parse_id(&id)?;
    let task = TaskKey { job: id, index };
    let (tx, rx) = oneshot::channel();
    let found = on_core(&s, move |c| {
        let views = c.sched.task_views(id, None)?;
        let t = views.get(index as usize)?.clone();
        let attempt = q.attempt.unwrap_or(t.attempts);
        c.to_store(WriterMsg::ReadLog {
            attempt: AttemptKey { task, attempt },
            offset: q.offset,
            reply: tx,
        });
        Some((t, attempt))
    })
    .await?;
    let Some((t, attempt)) = found else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no task {index} in job {id}: list them with `drqueue tasks {id}`"),
        ));
    };
    if attempt == 0 || attempt > t.attempts {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "task {id}.{index} has {} attempt(s); there is no attempt {attempt}",
                t.attempts
            ),
        ));
    }
    let bytes = store_answer(rx).await?;
    let live = attempt == t.attempts && !t.status.is_terminal() && t.status != TaskStatus::Ready;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-drqueue-attempt", attempt.to_string())
        .header("x-drqueue-task-status", t.status.as_str())
        .header("x-drqueue-live", if live { "1" } else { "0" })
        .body(Body::from(bytes))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn task_attempts(
    State(s): State<ApiState>,
    Path((id, index)): Path<(String, u32)>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let (tx, rx) = oneshot::channel();
    let task = on_core(&s, move |c| {
        c.to_store(WriterMsg::Attempts {
            task: TaskKey { job: id, index },
            reply: tx,
        });
        c.sched.task_record(TaskKey { job: id, index })
    })
    .await?
    .ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no task {index} in job {id}"),
        )
    })?;
    let mut attempts = store_answer(rx).await?;
    // A task's completing attempt is kept in the task itself: add it back.
    let recorded = attempts.iter().any(|a| a.attempt.attempt == task.attempts);
    if task.status == TaskStatus::Done && !recorded {
        attempts.push(crate::store::AttemptRecord {
            attempt: AttemptKey {
                task: TaskKey { job: id, index },
                attempt: task.attempts,
            },
            engine: task.engine.clone().unwrap_or_default(),
            ended_ms: task.ended_ms.unwrap_or_default(),
            outcome: drqueue_common::protocol::Outcome {
                exit_code: task.exit_code,
                cpu_ms: task.cpu_ms.unwrap_or_default(),
                peak_rss_kb: task.peak_rss_kb.unwrap_or_default(),
                wall_ms: task
                    .ended_ms
                    .zip(task.started_ms)
                    .map(|(e, s)| e.saturating_sub(s))
                    .unwrap_or_default(),
                ..Default::default()
            },
            counted: true,
        });
    }
    Ok(Json(attempts).into_response())
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
    let result = on_core(&s, move |c| {
        let now = c.now;
        let fx = &mut c.fx;
        match action.as_str() {
            "pause" => c.sched.pause(id),
            "resume" => c.sched.resume(id, now, fx),
            "cancel" => c.sched.cancel(id, now, fx),
            "retry" => c.sched.retry(id, now, fx).map(|_| ()),
            other => Err(RequestError::Invalid(format!(
                "unknown action {other:?}; use pause, resume, cancel or retry"
            ))),
        }
        .map(|()| c.sched.job_view(id, now))
    })
    .await?;
    match result {
        Ok(view) => Ok(Json(view).into_response()),
        Err(e) => Err(request_error(e)),
    }
}

async fn delete_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let result = on_core(&s, move |c| {
        let now = c.now;
        c.sched.delete(id, q.force, now, &mut c.fx)
    })
    .await?;
    match result {
        Ok(()) => Ok(Json(serde_json::json!({"deleted": id})).into_response()),
        Err(e) => Err(request_error(e)),
    }
}

async fn list_engines(State(s): State<ApiState>) -> ApiResult {
    let engines = on_core(&s, |c| {
        c.sched
            .engines()
            .iter()
            .map(|e| e.view())
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(engines).into_response())
}

async fn show_engine(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let found = on_core(&s, move |c| {
        c.sched
            .engines()
            .iter()
            .find(|e| e.id == id || e.facts.name == id)
            .map(|e| e.view())
            .ok_or(RequestError::NoEngine(id))
    })
    .await?;
    found
        .map(|v| Json(v).into_response())
        .map_err(request_error)
}

async fn control_engine(
    State(s): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult {
    let result = on_core(&s, move |c| {
        let id = c
            .sched
            .engines()
            .iter()
            .find(|e| e.id == id || e.facts.name == id)
            .map(|e| e.id.clone())
            .ok_or(RequestError::NoEngine(id))?;
        match action.as_str() {
            // Drain is disable seen from the user's side: running tasks
            // finish; `drqueue engine drain` then waits for them.
            "disable" | "drain" => c.sched.set_engine_disabled(&id, true, c.now, &mut c.fx)?,
            "enable" => c.sched.set_engine_disabled(&id, false, c.now, &mut c.fx)?,
            other => {
                return Err(RequestError::Invalid(format!(
                    "unknown action {other:?}; use disable, drain or enable"
                )));
            }
        }
        c.sched
            .engine(&id)
            .map(|e| e.view())
            .ok_or(RequestError::NoEngine(id))
    })
    .await?;
    result
        .map(|v| Json(v).into_response())
        .map_err(request_error)
}

async fn list_pools(State(s): State<ApiState>) -> ApiResult {
    let pools = on_core(&s, |c| {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        counts.insert(drqueue_common::model::DEFAULT_POOL.into(), 0);
        for e in c.sched.engines() {
            for p in &e.facts.pools {
                *counts.entry(p.clone()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|(name, engines)| PoolView { name, engines })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(pools).into_response())
}

async fn list_limits(State(s): State<ApiState>) -> ApiResult {
    let limits = on_core(&s, |c| c.sched.limit_views()).await?;
    Ok(Json(limits).into_response())
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
    let Json(LimitBody { count }) = body.map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad limit: {} (send {{\"count\": N}})", e.body_text()),
        )
    })?;
    let result = on_core(&s, move |c| {
        c.sched.set_limit(&name, count)?;
        Ok(c.sched.limit_views().into_iter().find(|l| l.name == name))
    })
    .await?;
    match result {
        Ok(Some(view)) => Ok(Json(view).into_response()),
        Ok(None) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "limit vanished")),
        Err(e) => Err(request_error(e)),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
