//! The HTTP/JSON API and the web monitor.
//!
//! Every handler parses its input, sends one typed [`Request`] to the core
//! (or the store thread) and awaits its reply, so the API sees exactly the
//! scheduler's state. [`auth`] runs first on every request: it names the
//! caller, applies the browser-safety rules and records each change in the
//! audit trail; handlers then check the caller's role. A submit is answered
//! only once the job is committed. Errors are `{"error": "..."}` with a 4xx
//! status that says whose fault it was.
//!
//! - [`jobs`]: jobs, graphs, tasks, logs;
//! - [`engines`]: engines, enrollment, pools, limits;
//! - [`users`]: users, tokens, the audit trail, whoami;
//! - [`cas`]: the content store: which blobs are missing, uploads, downloads;
//! - [`events`]: the live feed (Server-Sent Events), farm totals, log rules;
//! - [`session`]: the monitor's sign-in (a token for a session cookie);
//! - [`pages`]: the monitor's pages and assets, built in;
//! - [`routes`]: every operation in one table, the router and the OpenAPI
//!   document both built from it.

// Handlers return an HTTP response as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod auth;
mod body;
mod cas;
mod engines;
mod events;
mod frames;
mod jobs;
mod numbers;
mod pages;
mod paging;
mod routes;
pub mod serve;
mod session;
mod share;
mod users;

pub use auth::Policy;

use crate::enroll::Enrollment;
use crate::events::{Event, Reply, Request};
use crate::scheduler::RequestError;
use crate::store::reader::ReadMsg;
use crate::store::writer::WriterMsg;
use crate::users::Directory;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use drqueue_common::model::{ApiError, JobId};
use drqueue_common::users::Role;
use serde::Serialize;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

/// The farm's users, shared by every request (read) and admin changes.
pub type SharedDirectory = Arc<RwLock<Directory>>;

/// What the API is built from.
pub struct ApiParts {
    pub events: mpsc::UnboundedSender<Event>,
    pub writer: mpsc::UnboundedSender<WriterMsg>,
    pub reader: mpsc::UnboundedSender<ReadMsg>,
    pub users: SharedDirectory,
    pub access: EngineAccess,
    pub policy: Policy,
    /// The time a client has to send a request body.
    pub body_timeout: std::time::Duration,
    /// Requests one client may have in flight at once.
    pub per_client_requests: usize,
    /// The live feed `GET /api/events` serves.
    pub feed: crate::feed::Feed,
    /// Uploaded inputs and collected outputs.
    pub cas: crate::cas::BlobDir,
}

#[derive(Clone)]
pub struct ApiState {
    events: mpsc::UnboundedSender<Event>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    reader: mpsc::UnboundedSender<ReadMsg>,
    users: SharedDirectory,
    /// Admin changes are made one at a time on a copy of the directory,
    /// stored, then swapped in: a change the store refused never shows.
    user_changes: Arc<tokio::sync::Mutex<()>>,
    access: EngineAccess,
    policy: Arc<Policy>,
    body_timeout: std::time::Duration,
    shares: share::Shares,
    feed: crate::feed::Feed,
    sessions: session::Sessions,
    cas: crate::cas::BlobDir,
}

impl ApiState {
    fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who may join the farm: shared with the router's session table, which
/// consults it at every handshake.
#[derive(Clone)]
pub struct EngineAccess {
    pub enrollment: Arc<Mutex<Enrollment>>,
    pub master_public: [u8; 32],
    /// The endpoint engines connect to, as bound (`engine deploy` writes it
    /// into a node's env file).
    pub engines_endpoint: String,
}

impl EngineAccess {
    fn lock(&self) -> std::sync::MutexGuard<'_, Enrollment> {
        self.enrollment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(parts: ApiParts) -> Router {
    let state = ApiState {
        events: parts.events,
        writer: parts.writer,
        reader: parts.reader,
        users: parts.users,
        user_changes: Arc::default(),
        access: parts.access,
        policy: Arc::new(parts.policy),
        body_timeout: parts.body_timeout,
        shares: share::Shares::new(parts.per_client_requests),
        feed: parts.feed,
        sessions: session::Sessions::default(),
        cas: parts.cas,
    };
    routes::mount(Router::new(), routes::guarded())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API path; see README.md for the API",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), body::bounded))
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(body::MAX_BODY))
        // Health and signing in answer before a caller is named; the pages
        // hold no data.
        .merge(routes::mount(Router::new(), routes::open()))
        .merge(pages::routes())
        .with_state(state)
}

type ApiResult = Result<Response, Response>;

/// Why a request was refused, kept on the response for the audit trail.
#[derive(Clone)]
struct Refusal(String);

/// The job a change concerned, when the path does not say (a submit).
#[derive(Clone, Copy)]
struct AuditJob(JobId);

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    let mut resp = (status, Json(ApiError { error: msg.clone() })).into_response();
    resp.extensions_mut().insert(Refusal(msg));
    resp
}

fn request_error(e: RequestError) -> Response {
    let status = match e {
        RequestError::NoJob(_)
        | RequestError::NoEngine(_)
        | RequestError::NoTask(_)
        | RequestError::NoAttempt { .. }
        | RequestError::NoLimit(_) => StatusCode::NOT_FOUND,
        RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
        RequestError::Unrunnable { .. } => StatusCode::CONFLICT,
        RequestError::NotYours { .. } => StatusCode::FORBIDDEN,
    };
    error(status, e.to_string())
}

fn shutting_down() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down",
    )
}

/// Refuses a caller whose role is below `role`, saying what it takes.
fn need(caller: &crate::users::Caller, role: Role, what: &str) -> Result<(), Response> {
    if caller.role >= role {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!(
            "{what} needs the {role} role; {} is {} {}. Ask an admin (`drqueue user add`)",
            caller.name,
            if caller.role == Role::Artist {
                "an"
            } else {
                "a"
            },
            caller.role
        ),
    ))
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

/// Asks the store's reader thread (logs, attempt histories, the audit).
async fn ask_reader<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<crate::store::StoreResult<T>>) -> ReadMsg,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    state.reader.send(make(tx)).map_err(|_| shutting_down())?;
    store_answer(rx).await
}

/// Asks the store's writer thread (a change to the users).
async fn ask_store<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<crate::store::StoreResult<T>>) -> WriterMsg,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    state.writer.send(make(tx)).map_err(|_| shutting_down())?;
    store_answer(rx).await
}

/// Waits for the store thread's answer to a read.
async fn store_answer<T>(
    rx: oneshot::Receiver<crate::store::StoreResult<T>>,
) -> Result<T, Response> {
    rx.await
        .map_err(|_| shutting_down())?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A JSON body, or 400 naming what was expected and what was wrong (413
/// when it is too large).
fn json_body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, Response> {
    body.map(|Json(v)| v).map_err(|e| {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        error(status, format!("bad {what}: {}", e.body_text()))
    })
}

fn json(value: impl Serialize) -> ApiResult {
    Ok(Json(value).into_response())
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
