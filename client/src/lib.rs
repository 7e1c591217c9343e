//! The DrQueue client library: the one HTTP client the `drqueue` CLI and the
//! Python module share. Blocking calls, typed answers, errors that say what
//! to do. [`local`] runs a graph on this machine with the farm's own
//! scheduler (`drqueue run-local`).

pub mod cas;
pub mod deploy;
pub mod feed;
pub mod local;
pub mod locate;
pub mod scan;
mod transport;

use transport::{percent_encode, tls_with_ca};

use drqueue_common::listing::{next_link, JobFilter, JobSummary};
use drqueue_common::model::{
    EngineAccepted, EngineView, JobId, JobSpec, JobStatus, JobView, JoinTokenView, LimitView,
    PoolView, TaskStatus, TaskView,
};
use drqueue_common::users::{AuditEntry, AuditQuery, NewToken, NewUser, Role, UserView, WhoAmI};
use std::time::{Duration, Instant};

pub const DEFAULT_URL: &str = "http://127.0.0.1:5580";

/// The largest answer read: a page of a listing is far below it.
const MAX_BODY: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the master at {url}: {reason}. Is drqueue-master running there? Set --url or DRQUEUE_URL")]
    Connect { url: String, reason: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the master failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("unexpected answer from the master: {0}")]
    Protocol(String),
    #[error("timed out after {0:?} waiting for the job")]
    Timeout(Duration),
    /// The client itself cannot be used as configured (a CA file).
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One chunk of a task attempt's log.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub data: Vec<u8>,
    pub attempt: u32,
    pub task_status: String,
    /// The attempt is still running: more may come.
    pub live: bool,
}

#[derive(Clone)]
pub struct Client {
    location: std::sync::Arc<locate::Location>,
    token: Option<String>,
    agent: ureq::Agent,
    /// `DRQUEUE_CA_FILE` could not be used: every request fails with this.
    tls_error: Option<String>,
}

impl Client {
    /// A client for `url` (default: `DRQUEUE_URL`, the config file, a
    /// master on loopback, DNS SRV, mDNS; see [`locate`]),
    /// sending `token` (default `DRQUEUE_TOKEN`) as a bearer token.
    pub fn new(url: Option<&str>, token: Option<&str>) -> Client {
        Client::with_ca_file(url, token, None)
    }

    /// As [`Client::new`], trusting only the CA certificates in `ca_file`
    /// (PEM) for an `https://` master; default `DRQUEUE_CA_FILE`, then the
    /// usual public roots. A CA file that cannot be used fails every
    /// request: never "any certificate".
    pub fn with_ca_file(url: Option<&str>, token: Option<&str>, ca_file: Option<&str>) -> Client {
        let token = token.map(String::from).or_else(|| {
            std::env::var("DRQUEUE_TOKEN")
                .ok()
                .filter(|s| !s.is_empty())
        });
        let ca_file = ca_file.map(String::from).or_else(|| {
            std::env::var("DRQUEUE_CA_FILE")
                .ok()
                .filter(|s| !s.is_empty())
        });
        let (tls, tls_error) = match ca_file.as_deref().map(tls_with_ca) {
            None => (ureq::tls::TlsConfig::default(), None),
            Some(Ok(tls)) => (tls, None),
            // Refuse every request rather than fall back to other roots.
            Some(Err(e)) => (ureq::tls::TlsConfig::default(), Some(e)),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .build()
            .new_agent();
        Client {
            location: std::sync::Arc::new(locate::Location::new(url.map(String::from), None)),
            token,
            agent,
            tls_error,
        }
    }

    /// Looks the master up by DNS SRV `_drqueue._tcp.DOMAIN` when no
    /// address is given (`--domain`); call before the first request.
    pub fn with_domain(mut self, domain: Option<String>) -> Client {
        if domain.is_some() {
            let flag = self.location.flag();
            self.location = std::sync::Arc::new(locate::Location::new(flag, domain));
        }
        self
    }

    /// The master's API, found on first use (see [`locate`]).
    pub fn url(&self) -> &str {
        &self.location.get().url
    }

    /// Whether the master answers (`/api/health`, no token needed).
    pub fn health(&self) -> Result<serde_json::Value> {
        self.get("/api/health", &[])
    }

    /// How the master was found, and what was tried on the way.
    pub fn located(&self) -> &locate::Located {
        self.location.get()
    }

    pub fn submit(&self, spec: &JobSpec) -> Result<JobView> {
        self.submit_opts(spec, false)
    }

    /// Submits a job; with `require_runnable` the master refuses it (409)
    /// when no engine could run it now, instead of queueing it.
    pub fn submit_opts(&self, spec: &JobSpec, require_runnable: bool) -> Result<JobView> {
        self.post(&submit_path("/api/jobs", require_runnable), Some(spec))
    }

    /// Submits a graph of jobs in one request: all are created, or none.
    /// The jobs come back dependencies first.
    pub fn submit_graph(&self, graph: &drqueue_common::graph::Graph) -> Result<Vec<JobView>> {
        self.submit_graph_opts(graph, false)
    }

    /// [`Client::submit_graph`], with [`Client::submit_opts`]' check.
    pub fn submit_graph_opts(
        &self,
        graph: &drqueue_common::graph::Graph,
        require_runnable: bool,
    ) -> Result<Vec<JobView>> {
        self.post(&submit_path("/api/graphs", require_runnable), Some(graph))
    }

    /// Every job in `status` (all when None), newest first.
    pub fn jobs(&self, status: Option<JobStatus>) -> Result<Vec<JobSummary>> {
        self.jobs_where(&JobFilter {
            status,
            ..JobFilter::default()
        })
    }

    /// Every job the filter matches, following the master's pages.
    pub fn jobs_where(&self, filter: &JobFilter) -> Result<Vec<JobSummary>> {
        self.get_all("/api/jobs", &filter.query())
    }

    /// The first `limit` jobs the filter matches, and whether more remain.
    pub fn jobs_first(&self, filter: &JobFilter, limit: usize) -> Result<(Vec<JobSummary>, bool)> {
        let mut query = filter.query();
        query.push(("limit", limit.to_string()));
        let resp = self.send("GET", "/api/jobs", &query, None)?;
        let more = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .is_some();
        Ok((self.json(resp)?, more))
    }

    /// One task of a job, by index (one page of one row).
    pub fn task(&self, id: JobId, index: u32) -> Result<TaskView> {
        let mut query = vec![("limit", "1".to_string())];
        if let Some(before) = index.checked_sub(1) {
            query.push(("after", before.to_string()));
        }
        let rows: Vec<TaskView> = self.get(&format!("/api/jobs/{id}/tasks"), &query)?;
        rows.into_iter().find(|t| t.index == index).ok_or_else(|| {
            ClientError::NotFound(format!(
                "no task {index} in job {id}: list them with `drqueue tasks {id}`"
            ))
        })
    }

    pub fn job(&self, id: JobId) -> Result<JobView> {
        self.get(&format!("/api/jobs/{id}"), &[])
    }

    pub fn tasks(&self, id: JobId, status: Option<TaskStatus>) -> Result<Vec<TaskView>> {
        let q: Vec<(&str, String)> = status
            .map(|s| ("status", s.to_string()))
            .into_iter()
            .collect();
        self.get_all(&format!("/api/jobs/{id}/tasks"), &q)
    }

    /// The log of a task's attempt (the latest when `attempt` is None) from `offset`.
    /// One window of a task attempt's log (the latest attempt when
    /// `attempt` is None) from `offset`; the master sends at most 1 MiB.
    pub fn log(&self, id: JobId, task: u32, attempt: Option<u32>, offset: u64) -> Result<LogChunk> {
        self.log_window(id, task, attempt, offset, 0)
    }

    /// The whole log of an attempt, window after window.
    pub fn log_all(&self, id: JobId, task: u32, attempt: Option<u32>) -> Result<Vec<u8>> {
        let first = self.log(id, task, attempt, 0)?;
        let attempt = Some(first.attempt);
        let mut all = first.data;
        loop {
            let next = self.log(id, task, attempt, all.len() as u64)?;
            if next.data.is_empty() {
                return Ok(all);
            }
            all.extend_from_slice(&next.data);
        }
    }

    /// As [`Client::log`]; when nothing new has been written yet and the
    /// attempt is live, the master holds the answer up to `wait_secs` until
    /// more arrives (a long poll: followers do not ask in a loop).
    pub fn log_window(
        &self,
        id: JobId,
        task: u32,
        attempt: Option<u32>,
        offset: u64,
        wait_secs: u64,
    ) -> Result<LogChunk> {
        let mut query = vec![("offset", offset.to_string())];
        if let Some(a) = attempt {
            query.push(("attempt", a.to_string()));
        }
        if wait_secs > 0 {
            query.push(("wait", wait_secs.to_string()));
        }
        let path = format!("/api/jobs/{id}/tasks/{task}/log");
        let resp = self.send("GET", &path, &query, None)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let attempt = header("x-drqueue-attempt").parse().unwrap_or(0);
        let task_status = header("x-drqueue-task-status");
        let live = header("x-drqueue-live") == "1";
        let data = resp
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(LogChunk {
            data,
            attempt,
            task_status,
            live,
        })
    }

    /// A frame's thumbnail (a small PNG), or the job's newest.
    pub fn thumbnail(&self, id: JobId, frame: Option<i64>) -> Result<Vec<u8>> {
        let path = match frame {
            Some(f) => format!("/api/jobs/{id}/frames/{f}/thumbnail"),
            None => format!("/api/jobs/{id}/thumbnail"),
        };
        self.check(self.send("GET", &path, &[], None)?)?
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// pause, resume, cancel or retry.
    pub fn control(&self, id: JobId, action: &str) -> Result<JobView> {
        self.post(&format!("/api/jobs/{id}/{action}"), None::<&()>)
    }

    /// `cancel` or `retry` of some tasks only: `tasks` in frame-set syntax
    /// (`3,7-12`), task indices from 0.
    pub fn control_tasks(&self, id: JobId, action: &str, tasks: &str) -> Result<JobView> {
        self.post(
            &format!("/api/jobs/{id}/{action}"),
            Some(&serde_json::json!({ "tasks": tasks })),
        )
    }

    /// A job's new priority (0–1000, higher first).
    pub fn set_priority(&self, id: JobId, priority: u32) -> Result<JobView> {
        self.write(
            "PATCH",
            &format!("/api/jobs/{id}"),
            &[],
            Some(&serde_json::json!({ "priority": priority })),
        )
    }

    pub fn delete(&self, id: JobId, force: bool) -> Result<()> {
        let query: Vec<(&str, String)> = if force {
            vec![("force", "true".into())]
        } else {
            Vec::new()
        };
        self.send("DELETE", &format!("/api/jobs/{id}"), &query, None)
            .map(|_| ())
    }

    /// Every attempt of a task, oldest first, with what each cost and
    /// whether it counted against `max_attempts`.
    pub fn attempts(
        &self,
        job: JobId,
        task: u32,
    ) -> Result<Vec<drqueue_scheduler::records::AttemptRecord>> {
        self.get(&format!("/api/jobs/{job}/tasks/{task}/attempts"), &[])
    }

    pub fn engines(&self) -> Result<Vec<EngineView>> {
        self.get("/api/engines", &[])
    }

    pub fn engine(&self, id: &str) -> Result<EngineView> {
        self.get(&format!("/api/engines/{id}"), &[])
    }

    /// disable or enable.
    pub fn engine_control(&self, id: &str, action: &str) -> Result<EngineView> {
        self.post(&format!("/api/engines/{id}/{action}"), None::<&()>)
    }

    /// Enrolls a pending engine (`drqueue engine accept NAME`).
    pub fn engine_accept(&self, name: &str) -> Result<EngineAccepted> {
        self.post(&format!("/api/engines/{name}/accept"), None::<&()>)
    }

    /// A join token good for `uses` engines for `expires_secs` (0: until
    /// used up).
    pub fn join_token(&self, uses: u32, expires_secs: u64) -> Result<JoinTokenView> {
        self.post(
            "/api/join-tokens",
            Some(&serde_json::json!({ "uses": uses, "expires_secs": expires_secs })),
        )
    }

    pub fn pools(&self) -> Result<Vec<PoolView>> {
        self.get("/api/pools", &[])
    }

    pub fn limits(&self) -> Result<Vec<LimitView>> {
        self.get("/api/limits", &[])
    }

    /// Sets a limit's token count (creating it).
    pub fn set_limit(&self, name: &str, count: u32) -> Result<LimitView> {
        let body = serde_json::json!({ "count": count });
        self.write("PUT", &format!("/api/limits/{name}"), &[], Some(&body))
    }

    /// One limit, with its tokens in use.
    pub fn limit(&self, name: &str) -> Result<LimitView> {
        self.get(&format!("/api/limits/{}", percent_encode(name)), &[])
    }

    /// Removes a limit: jobs naming it are no longer held back by it.
    pub fn delete_limit(&self, name: &str) -> Result<()> {
        let path = format!("/api/limits/{}", percent_encode(name));
        self.send("DELETE", &path, &[], None).map(|_| ())
    }

    /// Who the master takes this client for.
    pub fn whoami(&self) -> Result<WhoAmI> {
        self.get("/api/whoami", &[])
    }

    pub fn users(&self) -> Result<Vec<UserView>> {
        self.get("/api/users", &[])
    }

    /// Adds a user; the answer holds their first token.
    pub fn add_user(&self, name: &str, role: Role) -> Result<NewToken> {
        let body = NewUser {
            name: name.into(),
            role,
        };
        self.post("/api/users", Some(&body))
    }

    pub fn remove_user(&self, name: &str) -> Result<()> {
        let path = format!("/api/users/{}", percent_encode(name));
        self.send("DELETE", &path, &[], None).map(|_| ())
    }

    /// Another token for `user`.
    pub fn create_token(&self, user: &str) -> Result<NewToken> {
        let path = format!("/api/users/{}/tokens", percent_encode(user));
        self.post(&path, None::<&()>)
    }

    pub fn revoke_token(&self, id: &str) -> Result<()> {
        let path = format!("/api/tokens/{}", percent_encode(id));
        self.send("DELETE", &path, &[], None).map(|_| ())
    }

    /// The audit trail, newest first.
    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(j) = q.job {
            query.push(("job", j.to_string()));
        }
        if let Some(u) = &q.user {
            query.push(("user", u.clone()));
        }
        if let Some(t) = q.since_ms {
            query.push(("since_ms", t.to_string()));
        }
        if let Some(n) = q.limit {
            query.push(("limit", n.to_string()));
        }
        self.get("/api/audit", &query)
    }

    /// CPU and wall time, tasks and failures, grouped (`GET /api/usage`).
    pub fn usage(
        &self,
        q: &drqueue_common::usage::UsageQuery,
    ) -> Result<drqueue_common::usage::UsageReport> {
        let mut query: Vec<(&str, String)> = vec![("by", q.by.as_str().to_string())];
        if let Some(t) = q.since_ms {
            query.push(("since_ms", t.to_string()));
        }
        self.get("/api/usage", &query)
    }

    /// Waits until the job ends (or `timeout` passes), calling `progress`
    /// with each fresh view: pushed by the live feed, or polled when the
    /// feed is not to be had (an older master) or goes silent.
    pub fn wait(
        &self,
        id: JobId,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&JobView),
    ) -> Result<JobView> {
        let start = Instant::now();
        match self.wait_by_feed(id, timeout, start, &mut progress) {
            Ok(Some(view)) => return Ok(view),
            Ok(None) => {}
            // A master without the feed: poll it.
            Err(e) if feed::unsupported(&e) && self.job(id).is_ok() => {}
            Err(e) => return Err(e),
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let view = self.job(id)?;
            progress(&view);
            if view.status.is_terminal() {
                return Ok(view);
            }
            if let Some(t) = timeout {
                if start.elapsed() >= t {
                    return Err(ClientError::Timeout(t));
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

fn submit_path(base: &str, require_runnable: bool) -> String {
    if require_runnable {
        format!("{base}?require_runnable=true")
    } else {
        base.to_string()
    }
}
