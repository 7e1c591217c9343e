//! Jobs, graphs, tasks and their logs. An artist submits as themselves and
//! changes only their own jobs; a wrangler or admin may do either for
//! anyone (`--owner`, for pipeline daemons).

use super::{ask, ask_core, ask_reader, error, json, json_body, need, parse_action, parse_id};
use super::{paging, ApiResult, ApiState, AuditJob};
use crate::events::{Event, Request};
use crate::store::reader::ReadMsg;
use crate::users::Caller;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use drqueue_common::graph::Graph;
use drqueue_common::listing::{JobFilter, Order};
use drqueue_common::model::{JobId, JobSpec, TaskKey, TaskStatus};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::users::Role;
use serde::Deserialize;
use std::time::Duration;

/// `GET /api/jobs`'s query: filters and a page.
#[derive(Deserialize)]
pub(super) struct JobsQuery {
    status: Option<String>,
    owner: Option<String>,
    pool: Option<String>,
    name: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /api/jobs/{id}/tasks`'s query.
#[derive(Deserialize)]
pub(super) struct TasksQuery {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
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

/// The owner rule: a job is the caller's unless a wrangler or admin names
/// someone else.
fn set_owner(caller: &Caller, spec: &mut JobSpec) -> Result<(), Response> {
    if spec.owner.is_empty() || spec.owner == caller.name {
        spec.owner.clone_from(&caller.name);
        return Ok(());
    }
    if caller.role >= Role::Wrangler {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!(
            "owner {:?}: {} may submit only as themselves; a wrangler or admin may submit for another user (--owner)",
            spec.owner, caller.name
        ),
    ))
}

/// Artists may change only their own jobs; the core checks the owner.
fn only_owner(caller: &Caller) -> Option<String> {
    (caller.role < Role::Wrangler).then(|| caller.name.clone())
}

pub(super) async fn list_jobs(
    State(s): State<ApiState>,
    uri: Uri,
    Query(q): Query<JobsQuery>,
) -> ApiResult {
    let order = match q.order.as_deref() {
        None | Some("newest") => Order::Newest,
        Some("oldest") => Order::Oldest,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("order {other:?}: use newest or oldest"),
            ))
        }
    };
    let filter = JobFilter {
        status: parse_status(q.status)?,
        owner: q.owner,
        pool: q.pool,
        name: q.name,
        order,
    };
    let limit = paging::limit(q.limit.as_deref())?;
    let after = paging::after(q.after.as_deref())?.map(JobId);
    let (rows, more) = ask(&s, |reply| Request::ListJobs {
        filter,
        after,
        limit,
        reply,
    })
    .await?;
    let last = rows.last().map(|j| j.id.to_string());
    paging::page(&uri, &rows, more, last)
}

/// `?require_runnable=true`: refuse (409) a job no engine could run now,
/// instead of queueing it for engines that join later.
#[derive(Deserialize)]
pub(super) struct SubmitQuery {
    #[serde(default)]
    require_runnable: bool,
}

pub(super) async fn submit(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SubmitQuery>,
    body: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Artist, "submitting")?;
    let mut spec = Box::new(json_body(body, "job")?);
    set_owner(&caller, &mut spec)?;
    super::cas::check_inputs(&s, &spec).await?;
    let mut views = ask_core(&s, |reply| Request::Submit {
        spec,
        require_runnable: q.require_runnable,
        reply,
    })
    .await?;
    if views.is_empty() {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "job vanished after submit",
        ));
    }
    let view = views.remove(0);
    let mut resp = (StatusCode::CREATED, Json(&view)).into_response();
    resp.extensions_mut().insert(AuditJob(view.id));
    Ok(resp)
}

/// A graph of jobs (`drqueue submit --file`, `--then`): all or nothing.
pub(super) async fn submit_graph(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SubmitQuery>,
    body: Result<Json<Graph>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Artist, "submitting")?;
    let mut graph = json_body(body, "job graph")?;
    for job in &mut graph.jobs {
        set_owner(&caller, &mut job.spec)?;
        super::cas::check_inputs(&s, &job.spec).await?;
    }
    let views = ask_core(&s, |reply| Request::SubmitGraph {
        graph,
        require_runnable: q.require_runnable,
        reply,
    })
    .await?;
    let first = views.first().map(|v| v.id);
    let mut resp = (StatusCode::CREATED, Json(views)).into_response();
    if let Some(id) = first {
        resp.extensions_mut().insert(AuditJob(id));
    }
    Ok(resp)
}

pub(super) async fn show_job(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    json(ask_core(&s, |reply| Request::ShowJob { id, reply }).await?)
}

pub(super) async fn list_tasks(
    State(s): State<ApiState>,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<TasksQuery>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let status: Option<TaskStatus> = parse_status(q.status)?;
    let limit = paging::limit(q.limit.as_deref())?;
    let after = paging::after(q.after.as_deref())?;
    let (rows, more) = ask_core(&s, |reply| Request::ListTasks {
        id,
        status,
        after,
        limit,
        reply,
    })
    .await?;
    let last = rows.last().map(|t| t.index.to_string());
    paging::page(&uri, &rows, more, last)
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    attempt: Option<u32>,
    #[serde(default)]
    offset: u64,
    /// Seconds to wait for more when there is nothing new yet (a follower's
    /// long poll; at most [`MAX_LOG_WAIT_SECS`]).
    #[serde(default)]
    wait: u64,
    /// true: the whole log from `offset` as a file to save, not one window.
    #[serde(default)]
    download: bool,
}

/// The whole log of one attempt, read window by window as the client takes
/// it (so a large log never sits in memory), as a file to save.
fn download_log(s: ApiState, key: AttemptKey, offset: u64) -> ApiResult {
    let windows = futures_util::stream::unfold(Some(offset), move |at| {
        let s = s.clone();
        async move {
            let offset = at?;
            match ask_reader(&s, |reply| ReadMsg::Log {
                attempt: key,
                offset,
                reply,
            })
            .await
            {
                Ok(bytes) if bytes.is_empty() => None,
                Ok(bytes) => {
                    let next = offset + bytes.len() as u64;
                    Some((Ok(bytes), Some(next)))
                }
                Err(_) => Some((
                    Err(std::io::Error::other("the store could not read the log")),
                    None,
                )),
            }
        }
    });
    let name = format!(
        "job{}-task{}-attempt{}.log",
        key.task.job, key.task.index, key.attempt
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .header("x-drqueue-attempt", key.attempt.to_string())
        .body(Body::from_stream(windows))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The longest a log read waits for more: below any proxy's idle timeout.
const MAX_LOG_WAIT_SECS: u64 = 25;

/// A window of one attempt's log (the latest by default) from `offset`, as
/// bytes. Headers tell a follower which attempt it is and whether the task
/// is still going. With `wait`, an empty window of a live attempt waits
/// until more is committed, the attempt ends, or the time is up.
pub(super) async fn task_log(
    State(s): State<ApiState>,
    Path((id, index)): Path<(String, u32)>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let task = TaskKey {
        job: parse_id(&id)?,
        index,
    };
    let attempt = q.attempt;
    let mut target = ask_core(&s, |reply| Request::TaskLog {
        task,
        attempt,
        reply,
    })
    .await?;
    let wait = Duration::from_secs(q.wait.min(MAX_LOG_WAIT_SECS));
    let key = AttemptKey {
        task,
        attempt: target.attempt,
    };
    if q.download {
        return download_log(s, key, q.offset);
    }
    // Watch before reading, so a chunk committed between the read and the
    // wait still wakes us.
    let woken = if wait.is_zero() || !target.is_live() {
        None
    } else {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.events
            .send(Event::Request(Request::WatchLog {
                attempt: key,
                reply: tx,
            }))
            .map_err(|_| super::shutting_down())?;
        Some(rx)
    };
    let offset = q.offset;
    let mut bytes = ask_reader(&s, |reply| ReadMsg::Log {
        attempt: key,
        offset,
        reply,
    })
    .await?;
    if let (true, Some(rx)) = (bytes.is_empty(), woken) {
        if let Ok(Err(_)) = tokio::time::timeout(wait, rx).await {
            // Not watched (the master holds as many followers as it
            // keeps): wait a little anyway, so a follower does not spin.
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
        target = ask_core(&s, |reply| Request::TaskLog {
            task,
            attempt: Some(key.attempt),
            reply,
        })
        .await?;
        bytes = ask_reader(&s, |reply| ReadMsg::Log {
            attempt: key,
            offset,
            reply,
        })
        .await?;
    }
    let t = &target.task;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-drqueue-attempt", target.attempt.to_string())
        .header("x-drqueue-task-status", t.status.as_str())
        .header("x-drqueue-live", if target.is_live() { "1" } else { "0" })
        .body(Body::from(bytes))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn task_attempts(
    State(s): State<ApiState>,
    Path((id, index)): Path<(String, u32)>,
) -> ApiResult {
    let task = TaskKey {
        job: parse_id(&id)?,
        index,
    };
    let record = ask_core(&s, |reply| Request::TaskRecord { task, reply }).await?;
    json(
        ask_reader(&s, |reply| ReadMsg::Attempts {
            task: record,
            reply,
        })
        .await?,
    )
}

#[derive(Deserialize)]
pub(super) struct ForceQuery {
    #[serde(default)]
    force: bool,
}

/// The optional body of `POST /api/jobs/{id}/cancel|retry`:
/// `{"tasks": "3,7-12"}` acts on those tasks only.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlBody {
    tasks: Option<String>,
}

pub(super) async fn control_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    need(&caller, Role::Artist, "changing a job")?;
    let id = parse_id(&id)?;
    let action = parse_action(&action)?;
    let body: ControlBody = if body.iter().all(u8::is_ascii_whitespace) {
        ControlBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad control body: {e}")))?
    };
    let tasks = body
        .tasks
        .as_deref()
        .map(drqueue_common::frames::parse_task_set)
        .transpose()
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let only_owner = only_owner(&caller);
    json(
        ask_core(&s, |reply| Request::ControlJob {
            id,
            action,
            tasks,
            only_owner,
            reply,
        })
        .await?,
    )
}

/// `PATCH /api/jobs/{id}` with `{"priority": N}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobPatch {
    priority: u32,
}

pub(super) async fn patch_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<JobPatch>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Artist, "changing a job")?;
    let id = parse_id(&id)?;
    let patch = json_body(body, "job change (send {\"priority\": N})")?;
    let only_owner = only_owner(&caller);
    json(
        ask_core(&s, |reply| Request::SetPriority {
            id,
            priority: patch.priority,
            only_owner,
            reply,
        })
        .await?,
    )
}

pub(super) async fn delete_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult {
    need(&caller, Role::Artist, "deleting a job")?;
    let id = parse_id(&id)?;
    let force = q.force;
    let only_owner = only_owner(&caller);
    ask_core(&s, |reply| Request::DeleteJob {
        id,
        force,
        only_owner,
        reply,
    })
    .await?;
    json(serde_json::json!({ "deleted": id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, role: Role) -> Caller {
        Caller {
            name: name.into(),
            role,
        }
    }

    #[test]
    fn only_wranglers_submit_for_others() {
        let mut spec = JobSpec::default();
        set_owner(&caller("bob", Role::Artist), &mut spec).unwrap();
        assert_eq!(spec.owner, "bob");
        spec.owner = "alice".into();
        let refused = set_owner(&caller("bob", Role::Artist), &mut spec).unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        set_owner(&caller("daemon", Role::Wrangler), &mut spec).unwrap();
        assert_eq!(spec.owner, "alice");
        assert_eq!(only_owner(&caller("bob", Role::Artist)), Some("bob".into()));
        assert_eq!(only_owner(&caller("w", Role::Wrangler)), None);
    }
}
