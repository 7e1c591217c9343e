//! Browser sign-in: an API token exchanged for a session cookie.
//!
//! `POST /api/session {"token": "…"}` checks the token and answers with two
//! cookies: `drqueue_session` (HttpOnly, SameSite=Strict: the page's script
//! never sees it, and no other site's page sends it) and `drqueue_csrf`
//! (readable by the page, which echoes it in `X-DrQueue-CSRF` on every
//! change: a forged request from anywhere lacks it). The session keeps the
//! token in memory only and authenticates it on every request, so revoking
//! the token or removing the user ends the session at once; a master
//! restart signs everyone out. `DELETE /api/session` signs out.

use super::{error, json_body, ApiResult, ApiState};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drqueue_common::users::WhoAmI;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const SESSION_COOKIE: &str = "drqueue_session";
pub const CSRF_COOKIE: &str = "drqueue_csrf";
pub const CSRF_HEADER: &str = "x-drqueue-csrf";
/// A session lasts a working day and a bit.
const SESSION_SECS: u64 = 12 * 3600;
/// Sessions kept at once; past it the oldest go.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: String,
    csrf: String,
    expires_ms: u64,
}

/// The live sessions, by id.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token and CSRF value of session `id`, if it is live.
    pub fn get(&self, id: &str, now_ms: u64) -> Option<(String, String)> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires_ms > now_ms => Some((s.token.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn create(&self, token: String, now_ms: u64) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires_ms > now_ms);
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: csrf.clone(),
                expires_ms: now_ms + SESSION_SECS * 1000,
            },
        );
        (id, csrf)
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    token: String,
}

pub(super) async fn sign_in(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> ApiResult {
    super::auth::check_browser_origin(&s, &headers)?;
    let SignIn { token } = json_body(body, "sign-in (a JSON object {\"token\": \"…\"})")?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "token: empty; paste the API token `drqueue user add` or `drqueue token create` printed",
        ));
    }
    let Some(caller) = s.directory().authenticate(&token) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "token: not valid for this master; ask an admin for one (`drqueue token create USER`)",
        ));
    };
    let now = drqueue_common::now_millis();
    let (id, csrf) = s.sessions.create(token, now);
    let mut resp = Json(WhoAmI {
        user: caller.name,
        role: caller.role,
    })
    .into_response();
    set_cookies(
        &mut resp,
        &[
            format!(
                "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}"
            ),
            format!("{CSRF_COOKIE}={csrf}; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}"),
        ],
    );
    Ok(resp)
}

pub(super) async fn sign_out(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        s.sessions.remove(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookies(
        &mut resp,
        &[
            format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            format!("{CSRF_COOKIE}=; SameSite=Strict; Path=/; Max-Age=0"),
        ],
    );
    resp
}

fn set_cookies(resp: &mut Response, cookies: &[String]) {
    for c in cookies {
        if let Ok(v) = header::HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_cookies_are_found() {
        let s = Sessions::default();
        let (id, csrf) = s.create("tok".into(), 1000);
        assert_eq!(s.get(&id, 2000), Some(("tok".into(), csrf)));
        assert_eq!(s.get(&id, 1000 + SESSION_SECS * 1000), None);
        assert_eq!(s.get("nope", 0), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; drqueue_session=xyz".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
