//! What the API returns (`show --json`, `tasks --json`, `engines --json`,
//! pools and limits): the views of the model that the CLI, the Python
//! module and the web monitor print. Field names are fixed by SPEC.md.
//! Re-exported by [`crate::model`], so both paths name the same types.

use crate::model::{
    Blocked, Counts, Dependency, EngineId, EngineState, JobId, JobStatus, Notification,
    Requirements, TaskStatus,
};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job as the API shows it (`show --json`, `jobs --json`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    pub owner: String,
    pub status: JobStatus,
    pub priority: u32,
    pub pool: String,
    pub counts: Counts,
    pub tasks_total: u64,
    /// Human-readable reasons why ready tasks are not running; empty when
    /// nothing blocks. Times in them are UTC: viewers that know their time
    /// zone render `blocked_by` instead.
    pub blocked: Vec<String>,
    /// The same reasons, typed.
    #[serde(default)]
    pub blocked_by: Vec<Blocked>,
    pub command: Vec<String>,
    pub frames: String,
    pub blocksize: u32,
    /// Set with `--blocksize auto`: the minutes each task aims at, cut to
    /// each engine's speed (`blocksize` is then unused).
    #[serde(default)]
    pub target_task_minutes: Option<u32>,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub max_engines: u32,
    pub requirements: Requirements,
    pub limits: Vec<String>,
    pub after: Vec<Dependency>,
    /// The manifest of its uploaded folder (`submit --upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<crate::cas::BlobHash>,
    /// What its tasks upload back (`--collect` globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collect: Vec<String>,
    /// `--tiles`: each frame's tiles, then one assemble task per frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<crate::tiles::Tiles>,
    /// Jobs that wait on this one (their `after` names it), oldest first.
    #[serde(default)]
    pub dependents: Vec<JobId>,
    /// Engines that failed this job too often and get no more of its tasks.
    #[serde(default)]
    pub blacklisted: Vec<EngineId>,
    /// Failure signatures seen on two or more engines: the job's own fault,
    /// so they count against no engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_faults: Vec<String>,
    /// Why the job ended as it did, when that is not obvious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The email notification, for jobs submitted with `--notify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    pub submitted_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// Percent done: done tasks plus running tasks' reported fractions
    /// (null when nothing has run).
    #[serde(default)]
    pub progress: Option<f32>,
    /// When it may end, while it runs (null when unknown).
    #[serde(default)]
    pub eta: Option<Eta>,
}

/// A job's estimated time to its end, as a range of seconds from now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Eta {
    pub low_s: u64,
    pub high_s: u64,
    /// How it was estimated: `frame_times` (the job's own finished tasks'
    /// durations: remaining work × quartile task time ÷ the slots it can
    /// use) or `task_progress` (running tasks' elapsed × (1 − p) / p).
    pub method: String,
}

/// A task as the API shows it (`tasks --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskView {
    pub index: u32,
    pub first: i64,
    pub last: i64,
    pub step: i64,
    pub status: TaskStatus,
    /// Attempts started, counting those that did not count against
    /// `max_attempts` (a cancel, a lost engine).
    pub attempts: u32,
    /// Attempts that failed and counted against `max_attempts`.
    #[serde(default)]
    pub failures: u32,
    /// The engine of the latest attempt.
    pub engine: Option<EngineId>,
    /// How far the running attempt has got, 0–100, as its renderer
    /// reported (null when unknown or not running).
    #[serde(default)]
    pub progress: Option<f32>,
    /// Running far longer than the job's finished tasks took (past
    /// max(3 × median, median + 5 × MAD), once 5 are done).
    #[serde(default)]
    pub outlier: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

impl TaskView {
    /// How its latest attempt ended, in words: for `show` and mails.
    pub fn exit_description(&self) -> String {
        self.exit_code
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| "killed or could not run".into())
    }
}

/// An engine as the API shows it (`engines --json`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EngineView {
    pub id: EngineId,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cores: u32,
    pub ram_mb: u64,
    pub free_ram_mb: u64,
    pub load: f32,
    pub pools: Vec<String>,
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// How the engine keeps a task's processes from outliving it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub containment: String,
    pub state: EngineState,
    /// Why the engine is sick (it failed this many tasks in a row); it gets
    /// no work until enabled or until it passes its check task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sick: Option<String>,
    /// Failed attempts since its last success.
    #[serde(default)]
    pub failures_in_row: u32,
    pub slots: u32,
    pub hwm: u32,
    /// Tasks it holds now (assigned or running).
    pub running: u32,
    /// The most tasks the master ever had outstanding on it at once.
    pub peak_outstanding: u32,
    /// The most tasks the engine itself reports having held at once.
    pub peak_held: u32,
    pub last_heartbeat_ms: Millis,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// How fast it renders next to the other engines on the same jobs: 1.0
    /// is typical, 2.0 twice as fast (null until it shares a job with
    /// another engine).
    #[serde(default)]
    pub speed: Option<f32>,
    /// A pending engine's key fingerprint, to compare before
    /// `drqueue engine accept`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// The attempts it holds now, in task order.
    #[serde(default)]
    pub tasks: Vec<HeldAttempt>,
}

/// One attempt an engine holds: sent to it, running there, or being stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeldAttempt {
    pub job: JobId,
    pub task: u32,
    pub attempt: u32,
    /// "assigned" (not started yet), "running" or "cancelling".
    pub state: String,
}

impl EngineView {
    /// An engine that proved a key nobody has accepted yet: all it has told
    /// the master is its id, its name and its key.
    pub fn pending(
        id: EngineId,
        name: String,
        fingerprint: String,
        last_seen_ms: Millis,
    ) -> EngineView {
        EngineView {
            id,
            hostname: name.clone(),
            name,
            os: String::new(),
            arch: String::new(),
            cores: 0,
            ram_mb: 0,
            free_ram_mb: 0,
            load: 0.0,
            pools: Vec::new(),
            capabilities: Vec::new(),
            versions: BTreeMap::new(),
            containment: String::new(),
            state: EngineState::Pending,
            sick: None,
            failures_in_row: 0,
            slots: 0,
            hwm: 0,
            running: 0,
            peak_outstanding: 0,
            peak_held: 0,
            last_heartbeat_ms: last_seen_ms,
            tasks_done: 0,
            tasks_failed: 0,
            speed: None,
            fingerprint,
            tasks: Vec::new(),
        }
    }
}

/// The answer to `drqueue engine accept NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EngineAccepted {
    pub accepted: EngineId,
    pub name: String,
    pub fingerprint: String,
}

/// A join token from `drqueue engine join-token`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinTokenView {
    pub token: String,
    pub uses: u32,
    /// 0: it never expires (it is good until used up).
    pub expires_ms: Millis,
    /// The key the token tells engines to trust.
    pub master_fingerprint: String,
    /// The master's engine endpoint as bound (`tcp://0.0.0.0:5555` when it
    /// listens on every interface).
    #[serde(default)]
    pub engines: String,
}

/// A pool as `pools --json` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolView {
    pub name: String,
    pub engines: u64,
}

/// A limit as `limits --json` shows it: a named count of tokens (licences,
/// say); each running task of a job that names it holds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LimitView {
    pub name: String,
    pub count: u32,
    pub in_use: u32,
}

/// The body of an error answer from the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    pub error: String,
}
