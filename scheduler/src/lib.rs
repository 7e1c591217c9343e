//! The scheduler: a pure state machine.
//!
//! It holds every live job, task and engine in memory and reacts to events
//! (`submit`, `engine_registered`, `task_finished`, `tick`, …). Each event
//! takes the current time as an argument and pushes its decisions into the
//! one outputs value, [`Effects`]: messages for engines, acknowledgements to
//! send once the store has committed, jobs that ended, notices to log, mail
//! that is due. What changed is tracked in dirty sets that
//! [`Scheduler::persist`] adds to it as one store [`Batch`].
//!
//! There is no socket, clock or database in here, so the same code runs under
//! the master's I/O loops, the property tests and the benchmark.
//!
//! Dispatch order: higher priority first; within a priority, owners take
//! turns (the owner holding the fewest attempts goes next), and each owner's
//! jobs run in submission order. A job runs only on engines of its pool that
//! meet its requirements, are neither disabled nor sick, and have not failed
//! it `blacklist_after` times (sick: `sick_after` failures in a row, of more
//! than one job); on at most `max_engines` engines at once; and
//! only while its limits have tokens.
//!
//! | file | concern |
//! |---|---|
//! | `state.rs` | engines, jobs and tasks as the scheduler keeps them |
//! | `requests.rs` | user requests: submit, pause, cancel, retry, delete, disable |
//! | `limits.rs` | named token counts held by running attempts |
//! | `engines.rs` | registration, facts, heartbeats, checks, lost engines |
//! | `results.rs` | started and finished attempts, blacklists, sickness |
//! | `dispatch.rs` | who gets which ready task |
//! | `auto_blocks.rs` | `--blocksize auto`: a task cut to each engine's speed |
//! | `speed.rs` | engines' speed scores from shared jobs |
//! | `progress.rs` | live progress, ETA, stalls and outliers |
//! | `fitness.rs` | can this engine take that job now |
//! | `lifecycle.rs` | job status, dependencies, end of a job, notifications |
//! | `restore.rs` | rebuilding from the store after a restart |
//! | `persist.rs` | dirty sets into one store batch |
//! | `queries.rs`, `blocked.rs` | views and "why isn't it running" |
//!
//! Invariants (checked by `tests.rs` over thousands of generated runs):
//! - an engine never holds more attempts than its HWM;
//! - a task's live attempt is held by at most one engine;
//! - no limit hands out more tokens than it has, no job runs on more than
//!   `max_engines` engines, blacklisted and sick engines get no new work;
//! - every task of a job that is neither paused nor cancelled ends done or
//!   failed, whatever engines come and go.

mod attribution;
mod auto_blocks;
mod blocked;
mod dispatch;
mod engines;
mod fitness;
mod lifecycle;
mod limits;
pub mod memory;
mod persist;
mod progress;
mod queries;
pub mod records;
mod requests;
mod restore;
mod results;
mod speed;
mod state;
mod status_index;
mod task_control;
mod task_deps;
#[cfg(test)]
mod tests;

pub use state::Engine;
use state::Job;

use drqueue_common::model::{EngineFacts, EngineId, JobId, TaskKey};
use drqueue_common::protocol::{AttemptKey, ToEngine};
use drqueue_common::Millis;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::records::{AttemptRecord, Batch};

/// Index of an engine in the scheduler's table (engines are never removed,
/// so an index stays valid for the scheduler's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EngineIdx(u32);

impl EngineIdx {
    /// Every index of a table of `n` engines.
    fn all(n: usize) -> impl Iterator<Item = EngineIdx> {
        (0..n as u32).map(EngineIdx)
    }
}

impl std::ops::Index<EngineIdx> for Vec<Engine> {
    type Output = Engine;
    fn index(&self, e: EngineIdx) -> &Engine {
        &self[e.0 as usize]
    }
}

impl std::ops::IndexMut<EngineIdx> for Vec<Engine> {
    fn index_mut(&mut self, e: EngineIdx) -> &mut Engine {
        &mut self[e.0 as usize]
    }
}

/// Timing knobs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often engines send heartbeats.
    pub heartbeat_ms: u32,
    /// An engine silent this long is declared lost and its tasks requeued.
    pub engine_timeout_ms: u64,
    /// After a restart, how long to wait for engines that were online to
    /// come back before their tasks are run elsewhere.
    pub recovery_ms: u64,
    /// An engine that fails this many attempts of one job gets no more of
    /// that job's tasks (0 = never).
    pub blacklist_after: u32,
    /// An engine that fails this many attempts in a row, across jobs, is
    /// sick: no work until a user enables it or it passes a check (0 = never).
    pub sick_after: u32,
    /// How often a sick engine is sent its check task (0 = never: only a
    /// user's `engine enable` brings it back).
    pub check_interval_ms: u64,
    /// The check task; empty means the engine's built-in check.
    pub check_command: Vec<String>,
    /// Sending attempts for a job's email before it is given up as failed.
    pub mail_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_ms: 1000,
            engine_timeout_ms: 5000,
            recovery_ms: 6000,
            blacklist_after: 2,
            sick_after: 5,
            check_interval_ms: 120_000,
            check_command: Vec::new(),
            mail_attempts: 10,
        }
    }
}

/// The scheduler's one output: what its events decided, for the I/O loops
/// to carry out. Events add to it; [`Scheduler::persist`] adds the store
/// writes that carry those decisions.
#[derive(Debug, Default)]
pub struct Effects {
    /// Send now.
    pub messages: Vec<(EngineId, ToEngine)>,
    /// Send once everything changed so far is committed to the store.
    pub after_commit: Vec<(EngineId, ToEngine)>,
    /// Jobs that reached a terminal status.
    pub ended_jobs: Vec<JobId>,
    /// Things worth telling the wrangler, for the I/O side to log.
    pub notices: Vec<Notice>,
    /// Jobs whose notification is due now (marked sending): for the mailer,
    /// which answers with [`Scheduler::notification_result`].
    pub mail_due: Vec<JobId>,
    /// What changed, to commit before `after_commit` goes out.
    pub batch: Batch,
    /// Measurements for the I/O side's metrics (the scheduler keeps none).
    pub observed: Vec<Observation>,
    /// Jobs whose tasks changed together with no task records to say so (a
    /// release, or a whole-job cancel: the job's record implies them), so
    /// whoever watches their tasks should read them again.
    pub tasks_changed_unrecorded: Vec<JobId>,
}

/// One thing worth counting or timing, as it happened. The scheduler reads
/// no clock of its own: durations are between the times it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// An attempt's process started: how long after its job was submitted,
    /// and after the master assigned it (the trip to the engine and the
    /// spawn). Not for attempts adopted after a restart.
    Started {
        pool: String,
        since_submit_ms: Millis,
        since_assign_ms: Millis,
    },
    /// A counted attempt ended: it succeeded, or failed (retried or not).
    Ended { pool: String, ok: bool },
    /// A running attempt was stopped for printing nothing too long.
    Stalled,
    /// A task held by a lost engine went back to the queue.
    Requeued,
}

/// Something the scheduler decided that a wrangler should hear of. The
/// scheduler does no logging of its own: the core logs these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A stored job whose spec no longer validates was left out at restore.
    SkippedStoredJob {
        job: JobId,
        error: String,
    },
    /// An engine spoke of an attempt it does not hold (a result, a start or
    /// a log): dropped. A forged or confused engine cannot finish work that
    /// another engine holds.
    ForeignAttempt {
        engine: EngineId,
        attempt: AttemptKey,
        what: &'static str,
    },
    /// Failures an engine was made sick by turned out to be the job's fault
    /// (the same failure on other engines): it is well again.
    JobsFault {
        engine: EngineId,
        job: JobId,
        signature: String,
    },
    /// An engine went silent (or did not return after a restart).
    EngineLost {
        engine: EngineId,
        host: String,
        held: usize,
    },
    /// An engine failed one job `failures` times and gets no more of it.
    Blacklisted {
        engine: EngineId,
        job: JobId,
        failures: u32,
    },
    /// An engine failed too many attempts in a row, across jobs.
    Sick {
        engine: EngineId,
        why: String,
    },
    CheckPassed {
        engine: EngineId,
    },
    CheckFailed {
        engine: EngineId,
        detail: String,
    },
    /// A running attempt printed nothing and reported no progress for its
    /// job's `stall_after`: it is stopped and runs again.
    Stalled {
        engine: EngineId,
        attempt: AttemptKey,
        quiet_ms: Millis,
    },
}

/// Why a client request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no job {0}: list jobs with `drqueue jobs`")]
    NoJob(JobId),
    #[error("no engine {0:?}: list engines with `drqueue engines`")]
    NoEngine(String),
    #[error("no task {} in job {}: list them with `drqueue tasks {}`", .0.index, .0.job, .0.job)]
    NoTask(TaskKey),
    #[error("{}", no_attempt(*.task, *.attempts, *.asked))]
    NoAttempt {
        task: TaskKey,
        attempts: u32,
        asked: u32,
    },
    #[error("no limit {0:?}; `drqueue limits` lists them")]
    NoLimit(String),
    #[error("{0}")]
    Invalid(String),
    /// `--require-runnable`, and no engine could run the job now.
    #[error("no engine could run job {name:?} now: {}. Add or fix engines, or submit without --require-runnable to queue it for engines that join later", .reasons.join("; "))]
    Unrunnable { name: String, reasons: Vec<String> },
    #[error("job {job} belongs to {owner:?}; {caller:?} may change only their own jobs (a wrangler may change any)")]
    NotYours {
        job: JobId,
        owner: String,
        caller: String,
    },
}

/// Why there is no log for the attempt asked for, in words.
fn no_attempt(task: TaskKey, attempts: u32, asked: u32) -> String {
    if attempts == 0 {
        format!("task {task} has not run yet, so it has no log; `drqueue log --follow` waits for it to start")
    } else {
        format!("task {task} has {attempts} attempt(s); there is no attempt {asked}")
    }
}

/// The scheduler's whole state.
#[derive(Debug)]
pub struct Scheduler {
    cfg: Config,
    jobs: BTreeMap<JobId, Job>,
    engines: Vec<Engine>,
    engine_index: HashMap<EngineId, EngineIdx>,
    next_job_id: JobId,
    /// No dispatch before this time while engines are recovering.
    recovery_deadline: Millis,
    dirty_jobs: BTreeSet<JobId>,
    dirty_tasks: HashSet<TaskKey>,
    dirty_engines: BTreeSet<EngineIdx>,
    deleted_jobs: Vec<JobId>,
    attempts: Vec<AttemptRecord>,
    /// Ended attempts' costs, for the next batch.
    usage: Vec<records::UsageRecord>,
    /// Observations made outside a call that takes [`Effects`], handed out
    /// with the next `persist`.
    observed: Vec<Observation>,
    next_id_dirty: bool,
    /// An engine joined or changed pools: rewrite the stored pools.
    pools_dirty: bool,
    /// Configured limits: name → tokens. A limit a job names but nobody set
    /// does not constrain it.
    limits: BTreeMap<String, u32>,
    dirty_limits: BTreeSet<String>,
    next_check_id: u64,
    /// Attempts taken back from an engine that went silent and may still be
    /// running them: a late result from that engine is still its own.
    given_up: BTreeMap<AttemptKey, EngineIdx>,
    /// Jobs that two or more engines have rendered, newest last: what
    /// engines' speed scores are judged on ([`speed`]).
    speed_jobs: std::collections::VecDeque<JobId>,
    /// Speed scores by engine index, refreshed on the tick after
    /// `speed_dirty` is set.
    speed_scores: Vec<Option<f32>>,
    speed_dirty: bool,
}

impl Scheduler {
    pub fn new(cfg: Config) -> Scheduler {
        Scheduler {
            cfg,
            jobs: BTreeMap::new(),
            engines: Vec::new(),
            engine_index: HashMap::new(),
            next_job_id: JobId::FIRST,
            recovery_deadline: 0,
            dirty_jobs: BTreeSet::new(),
            dirty_tasks: HashSet::new(),
            dirty_engines: BTreeSet::new(),
            deleted_jobs: Vec::new(),
            attempts: Vec::new(),
            usage: Vec::new(),
            observed: Vec::new(),
            next_id_dirty: false,
            pools_dirty: false,
            given_up: BTreeMap::new(),
            speed_jobs: std::collections::VecDeque::new(),
            speed_scores: Vec::new(),
            speed_dirty: false,
            limits: BTreeMap::new(),
            dirty_limits: BTreeSet::new(),
            next_check_id: 1,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn intern_engine(&mut self, id: &EngineId) -> EngineIdx {
        if let Some(i) = self.engine_index.get(id) {
            return *i;
        }
        let idx = EngineIdx(self.engines.len() as u32);
        self.engines.push(Engine {
            id: id.clone(),
            facts: EngineFacts::default(),
            slots: 1,
            hwm: 1,
            online: false,
            recovering: false,
            disabled: false,
            revoked: false,
            held: BTreeMap::new(),
            last_seen: 0,
            load: 0.0,
            free_ram_mb: 0,
            peak_outstanding: 0,
            peak_held: 0,
            tasks_done: 0,
            tasks_failed: 0,
            failures_in_row: 0,
            streak_job: None,
            streak_mixed: false,
            sick: None,
            check_pending: None,
            check_due: 0,
        });
        self.engine_index.insert(id.clone(), idx);
        idx
    }
}
