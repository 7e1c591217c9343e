//! Every API operation in one table: the router is built from it, and so is
//! the OpenAPI 3 document at `GET /api/openapi.json`, so the two cannot
//! drift apart (a test also calls each documented operation on a live
//! master, and each undocumented method of a documented path).

use super::{cas, engines, events, frames, jobs, numbers, session, users, ApiState};
use axum::routing::MethodRouter;
use drqueue_common::graph::Graph;
use drqueue_common::listing::JobSummary;
use drqueue_common::model::{
    ApiError, EngineAccepted, EngineView, JobSpec, JobView, JoinTokenView, LimitView, PoolView,
    TaskView,
};
use drqueue_common::users::{AuditEntry, NewToken, NewUser, UserView, WhoAmI};
use drqueue_scheduler::records::AttemptRecord;
use schemars::{generate::SchemaSettings, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

type Add = fn(MethodRouter<ApiState>) -> MethodRouter<ApiState>;
/// Writes a type's schema into the generator, returning a `$ref` to it.
type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One method of one path.
pub(super) struct Op {
    pub method: &'static str,
    pub summary: &'static str,
    /// Query parameters: name and meaning.
    pub query: &'static [(&'static str, &'static str)],
    /// The JSON body it takes: in words, and its type's schema.
    pub body: Option<(&'static str, SchemaOf)>,
    /// What it answers: in words, its status, its media type, and for JSON
    /// its type's schema (None: any JSON).
    pub answer: &'static str,
    pub status: u16,
    pub media: &'static str,
    pub answer_schema: Option<SchemaOf>,
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
        status: 200,
        media: JSON,
        answer_schema: None,
        add,
    }
}

const JSON: &str = "application/json";

impl Op {
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Op {
        self.query = q;
        self
    }
    /// It takes a `T` as its JSON body.
    fn takes<T: JsonSchema>(mut self, what: &'static str) -> Op {
        self.body = Some((what, schema_of::<T>));
        self
    }
    /// It answers a `T` as JSON.
    fn gives<T: JsonSchema>(mut self) -> Op {
        self.answer_schema = Some(schema_of::<T>);
        self
    }
    /// It answers 201, not 200.
    fn created(self) -> Op {
        self.status(201)
    }
    fn status(mut self, status: u16) -> Op {
        self.status = status;
        self
    }
    /// It answers something other than JSON.
    fn media(mut self, media: &'static str) -> Op {
        self.media = media;
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
                .query(&[("status", "a job status"), ("owner", "an owner"), ("pool", "a pool"), ("name", "a glob on the name"), ("order", "newest or oldest"), ("limit", "rows a page"), ("after", "the last id you have")])
                .gives::<Vec<JobSummary>>(),
            op("post", "Submit a job", "the job's view, once committed", |r| r.post(jobs::submit))
                .query(&[("require_runnable", "true: 409 when no engine could run it now")])
                .takes::<JobSpec>("a job spec (SPEC.md's fields)").gives::<JobView>().created(),
        ]},
        Route { path: "/api/graphs", ops: vec![
            op("post", "Submit a graph of jobs, all or nothing", "the jobs' views", |r| r.post(jobs::submit_graph))
                .takes::<Graph>("jobs with their names and the names they wait on").gives::<Vec<JobView>>().created(),
        ]},
        Route { path: "/api/jobs/{id}", ops: vec![
            op("get", "One job", "the job's view with counts, progress, ETA and blocked reasons", |r| r.get(jobs::show_job)).gives::<JobView>(),
            op("delete", "Delete a job", "{\"deleted\": id}", |r| r.delete(jobs::delete_job)).query(&[("force", "true: also a job that has not ended")]),
            op("patch", "Change a job's priority", "the job's view", |r| r.patch(jobs::patch_job)).takes::<jobs::JobPatch>("{\"priority\": N}").gives::<JobView>(),
        ]},
        Route { path: "/api/jobs/{id}/tasks", ops: vec![
            op("get", "A job's tasks", "task rows", |r| r.get(jobs::list_tasks)).query(TASKS_QUERY).gives::<Vec<TaskView>>(),
        ]},
        Route { path: "/api/jobs/{id}/tasks/{index}/log", ops: vec![
            op("get", "A task attempt's log from an offset (text)", "up to 1 MiB of text (all of it with download=true); headers x-drqueue-attempt, x-drqueue-live", |r| r.get(jobs::task_log))
                .query(&[("attempt", "the attempt (default: the latest)"), ("offset", "the first byte"), ("wait", "seconds to wait for more (at most 25)"), ("download", "true: the whole log from offset, as an attachment")])
                .media("text/plain"),
        ]},
        Route { path: "/api/jobs/{id}/tasks/{index}/attempts", ops: vec![
            op("get", "A task's attempts", "each attempt's outcome, with the files it wrote", |r| r.get(jobs::task_attempts)).gives::<Vec<AttemptRecord>>(),
        ]},
        Route { path: "/api/jobs/{id}/thumbnail", ops: vec![
            op("get", "The job's newest thumbnail", "a PNG; 404 when none", |r| r.get(frames::newest)).media("image/png"),
        ]},
        Route { path: "/api/jobs/{id}/thumbnails", ops: vec![
            op("get", "The frames of a job that have a thumbnail", "frame numbers", |r| r.get(frames::frames)).gives::<Vec<i64>>(),
        ]},
        Route { path: "/api/jobs/{id}/frames/{frame}/thumbnail", ops: vec![
            op("get", "One frame's thumbnail", "a PNG; 404 when none", |r| r.get(frames::frame)).media("image/png"),
        ]},
        Route { path: "/api/jobs/{id}/{action}", ops: vec![
            op("post", "Pause, resume, cancel or retry a job (or some of its tasks)", "the job's view", |r| r.post(jobs::control_job))
                .takes::<jobs::ControlBody>("optional; {\"tasks\": \"3,7-12\"} for cancel and retry").gives::<JobView>(),
        ]},
        Route { path: "/api/cas", ops: vec![
            op("get", "What the content store holds, and its free-disk floor", "counts and bytes", |r| r.get(cas::stats)).gives::<drqueue_common::cas::CasStats>(),
        ]},
        Route { path: "/api/cas/gc", ops: vec![
            op("post", "Remove blobs no job names and nobody used for --cas-keep-days (admins)", "what was removed and kept", |r| r.post(cas::gc)).gives::<crate::cas::GcReport>(),
        ]},
        Route { path: "/api/cas/missing", ops: vec![
            op("post", "Which of these blobs the master lacks", "the hashes it lacks, in the order asked", |r| r.post(cas::missing))
                .takes::<cas::MissingQuery>("{\"hashes\": [BLAKE3 hex, …]}").gives::<cas::Missing>(),
        ]},
        Route { path: "/api/cas/{hash}", ops: vec![
            op("put", "Upload a blob (application/octet-stream), kept only if its content hashes to {hash}", "201 when stored, 200 when it was there; 422 on a hash mismatch, 507 under the disk floor", |r| r.put(cas::put))
                .gives::<cas::Stored>().created(),
            op("get", "Download a blob; Range: bytes=N- resumes", "the bytes", |r| r.get(cas::get)).media("application/octet-stream"),
        ]},
        Route { path: "/api/engines", ops: vec![
            op("get", "Engines, then those waiting to be accepted", "engine rows", |r| r.get(engines::list_engines)).gives::<Vec<EngineView>>(),
        ]},
        Route { path: "/api/engines/{id}", ops: vec![
            op("get", "One engine, by id or name", "the engine's view", |r| r.get(engines::show_engine)).gives::<EngineView>(),
        ]},
        Route { path: "/api/engines/{id}/{action}", ops: vec![
            op("post", "Disable, drain, enable or revoke an engine; accept a pending one", "the engine's view (for accept: what was accepted)", |r| r.post(engines::control_engine))
                .gives::<EngineViewOrAccepted>(),
        ]},
        Route { path: "/api/join-tokens", ops: vec![
            op("post", "Make a join token for new engines", "the token", |r| r.post(engines::join_token))
                .takes::<engines::JoinTokenBody>("{\"uses\": N, \"expires_secs\": S}").gives::<JoinTokenView>(),
        ]},
        Route { path: "/api/pools", ops: vec![op("get", "Pools", "pools with engine counts", |r| r.get(engines::list_pools)).gives::<Vec<PoolView>>()] },
        Route { path: "/api/limits", ops: vec![op("get", "Limits", "limits with tokens in use", |r| r.get(engines::list_limits)).gives::<Vec<LimitView>>()] },
        Route { path: "/api/limits/{name}", ops: vec![
            op("get", "One limit", "the limit", |r| r.get(engines::show_limit)).gives::<LimitView>(),
            op("put", "Set a limit", "the limit", |r| r.put(engines::set_limit)).takes::<engines::LimitBody>("{\"count\": N}").gives::<LimitView>(),
            op("delete", "Remove a limit", "{\"deleted\": true|false}", |r| r.delete(engines::delete_limit)),
        ]},
        Route { path: "/api/users", ops: vec![
            op("get", "Users (admins)", "users with their tokens' ids", |r| r.get(users::list_users)).gives::<Vec<UserView>>(),
            op("post", "Add a user (admins)", "the user's first token, shown once", |r| r.post(users::add_user))
                .takes::<NewUser>("{\"name\": …, \"role\": viewer|artist|wrangler|admin}").gives::<NewToken>().created(),
        ]},
        Route { path: "/api/users/{name}", ops: vec![op("delete", "Remove a user (admins)", "{\"removed\": name}", |r| r.delete(users::remove_user))] },
        Route { path: "/api/users/{name}/tokens", ops: vec![op("post", "A new token for a user", "the token, shown once", |r| r.post(users::create_token)).gives::<NewToken>().created()] },
        Route { path: "/api/tokens/{id}", ops: vec![op("delete", "Revoke a token", "{\"revoked\": id, \"user\": name}", |r| r.delete(users::revoke_token))] },
        Route { path: "/api/audit", ops: vec![
            op("get", "The audit trail, newest first (wranglers)", "audit entries", |r| r.get(users::audit))
                .query(&[("job", "a job id"), ("user", "a user"), ("since_ms", "from this time"), ("limit", "entries at most")])
                .gives::<Vec<AuditEntry>>(),
        ]},
        Route { path: "/api/whoami", ops: vec![op("get", "Who the caller is", "name and role", |r| r.get(users::whoami)).gives::<WhoAmI>()] },
        Route { path: "/api/events", ops: vec![
            op("get", "The live feed (Server-Sent Events)", "events named jobs, job, log, engines, farm, reload; resume with Last-Event-ID", |r| r.get(events::stream))
                .query(&[("topics", "jobs, job:ID, log:ID.TASK, engines, farm (comma separated)")])
                .media("text/event-stream"),
        ]},
        Route { path: "/api/farm", ops: vec![op("get", "Farm totals", "slots, engines by state, jobs by status, tasks done a minute", |r| r.get(events::farm))] },
        Route { path: "/api/usage", ops: vec![
            op("get", "CPU and wall hours, tasks and failures, from records that outlive their jobs", "rows by the grouping asked, and the total", |r| r.get(numbers::usage))
                .query(&[("by", "owner (the default), pool, job or day (UTC)"), ("since_ms", "only attempts that ended from this time")])
                .gives::<drqueue_common::usage::UsageReport>(),
        ]},
        Route { path: "/metrics", ops: vec![
            op("get", "The farm's metrics for Prometheus", "slots per pool, tasks by status, dispatch and submit-to-start histograms, finished and failed by pool, stalls, requeues, store commits, engines by state", |r| r.get(numbers::metrics))
                .media(numbers::PROMETHEUS_TEXT),
        ]},
        Route { path: "/api/log-rules", ops: vec![op("get", "Renderers' error and warning line patterns", "JavaScript regular expressions by program", |r| r.get(events::log_rules))] },
        Route { path: "/api/openapi.json", ops: vec![op("get", "This document", "OpenAPI 3.0", |r| r.get(openapi))] },
    ]
}

/// `POST /api/engines/{id}/{action}` answers an engine's view, or for
/// `accept` what was accepted.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
enum EngineViewOrAccepted {
    View(Box<EngineView>),
    Accepted(EngineAccepted),
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
                    |r| r.post(session::sign_in),
                )
                .takes::<session::SignIn>("{\"token\": \"…\"}")
                .gives::<WhoAmI>(),
                op(
                    "delete",
                    "Sign out of the web monitor",
                    "nothing; clears the cookies",
                    |r| r.delete(session::sign_out),
                )
                .status(204),
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

/// The OpenAPI 3 document of [`guarded`] and [`open`]: paths from the
/// table, schemas from the Rust types the handlers take and answer.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let error = schema_of::<ApiError>(&mut generator);
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
                let mut answer = json!({"description": op.answer});
                if op.status != 204 {
                    let schema = match op.answer_schema {
                        Some(of) => of(&mut generator).to_value(),
                        None if op.media == JSON => json!({"type": "object"}),
                        None => json!({"type": "string"}),
                    };
                    answer["content"] = json!({op.media: {"schema": schema}});
                }
                let mut o = json!({
                    "summary": op.summary,
                    "operationId": format!("{}{}", op.method, route.path.replace(['/', '{', '}', '.', '-'], "_")),
                    "parameters": parameters,
                    "responses": {
                        op.status.to_string(): answer,
                        "4XX": {"description": "what was wrong and what to do", "content": {JSON: {"schema": error}}},
                        "5XX": {"description": "the master could not do it now (shutting down, or its store failed)", "content": {JSON: {"schema": error}}},
                    },
                });
                if let Some((what, of)) = op.body {
                    o["requestBody"] = json!({"description": what, "content": {JSON: {"schema": of(&mut generator)}}});
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
            "schemas": generator.take_definitions(true),
        },
        "security": [{"token": []}, {"session": []}],
    })
}
