//! The scheduler: a pure state machine.
//!
//! It holds every live job, task and engine in memory and reacts to events
//! (`submit`, `engine_registered`, `task_finished`, `tick`, …). Each event
//! takes the current time as an argument and pushes its decisions into an
//! [`Effects`] sink: messages for engines, acknowledgements to send once the
//! store has committed, jobs that ended. What changed is tracked in dirty
//! sets that [`Scheduler::take_batch`] turns into one store [`Batch`].
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
//! Invariants (checked by `tests.rs` over thousands of generated runs):
//! - an engine never holds more attempts than its HWM;
//! - a task's live attempt is held by at most one engine;
//! - no limit hands out more tokens than it has, no job runs on more than
//!   `max_engines` engines, blacklisted and sick engines get no new work;
//! - every task of a job that is neither paused nor cancelled ends done or
//!   failed, whatever engines come and go.

mod blocked;
#[cfg(test)]
mod tests;

use crate::store::{
    AttemptRecord, Batch, EngineFailures, EngineRecord, JobRecord, LimitRecord, PoolRecord,
    Snapshot, TaskRecord,
};
use drqueue_common::frames::Block;
use drqueue_common::graph::{topological_order, Graph, GraphJob};
use drqueue_common::model::{
    Counts, Dependency, EngineFacts, EngineId, EngineState, EngineView, JobId, JobSpec, JobStatus,
    JobView, Notification, NotifyState, TaskKey, TaskStatus, TaskView, DEFAULT_POOL,
};
use drqueue_common::protocol::{
    Assign, Assignment, AttemptKey, Heartbeat, JobBody, Outcome, ToEngine,
};
use drqueue_common::Millis;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// Index of an engine in the scheduler's table (engines are never removed).
pub type EngineIdx = u32;

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

/// Decisions an event produced, for the I/O loops to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    /// Send now.
    pub messages: Vec<(EngineId, ToEngine)>,
    /// Send once everything changed so far is committed to the store.
    pub after_commit: Vec<(EngineId, ToEngine)>,
    /// Jobs that reached a terminal status.
    pub ended_jobs: Vec<JobId>,
}

/// Why a client request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no job {0}: list jobs with `drqueue jobs`")]
    NoJob(JobId),
    #[error("no engine {0:?}: list engines with `drqueue engines`")]
    NoEngine(String),
    #[error("{0}")]
    Invalid(String),
}

/// An attempt an engine holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    started: bool,
    /// Asked to stop (cancelled, or superseded while the engine was away);
    /// it still counts against the HWM until the engine reports it ended.
    cancelling: bool,
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
    held: BTreeMap<AttemptKey, Held>,
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
    streak_job: Option<JobId>,
    streak_mixed: bool,
    /// Why it is sick, if it is.
    pub sick: Option<String>,
    /// The check task sent and not yet answered, and when the next is due.
    check_pending: Option<u64>,
    check_due: Millis,
}

impl Engine {
    fn accepts_work(&self) -> bool {
        self.online && !self.disabled && self.sick.is_none()
    }

    /// Does it hold a live (not being cancelled) attempt of this job?
    fn runs_job(&self, job: JobId) -> bool {
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

    fn credit(&self) -> u32 {
        self.hwm.saturating_sub(self.outstanding())
    }

    /// Free slots: tasks it could start this instant.
    fn idle_slots(&self) -> u32 {
        self.slots.saturating_sub(self.outstanding())
    }

    fn state(&self) -> EngineState {
        if self.disabled {
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

    fn record(&self) -> EngineRecord {
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
            sick: self.sick.clone(),
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
        }
    }
}

/// A task as the scheduler keeps it: small, since a job may have a million.
#[derive(Debug, Clone)]
struct Task {
    block: Block,
    status: TaskStatus,
    attempts: u32,
    failures: u32,
    engine: Option<EngineIdx>,
    /// The engine of the last failure: retries prefer another one.
    avoid: Option<EngineIdx>,
    started_ms: Option<Millis>,
    ended_ms: Option<Millis>,
    exit_code: Option<i32>,
    peak_rss_kb: Option<u64>,
    cpu_ms: Option<u64>,
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    body: JobBody,
    status: JobStatus,
    tasks: Vec<Task>,
    counts: Counts,
    /// Ready task indices in dispatch order. Entries go stale when a task
    /// leaves `ready` another way; they are skipped when popped.
    ready: VecDeque<u32>,
    submitted_ms: Millis,
    started_ms: Option<Millis>,
    finished_ms: Option<Millis>,
    reason: Option<String>,
    /// Failed attempts per engine; at `blacklist_after` the engine gets no
    /// more of this job.
    engine_failures: BTreeMap<EngineIdx, u32>,
    /// The email to send when the job ends (`--notify`).
    notification: Option<Notification>,
}

impl Job {
    fn set_task_status(&mut self, index: u32, status: TaskStatus) {
        let task = &mut self.tasks[index as usize];
        self.counts.remove(task.status);
        task.status = status;
        self.counts.add(status);
    }

    fn is_dispatchable(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Running)
    }

    fn record(&self, id: JobId, engines: &[Engine]) -> JobRecord {
        JobRecord {
            id,
            spec: self.spec.clone(),
            status: self.status,
            submitted_ms: self.submitted_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            reason: self.reason.clone(),
            engine_failures: self
                .engine_failures
                .iter()
                .map(|(e, count)| EngineFailures {
                    engine: engines[*e as usize].id.clone(),
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

    fn is_blacklisted(&self, e: EngineIdx, cfg: &Config) -> bool {
        cfg.blacklist_after > 0
            && self
                .engine_failures
                .get(&e)
                .is_some_and(|n| *n >= cfg.blacklist_after)
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
    next_id_dirty: bool,
    /// An engine joined or changed pools: rewrite the stored pools.
    pools_dirty: bool,
    /// Configured limits: name → tokens. A limit a job names but nobody set
    /// does not constrain it.
    limits: BTreeMap<String, u32>,
    dirty_limits: BTreeSet<String>,
    next_check_id: u64,
}

impl Scheduler {
    pub fn new(cfg: Config) -> Scheduler {
        Scheduler {
            cfg,
            jobs: BTreeMap::new(),
            engines: Vec::new(),
            engine_index: HashMap::new(),
            next_job_id: 1,
            recovery_deadline: 0,
            dirty_jobs: BTreeSet::new(),
            dirty_tasks: HashSet::new(),
            dirty_engines: BTreeSet::new(),
            deleted_jobs: Vec::new(),
            attempts: Vec::new(),
            next_id_dirty: false,
            pools_dirty: false,
            limits: BTreeMap::new(),
            dirty_limits: BTreeSet::new(),
            next_check_id: 1,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Rebuilds the state a previous master left. Engines that were online
    /// keep their attempts for `recovery_ms`, waiting to re-register;
    /// meanwhile nothing is dispatched, so no task runs twice.
    pub fn restore(cfg: Config, snap: Snapshot, now: Millis) -> Scheduler {
        let mut s = Scheduler::new(cfg);
        s.next_job_id = snap.next_job_id.max(1);
        s.limits = snap.limits.into_iter().map(|l| (l.name, l.count)).collect();
        for rec in snap.engines {
            let idx = s.intern_engine(&rec.id);
            let e = &mut s.engines[idx as usize];
            e.facts = rec.facts;
            e.slots = rec.slots;
            e.hwm = rec.hwm;
            e.disabled = rec.disabled;
            e.recovering = rec.online;
            e.last_seen = rec.last_seen_ms;
            e.tasks_done = rec.tasks_done;
            e.tasks_failed = rec.tasks_failed;
            e.failures_in_row = rec.failures_in_row;
            // Whether the stored streak spans jobs is not kept: a restart
            // lets it prove so again.
            e.sick = rec.sick;
        }
        let mut tasks_by_job: HashMap<JobId, Vec<TaskRecord>> = HashMap::new();
        for t in snap.tasks {
            tasks_by_job.entry(t.job).or_default().push(t);
        }
        for rec in snap.jobs {
            let mut recs = tasks_by_job.remove(&rec.id).unwrap_or_default();
            recs.sort_by_key(|t| t.index);
            // A job whose tasks are not all there (a torn or hand-edited
            // store) is rebuilt from its spec rather than half-loaded.
            let blocks = match rec
                .spec
                .validate()
                .and_then(|f| Ok(f.blocks(rec.spec.blocksize)?))
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(
                        job = rec.id,
                        "skipping stored job whose spec is invalid: {e}"
                    );
                    continue;
                }
            };
            let mut job = new_job(rec.id, rec.spec.clone(), &blocks, rec.submitted_ms);
            job.status = rec.status;
            job.started_ms = rec.started_ms;
            job.finished_ms = rec.finished_ms;
            job.reason = rec.reason;
            for f in &rec.engine_failures {
                let e = s.intern_engine(&f.engine);
                job.engine_failures.insert(e, f.count);
            }
            if rec.notification.is_some() {
                job.notification = rec.notification;
            }
            job.counts = Counts::default();
            job.ready.clear();
            let by_index: HashMap<u32, TaskRecord> =
                recs.into_iter().map(|t| (t.index, t)).collect();
            for (i, task) in job.tasks.iter_mut().enumerate() {
                if let Some(r) = by_index.get(&(i as u32)) {
                    task.status = r.status;
                    task.attempts = r.attempts;
                    task.failures = r.failures;
                    task.engine = r.engine.as_ref().map(|id| {
                        // Engines named only by tasks are interned offline.
                        *s.engine_index.get(id).unwrap_or(&u32::MAX)
                    });
                    if task.engine == Some(u32::MAX) {
                        task.engine = None;
                    }
                    task.started_ms = r.started_ms;
                    task.ended_ms = r.ended_ms;
                    task.exit_code = r.exit_code;
                    task.peak_rss_kb = r.peak_rss_kb;
                    task.cpu_ms = r.cpu_ms;
                }
            }
            for i in 0..job.tasks.len() {
                let t = &mut job.tasks[i];
                if t.status.is_held() {
                    match t.engine {
                        Some(e) if s.engines[e as usize].recovering => {
                            s.engines[e as usize].held.insert(
                                AttemptKey {
                                    task: TaskKey {
                                        job: rec.id,
                                        index: i as u32,
                                    },
                                    attempt: t.attempts,
                                },
                                Held {
                                    started: t.status == TaskStatus::Running,
                                    cancelling: false,
                                },
                            );
                        }
                        _ => {
                            // Its engine was already gone: run it again.
                            t.status = TaskStatus::Ready;
                            s.dirty_tasks.insert(TaskKey {
                                job: rec.id,
                                index: i as u32,
                            });
                        }
                    }
                }
                let st = job.tasks[i].status;
                job.counts.add(st);
                if st == TaskStatus::Ready {
                    job.ready.push_back(i as u32);
                }
            }
            s.jobs.insert(rec.id, job);
        }
        if s.engines.iter().any(|e| e.recovering) {
            s.recovery_deadline = now + s.cfg.recovery_ms;
        }
        s
    }

    fn intern_engine(&mut self, id: &EngineId) -> EngineIdx {
        if let Some(i) = self.engine_index.get(id) {
            return *i;
        }
        let idx = self.engines.len() as EngineIdx;
        self.engines.push(Engine {
            id: id.clone(),
            facts: EngineFacts::default(),
            slots: 1,
            hwm: 1,
            online: false,
            recovering: false,
            disabled: false,
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

    // ----- client requests -------------------------------------------------

    /// Accepts a new job and returns its id.
    pub fn submit(
        &mut self,
        spec: JobSpec,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<JobId, RequestError> {
        let blocks = self.check_spec(&spec)?;
        Ok(self.create_job(spec, &blocks, now, fx))
    }

    /// Accepts a graph of jobs, all or nothing: every job is checked before
    /// any is created, and all are created in one round, so one commit
    /// stores them together. `{job:NAME}` in a command becomes the id of the
    /// graph's job NAME. Returns each job's name and id, dependencies first.
    pub fn submit_graph(
        &mut self,
        graph: Graph,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<Vec<(String, JobId)>, RequestError> {
        let order = topological_order(&graph.jobs).map_err(|cycle| {
            RequestError::Invalid(format!(
                "the jobs wait for each other in a cycle: {}",
                cycle.join(" → ")
            ))
        })?;
        let mut by_name: HashMap<String, GraphJob> = HashMap::new();
        for j in graph.jobs {
            let name = j.name.clone();
            if by_name.insert(name.clone(), j).is_some() {
                return Err(RequestError::Invalid(format!(
                    "{name:?} names two jobs; names must be unique"
                )));
            }
        }
        let ids: HashMap<String, JobId> = order
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), self.next_job_id + k as JobId))
            .collect();
        let mut ready = Vec::new();
        for name in &order {
            let Some(j) = by_name.remove(name) else {
                continue;
            };
            let mut spec = j.spec;
            for dep in j.after_names {
                let Some(id) = ids.get(&dep.name) else {
                    return Err(RequestError::Invalid(format!(
                        "job {name:?} waits for {:?}, which is not in the graph",
                        dep.name
                    )));
                };
                spec.after.push(Dependency {
                    job: *id,
                    on: dep.on,
                });
            }
            for arg in &mut spec.command {
                for (n, id) in &ids {
                    let placeholder = format!("{{job:{n}}}");
                    if arg.contains(&placeholder) {
                        *arg = arg.replace(&placeholder, &id.to_string());
                    }
                }
            }
            if spec.name.is_empty() {
                spec.name = name.clone();
            }
            // Dependencies inside the graph are created just before.
            let blocks = self.check_spec_in(&spec, &ids)?;
            ready.push((name.clone(), spec, blocks));
        }
        Ok(ready
            .into_iter()
            .map(|(name, spec, blocks)| (name, self.create_job(spec, &blocks, now, fx)))
            .collect())
    }

    /// Checks a spec and cuts its tasks; `after` must name existing jobs.
    fn check_spec(&self, spec: &JobSpec) -> Result<Vec<Block>, RequestError> {
        self.check_spec_in(spec, &HashMap::new())
    }

    /// As [`Self::check_spec`], where `after` may also name jobs about to be
    /// created (`pending`, by name → id).
    fn check_spec_in(
        &self,
        spec: &JobSpec,
        pending: &HashMap<String, JobId>,
    ) -> Result<Vec<Block>, RequestError> {
        let frames = spec
            .validate()
            .map_err(|e| RequestError::Invalid(format!("job {:?}: {e}", spec.name)))?;
        let blocks = frames
            .blocks(spec.blocksize)
            .map_err(|e| RequestError::Invalid(format!("job {:?}: {e}", spec.name)))?;
        for dep in &spec.after {
            if !self.jobs.contains_key(&dep.job) && !pending.values().any(|id| *id == dep.job) {
                return Err(RequestError::Invalid(format!(
                    "--after names job {}, which does not exist",
                    dep.job
                )));
            }
        }
        Ok(blocks)
    }

    fn create_job(
        &mut self,
        spec: JobSpec,
        blocks: &[Block],
        now: Millis,
        fx: &mut Effects,
    ) -> JobId {
        let id = self.next_job_id;
        self.next_job_id += 1;
        self.next_id_dirty = true;
        let job = new_job(id, spec, blocks, now);
        self.dirty_tasks
            .extend((0..job.tasks.len() as u32).map(|index| TaskKey { job: id, index }));
        self.jobs.insert(id, job);
        self.dirty_jobs.insert(id);
        self.update_job_status(id, now, fx);
        id
    }

    pub fn pause(&mut self, id: JobId) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        if !job.status.is_terminal() {
            job.spec.paused = true;
            job.status = JobStatus::Paused;
            self.dirty_jobs.insert(id);
        }
        Ok(())
    }

    pub fn resume(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        job.spec.paused = false;
        self.dirty_jobs.insert(id);
        self.update_job_status(id, now, fx);
        Ok(())
    }

    /// Cancels every unfinished task; running ones are killed on their engines.
    pub fn cancel(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        if job.status.is_terminal() {
            return Ok(());
        }
        job.reason = Some("cancelled by user".into());
        self.cancel_tasks(id, now, fx);
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        job.status = JobStatus::Cancelled;
        job.finished_ms = Some(now);
        self.dirty_jobs.insert(id);
        fx.ended_jobs.push(id);
        self.on_job_ended(id, now, fx);
        Ok(())
    }

    fn cancel_tasks(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let mut kills: BTreeMap<EngineIdx, Vec<AttemptKey>> = BTreeMap::new();
        for i in 0..job.tasks.len() as u32 {
            let t = &job.tasks[i as usize];
            if t.status.is_terminal() {
                continue;
            }
            if t.status.is_held() {
                if let Some(e) = t.engine {
                    let key = AttemptKey {
                        task: TaskKey { job: id, index: i },
                        attempt: t.attempts,
                    };
                    if let Some(h) = self.engines[e as usize].held.get_mut(&key) {
                        h.cancelling = true;
                        kills.entry(e).or_default().push(key);
                    }
                }
            }
            job.set_task_status(i, TaskStatus::Cancelled);
            job.tasks[i as usize].ended_ms = Some(now);
            self.dirty_tasks.insert(TaskKey { job: id, index: i });
        }
        for (e, keys) in kills {
            fx.messages
                .push((self.engines[e as usize].id.clone(), ToEngine::Cancel(keys)));
        }
    }

    /// Puts failed and cancelled tasks back to ready with a fresh count.
    pub fn retry(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<u32, RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        let mut n = 0;
        for i in 0..job.tasks.len() as u32 {
            let st = job.tasks[i as usize].status;
            if matches!(st, TaskStatus::Failed | TaskStatus::Cancelled) {
                job.set_task_status(i, TaskStatus::Ready);
                let t = &mut job.tasks[i as usize];
                t.failures = 0;
                t.avoid = None;
                t.ended_ms = None;
                job.ready.push_back(i);
                self.dirty_tasks.insert(TaskKey { job: id, index: i });
                n += 1;
            }
        }
        // A retry is a fresh start: engines the job had given up on get
        // another chance (a sick one stays out until it is well).
        if !job.engine_failures.is_empty() {
            job.engine_failures.clear();
            self.dirty_jobs.insert(id);
        }
        if n > 0 {
            job.finished_ms = None;
            job.reason = None;
            // It will end again, and tell again.
            if let Some(note) = job.notification.as_mut() {
                note.state = NotifyState::Waiting;
                note.next_try_ms = None;
            }
            if job.status.is_terminal() {
                job.status = JobStatus::Queued;
            }
            self.dirty_jobs.insert(id);
            self.update_job_status(id, now, fx);
        }
        Ok(n)
    }

    /// Forgets a job. Unfinished jobs need `force`, which cancels them first.
    pub fn delete(
        &mut self,
        id: JobId,
        force: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), RequestError> {
        let job = self.jobs.get(&id).ok_or(RequestError::NoJob(id))?;
        if !job.status.is_terminal() {
            if !force {
                return Err(RequestError::Invalid(format!(
                    "job {id} is {}; cancel it first, or delete with --force",
                    job.status
                )));
            }
            self.cancel(id, now, fx)?;
        }
        self.jobs.remove(&id);
        self.dirty_jobs.remove(&id);
        self.dirty_tasks.retain(|k| k.job != id);
        self.deleted_jobs.push(id);
        Ok(())
    }

    /// Sets (or changes) a limit's token count. Lowering it below what is in
    /// use stops new tasks until enough finish; nothing running is killed.
    pub fn set_limit(&mut self, name: &str, count: u32) -> Result<(), RequestError> {
        let simple = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !simple {
            return Err(RequestError::Invalid(format!(
                "limit name {name:?} is not valid: use letters, digits, '-', '_' and '.'"
            )));
        }
        self.limits.insert(name.to_string(), count);
        self.dirty_limits.insert(name.to_string());
        Ok(())
    }

    /// Tokens held now, per limit: one per attempt an engine holds (a task
    /// being cancelled keeps its token until it has really ended).
    fn tokens_in_use(&self) -> HashMap<String, u32> {
        let mut used: HashMap<String, u32> = HashMap::new();
        for e in &self.engines {
            for key in e.held.keys() {
                if let Some(job) = self.jobs.get(&key.task.job) {
                    for l in &job.spec.limits {
                        *used.entry(l.clone()).or_default() += 1;
                    }
                }
            }
        }
        used
    }

    /// Does any limit the job names exist (and so constrain it)?
    fn has_set_limits(&self, spec: &JobSpec) -> bool {
        spec.limits.iter().any(|l| self.limits.contains_key(l))
    }

    /// How many more tasks of a job its limits allow to start now.
    fn limit_room(&self, spec: &JobSpec) -> u32 {
        if !self.has_set_limits(spec) {
            return u32::MAX;
        }
        self.limit_room_with(spec, &self.tokens_in_use())
    }

    fn limit_room_with(&self, spec: &JobSpec, used: &HashMap<String, u32>) -> u32 {
        spec.limits
            .iter()
            .filter_map(|l| {
                let count = self.limits.get(l)?;
                Some(count.saturating_sub(used.get(l).copied().unwrap_or(0)))
            })
            .min()
            .unwrap_or(u32::MAX)
    }

    pub fn limit_views(&self) -> Vec<drqueue_common::model::LimitView> {
        let used = self.tokens_in_use();
        self.limits
            .iter()
            .map(|(name, count)| drqueue_common::model::LimitView {
                name: name.clone(),
                count: *count,
                in_use: used.get(name).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Disabling (or draining) gives an engine no new work: what it runs
    /// finishes, what it only queued goes back to be run elsewhere.
    /// Enabling also clears `sick`: the user vouches for the engine.
    pub fn set_engine_disabled(
        &mut self,
        id: &str,
        disabled: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), RequestError> {
        let idx = *self
            .engine_index
            .get(id)
            .ok_or_else(|| RequestError::NoEngine(id.to_string()))?;
        let e = &mut self.engines[idx as usize];
        e.disabled = disabled;
        if disabled {
            self.withdraw_unstarted(idx, None, now, fx);
        } else {
            e.sick = None;
            e.failures_in_row = 0;
            e.streak_job = None;
            e.streak_mixed = false;
            e.check_pending = None;
        }
        self.dirty_engines.insert(idx);
        Ok(())
    }

    /// Takes back the attempts engine `e` holds but has not started (of one
    /// job, or all): they go back to ready at the front of the queue and
    /// the engine is told to drop them. Started ones run on.
    fn withdraw_unstarted(
        &mut self,
        e: EngineIdx,
        job: Option<JobId>,
        now: Millis,
        fx: &mut Effects,
    ) {
        let mut keys = Vec::new();
        for (k, h) in self.engines[e as usize].held.iter_mut() {
            if !h.started && !h.cancelling && job.is_none_or(|j| j == k.task.job) {
                h.cancelling = true;
                keys.push(*k);
            }
        }
        if keys.is_empty() {
            return;
        }
        for k in &keys {
            self.requeue_lost(e, *k, now);
        }
        fx.messages
            .push((self.engines[e as usize].id.clone(), ToEngine::Cancel(keys)));
    }

    // ----- engine events ---------------------------------------------------

    /// An engine (re)connected. `held` is what it says it holds and
    /// `finished` the attempts whose results it is about to deliver; the
    /// answer is a [`ToEngine::Welcome`] naming held attempts it must drop.
    #[allow(clippy::too_many_arguments)]
    pub fn engine_registered(
        &mut self,
        id: &EngineId,
        facts: EngineFacts,
        slots: u32,
        hwm: u32,
        held: &[AttemptKey],
        finished: &[AttemptKey],
        now: Millis,
        fx: &mut Effects,
    ) {
        let e = self.intern_engine(id);
        // What the master thought the engine held but the engine no longer
        // has (it restarted) goes back to the queue. Finished attempts are
        // not forgotten: their results follow.
        let reported: HashSet<AttemptKey> = held.iter().chain(finished).copied().collect();
        let forgotten: Vec<AttemptKey> = self.engines[e as usize]
            .held
            .keys()
            .filter(|k| !reported.contains(k))
            .copied()
            .collect();
        for key in forgotten {
            self.engines[e as usize].held.remove(&key);
            self.requeue_lost(e, key, now);
        }
        let mut cancel = Vec::new();
        for key in held {
            if self.engines[e as usize].held.contains_key(key) {
                continue;
            }
            if self.adopt(e, *key, now) {
                self.engines[e as usize].held.insert(
                    *key,
                    Held {
                        started: false,
                        cancelling: false,
                    },
                );
            } else {
                self.engines[e as usize].held.insert(
                    *key,
                    Held {
                        started: false,
                        cancelling: true,
                    },
                );
                cancel.push(*key);
            }
        }
        self.set_facts(e, facts);
        let engine = &mut self.engines[e as usize];
        engine.check_pending = None;
        engine.slots = slots.max(1);
        engine.hwm = hwm.max(1);
        engine.online = true;
        engine.recovering = false;
        engine.last_seen = now;
        engine.free_ram_mb = engine.facts.ram_mb;
        engine.peak_outstanding = engine.peak_outstanding.max(engine.outstanding());
        self.dirty_engines.insert(e);
        fx.messages.push((
            id.clone(),
            ToEngine::Welcome {
                heartbeat_ms: self.cfg.heartbeat_ms,
                cancel,
            },
        ));
    }

    fn set_facts(&mut self, e: EngineIdx, mut facts: EngineFacts) {
        if facts.pools.is_empty() {
            facts.pools.push(DEFAULT_POOL.into());
        }
        let engine = &mut self.engines[e as usize];
        if engine.facts.pools != facts.pools {
            self.pools_dirty = true;
        }
        engine.facts = facts;
        self.dirty_engines.insert(e);
    }

    /// An engine refreshed its facts (on its cache time): renderers
    /// installed since, RAM added, pools changed by a restart of its wrapper.
    pub fn facts_refreshed(&mut self, id: &str, facts: EngineFacts) {
        if let Some(&e) = self.engine_index.get(id) {
            self.set_facts(e, facts);
        }
    }

    /// The answer to a check task: a sick engine that passes is well again.
    pub fn check_result(&mut self, id: &str, check: u64, ok: bool, detail: &str) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        let engine = &mut self.engines[e as usize];
        if engine.check_pending != Some(check) {
            return;
        }
        engine.check_pending = None;
        if engine.sick.is_none() {
            return;
        }
        if ok {
            tracing::info!(engine = %engine.id, "engine passed its check task; it gets work again");
            engine.sick = None;
            engine.failures_in_row = 0;
            engine.streak_job = None;
            engine.streak_mixed = false;
        } else {
            tracing::warn!(engine = %engine.id, "engine failed its check task: {detail}");
            engine.sick = Some(format!(
                "failed {} tasks in a row; check task failed: {detail}",
                engine.failures_in_row
            ));
        }
        self.dirty_engines.insert(e);
    }

    /// An engine reports an attempt the master does not have it holding.
    /// Adopt it when the task is still waiting to run (a restarted master
    /// lost the assignment); otherwise the engine must drop it.
    fn adopt(&mut self, e: EngineIdx, key: AttemptKey, now: Millis) -> bool {
        // Adopting takes limit tokens like any start: with none free (the
        // task's tokens went to others while this engine was away), drop it.
        // Nor may it put the job on more engines than max_engines allows.
        match self.jobs.get(&key.task.job) {
            Some(job)
                if self.limit_room(&job.spec) > 0
                    && !self.max_engines_reached(key.task.job, &job.spec, e) => {}
            _ => return false,
        }
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return false;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return false;
        };
        if task.status != TaskStatus::Ready || key.attempt < task.attempts || !job.is_dispatchable()
        {
            return false;
        }
        job.set_task_status(key.task.index, TaskStatus::Assigned);
        let task = &mut job.tasks[key.task.index as usize];
        task.attempts = key.attempt;
        task.engine = Some(e);
        task.started_ms = Some(now);
        if job.status == JobStatus::Queued {
            job.status = JobStatus::Running;
            job.started_ms.get_or_insert(now);
            self.dirty_jobs.insert(key.task.job);
        }
        self.dirty_tasks.insert(key.task);
        true
    }

    /// Any message from an engine proves it is alive.
    pub fn engine_seen(&mut self, id: &str, now: Millis) -> bool {
        match self.engine_index.get(id) {
            Some(&e) if self.engines[e as usize].online => {
                self.engines[e as usize].last_seen = now;
                true
            }
            _ => false,
        }
    }

    pub fn heartbeat(&mut self, id: &str, hb: Heartbeat, now: Millis) {
        if let Some(&e) = self.engine_index.get(id) {
            let engine = &mut self.engines[e as usize];
            engine.last_seen = now;
            engine.load = hb.load;
            engine.free_ram_mb = hb.free_ram_mb;
            engine.peak_held = engine.peak_held.max(hb.peak_held);
        }
    }

    /// The engine started an attempt's process at `at`.
    pub fn task_started(&mut self, id: &str, key: AttemptKey, at: Millis) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        if let Some(h) = self.engines[e as usize].held.get_mut(&key) {
            h.started = true;
        }
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return;
        };
        if task.status == TaskStatus::Assigned
            && task.attempts == key.attempt
            && task.engine == Some(e)
        {
            job.set_task_status(key.task.index, TaskStatus::Running);
            job.tasks[key.task.index as usize].started_ms = Some(at);
            self.dirty_tasks.insert(key.task);
        }
    }

    /// An attempt ended on an engine. The result is recorded whatever it is;
    /// it changes the task only if it is the task's live attempt, or a
    /// success for a task not yet done. The engine is acknowledged once the
    /// record is committed.
    pub fn task_finished(
        &mut self,
        id: &str,
        key: AttemptKey,
        outcome: Outcome,
        now: Millis,
        fx: &mut Effects,
    ) {
        let engine_id: EngineId = id.to_string();
        fx.after_commit
            .push((engine_id.clone(), ToEngine::Ack(vec![key])));
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        self.engines[e as usize].held.remove(&key);
        self.dirty_engines.insert(e);
        let mut counted = false;
        if let Some(job) = self.jobs.get_mut(&key.task.job) {
            if let Some(task) = job.tasks.get(key.task.index as usize) {
                let live =
                    task.status.is_held() && task.attempts == key.attempt && task.engine == Some(e);
                let late_success = !live && outcome.is_success() && !task.status.is_terminal();
                if live || late_success {
                    counted = true;
                    self.apply_result(e, key, &outcome, live, now, fx);
                }
            }
        }
        // The attempt that completes a task lives on in the task's own record;
        // history rows are for the others (failures, superseded attempts),
        // which halves the writes of a farm that mostly succeeds.
        if !(counted && outcome.is_success()) {
            self.attempts.push(AttemptRecord {
                attempt: key,
                engine: engine_id,
                ended_ms: now,
                outcome,
                counted,
            });
        }
        self.update_job_status(key.task.job, now, fx);
    }

    fn apply_result(
        &mut self,
        e: EngineIdx,
        key: AttemptKey,
        outcome: &Outcome,
        live: bool,
        now: Millis,
        fx: &mut Effects,
    ) {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let i = key.task.index;
        let max_attempts = job.spec.max_attempts;
        if !live {
            // A success from an attempt we had given up on: the frames are
            // rendered, so take it, and stop the attempt that replaced it.
            let t = &job.tasks[i as usize];
            if t.status.is_held() {
                if let Some(other) = t.engine {
                    let cur = AttemptKey {
                        task: key.task,
                        attempt: t.attempts,
                    };
                    if let Some(h) = self.engines[other as usize].held.get_mut(&cur) {
                        h.cancelling = true;
                        fx.messages.push((
                            self.engines[other as usize].id.clone(),
                            ToEngine::Cancel(vec![cur]),
                        ));
                    }
                }
            }
        }
        let t = &mut job.tasks[i as usize];
        if !live || t.started_ms.is_none() {
            // No Started came (a quick task): the run began wall_ms ago.
            t.started_ms = Some(now.saturating_sub(outcome.wall_ms));
        }
        t.engine = Some(e);
        t.ended_ms = Some(now);
        t.exit_code = outcome.exit_code;
        t.cpu_ms = Some(outcome.cpu_ms);
        t.peak_rss_kb = Some(outcome.peak_rss_kb);
        self.dirty_tasks.insert(key.task);
        self.dirty_engines.insert(e);
        let engine = &mut self.engines[e as usize];
        if outcome.is_success() {
            job.set_task_status(i, TaskStatus::Done);
            engine.tasks_done += 1;
            engine.failures_in_row = 0;
            engine.streak_job = None;
            engine.streak_mixed = false;
            return;
        }
        engine.tasks_failed += 1;
        let t = &mut job.tasks[i as usize];
        t.failures += 1;
        t.avoid = Some(e);
        if t.failures >= max_attempts {
            job.set_task_status(i, TaskStatus::Failed);
        } else {
            job.set_task_status(i, TaskStatus::Ready);
            job.ready.push_back(i);
        }
        if outcome.cancelled {
            return; // stopped on purpose: says nothing about the engine
        }
        // The engine's record with this job, and across jobs.
        *job.engine_failures.entry(e).or_default() += 1;
        self.dirty_jobs.insert(key.task.job);
        let newly_blacklisted = self.cfg.blacklist_after > 0
            && job.engine_failures.get(&e) == Some(&self.cfg.blacklist_after);
        engine.failures_in_row += 1;
        match engine.streak_job {
            None => engine.streak_job = Some(key.task.job),
            Some(j) if j != key.task.job => engine.streak_mixed = true,
            Some(_) => {}
        }
        let sick_now = self.cfg.sick_after > 0
            && engine.sick.is_none()
            && engine.streak_mixed
            && engine.failures_in_row >= self.cfg.sick_after;
        if newly_blacklisted {
            tracing::warn!(engine = %engine.id, job = key.task.job, "engine failed this job {} times; it gets no more of its tasks while other engines can run them", self.cfg.blacklist_after);
            let elsewhere = self
                .jobs
                .get(&key.task.job)
                .is_some_and(|j| self.can_run_elsewhere(j, e));
            if elsewhere {
                self.withdraw_unstarted(e, Some(key.task.job), now, fx);
            }
        }
        if sick_now {
            let engine = &mut self.engines[e as usize];
            let why = format!(
                "failed {} tasks in a row (last: task {} attempt {}, {})",
                engine.failures_in_row,
                key.task,
                key.attempt,
                outcome.describe()
            );
            tracing::warn!(engine = %engine.id, "engine is sick: {why}; it gets no work until enabled or until it passes a check task");
            engine.sick = Some(why);
            engine.check_due = now + self.cfg.check_interval_ms;
            self.withdraw_unstarted(e, None, now, fx);
        }
    }

    /// The engine hands attempts back unrun (it is shutting down).
    pub fn released(&mut self, id: &str, keys: &[AttemptKey], now: Millis) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        for key in keys {
            if self.engines[e as usize].held.remove(key).is_some() {
                self.requeue_lost(e, *key, now);
            }
        }
    }

    /// The engine is gone (silent past the timeout, or closed). Its live
    /// attempts go back to the queue, not counted as failures.
    pub fn engine_lost(&mut self, id: &str, now: Millis) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        self.lose_engine(e, now);
    }

    fn lose_engine(&mut self, e: EngineIdx, now: Millis) {
        let engine = &mut self.engines[e as usize];
        if !engine.online && !engine.recovering {
            return;
        }
        tracing::warn!(engine = %engine.id, host = %engine.facts.hostname, held = engine.held.len(), "engine lost; its tasks go back to the queue");
        engine.online = false;
        engine.recovering = false;
        let held = std::mem::take(&mut engine.held);
        for key in held.keys() {
            self.requeue_lost(e, *key, now);
        }
        self.dirty_engines.insert(e);
    }

    /// Puts a task back to ready if `key` is its live attempt on `e`.
    fn requeue_lost(&mut self, e: EngineIdx, key: AttemptKey, _now: Millis) {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return;
        };
        if task.status.is_held() && task.attempts == key.attempt && task.engine == Some(e) {
            job.set_task_status(key.task.index, TaskStatus::Ready);
            job.ready.push_front(key.task.index);
            self.dirty_tasks.insert(key.task);
        }
    }

    /// Time passes: engines that fell silent are lost, held jobs may start.
    pub fn tick(&mut self, now: Millis, fx: &mut Effects) {
        let timeout = self.cfg.engine_timeout_ms;
        let past_recovery = now >= self.recovery_deadline;
        for e in 0..self.engines.len() as EngineIdx {
            let engine = &self.engines[e as usize];
            let silent = engine.online && now.saturating_sub(engine.last_seen) > timeout;
            let not_back = engine.recovering && past_recovery;
            if silent || not_back {
                self.lose_engine(e, now);
            }
        }
        self.send_checks(now, fx);
        let waiting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.status == JobStatus::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.update_job_status(id, now, fx);
        }
    }

    /// Sick engines that are online get their check task when it is due.
    fn send_checks(&mut self, now: Millis, fx: &mut Effects) {
        if self.cfg.check_interval_ms == 0 {
            return;
        }
        for e in &mut self.engines {
            // An unanswered check is simply sent again when the next is due.
            if e.online && e.sick.is_some() && now >= e.check_due {
                let id = self.next_check_id;
                self.next_check_id += 1;
                e.check_pending = Some(id);
                e.check_due = now + self.cfg.check_interval_ms;
                fx.messages.push((
                    e.id.clone(),
                    ToEngine::Check {
                        id,
                        command: self.cfg.check_command.clone(),
                    },
                ));
            }
        }
    }

    fn recovering(&self, now: Millis) -> bool {
        now < self.recovery_deadline && self.engines.iter().any(|e| e.recovering)
    }

    // ----- dispatch --------------------------------------------------------

    /// Hands ready tasks to engines with credit. Two rounds: first fill idle
    /// slots everywhere (so one engine cannot hog a job it could only queue),
    /// then top each engine up to its HWM so its next task is already there
    /// when a slot frees. Within a priority, owners take turns.
    pub fn dispatch(&mut self, now: Millis, fx: &mut Effects) -> u32 {
        if self.recovering(now) {
            return 0;
        }
        let levels = self.priority_levels();
        if levels.is_empty() {
            return 0;
        }
        let first_message = fx.messages.len();
        // Attempts each owner holds: computed only when owners must share.
        let mut owner_load: Option<HashMap<String, u32>> = None;
        let mut tally = Tally::default();
        let mut total = 0;
        for round in 0..2 {
            let mut engines: Vec<EngineIdx> = (0..self.engines.len() as EngineIdx)
                .filter(|e| self.engines[*e as usize].accepts_work())
                .collect();
            // Least loaded first, so prefetch spreads evenly.
            engines.sort_by_key(|e| self.engines[*e as usize].outstanding());
            for e in engines {
                let engine = &self.engines[e as usize];
                let mut want = if round == 0 {
                    engine.idle_slots()
                } else {
                    engine.credit()
                };
                for level in &levels {
                    if want == 0 {
                        break;
                    }
                    let n = match level.as_slice() {
                        [(_, jobs)] => self.assign_in_order(jobs, e, want, &mut tally, now, fx),
                        owners => {
                            let load = owner_load.get_or_insert_with(|| self.owner_load());
                            self.assign_by_turns(owners, load, e, want, &mut tally, now, fx)
                        }
                    };
                    want -= n;
                    total += n;
                }
            }
        }
        coalesce_assigns(&mut fx.messages, first_message);
        total
    }

    /// Jobs with ready tasks, grouped by priority (highest first), then by
    /// owner (in order of each owner's oldest job), each owner's jobs in
    /// submission order.
    fn priority_levels(&self) -> Vec<Vec<(String, Vec<JobId>)>> {
        let mut by_priority: BTreeMap<std::cmp::Reverse<u32>, Vec<(String, Vec<JobId>)>> =
            BTreeMap::new();
        // Job ids ascend, so each owner's list is in submission order and
        // owners appear in order of their oldest job.
        for (id, j) in &self.jobs {
            if !j.is_dispatchable() || j.counts.get(TaskStatus::Ready) == 0 {
                continue;
            }
            let owners = by_priority
                .entry(std::cmp::Reverse(j.spec.priority))
                .or_default();
            match owners.iter_mut().find(|(o, _)| *o == j.spec.owner) {
                Some((_, jobs)) => jobs.push(*id),
                None => owners.push((j.spec.owner.clone(), vec![*id])),
            }
        }
        by_priority.into_values().collect()
    }

    /// Live attempts held per owner, farm-wide.
    fn owner_load(&self) -> HashMap<String, u32> {
        let mut load: HashMap<String, u32> = HashMap::new();
        for e in &self.engines {
            for (k, h) in &e.held {
                if let (false, Some(job)) = (h.cancelling, self.jobs.get(&k.task.job)) {
                    *load.entry(job.spec.owner.clone()).or_default() += 1;
                }
            }
        }
        load
    }

    /// Gives engine `e` up to `want` tasks from `jobs`, oldest job first.
    fn assign_in_order(
        &mut self,
        jobs: &[JobId],
        e: EngineIdx,
        mut want: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let mut n = 0;
        for &job in jobs {
            if want == 0 {
                break;
            }
            let got = self.assign_from(job, e, want, tally, now, fx);
            want -= got;
            n += got;
        }
        n
    }

    /// Owners of one priority take turns: each task goes to the owner
    /// holding the fewest attempts (ties to the owner with the oldest job),
    /// so equal owners alternate and a newcomer catches up first.
    #[allow(clippy::too_many_arguments)]
    fn assign_by_turns(
        &mut self,
        owners: &[(String, Vec<JobId>)],
        load: &mut HashMap<String, u32>,
        e: EngineIdx,
        mut want: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let mut able: Vec<usize> = (0..owners.len()).collect();
        let mut n = 0;
        while want > 0 {
            let Some((pos, &o)) = able
                .iter()
                .enumerate()
                .min_by_key(|(_, &o)| (load.get(&owners[o].0).copied().unwrap_or(0), o))
            else {
                break;
            };
            if self.assign_in_order(&owners[o].1, e, 1, tally, now, fx) == 0 {
                able.remove(pos); // nothing of theirs fits this engine now
                continue;
            }
            *load.entry(owners[o].0.clone()).or_default() += 1;
            want -= 1;
            n += 1;
        }
        n
    }

    /// Gives engine `e` up to `max` ready tasks of one job; returns how many.
    fn assign_from(
        &mut self,
        job_id: JobId,
        e: EngineIdx,
        max: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let Some(job) = self.jobs.get(&job_id) else {
            return 0;
        };
        let engine = &self.engines[e as usize];
        if !job.is_dispatchable()
            || job.counts.get(TaskStatus::Ready) == 0
            || !eligible(engine, &job.spec)
        {
            return 0;
        }
        let new_engine_for_job = job.spec.max_engines > 0 && !engine.runs_job(job_id);
        if new_engine_for_job {
            let on = *tally
                .engines_on
                .entry(job_id)
                .or_insert_with(|| self.engines_running(job_id));
            if on >= job.spec.max_engines {
                return 0;
            }
        }
        // Retries avoid the engine that failed them, and a blacklisted
        // engine gets none of the job, unless no other engine could run it:
        // then the job fails by its max_attempts instead of waiting forever.
        let able = *tally
            .able
            .entry(job_id)
            .or_insert_with(|| self.unbanned_engines(job));
        let e_counts = engine.accepts_work() && !job.is_blacklisted(e, &self.cfg);
        let others_can_run = able > u32::from(e_counts);
        if job.is_blacklisted(e, &self.cfg) && others_can_run {
            return 0;
        }
        let limited = self.has_set_limits(&job.spec);
        let limit_room = if limited {
            let used = tally.tokens.get_or_insert_with(|| self.tokens_in_use());
            self.limit_room_with(&job.spec, used)
        } else {
            u32::MAX
        };
        let max = max
            .min(self.ram_room(engine, job.spec.requirements.min_ram_mb))
            .min(limit_room);
        if max == 0 {
            return 0;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return 0;
        };
        let engine = &mut self.engines[e as usize];
        let mut batch = Vec::new();
        let mut skipped = Vec::new();
        while (batch.len() as u32) < max {
            let Some(i) = job.ready.pop_front() else {
                break;
            };
            let t = &job.tasks[i as usize];
            if t.status != TaskStatus::Ready {
                continue; // stale entry
            }
            if t.avoid == Some(e) && others_can_run {
                skipped.push(i);
                continue;
            }
            job.set_task_status(i, TaskStatus::Assigned);
            let t = &mut job.tasks[i as usize];
            t.attempts += 1;
            t.engine = Some(e);
            t.started_ms = None;
            t.ended_ms = None;
            t.exit_code = None;
            let key = AttemptKey {
                task: TaskKey {
                    job: job_id,
                    index: i,
                },
                attempt: t.attempts,
            };
            engine.held.insert(
                key,
                Held {
                    started: false,
                    cancelling: false,
                },
            );
            self.dirty_tasks.insert(key.task);
            batch.push(Assignment {
                index: i,
                attempt: t.attempts,
                block: t.block,
            });
        }
        for i in skipped.into_iter().rev() {
            job.ready.push_front(i);
        }
        let n = batch.len() as u32;
        if n > 0 {
            if let (true, Some(used)) = (limited, tally.tokens.as_mut()) {
                for l in &job.spec.limits {
                    *used.entry(l.clone()).or_default() += n;
                }
            }
            if new_engine_for_job {
                *tally.engines_on.entry(job_id).or_default() += 1;
            }
            engine.peak_outstanding = engine.peak_outstanding.max(engine.outstanding());
            if job.status == JobStatus::Queued {
                job.status = JobStatus::Running;
                job.started_ms.get_or_insert(now);
                self.dirty_jobs.insert(job_id);
            }
            fx.messages.push((
                engine.id.clone(),
                ToEngine::Assign(Assign {
                    job: job.body.clone(),
                    tasks: batch,
                }),
            ));
        }
        n
    }

    /// RAM engine `e` can still promise: its whole RAM when it holds
    /// nothing; otherwise the free RAM of its last heartbeat, but never more
    /// than what the requirements of the tasks it holds leave.
    fn free_ram_estimate(&self, engine: &Engine) -> u64 {
        if engine.held.is_empty() {
            return engine.facts.ram_mb;
        }
        let reserved: u64 = engine
            .held
            .iter()
            .filter(|(_, h)| !h.cancelling)
            .filter_map(|(k, _)| self.jobs.get(&k.task.job))
            .map(|j| j.spec.requirements.min_ram_mb)
            .sum();
        engine
            .free_ram_mb
            .min(engine.facts.ram_mb.saturating_sub(reserved))
    }

    /// How many more tasks needing `need_mb` each the engine has room for.
    fn ram_room(&self, engine: &Engine, need_mb: u64) -> u32 {
        if need_mb == 0 {
            return u32::MAX;
        }
        (self.free_ram_estimate(engine) / need_mb).min(u32::MAX as u64) as u32
    }

    /// Could an engine other than `e`, online and not blacklisted, run the job?
    fn can_run_elsewhere(&self, job: &Job, e: EngineIdx) -> bool {
        self.engines.iter().enumerate().any(|(i, o)| {
            let i = i as EngineIdx;
            i != e && self.runs_unbanned(job, o, i)
        })
    }

    /// How many engines could run the job now without a blacklist waiver.
    fn unbanned_engines(&self, job: &Job) -> u32 {
        (0..self.engines.len() as EngineIdx)
            .filter(|&i| self.runs_unbanned(job, &self.engines[i as usize], i))
            .count() as u32
    }

    fn runs_unbanned(&self, job: &Job, o: &Engine, i: EngineIdx) -> bool {
        o.accepts_work() && eligible(o, &job.spec) && !job.is_blacklisted(i, &self.cfg)
    }

    /// Would giving engine `e` this job put it on more engines than its
    /// `max_engines` allows?
    fn max_engines_reached(&self, job: JobId, spec: &JobSpec, e: EngineIdx) -> bool {
        spec.max_engines > 0
            && !self.engines[e as usize].runs_job(job)
            && self.engines_running(job) >= spec.max_engines
    }

    /// How many engines hold a live attempt of this job.
    fn engines_running(&self, job: JobId) -> u32 {
        self.engines.iter().filter(|o| o.runs_job(job)).count() as u32
    }

    // ----- job status ------------------------------------------------------

    /// Recomputes a job's status from its tasks, dependencies and controls.
    fn update_job_status(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status.is_terminal() && job.counts.terminal() == job.tasks.len() as u64 {
            return;
        }
        let total = job.tasks.len() as u64;
        let new = if job.counts.terminal() == total {
            if job.counts.get(TaskStatus::Done) == total {
                JobStatus::Done
            } else if job.counts.get(TaskStatus::Failed) > 0 {
                JobStatus::Failed
            } else {
                JobStatus::Cancelled
            }
        } else if job.spec.paused {
            JobStatus::Paused
        } else {
            match self.dependency_state(id, now) {
                DepState::Blocked => JobStatus::Waiting,
                DepState::Broken(reason) => {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.reason = Some(reason);
                    }
                    self.cancel_tasks(id, now, fx);
                    JobStatus::Cancelled
                }
                DepState::Met => {
                    let job = &self.jobs[&id];
                    if job.counts.get(TaskStatus::Waiting) > 0 {
                        self.release_waiting_tasks(id);
                    }
                    let job = &self.jobs[&id];
                    let active = job.counts.get(TaskStatus::Assigned)
                        + job.counts.get(TaskStatus::Running)
                        + job.counts.terminal();
                    if active > 0 {
                        JobStatus::Running
                    } else {
                        JobStatus::Queued
                    }
                }
            }
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.status != new {
            job.status = new;
            if new == JobStatus::Running {
                job.started_ms.get_or_insert(now);
            }
            self.dirty_jobs.insert(id);
            if new.is_terminal() {
                job.finished_ms = Some(now);
                fx.ended_jobs.push(id);
                self.on_job_ended(id, now, fx);
            }
        }
    }

    fn release_waiting_tasks(&mut self, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        for i in 0..job.tasks.len() as u32 {
            if job.tasks[i as usize].status == TaskStatus::Waiting {
                job.set_task_status(i, TaskStatus::Ready);
                job.ready.push_back(i);
                self.dirty_tasks.insert(TaskKey { job: id, index: i });
            }
        }
    }

    fn dependency_state(&self, id: JobId, now: Millis) -> DepState {
        let job = &self.jobs[&id];
        for dep in &job.spec.after {
            match self.jobs.get(&dep.job) {
                Some(other) if other.status.is_terminal() && !dep.on.contains(&other.status) => {
                    return DepState::Broken(format!(
                        "job {} ended {}, which this job's --after does not accept",
                        dep.job, other.status
                    ));
                }
                Some(other) if other.status.is_terminal() => {}
                Some(_) => return DepState::Blocked,
                // A deleted dependency cannot be waited for; treat as met.
                None => {}
            }
        }
        if job.spec.start_after.is_some_and(|t| now < t) {
            return DepState::Blocked;
        }
        DepState::Met
    }

    /// Jobs waiting on this one may now start (or be cancelled), and its
    /// notification becomes due.
    fn on_job_ended(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        if let Some(job) = self.jobs.get_mut(&id) {
            let status = job.status;
            if let Some(n) = job.notification.as_mut() {
                n.attempts = 0;
                n.last_error = None;
                if n.on.fires_on(status) {
                    n.state = NotifyState::Pending;
                    n.next_try_ms = Some(now);
                } else {
                    n.state = NotifyState::Skipped;
                    n.next_try_ms = None;
                }
                self.dirty_jobs.insert(id);
            }
        }
        let dependents: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.status == JobStatus::Waiting && j.spec.after.iter().any(|d| d.job == id)
            })
            .map(|(jid, _)| *jid)
            .collect();
        for d in dependents {
            self.update_job_status(d, now, fx);
        }
    }

    // ----- persistence -----------------------------------------------------

    /// Everything changed since the last call, as one store batch.
    pub fn take_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        for id in std::mem::take(&mut self.dirty_jobs) {
            if let Some(job) = self.jobs.get(&id) {
                batch.jobs.push(job.record(id, &self.engines));
            }
        }
        let mut keys: Vec<TaskKey> = std::mem::take(&mut self.dirty_tasks).into_iter().collect();
        keys.sort_unstable();
        batch.tasks.reserve(keys.len());
        for key in keys {
            if let Some(rec) = self.task_record(key) {
                batch.tasks.push(rec);
            }
        }
        for e in std::mem::take(&mut self.dirty_engines) {
            batch.engines.push(self.engines[e as usize].record());
        }
        batch.deleted_jobs = std::mem::take(&mut self.deleted_jobs);
        batch.attempts = std::mem::take(&mut self.attempts);
        if std::mem::take(&mut self.next_id_dirty) {
            batch.next_job_id = Some(self.next_job_id);
        }
        for name in std::mem::take(&mut self.dirty_limits) {
            if let Some(count) = self.limits.get(&name) {
                batch.limits.push(LimitRecord {
                    name,
                    count: *count,
                });
            }
        }
        if std::mem::take(&mut self.pools_dirty) {
            let mut pools: BTreeMap<String, Vec<EngineId>> = BTreeMap::new();
            for e in &self.engines {
                for p in &e.facts.pools {
                    pools.entry(p.clone()).or_default().push(e.id.clone());
                }
            }
            batch.pools = Some(
                pools
                    .into_iter()
                    .map(|(name, engines)| PoolRecord { name, engines })
                    .collect(),
            );
        }
        batch
    }

    pub fn task_record(&self, key: TaskKey) -> Option<TaskRecord> {
        let t = self.jobs.get(&key.job)?.tasks.get(key.index as usize)?;
        Some(TaskRecord {
            job: key.job,
            index: key.index,
            first: t.block.first,
            last: t.block.last,
            step: t.block.step,
            status: t.status,
            attempts: t.attempts,
            failures: t.failures,
            engine: t.engine.map(|e| self.engines[e as usize].id.clone()),
            started_ms: t.started_ms,
            ended_ms: t.ended_ms,
            exit_code: t.exit_code,
            peak_rss_kb: t.peak_rss_kb,
            cpu_ms: t.cpu_ms,
        })
    }

    // ----- notifications ---------------------------------------------------

    /// Notifications due now: marked `sending` (in memory only) and returned
    /// for the mailer. Each is in flight at most once.
    pub fn due_notifications(&mut self, now: Millis) -> Vec<JobId> {
        let mut due = Vec::new();
        for (id, job) in self.jobs.iter_mut() {
            if let Some(n) = job.notification.as_mut() {
                if n.state == NotifyState::Pending && n.next_try_ms.is_none_or(|t| t <= now) {
                    n.state = NotifyState::Sending;
                    n.attempts += 1;
                    due.push(*id);
                }
            }
        }
        due
    }

    /// How a sending attempt went. A failure is retried with backoff (1 s,
    /// doubling, at most 5 min) until `mail_attempts` are used, or at once
    /// given up when `permanent` (no SMTP server configured, bad address).
    pub fn notification_result(
        &mut self,
        id: JobId,
        result: Result<(), String>,
        permanent: bool,
        now: Millis,
    ) {
        let Some(n) = self.jobs.get_mut(&id).and_then(|j| j.notification.as_mut()) else {
            return;
        };
        if n.state != NotifyState::Sending {
            return;
        }
        match result {
            Ok(()) => {
                n.state = NotifyState::Sent;
                n.sent_ms = Some(now);
                n.next_try_ms = None;
                n.last_error = None;
            }
            Err(e) => {
                if permanent || n.attempts >= self.cfg.mail_attempts {
                    n.state = NotifyState::Failed;
                    n.next_try_ms = None;
                } else {
                    let backoff = 1000u64 << n.attempts.saturating_sub(1).min(9);
                    n.state = NotifyState::Pending;
                    n.next_try_ms = Some(now + backoff.min(300_000));
                }
                n.last_error = Some(e);
            }
        }
        self.dirty_jobs.insert(id);
    }

    // ----- queries ---------------------------------------------------------

    pub fn job_view(&self, id: JobId, now: Millis) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        Some(JobView {
            id,
            name: job.spec.name.clone(),
            owner: job.spec.owner.clone(),
            status: job.status,
            priority: job.spec.priority,
            pool: job.spec.pool.clone(),
            counts: job.counts,
            tasks_total: job.tasks.len() as u64,
            blocked: self.blocked_reasons(id, now),
            command: job.spec.command.clone(),
            frames: job.spec.frames.clone(),
            blocksize: job.spec.blocksize,
            max_attempts: job.spec.max_attempts,
            timeout_secs: job.spec.timeout_secs,
            max_engines: job.spec.max_engines,
            requirements: job.spec.requirements.clone(),
            limits: job.spec.limits.clone(),
            after: job.spec.after.clone(),
            blacklisted: job
                .engine_failures
                .keys()
                .filter(|e| job.is_blacklisted(**e, &self.cfg))
                .map(|e| self.engines[*e as usize].id.clone())
                .collect(),
            reason: job.reason.clone(),
            notification: job.notification.clone(),
            submitted_ms: job.submitted_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
        })
    }

    pub fn job_views(&self, status: Option<JobStatus>, now: Millis) -> Vec<JobView> {
        self.jobs
            .iter()
            .filter(|(_, j)| status.is_none_or(|s| j.status == s))
            .filter_map(|(id, _)| self.job_view(*id, now))
            .collect()
    }

    pub fn task_views(&self, id: JobId, status: Option<TaskStatus>) -> Option<Vec<TaskView>> {
        let job = self.jobs.get(&id)?;
        Some(
            (0..job.tasks.len() as u32)
                .filter(|i| status.is_none_or(|s| job.tasks[*i as usize].status == s))
                .filter_map(|index| self.task_record(TaskKey { job: id, index }))
                .map(TaskRecord::view)
                .collect(),
        )
    }

    pub fn task_attempts(&self, key: TaskKey) -> Option<u32> {
        Some(
            self.jobs
                .get(&key.job)?
                .tasks
                .get(key.index as usize)?
                .attempts,
        )
    }

    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    pub fn engine(&self, id: &str) -> Option<&Engine> {
        self.engine_index
            .get(id)
            .map(|e| &self.engines[*e as usize])
    }

    pub fn job_status(&self, id: JobId) -> Option<JobStatus> {
        self.jobs.get(&id).map(|j| j.status)
    }

    /// Jobs whose tasks are still to finish (not terminal).
    pub fn unfinished_jobs(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| !j.status.is_terminal())
            .count()
    }
}

/// Counts one dispatch call keeps as it assigns, so that each decision does
/// not recount every held attempt. Valid for one call only: within it,
/// attempts are only added, and no engine changes state.
#[derive(Default)]
struct Tally {
    /// Tokens in use per limit (computed when a limited job is first seen).
    tokens: Option<HashMap<String, u32>>,
    /// Engines running each capped job.
    engines_on: HashMap<JobId, u32>,
    /// Engines that could run each job without a blacklist waiver.
    able: HashMap<JobId, u32>,
}

/// Merges the Assign messages from `from` on that go to the same engine for
/// the same job (owners taking turns, or the two dispatch rounds, produce
/// several): the job's command then travels once.
fn coalesce_assigns(messages: &mut Vec<(EngineId, ToEngine)>, from: usize) {
    if messages.len() - from < 2 {
        return;
    }
    let tail = messages.split_off(from);
    let mut first: HashMap<(EngineId, JobId), usize> = HashMap::new();
    for (engine, msg) in tail {
        if let ToEngine::Assign(a) = msg {
            let key = (engine, a.job.id);
            if let Some(&i) = first.get(&key) {
                if let ToEngine::Assign(earlier) = &mut messages[i].1 {
                    earlier.tasks.extend(a.tasks);
                }
                continue;
            }
            first.insert(key.clone(), messages.len());
            messages.push((key.0, ToEngine::Assign(a)));
        } else {
            messages.push((engine, msg));
        }
    }
}

enum DepState {
    Met,
    Blocked,
    Broken(String),
}

/// Can engine `e` run tasks of a job with this spec?
fn eligible(e: &Engine, spec: &JobSpec) -> bool {
    let r = &spec.requirements;
    e.facts.pools.contains(&spec.pool)
        && r.os
            .as_ref()
            .is_none_or(|os| e.facts.os.eq_ignore_ascii_case(os))
        && e.facts.cores >= r.min_cores
        && (r.min_ram_mb == 0 || e.facts.ram_mb >= r.min_ram_mb)
        && r.capabilities
            .iter()
            .all(|c| e.facts.capabilities.iter().any(|have| have == c))
}

fn new_job(id: JobId, mut spec: JobSpec, blocks: &[Block], now: Millis) -> Job {
    if spec.name.is_empty() {
        spec.name = spec.default_name();
    }
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
    };
    let initial = TaskStatus::Waiting;
    let tasks: Vec<Task> = blocks
        .iter()
        .map(|b| Task {
            block: *b,
            status: initial,
            attempts: 0,
            failures: 0,
            engine: None,
            avoid: None,
            started_ms: None,
            ended_ms: None,
            exit_code: None,
            peak_rss_kb: None,
            cpu_ms: None,
        })
        .collect();
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
        tasks,
        counts,
        ready: VecDeque::new(),
        submitted_ms: now,
        started_ms: None,
        finished_ms: None,
        reason: None,
        engine_failures: BTreeMap::new(),
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
