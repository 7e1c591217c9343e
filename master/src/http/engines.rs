//! Engines, their enrollment, pools and limits. Changing any of them is a
//! wrangler's job.

use super::{ask, ask_core, error, json, json_body, need, parse_action, ApiResult, ApiState};
use crate::events::Request;
use crate::scheduler::RequestError;
use crate::users::Caller;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use drqueue_common::model::{EngineAccepted, EngineView, JoinTokenView};
use drqueue_common::now_millis;
use drqueue_common::users::Role;
use serde::Deserialize;

/// The engines the scheduler knows, then those waiting to be accepted.
pub(super) async fn list_engines(State(s): State<ApiState>) -> ApiResult {
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinTokenBody {
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
pub(super) async fn join_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<JoinTokenBody>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Wrangler, "making a join token")?;
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
        engines: s.access.engines_endpoint.clone(),
    })
}

pub(super) async fn show_engine(
    State(s): State<ApiState>,
    Path(engine): Path<String>,
) -> ApiResult {
    json(ask_core(&s, |reply| Request::ShowEngine { engine, reply }).await?)
}

pub(super) async fn control_engine(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((engine, action)): Path<(String, String)>,
) -> ApiResult {
    need(&caller, Role::Wrangler, "changing an engine")?;
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

pub(super) async fn list_pools(State(s): State<ApiState>) -> ApiResult {
    json(ask(&s, |reply| Request::ListPools { reply }).await?)
}

pub(super) async fn list_limits(State(s): State<ApiState>) -> ApiResult {
    json(ask(&s, |reply| Request::ListLimits { reply }).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct LimitBody {
    count: u32,
}

pub(super) async fn set_limit(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<LimitBody>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Wrangler, "setting a limit")?;
    let LimitBody { count } = json_body(body, "limit (send {\"count\": N})")?;
    json(ask_core(&s, |reply| Request::SetLimit { name, count, reply }).await?)
}

/// `drqueue limit show NAME`.
pub(super) async fn show_limit(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let limits = ask(&s, |reply| Request::ListLimits { reply }).await?;
    match limits.into_iter().find(|l| l.name == name) {
        Some(l) => json(l),
        None => Err(super::request_error(RequestError::NoLimit(name))),
    }
}

/// `drqueue limit delete NAME`: jobs naming it are no longer held back.
pub(super) async fn delete_limit(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    need(&caller, Role::Wrangler, "deleting a limit")?;
    let deleted = name.clone();
    ask_core(&s, |reply| Request::DeleteLimit { name, reply }).await?;
    json(serde_json::json!({ "deleted": deleted }))
}
