//! Every API operation in one table: the router is built from it, and so is
//! the OpenAPI 3 document at `GET /api/openapi.json`, so the two cannot
//! drift apart (a test also calls each documented operation on a live
//! master, and each undocumented method of a documented path).

use super::{engines, events, frames, jobs, users, ApiState};
use axum::routing::MethodRouter;
use serde_json::{json, Map, Value};

type Add = fn(MethodRouter<ApiState>) -> MethodRouter<ApiState>;

/// One method of one path.
pub(super) struct Op {
    pub method: &'static str,
    pub summary: &'static str,
    /// Query parameters: name and meaning.
    pub query: &'static [(&'static str, &'static str)],
    /// The JSON body it takes, in words; None for none.
    pub body: Option<&'static str>,
    /// What it answers, in words.
    pub answer: &'static str,
    pub add: Add,
}

pub(super) struct Route {
    pub path: &'static str,
    pub ops: Vec<Op>,
}

fn op(method: &'static str, summary: &'static str, answer: &'static str, add: Add) -> Op {
    Op {
        method,
        summary,
        query: &[],
        body: None,
        answer,
        add,
    }
}

impl Op {
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Op {
        self.query = q;
        self
    }
    fn body(mut self, b: &'static str) -> Op {
        self.body = Some(b);
        self
    }
}

const TASKS_QUERY: &[(&str, &str)] = &[
    ("status", "a task status"),
    ("limit", "rows a page (default 1000, at most 10000)"),
    ("after", "the last index you have"),
];

/// The operations behind the caller check (`auth::guard`).
pub(super) fn guarded() -> Vec<Route> {
    vec![
        Route { path: "/api/jobs", ops: vec![
            op("get", "List jobs, newest first", "job summary rows; `Link: rel=\"next\"` while more remain", |r| r.get(jobs::list_jobs))
                .query(&[("status", "a job status"), ("owner", "an owner"), ("pool", "a pool"), ("name", "a glob on the name"), ("order", "newest or oldest"), ("limit", "rows a page"), ("after", "the last id you have")]),
            op("post", "Submit a job", "the job's view, once committed", |r| r.post(jobs::submit))
                .query(&[("require_runnable", "true: 409 when no engine could run it now")])
                .body("a job spec (SPEC.md's fields)"),
        ]},
        Route { path: "/api/graphs", ops: vec![
            op("post", "Submit a graph of jobs, all or nothing", "the jobs' views", |r| r.post(jobs::submit_graph)).body("{\"jobs\": [job specs with names and `after`]}"),
        ]},
        Route { path: "/api/jobs/{id}", ops: vec![
            op("get", "One job", "the job's view with counts, progress, ETA and blocked reasons", |r| r.get(jobs::show_job)),
            op("delete", "Delete a job", "nothing (204)", |r| r.delete(jobs::delete_job)).query(&[("force", "true: also a job that has not ended")]),
            op("patch", "Change a job's priority", "the job's view", |r| r.patch(jobs::patch_job)).body("{\"priority\": N}"),
        ]},
        Route { path: "/api/jobs/{id}/tasks", ops: vec![
            op("get", "A job's tasks", "task rows", |r| r.get(jobs::list_tasks)).query(TASKS_QUERY),
        ]},
        Route { path: "/api/jobs/{id}/tasks/{index}/log", ops: vec![
            op("get", "A task attempt's log from an offset (text)", "up to 1 MiB of text; headers x-drqueue-attempt, x-drqueue-live", |r| r.get(jobs::task_log))
                .query(&[("attempt", "the attempt (default: the latest)"), ("offset", "the first byte"), ("wait", "seconds to wait for more (at most 25)")]),
        ]},
        Route { path: "/api/jobs/{id}/tasks/{index}/attempts", ops: vec![
            op("get", "A task's attempts", "each attempt's outcome, with the files it wrote", |r| r.get(jobs::task_attempts)),
        ]},
        Route { path: "/api/jobs/{id}/thumbnail", ops: vec![
            op("get", "The job's newest thumbnail", "image/png; 404 when none", |r| r.get(frames::newest)),
        ]},
        Route { path: "/api/jobs/{id}/thumbnails", ops: vec![
            op("get", "The frames of a job that have a thumbnail", "a list of frame numbers", |r| r.get(frames::frames)),
        ]},
        Route { path: "/api/jobs/{id}/frames/{frame}/thumbnail", ops: vec![
            op("get", "One frame's thumbnail", "image/png; 404 when none", |r| r.get(frames::frame)),
        ]},
        Route { path: "/api/jobs/{id}/{action}", ops: vec![
            op("post", "Pause, resume, cancel or retry a job (or some of its tasks)", "the job's view", |r| r.post(jobs::control_job))
                .body("optional {\"tasks\": \"3,7-12\"} for cancel and retry"),
        ]},
        Route { path: "/api/engines", ops: vec![
            op("get", "Engines, then those waiting to be accepted", "engine rows", |r| r.get(engines::list_engines)),
        ]},
        Route { path: "/api/engines/{id}", ops: vec![
            op("get", "One engine, by id or name", "the engine's view", |r| r.get(engines::show_engine)),
        ]},
        Route { path: "/api/engines/{id}/{action}", ops: vec![
            op("post", "Disable, drain, enable, revoke or accept an engine", "the engine's view", |r| r.post(engines::control_engine)),
        ]},
        Route { path: "/api/join-tokens", ops: vec![
            op("post", "Make a join token for new engines", "the token", |r| r.post(engines::join_token)).body("{\"uses\": N, \"expires_secs\": S}"),
        ]},
        Route { path: "/api/pools", ops: vec![op("get", "Pools", "pools with engine counts", |r| r.get(engines::list_pools))] },
        Route { path: "/api/limits", ops: vec![op("get", "Limits", "limits with tokens in use", |r| r.get(engines::list_limits))] },
        Route { path: "/api/limits/{name}", ops: vec![
            op("get", "One limit", "the limit", |r| r.get(engines::show_limit)),
            op("put", "Set a limit", "the limit", |r| r.put(engines::set_limit)).body("{\"count\": N}"),
            op("delete", "Remove a limit", "nothing (204)", |r| r.delete(engines::delete_limit)),
        ]},
        Route { path: "/api/users", ops: vec![
            op("get", "Users (admins)", "users with their tokens' ids", |r| r.get(users::list_users)),
            op("post", "Add a user (admins)", "the user and their first token, shown once", |r| r.post(users::add_user)).body("{\"name\": …, \"role\": viewer|artist|wrangler|admin}"),
        ]},
        Route { path: "/api/users/{name}", ops: vec![op("delete", "Remove a user (admins)", "nothing (204)", |r| r.delete(users::remove_user))] },
        Route { path: "/api/users/{name}/tokens", ops: vec![op("post", "A new token for a user", "the token, shown once", |r| r.post(users::create_token))] },
        Route { path: "/api/tokens/{id}", ops: vec![op("delete", "Revoke a token", "nothing (204)", |r| r.delete(users::revoke_token))] },
        Route { path: "/api/audit", ops: vec![
            op("get", "The audit trail, newest first (wranglers)", "audit entries", |r| r.get(users::audit))
                .query(&[("job", "a job id"), ("user", "a user"), ("since_ms", "from this time"), ("limit", "entries at most")]),
        ]},
        Route { path: "/api/whoami", ops: vec![op("get", "Who the caller is", "name and role", |r| r.get(users::whoami))] },
        Route { path: "/api/events", ops: vec![
            op("get", "The live feed (Server-Sent Events)", "text/event-stream: events named jobs, job, log, engines, farm, reload; resume with Last-Event-ID", |r| r.get(events::stream))
                .query(&[("topics", "jobs, job:ID, log:ID.TASK, engines, farm (comma separated)")]),
        ]},
        Route { path: "/api/farm", ops: vec![op("get", "Farm totals", "slots, engines by state, jobs by status, tasks done a minute", |r| r.get(events::farm))] },
        Route { path: "/api/log-rules", ops: vec![op("get", "Renderers' error and warning line patterns", "JavaScript regular expressions by program", |r| r.get(events::log_rules))] },
        Route { path: "/api/openapi.json", ops: vec![op("get", "This document", "OpenAPI 3.0", |r| r.get(openapi))] },
    ]
}

/// The operations that answer before a caller is named.
pub(super) fn open() -> Vec<Route> {
    vec![
        Route {
            path: "/api/health",
            ops: vec![op(
                "get",
                "Liveness, for load balancers (no token)",
                "{\"ok\": true}",
                |r| r.get(health),
            )],
        },
        Route {
            path: "/api/session",
            ops: vec![
                op(
                    "post",
                    "Sign in to the web monitor",
                    "who you are; sets the session and CSRF cookies",
                    |r| r.post(super::session::sign_in),
                )
                .body("{\"token\": \"…\"}"),
                op(
                    "delete",
                    "Sign out of the web monitor",
                    "nothing (204); clears the cookies",
                    |r| r.delete(super::session::sign_out),
                ),
            ],
        },
    ]
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"ok": true}))
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(document())
}

/// Adds `routes` to `router`, each path's methods together.
pub(super) fn mount(
    mut router: axum::Router<ApiState>,
    routes: Vec<Route>,
) -> axum::Router<ApiState> {
    for route in routes {
        let mut methods = MethodRouter::new();
        for op in &route.ops {
            methods = (op.add)(methods);
        }
        router = router.route(route.path, methods);
    }
    router
}

/// The OpenAPI 3 document of [`guarded`] and [`open`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for (routes, secured) in [(guarded(), true), (open(), false)] {
        for route in routes {
            let params: Vec<Value> = route
                .path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect();
            let mut item = Map::new();
            for op in &route.ops {
                let mut parameters = params.clone();
                parameters.extend(op.query.iter().map(|(name, what)| {
                    json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": "string"}})
                }));
                let mut o = json!({
                    "summary": op.summary,
                    "operationId": format!("{}{}", op.method, route.path.replace(['/', '{', '}', '.', '-'], "_")),
                    "parameters": parameters,
                    "responses": {
                        "200": {"description": op.answer},
                        "4XX": {"description": "{\"error\": \"…\"}: what was wrong and what to do", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    },
                });
                if let Some(body) = op.body {
                    o["requestBody"] = json!({"description": body, "content": {"application/json": {"schema": {"type": "object"}}}});
                }
                if !secured {
                    o["security"] = json!([]);
                }
                item.insert(op.method.to_string(), o);
            }
            paths.insert(route.path.to_string(), Value::Object(item));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "DrQueue master API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Jobs, tasks, engines, limits, users and the live feed of a DrQueue render farm. README.md explains each field."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "an API token (drqueue user add / token create)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "drqueue_session", "description": "the web monitor's session; changes also need the X-DrQueue-CSRF header"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
        },
        "security": [{"token": []}, {"session": []}],
    })
}
