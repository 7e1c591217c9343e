//! Who is calling, whether they may, and the record of what they changed.
//!
//! [`guard`] runs before every handler:
//! 1. It names the caller. A bearer token names its user. With no token, a
//!    loopback caller on a farm without users is the built-in admin
//!    `local`, and a read is an anonymous viewer under `--public-read`;
//!    anything else is 401. A missing or unknown token never means "auth off".
//! 2. Browser safety. A request a browser could have made on its own (no
//!    token, or a cookie) must name an allowed `Host` and, when it sends
//!    one, an allowed `Origin`: that defeats DNS rebinding and cross-site
//!    requests. Writes must be JSON, which a plain HTML form cannot send.
//! 3. A client (its user, or its address without a token) has a share of
//!    the requests in flight ([`super::share`]); past it, 429.
//! 4. After the handler, every write by a named caller goes to the audit
//!    trail with its result.

use super::{error, ApiState, AuditJob, Refusal};
use crate::store::writer::WriterMsg;
use crate::users::{Caller, LOCAL_USER};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use drqueue_common::model::JobId;
use drqueue_common::users::{AuditEntry, Role};
use std::net::{IpAddr, SocketAddr};

/// Who a token-less reader is under `--public-read`.
const ANONYMOUS: &str = "anonymous";
/// Bounds on what an audit entry keeps of a request.
const MAX_AUDIT_ACTION: usize = 200;
const MAX_AUDIT_DETAIL: usize = 500;

/// The rules the master was started with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Reads need no token.
    pub public_read: bool,
    /// Host names a browser may use to reach the API.
    hosts: Vec<String>,
    /// Bound to every address: any IP literal is a way to reach it. (DNS
    /// rebinding needs a name, so an IP literal is never an attacker's.)
    any_ip: bool,
}

impl Policy {
    /// `bind` is the HTTP listener's address; `public_url` the address
    /// users are given (`--public-url`).
    pub fn new(bind: SocketAddr, public_url: Option<&str>, public_read: bool) -> Policy {
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            "::1".into(),
            bind.ip().to_string(),
        ];
        if let Some(host) = public_url.and_then(url_host) {
            hosts.push(host);
        }
        Policy {
            public_read,
            hosts,
            any_ip: bind.ip().is_unspecified(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.contains(&host) || (self.any_ip && host.parse::<IpAddr>().is_ok())
    }
}

/// `http://Host:port/path` → `host`.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = strip_port(authority.rsplit_once('@').map_or(authority, |(_, h)| h));
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `host:port`, `[v6]:port` or `host` → the host alone.
fn strip_port(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Step 1: who is asking, or the 401 that says what to do.
fn identify(
    s: &ApiState,
    token: Option<&str>,
    remote: Option<SocketAddr>,
    write: bool,
) -> Result<Caller, Response> {
    let directory = s.directory();
    if let Some(token) = token {
        return directory.authenticate(token).ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "the token is not valid for this master: check DRQUEUE_TOKEN (an admin makes one with `drqueue token create`)",
            )
        });
    }
    if directory.is_empty() && remote.is_some_and(|a| a.ip().is_loopback()) {
        return Ok(Caller {
            name: LOCAL_USER.into(),
            role: Role::Admin,
        });
    }
    if !write && s.policy.public_read {
        return Ok(Caller {
            name: ANONYMOUS.into(),
            role: Role::Viewer,
        });
    }
    Err(error(
        StatusCode::UNAUTHORIZED,
        "this master needs an API token: set DRQUEUE_TOKEN (an admin makes one with `drqueue user add` or `drqueue token create`)",
    ))
}

/// The Host and Origin rules of step 2 alone: for the sign-in, which
/// comes before anyone is named.
pub(super) fn check_browser_origin(s: &ApiState, headers: &HeaderMap) -> Result<(), Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(strip_port)
        .unwrap_or("");
    if !s.policy.host_allowed(host) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("Host {host:?} is not an address of this master: use localhost, its IP, or the --public-url name"),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !url_host(origin).is_some_and(|h| s.policy.host_allowed(&h)) {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("a request from the page at {origin:?} may not use this master"),
            ));
        }
    }
    Ok(())
}

/// Step 2: what a browser could have sent by itself is refused.
fn browser_safe(s: &ApiState, req: &Request, token: bool) -> Result<(), Response> {
    let headers = req.headers();
    let write = is_write(req.method());
    if write {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        // A blob upload is a PUT, which no HTML form can send.
        let blob = super::cas::is_upload(req.method(), req.uri().path());
        if !json && !blob {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "changes must be sent as Content-Type: application/json",
            ));
        }
    }
    if token && !headers.contains_key(header::COOKIE) {
        // A client holding a token may reach the master by any name.
        return Ok(());
    }
    check_browser_origin(s, headers)
}

/// The job a request path names (`/api/jobs/ID…`).
fn job_in_path(path: &str) -> Option<JobId> {
    path.strip_prefix("/api/jobs/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

pub async fn guard(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let write = is_write(req.method());
    // A bearer token, else the monitor's session cookie (whose changes must
    // echo its CSRF value).
    let mut csrf = None;
    let token = bearer(req.headers()).map(String::from).or_else(|| {
        let id = super::session::cookie(req.headers(), super::session::SESSION_COOKIE)?;
        let (token, expected) = s.sessions.get(id, drqueue_common::now_millis())?;
        csrf = Some(expected);
        Some(token)
    });
    let caller = match identify(&s, token.as_deref(), remote, write) {
        Ok(c) => c,
        Err(resp) => {
            tracing::debug!(?remote, path = %req.uri().path(), "refused a request without a valid token");
            return resp;
        }
    };
    // A client's share of the requests in flight: its user when it sent a
    // token, else its address.
    let client = match (&token, remote) {
        (Some(_), _) => format!("user:{}", caller.name),
        (None, Some(a)) => format!("addr:{}", a.ip()),
        (None, None) => "addr:unknown".into(),
    };
    let Some(_in_flight) = s.shares.take(client) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight from this client: wait for some to finish",
        );
    };
    let action = bounded(
        &format!("{} {}", req.method(), req.uri().path()),
        MAX_AUDIT_ACTION,
    );
    let job = job_in_path(req.uri().path());
    let req_is_cas = req.uri().path() == "/api/cas/missing"
        || super::cas::is_upload(req.method(), req.uri().path());
    let checked = browser_safe(&s, &req, token.is_some()).and_then(|()| {
        if let (true, Some(expected)) = (write, &csrf) {
            let sent = req
                .headers()
                .get(super::session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            if sent != Some(expected.as_str()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "a change made with the monitor's session must carry its X-DrQueue-CSRF header: reload the page",
                ));
            }
        }
        if write && caller.role == Role::Viewer {
            return super::need(&caller, Role::Artist, "changing anything");
        }
        Ok(())
    });
    let resp = match checked {
        Ok(()) => {
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
        Err(resp) => resp,
    };
    // Uploads and the question of what is missing are recorded once, by
    // the submit that names their manifest, not blob by blob.
    if write && !req_is_cas {
        let ext = resp.extensions();
        let entry = AuditEntry {
            seq: 0,
            at_ms: drqueue_common::now_millis(),
            user: caller.name,
            remote: remote.map_or_else(|| "unknown".into(), |a| a.ip().to_string()),
            action,
            job: job.or(ext.get::<AuditJob>().map(|j| j.0)),
            status: resp.status().as_u16(),
            detail: ext
                .get::<Refusal>()
                .map(|r| bounded(&r.0, MAX_AUDIT_DETAIL))
                .unwrap_or_default(),
        };
        if s.writer.send(WriterMsg::Audit(entry)).is_err() {
            tracing::warn!("the store thread is gone: an audit entry was not recorded");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_ports() {
        let p = Policy::new(
            "127.0.0.1:5580".parse().unwrap(),
            Some("https://Farm.example.com:8443/x"),
            false,
        );
        for ok in ["localhost", "127.0.0.1", "::1", "farm.example.com"] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "10.0.0.5", ""] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        assert_eq!(strip_port("[::1]:5580"), "::1");
        assert_eq!(strip_port("localhost:5580"), "localhost");
        assert_eq!(
            url_host("http://evil.example:80"),
            Some("evil.example".into())
        );
        assert_eq!(url_host("null"), Some("null".into()));
        let any = Policy::new("0.0.0.0:5580".parse().unwrap(), None, false);
        assert!(any.host_allowed("10.0.0.5") && !any.host_allowed("evil.example"));
    }

    #[test]
    fn the_job_is_read_from_the_path() {
        assert_eq!(job_in_path("/api/jobs/12/cancel"), Some(JobId(12)));
        assert_eq!(job_in_path("/api/jobs"), None);
        assert_eq!(job_in_path("/api/users/x"), None);
        assert_eq!(bounded("abcdef", 3), "abc…");
    }
}
