//! What flows into the core and out of it: the leaf every other master
//! module depends on, so none of them depends on another's internals.
//!
//! - [`Event`]: everything the core reacts to, on one channel: engine
//!   messages (from the router), [`Request`]s (from the HTTP API), the
//!   mailer's reports, and shutdown.
//! - [`Request`]: one variant per API call, each with its own reply channel,
//!   so a reader can follow a call from its handler to the scheduler.
//! - [`Outgoing`]: a message for the engine behind a ZeroMQ identity.

use crate::scheduler::RequestError;
use crate::store::TaskRecord;
use bytes::Bytes;
use drqueue_common::graph::Graph;
use drqueue_common::listing::{JobFilter, JobSummary};
use drqueue_common::model::{
    EngineView, JobId, JobSpec, JobView, LimitView, PoolView, TaskKey, TaskStatus, TaskView,
};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::protocol::{FromEngine, ToEngine};
use tokio::sync::oneshot;

/// A message for the engine behind a ZeroMQ identity.
pub type Outgoing = (Bytes, ToEngine);

/// Everything the core reacts to.
pub enum Event {
    /// A message from an admitted engine's session, decrypted and decoded
    /// (and a Register only for the engine the session proved).
    FromEngine {
        identity: Bytes,
        msg: Box<FromEngine>,
    },
    /// A call from the HTTP API (or an in-process user of the master).
    Request(Request),
    /// How sending a job's notification went.
    MailReport(MailReport),
    /// Stop: flush everything to the store, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// The mailer's answer for one notification.
#[derive(Debug)]
pub struct MailReport {
    pub job: JobId,
    pub result: Result<(), String>,
    /// Not worth retrying (a bad address, no SMTP server configured).
    pub permanent: bool,
}

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// What a user asks a job to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Pause,
    Resume,
    Cancel,
    Retry,
}

impl std::str::FromStr for JobAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pause" => JobAction::Pause,
            "resume" => JobAction::Resume,
            "cancel" => JobAction::Cancel,
            "retry" => JobAction::Retry,
            other => {
                return Err(format!(
                    "unknown action {other:?}; use pause, resume, cancel or retry"
                ))
            }
        })
    }
}

/// What a user asks an engine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineAction {
    /// No new work; what it runs finishes.
    Disable,
    /// Disable seen from the user's side: `drqueue engine drain` then waits
    /// for the running tasks.
    Drain,
    Enable,
    /// Cut off for good: refused from now on; what it runs goes elsewhere.
    Revoke,
}

impl std::str::FromStr for EngineAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => EngineAction::Disable,
            "drain" => EngineAction::Drain,
            "enable" => EngineAction::Enable,
            "revoke" => EngineAction::Revoke,
            other => {
                return Err(format!(
                    "unknown action {other:?}; use accept, disable, drain, enable or revoke"
                ))
            }
        })
    }
}

/// The task and attempt a log read found.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub task: TaskView,
    pub attempt: u32,
}

impl LogTarget {
    /// The attempt still runs (or is about to): its log may grow.
    pub fn is_live(&self) -> bool {
        let t = &self.task;
        self.attempt == t.attempts && !t.status.is_terminal() && t.status != TaskStatus::Ready
    }
}

/// One variant per API call, each with its own reply.
pub enum Request {
    /// One page of job summaries, and whether more remain.
    ListJobs {
        filter: JobFilter,
        after: Option<JobId>,
        limit: usize,
        reply: Reply<(Vec<JobSummary>, bool)>,
    },
    /// Answered once the new job is committed.
    Submit {
        spec: Box<JobSpec>,
        /// Refuse, instead of queueing, when no engine could run it now.
        require_runnable: bool,
        reply: Reply<Result<Vec<JobView>, RequestError>>,
    },
    /// A graph of jobs, all or nothing; answered once committed.
    SubmitGraph {
        graph: Graph,
        require_runnable: bool,
        reply: Reply<Result<Vec<JobView>, RequestError>>,
    },
    ShowJob {
        id: JobId,
        reply: Reply<Result<JobView, RequestError>>,
    },
    /// One page of a job's tasks, and whether more remain.
    ListTasks {
        id: JobId,
        status: Option<TaskStatus>,
        after: Option<u32>,
        limit: usize,
        reply: Reply<Result<(Vec<TaskView>, bool), RequestError>>,
    },
    /// Which attempt a log read is for (None: the latest); the bytes come
    /// from the store's reader.
    TaskLog {
        task: TaskKey,
        attempt: Option<u32>,
        reply: Reply<Result<LogTarget, RequestError>>,
    },
    /// Answered once more of this attempt's log is committed, or it ended
    /// (at once if it is not live): a follower's long poll.
    WatchLog {
        attempt: AttemptKey,
        reply: Reply<()>,
    },
    /// The task as kept, for its attempt history (read from the store's
    /// reader).
    TaskRecord {
        task: TaskKey,
        reply: Reply<Result<TaskRecord, RequestError>>,
    },
    ControlJob {
        id: JobId,
        action: JobAction,
        /// Only these tasks (cancel and retry); the whole job when None.
        tasks: Option<Vec<u32>>,
        /// Refused unless the job is this user's (an artist's request).
        only_owner: Option<String>,
        reply: Reply<Result<JobView, RequestError>>,
    },
    /// `PATCH /api/jobs/{id}`: a new priority.
    SetPriority {
        id: JobId,
        priority: u32,
        only_owner: Option<String>,
        reply: Reply<Result<JobView, RequestError>>,
    },
    DeleteJob {
        id: JobId,
        force: bool,
        only_owner: Option<String>,
        reply: Reply<Result<(), RequestError>>,
    },
    ListEngines {
        reply: Reply<Vec<EngineView>>,
    },
    /// Farm totals: slots, engines by state, jobs by status, the chart.
    Farm {
        reply: Reply<serde_json::Value>,
    },
    /// `GET /metrics`: the text of a scrape.
    Metrics {
        reply: Reply<String>,
    },
    /// By id or name.
    ShowEngine {
        engine: String,
        reply: Reply<Result<EngineView, RequestError>>,
    },
    ControlEngine {
        engine: String,
        action: EngineAction,
        reply: Reply<Result<EngineView, RequestError>>,
    },
    ListPools {
        reply: Reply<Vec<PoolView>>,
    },
    /// The manifests of every job's uploaded folder, or of one owner's
    /// jobs (the content store's garbage collection and quotas).
    InputManifests {
        owner: Option<String>,
        reply: Reply<Vec<drqueue_common::cas::BlobHash>>,
    },
    ListLimits {
        reply: Reply<Vec<LimitView>>,
    },
    SetLimit {
        name: String,
        count: u32,
        reply: Reply<Result<LimitView, RequestError>>,
    },
    DeleteLimit {
        name: String,
        reply: Reply<Result<(), RequestError>>,
    },
    /// Answered once everything decided so far is committed.
    Flush {
        reply: Reply<()>,
    },
}
