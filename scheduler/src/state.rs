//! What the scheduler knows of each engine, job and task, and how each
//! turns into a store record or a view.

use super::status_index::StatusIndex;
use super::{Config, EngineIdx};
use crate::records::{EngineFailures, EngineRecord, JobRecord};
use drqueue_common::frames::Block;
use drqueue_common::model::{
    Counts, EngineFacts, EngineId, EngineState, EngineView, HeldAttempt, JobId, JobSpec, JobStatus,
    Notification, NotifyState, TaskKey, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, JobBody, OutputFile, TiledJob};
use drqueue_common::Millis;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// An attempt an engine holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) started: bool,
    /// When this master assigned it (None: adopted after a restart).
    pub(super) assigned_ms: Option<Millis>,
    /// Asked to stop (cancelled, or superseded while the engine was away);
    /// it still counts against the HWM until the engine reports it ended.
    pub(super) cancelling: bool,
}

/// An engine as the scheduler knows it.
#[derive(Debug, Clone)]
pub struct Engine {
    pub id: EngineId,
    pub facts: EngineFacts,
    pub slots: u32,
    pub hwm: u32,
    pub online: bool,
    /// Known online before a master restart and not yet back.
    pub recovering: bool,
    pub disabled: bool,
    /// Cut off for good (`drqueue engine revoke`).
    pub revoked: bool,
    pub(super) held: BTreeMap<AttemptKey, Held>,
    pub last_seen: Millis,
    pub load: f32,
    pub free_ram_mb: u64,
    pub peak_outstanding: u32,
    pub peak_held: u32,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Failed attempts since its last success.
    pub failures_in_row: u32,
    /// The job of the streak's first failure, and whether another job has
    /// failed since: one bad job is the blacklist's business, not sickness.
    pub(super) streak_job: Option<JobId>,
    pub(super) streak_mixed: bool,
    /// Why it is sick, if it is.
    pub sick: Option<String>,
    /// The check task sent and not yet answered, and when the next is due.
    pub(super) check_pending: Option<u64>,
    pub(super) check_due: Millis,
}

impl Engine {
    pub(super) fn accepts_work(&self) -> bool {
        self.online && !self.disabled && self.sick.is_none()
    }

    /// Does it hold a live (not being cancelled) attempt of this job?
    pub(super) fn runs_job(&self, job: JobId) -> bool {
        let from = AttemptKey {
            task: TaskKey { job, index: 0 },
            attempt: 0,
        };
        self.held
            .range(from..)
            .take_while(|(k, _)| k.task.job == job)
            .any(|(_, h)| !h.cancelling)
    }

    /// Attempts it holds now, counting those being cancelled.
    pub fn outstanding(&self) -> u32 {
        self.held.len() as u32
    }

    pub(super) fn credit(&self) -> u32 {
        self.hwm.saturating_sub(self.outstanding())
    }

    /// Free slots: tasks it could start this instant.
    pub(super) fn idle_slots(&self) -> u32 {
        self.slots.saturating_sub(self.outstanding())
    }

    pub(super) fn state(&self) -> EngineState {
        if self.revoked {
            EngineState::Revoked
        } else if self.disabled {
            EngineState::Disabled
        } else if !self.online {
            EngineState::Offline
        } else if self.sick.is_some() {
            EngineState::Sick
        } else if self.held.is_empty() {
            EngineState::Idle
        } else {
            EngineState::Busy
        }
    }

    pub(super) fn record(&self) -> EngineRecord {
        EngineRecord {
            id: self.id.clone(),
            facts: self.facts.clone(),
            slots: self.slots,
            hwm: self.hwm,
            online: self.online || self.recovering,
            disabled: self.disabled,
            last_seen_ms: self.last_seen,
            tasks_done: self.tasks_done,
            tasks_failed: self.tasks_failed,
            failures_in_row: self.failures_in_row,
            streak_job: self.streak_job,
            streak_mixed: self.streak_mixed,
            sick: self.sick.clone(),
            revoked: self.revoked,
        }
    }

    pub fn view(&self) -> EngineView {
        EngineView {
            id: self.id.clone(),
            name: self.facts.name.clone(),
            hostname: self.facts.hostname.clone(),
            os: self.facts.os.clone(),
            arch: self.facts.arch.clone(),
            cores: self.facts.cores,
            ram_mb: self.facts.ram_mb,
            free_ram_mb: self.free_ram_mb,
            load: self.load,
            pools: self.facts.pools.clone(),
            capabilities: self.facts.capabilities.clone(),
            versions: self.facts.versions.clone(),
            containment: self.facts.containment.clone(),
            state: self.state(),
            sick: self.sick.clone(),
            failures_in_row: self.failures_in_row,
            slots: self.slots,
            hwm: self.hwm,
            running: self.outstanding(),
            peak_outstanding: self.peak_outstanding,
            peak_held: self.peak_held,
            last_heartbeat_ms: self.last_seen,
            tasks_done: self.tasks_done,
            tasks_failed: self.tasks_failed,
            speed: None,
            fingerprint: String::new(),
            tasks: self
                .held
                .iter()
                .map(|(key, held)| HeldAttempt {
                    job: key.task.job,
                    task: key.task.index,
                    attempt: key.attempt,
                    state: match (held.cancelling, held.started) {
                        (true, _) => "cancelling",
                        (false, true) => "running",
                        (false, false) => "assigned",
                    }
                    .to_string(),
                })
                .collect(),
        }
    }
}

/// A task as the scheduler keeps it: small, since a job may have a million.
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) block: Block,
    pub(super) status: TaskStatus,
    /// The live (or last) attempt's number.
    pub(super) attempts: u32,
    /// The highest attempt number given out or reported by any engine. A
    /// new attempt takes the next one, so two attempts of a task never share
    /// a number, even after a master restart lost the commit of one.
    pub(super) highest_attempt: u32,
    pub(super) failures: u32,
    pub(super) engine: Option<EngineIdx>,
    /// The engine of the last failure: retries prefer another one.
    pub(super) avoid: Option<EngineIdx>,
    pub(super) started_ms: Option<Millis>,
    pub(super) ended_ms: Option<Millis>,
    pub(super) exit_code: Option<i32>,
    pub(super) peak_rss_kb: Option<u64>,
    pub(super) cpu_ms: Option<u64>,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) spec: JobSpec,
    pub(super) body: JobBody,
    pub(super) status: JobStatus,
    pub(super) tasks: Vec<Task>,
    pub(super) counts: Counts,
    /// Which tasks are in each status; changes with `counts`.
    pub(super) by_status: StatusIndex,
    /// Ready task indices in dispatch order. Entries go stale when a task
    /// leaves `ready` another way; they are skipped when popped.
    pub(super) ready: VecDeque<u32>,
    pub(super) submitted_ms: Millis,
    pub(super) started_ms: Option<Millis>,
    pub(super) finished_ms: Option<Millis>,
    pub(super) reason: Option<String>,
    /// Failed attempts per engine; at `blacklist_after` the engine gets no
    /// more of this job.
    pub(super) engine_failures: BTreeMap<EngineIdx, u32>,
    /// The email to send when the job ends (`--notify`).
    pub(super) notification: Option<Notification>,
    /// Counted failures by signature, and on which engines ([`crate::attribution`]).
    pub(super) signatures: HashMap<String, BTreeMap<EngineIdx, u32>>,
    /// Signatures seen on two or more engines: the job's fault.
    pub(super) job_faults: BTreeSet<String>,
    /// What running attempts reported (by task index): live data, never
    /// stored; an entry goes when its task stops running.
    pub(super) live: HashMap<u32, Live>,
    /// Per engine, the sum of its done tasks' milliseconds per frame and how
    /// many: speed scores compare engines on the same job. Memory only.
    pub(super) speed: HashMap<EngineIdx, (f64, u32)>,
    /// Frames in all tasks, and in done ones: progress and ETA weigh tasks
    /// by their frames, as auto-cut tasks differ in size.
    pub(super) frames_total: u64,
    pub(super) frames_done: u64,
    /// Frames in tasks that ended: done, failed or cancelled.
    pub(super) frames_ended: u64,
    /// The job may start (its dependencies and start time allow it): its
    /// waiting tasks were released, except those waiting for other tasks.
    pub(super) released: bool,
    /// The files of done tasks that another task waits for, by task index
    /// ([`crate::task_deps`]): a tiled frame's tiles, for its assembly.
    pub(super) handoff: HashMap<u32, Vec<OutputFile>>,
    /// The highest attempt engines named of auto-cut tasks that do not
    /// exist (their commit was lost), by index: a new cut by that number
    /// numbers its attempts past it, so no attempt key is used twice.
    pub(super) ghost_attempts: BTreeMap<u32, u32>,
}

/// A running attempt's latest signs of life.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    pub(super) attempt: u32,
    pub(super) progress: Option<f32>,
    /// When it last printed or reported progress.
    pub(super) active_ms: Millis,
}

impl Task {
    pub(super) fn new(block: Block, status: TaskStatus) -> Task {
        Task {
            block,
            status,
            attempts: 0,
            highest_attempt: 0,
            failures: 0,
            engine: None,
            avoid: None,
            started_ms: None,
            ended_ms: None,
            exit_code: None,
            peak_rss_kb: None,
            cpu_ms: None,
        }
    }

    /// An engine named attempt `n` of this task, in any message.
    pub(super) fn saw_attempt(&mut self, n: u32) {
        self.highest_attempt = self.highest_attempt.max(n);
    }
}

impl Job {
    pub(super) fn set_task_status(&mut self, index: u32, status: TaskStatus) {
        let task = &mut self.tasks[index as usize];
        self.counts.remove(task.status);
        self.by_status.clear(index, task.status);
        let frames = task.block.len();
        self.frames_done -= frames * u64::from(task.status == TaskStatus::Done);
        self.frames_ended -= frames * u64::from(task.status.is_terminal());
        self.frames_done += frames * u64::from(status == TaskStatus::Done);
        self.frames_ended += frames * u64::from(status.is_terminal());
        task.status = status;
        self.counts.add(status);
        self.by_status.set(index, status);
        if !status.is_held() {
            self.live.remove(&index);
        }
    }

    /// Adds a task (a cut of an auto-sized job); returns its index.
    pub(super) fn push_task(&mut self, task: Task) -> u32 {
        let index = self.tasks.len() as u32;
        self.counts.add(task.status);
        self.by_status.grow_to(index);
        self.by_status.set(index, task.status);
        self.frames_done += task.block.len() * u64::from(task.status == TaskStatus::Done);
        self.frames_ended += task.block.len() * u64::from(task.status.is_terminal());
        self.tasks.push(task);
        index
    }

    pub(super) fn is_dispatchable(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Running)
    }

    /// Its tasks all start alike, so the store keeps a task only once it
    /// leaves its start state (see [`JobRecord::released`]).
    pub(super) fn tasks_start_alike(&self) -> bool {
        self.body.tiles.is_none() && !self.spec.auto_blocksize()
    }

    #[allow(clippy::ptr_arg)] // indexed by EngineIdx, which Vec<Engine> implements
    pub(super) fn record(&self, id: JobId, engines: &Vec<Engine>) -> JobRecord {
        JobRecord {
            id,
            spec: self.spec.clone(),
            status: self.status,
            submitted_ms: self.submitted_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            reason: self.reason.clone(),
            released: self.released,
            engine_failures: self
                .engine_failures
                .iter()
                .map(|(e, count)| EngineFailures {
                    engine: engines[*e].id.clone(),
                    count: *count,
                })
                .collect(),
            notification: self.notification.clone().map(|mut n| {
                // A send in flight is stored as pending: after a crash it
                // is tried again rather than forgotten.
                if n.state == NotifyState::Sending {
                    n.state = NotifyState::Pending;
                }
                n
            }),
        }
    }

    pub(super) fn is_blacklisted(&self, e: EngineIdx, cfg: &Config) -> bool {
        cfg.blacklist_after > 0
            && self
                .engine_failures
                .get(&e)
                .is_some_and(|n| *n >= cfg.blacklist_after)
    }
}

pub(super) fn new_job(id: JobId, mut spec: JobSpec, blocks: &[Block], now: Millis) -> Job {
    spec.ensure_name();
    let body = JobBody {
        id,
        command: spec.command.clone(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: spec.cwd.clone(),
        timeout_secs: spec.timeout_secs,
        max_log_bytes: u64::from(spec.max_log_mb) << 20,
        outputs: spec.outputs.clone(),
        min_output_bytes: spec.min_output_bytes,
        inputs: spec.inputs,
        collect: spec.collect.clone(),
        tiles: spec.tiles.map(|tiles| TiledJob {
            tiles,
            // The tasks are a tile task per tile per frame and an assemble
            // task per frame.
            frames: (blocks.len() as u64 / (u64::from(tiles.count()) + 1)) as u32,
        }),
    };
    let initial = TaskStatus::Waiting;
    let tasks: Vec<Task> = blocks.iter().map(|b| Task::new(*b, initial)).collect();
    let frames_total = blocks.iter().map(Block::len).sum();
    let mut counts = Counts::default();
    counts.0[initial.index()] = tasks.len() as u64;
    let (spec_notify, notify_on) = (spec.notify.clone(), spec.notify_on);
    Job {
        status: if spec.paused {
            JobStatus::Paused
        } else {
            JobStatus::Waiting
        },
        spec,
        body,
        by_status: StatusIndex::new(tasks.len(), initial),
        tasks,
        counts,
        ready: VecDeque::new(),
        submitted_ms: now,
        started_ms: None,
        finished_ms: None,
        reason: None,
        engine_failures: BTreeMap::new(),
        signatures: HashMap::new(),
        job_faults: BTreeSet::new(),
        live: HashMap::new(),
        speed: HashMap::new(),
        frames_total,
        frames_done: 0,
        frames_ended: 0,
        released: false,
        handoff: HashMap::new(),
        ghost_attempts: BTreeMap::new(),
        notification: (!spec_notify.is_empty()).then_some(Notification {
            state: NotifyState::Waiting,
            to: spec_notify,
            on: notify_on,
            attempts: 0,
            last_error: None,
            next_try_ms: None,
            sent_ms: None,
        }),
    }
}
