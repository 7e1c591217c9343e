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
use crate::store::{AttemptRecord, StoreResult};
use bytes::Bytes;
use drqueue_common::graph::Graph;
use drqueue_common::model::{
    EngineView, JobId, JobSpec, JobStatus, JobView, LimitView, PoolView, TaskKey, TaskStatus,
    TaskView,
};
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

/// Which attempt's log a reader wants, and where the store's answer goes.
pub struct LogRead {
    pub task: TaskKey,
    /// None: the latest attempt.
    pub attempt: Option<u32>,
    pub offset: u64,
    /// The log bytes, sent by the store thread once the task is found.
    pub bytes: Reply<StoreResult<Vec<u8>>>,
}

/// The task and attempt a log read found.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub task: TaskView,
    pub attempt: u32,
}

/// One variant per API call, each with its own reply.
pub enum Request {
    ListJobs {
        status: Option<JobStatus>,
        reply: Reply<Vec<JobView>>,
    },
    /// Answered once the new job is committed.
    Submit {
        spec: Box<JobSpec>,
        reply: Reply<Result<Vec<JobView>, RequestError>>,
    },
    /// A graph of jobs, all or nothing; answered once committed.
    SubmitGraph {
        graph: Graph,
        reply: Reply<Result<Vec<JobView>, RequestError>>,
    },
    ShowJob {
        id: JobId,
        reply: Reply<Result<JobView, RequestError>>,
    },
    ListTasks {
        id: JobId,
        status: Option<TaskStatus>,
        reply: Reply<Result<Vec<TaskView>, RequestError>>,
    },
    TaskLog {
        read: LogRead,
        reply: Reply<Result<LogTarget, RequestError>>,
    },
    /// Every attempt of a task, the completing one included.
    TaskAttempts {
        task: TaskKey,
        /// Whether the task exists; answered at once.
        reply: Reply<Result<(), RequestError>>,
        /// The history, answered by the store thread.
        attempts: Reply<StoreResult<Vec<AttemptRecord>>>,
    },
    ControlJob {
        id: JobId,
        action: JobAction,
        reply: Reply<Result<JobView, RequestError>>,
    },
    DeleteJob {
        id: JobId,
        force: bool,
        reply: Reply<Result<(), RequestError>>,
    },
    ListEngines {
        reply: Reply<Vec<EngineView>>,
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
    ListLimits {
        reply: Reply<Vec<LimitView>>,
    },
    SetLimit {
        name: String,
        count: u32,
        reply: Reply<Result<LimitView, RequestError>>,
    },
    /// Answered once everything decided so far is committed.
    Flush {
        reply: Reply<()>,
    },
}
