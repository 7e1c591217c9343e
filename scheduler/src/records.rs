//! What the scheduler stores and loads: one record per job, task, engine,
//! attempt, pool and limit, and the [`Batch`] that carries a round's changes.
//! Every store backend writes these; the scheduler knows nothing of how.

use drqueue_common::model::{
    EngineFacts, EngineId, JobId, JobSpec, JobStatus, Notification, TaskKey, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, Outcome};
use drqueue_common::Millis;
use serde::{Deserialize, Serialize};

pub use drqueue_common::usage::UsageRecord;

/// A job as stored: its spec and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub submitted_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// Why the job ended as it did, when that is not obvious (e.g. cancelled
    /// because a dependency failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failed attempts per engine: an engine that failed the job
    /// `blacklist_after` times gets no more of its tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_failures: Vec<EngineFailures>,
    /// The job's email notification and where it stands; written in the
    /// same batch as the job's end, so an ended job never lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Its waiting tasks were let go. For a job whose tasks start alike
    /// (no tiles, no `--blocksize auto`), a task with no stored record is
    /// in its start state: waiting before this, ready after. A new job
    /// therefore writes one record, not one per task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// How often one engine failed one job. A list, not a map: engine ids are
/// not safe as MongoDB field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFailures {
    pub engine: EngineId,
    pub count: u32,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub job: JobId,
    pub index: u32,
    pub first: i64,
    pub last: i64,
    pub step: i64,
    pub status: TaskStatus,
    /// Attempts started so far; also the number of the latest attempt.
    pub attempts: u32,
    /// Attempts that failed (engine loss does not count).
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineId>,
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
    /// For a done task another task waits for (a tile): the files it
    /// wrote, handed to the one waiting ([`crate::task_deps`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<drqueue_common::protocol::OutputFile>,
}

impl TaskRecord {
    /// The task's attempt history from its stored rows: the completing
    /// attempt is kept in the task itself (halving a healthy farm's writes),
    /// so it is added back here.
    pub fn history(&self, mut stored: Vec<AttemptRecord>) -> Vec<AttemptRecord> {
        let recorded = stored.iter().any(|a| a.attempt.attempt == self.attempts);
        if self.status == TaskStatus::Done && !recorded {
            stored.push(AttemptRecord {
                attempt: AttemptKey {
                    task: TaskKey {
                        job: self.job,
                        index: self.index,
                    },
                    attempt: self.attempts,
                },
                engine: self.engine.clone().unwrap_or_default(),
                ended_ms: self.ended_ms.unwrap_or_default(),
                outcome: Outcome {
                    exit_code: self.exit_code,
                    cpu_ms: self.cpu_ms.unwrap_or_default(),
                    peak_rss_kb: self.peak_rss_kb.unwrap_or_default(),
                    wall_ms: self
                        .ended_ms
                        .zip(self.started_ms)
                        .map(|(e, s)| e.saturating_sub(s))
                        .unwrap_or_default(),
                    ..Default::default()
                },
                counted: true,
            });
        }
        stored
    }

    /// The task as the API shows it.
    pub fn view(self) -> drqueue_common::model::TaskView {
        drqueue_common::model::TaskView {
            index: self.index,
            first: self.first,
            last: self.last,
            step: self.step,
            status: self.status,
            attempts: self.attempts,
            failures: self.failures,
            engine: self.engine,
            progress: None,
            outlier: false,
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            exit_code: self.exit_code,
            peak_rss_kb: self.peak_rss_kb,
            cpu_ms: self.cpu_ms,
        }
    }

    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job,
            index: self.index,
        }
    }
}

/// An engine ("slave") as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineRecord {
    pub id: EngineId,
    pub facts: EngineFacts,
    pub slots: u32,
    pub hwm: u32,
    /// Was it online when last written? A restarted master waits for the
    /// engines that were online to come back before it dispatches.
    pub online: bool,
    pub disabled: bool,
    pub last_seen_ms: Millis,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Failed attempts since its last success.
    #[serde(default)]
    pub failures_in_row: u32,
    /// The job of the streak's first failure, and whether another job has
    /// failed since: one bad job is no sign of a sick engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streak_job: Option<JobId>,
    #[serde(default)]
    pub streak_mixed: bool,
    /// Why it is sick, if it is: it gets no work until enabled or until it
    /// passes a check task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sick: Option<String>,
    /// Cut off by `drqueue engine revoke`: refused from then on.
    #[serde(default)]
    pub revoked: bool,
}

/// One finished attempt, kept as history (including results that arrive for
/// attempts the master had already given up on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttemptRecord {
    pub attempt: AttemptKey,
    pub engine: EngineId,
    pub ended_ms: Millis,
    pub outcome: Outcome,
    /// False when the result was for an attempt the master had replaced.
    pub counted: bool,
}

/// A pool and the engines in it (written whenever an engine's pools change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub engines: Vec<EngineId>,
}

/// A limit: a named count of tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub name: String,
    pub count: u32,
}

/// A chunk of an attempt's log at a byte offset. Chunks are idempotent: a
/// chunk that starts before the stored end is trimmed, so an engine may
/// re-send a whole log after a reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub attempt: AttemptKey,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Everything to commit at once.
#[derive(Debug, Default)]
pub struct Batch {
    pub jobs: Vec<JobRecord>,
    /// Tasks to insert or replace.
    pub tasks: Vec<TaskRecord>,
    pub deleted_jobs: Vec<JobId>,
    pub engines: Vec<EngineRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub logs: Vec<LogChunk>,
    pub next_job_id: Option<JobId>,
    /// Every pool with its engines, replacing what is stored.
    pub pools: Option<Vec<PoolRecord>>,
    /// Limits to insert or replace.
    pub limits: Vec<LimitRecord>,
    /// Limits to remove (applied after `limits`).
    pub deleted_limits: Vec<String>,
    /// Frames' thumbnails to insert or replace (the store keeps at most
    /// [`MAX_THUMBNAILS_PER_JOB`] per job, the newest).
    pub thumbnails: Vec<ThumbnailRecord>,
    /// Every ended attempt's cost: kept when its job goes.
    pub usage: Vec<UsageRecord>,
}

/// The most thumbnails a store keeps per job (48 KiB at most each).
pub const MAX_THUMBNAILS_PER_JOB: usize = 1000;

/// A small PNG of one frame of a job, as the engine made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub job: JobId,
    pub frame: i64,
    pub at_ms: Millis,
    pub png: Vec<u8>,
}

impl Batch {
    /// Adds a later batch: its records replace this one's where both have
    /// one, as the store would apply them in order.
    pub fn append(&mut self, later: Batch) {
        join(&mut self.jobs, later.jobs);
        join(&mut self.tasks, later.tasks);
        join(&mut self.deleted_jobs, later.deleted_jobs);
        join(&mut self.engines, later.engines);
        join(&mut self.attempts, later.attempts);
        join(&mut self.logs, later.logs);
        if later.next_job_id.is_some() {
            self.next_job_id = later.next_job_id;
        }
        if later.pools.is_some() {
            self.pools = later.pools;
        }
        // A later batch's word on a limit replaces this one's.
        self.limits
            .retain(|l| !later.deleted_limits.contains(&l.name));
        self.deleted_limits
            .retain(|n| !later.limits.iter().any(|l| &l.name == n));
        join(&mut self.limits, later.limits);
        join(&mut self.deleted_limits, later.deleted_limits);
        join(&mut self.thumbnails, later.thumbnails);
        join(&mut self.usage, later.usage);
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.deleted_jobs.is_empty()
            && self.engines.is_empty()
            && self.attempts.is_empty()
            && self.logs.is_empty()
            && self.next_job_id.is_none()
            && self.pools.is_none()
            && self.limits.is_empty()
            && self.deleted_limits.is_empty()
            && self.thumbnails.is_empty()
            && self.usage.is_empty()
    }

    /// How many records it writes.
    pub fn len(&self) -> usize {
        self.jobs.len()
            + self.tasks.len()
            + self.deleted_jobs.len()
            + self.engines.len()
            + self.attempts.len()
            + self.logs.len()
            + self.usage.len()
    }
}

/// What a master loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub jobs: Vec<JobRecord>,
    pub tasks: Vec<TaskRecord>,
    pub engines: Vec<EngineRecord>,
    pub pools: Vec<PoolRecord>,
    pub limits: Vec<LimitRecord>,
    pub next_job_id: JobId,
}

/// `into` followed by `more`; the usual case, an empty `into`, moves `more`
/// instead of copying it.
fn join<T>(into: &mut Vec<T>, more: Vec<T>) {
    if into.is_empty() {
        *into = more;
    } else {
        into.extend(more);
    }
}
