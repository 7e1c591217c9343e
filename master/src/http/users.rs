//! Users and their tokens (an admin's), the audit trail (a wrangler's) and
//! `whoami` (anyone's). A user may also make and revoke their own tokens.

use super::{ask_reader, ask_store, error, json, json_body, need, ApiResult, ApiState};
use crate::store::reader::ReadMsg;
use crate::store::writer::WriterMsg;
use crate::users::{Caller, Directory, UserChange};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use drqueue_common::now_millis;
use drqueue_common::users::{AuditQuery, NewUser, Role, WhoAmI};

/// Audit entries per answer: by default, and at most.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 1000;

fn refused(msg: String) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// Makes one change to the users: on a copy, stored, then swapped in, so a
/// change the store did not keep is never in effect.
async fn change_users<T>(
    s: &ApiState,
    change: impl FnOnce(&mut Directory) -> Result<(UserChange, T), Response>,
) -> Result<T, Response> {
    let _one_at_a_time = s.user_changes.lock().await;
    let mut next = s.directory().clone();
    let (stored, out) = change(&mut next)?;
    ask_store(s, |reply| WriterMsg::User {
        change: stored,
        reply,
    })
    .await?;
    *s.users.write().unwrap_or_else(|p| p.into_inner()) = next;
    Ok(out)
}

pub(super) async fn list_users(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    need(&caller, Role::Admin, "listing users")?;
    json(s.directory().views())
}

pub(super) async fn add_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Admin, "adding a user")?;
    let NewUser { name, role } = json_body(body, "user (send {\"name\": …, \"role\": …})")?;
    let token = change_users(&s, |d| d.add(&name, role, now_millis()).map_err(refused)).await?;
    tracing::info!(user = %name, %role, by = %caller.name, "user added");
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

pub(super) async fn remove_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    need(&caller, Role::Admin, "removing a user")?;
    change_users(&s, |d| Ok((d.remove(&name).map_err(refused)?, ()))).await?;
    tracing::info!(user = %name, by = %caller.name, "user removed");
    json(serde_json::json!({ "removed": name }))
}

/// Another token for a user: an admin's for anyone, or a user's own.
pub(super) async fn create_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    if name != caller.name {
        need(&caller, Role::Admin, "making a token for another user")?;
    }
    let token = change_users(&s, |d| d.create_token(&name, now_millis()).map_err(refused)).await?;
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

/// Revokes a token: an admin's for anyone, or a user's own.
pub(super) async fn revoke_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let owner = change_users(&s, |d| {
        let change = d.revoke_token(&id).map_err(refused)?;
        let UserChange::Put(ref user) = change else {
            return Err(refused(format!("token {id:?} names no user")));
        };
        if user.name != caller.name {
            need(&caller, Role::Admin, "revoking another user's token")?;
        }
        let owner = user.name.clone();
        Ok((change, owner))
    })
    .await?;
    json(serde_json::json!({ "revoked": id, "user": owner }))
}

pub(super) async fn audit(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<AuditQuery>,
) -> ApiResult {
    need(&caller, Role::Wrangler, "reading the audit trail")?;
    let limit = query
        .limit
        .map_or(AUDIT_DEFAULT, |n| n as usize)
        .min(AUDIT_MAX);
    json(
        ask_reader(&s, |reply| ReadMsg::Audit {
            query,
            limit,
            reply,
        })
        .await?,
    )
}

pub(super) async fn whoami(Extension(caller): Extension<Caller>) -> ApiResult {
    json(WhoAmI {
        user: caller.name,
        role: caller.role,
    })
}
