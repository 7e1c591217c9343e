//! The DrQueue client library: the one HTTP client the `drqueue` CLI and the
//! Python module share. Blocking calls, typed answers, errors that say what
//! to do. [`local`] runs a graph on this machine with the farm's own
//! scheduler (`drqueue run-local`).

pub mod local;

use drqueue_common::model::{
    ApiError, EngineAccepted, EngineView, JobId, JobSpec, JobStatus, JobView, JoinTokenView,
    LimitView, PoolView, TaskStatus, TaskView,
};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

pub const DEFAULT_URL: &str = "http://127.0.0.1:5580";

/// Listings can be large (a job of a million tasks): allow big answers.
const MAX_BODY: u64 = 1 << 30;

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
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `url` (default `DRQUEUE_URL`, then http://127.0.0.1:5580),
    /// sending `token` (default `DRQUEUE_TOKEN`) as a bearer token.
    pub fn new(url: Option<&str>, token: Option<&str>) -> Client {
        let base = url
            .map(String::from)
            .or_else(|| std::env::var("DRQUEUE_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let token = token.map(String::from).or_else(|| {
            std::env::var("DRQUEUE_TOKEN")
                .ok()
                .filter(|s| !s.is_empty())
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn connect_error(&self, e: ureq::Error) -> ClientError {
        ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn check(
        &self,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let body = resp.into_body().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        Err(match status {
            401 | 403 => ClientError::Unauthorized(message),
            404 => ClientError::NotFound(message),
            400..=499 => ClientError::BadRequest(message),
            _ => ClientError::Server { status, message },
        })
    }

    fn json<T: DeserializeOwned>(&self, resp: ureq::http::Response<ureq::Body>) -> Result<T> {
        self.check(resp)?
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let mut req = self.agent.get(self.url_for(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let resp = req.call().map_err(|e| self.connect_error(e))?;
        self.json(resp)
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let mut req = self.agent.post(self.url_for(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        }
        .map_err(|e| self.connect_error(e))?;
        self.json(resp)
    }

    pub fn submit(&self, spec: &JobSpec) -> Result<JobView> {
        self.post("/api/jobs", Some(spec))
    }

    /// Submits a graph of jobs in one request: all are created, or none.
    /// The jobs come back dependencies first.
    pub fn submit_graph(&self, graph: &drqueue_common::graph::Graph) -> Result<Vec<JobView>> {
        self.post("/api/graphs", Some(graph))
    }

    pub fn jobs(&self, status: Option<JobStatus>) -> Result<Vec<JobView>> {
        let q: Vec<(&str, String)> = status
            .map(|s| ("status", s.to_string()))
            .into_iter()
            .collect();
        self.get("/api/jobs", &q)
    }

    pub fn job(&self, id: JobId) -> Result<JobView> {
        self.get(&format!("/api/jobs/{id}"), &[])
    }

    pub fn tasks(&self, id: JobId, status: Option<TaskStatus>) -> Result<Vec<TaskView>> {
        let q: Vec<(&str, String)> = status
            .map(|s| ("status", s.to_string()))
            .into_iter()
            .collect();
        self.get(&format!("/api/jobs/{id}/tasks"), &q)
    }

    /// The log of a task's attempt (the latest when `attempt` is None) from `offset`.
    pub fn log(&self, id: JobId, task: u32, attempt: Option<u32>, offset: u64) -> Result<LogChunk> {
        let mut req = self
            .agent
            .get(self.url_for(&format!("/api/jobs/{id}/tasks/{task}/log")))
            .query("offset", offset.to_string());
        if let Some(a) = attempt {
            req = req.query("attempt", a.to_string());
        }
        let resp = self.check(req.call().map_err(|e| self.connect_error(e))?)?;
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

    /// pause, resume, cancel or retry.
    pub fn control(&self, id: JobId, action: &str) -> Result<JobView> {
        self.post(&format!("/api/jobs/{id}/{action}"), None::<&()>)
    }

    pub fn delete(&self, id: JobId, force: bool) -> Result<()> {
        let mut req = self.agent.delete(self.url_for(&format!("/api/jobs/{id}")));
        if force {
            req = req.query("force", "true");
        }
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| self.connect_error(e))?;
        self.check(resp).map(|_| ())
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
        let mut req = self.agent.put(self.url_for(&format!("/api/limits/{name}")));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req
            .send_json(serde_json::json!({ "count": count }))
            .map_err(|e| self.connect_error(e))?;
        self.json(resp)
    }

    /// Polls until the job ends (or `timeout` passes), calling `progress`
    /// with each fresh view.
    pub fn wait(
        &self,
        id: JobId,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&JobView),
    ) -> Result<JobView> {
        let start = Instant::now();
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
