//! Scheduler tests: hand-written cases, then property tests that drive the
//! state machine with generated event sequences against simulated engines
//! and a simulated store (so master restarts go through `restore`).
//!
//! `mod.rs` is the harness (the simulated farm); the cases are by topic.

mod audit;
mod auto_blocks;
mod dispatch;
mod failures;
mod jobs;
mod property;
mod recovery;
mod tiles;

use super::*;
use crate::memory::MemoryStore;
use drqueue_common::model::{
    Counts, Dependency, EngineState, JobSpec, JobStatus, NotifyState, Requirements, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, Heartbeat, Outcome};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const POOLS: [&str; 3] = ["default", "gpu", "cpu"];

/// Jobs of an even number of frames take a token of this limit.
const LICENCES: u32 = 2;

fn spec(frames: &str, blocksize: u32) -> JobSpec {
    JobSpec {
        name: "t".into(),
        command: vec!["true".into()],
        frames: frames.into(),
        blocksize,
        ..Default::default()
    }
}

/// Builds specs for the cases: `spec("1-4", 1).limit("nuke").priority(900)`.
trait SpecBuilder: Sized {
    fn with(self, f: impl FnOnce(&mut JobSpec)) -> Self;
    fn priority(self, p: u32) -> Self {
        self.with(|s| s.priority = p)
    }
    fn owner(self, o: &str) -> Self {
        self.with(|s| s.owner = o.into())
    }
    fn pool(self, p: &str) -> Self {
        self.with(|s| s.pool = p.into())
    }
    fn limit(self, l: &str) -> Self {
        self.with(|s| s.limits.push(l.into()))
    }
    fn max_engines(self, n: u32) -> Self {
        self.with(|s| s.max_engines = n)
    }
    fn max_attempts(self, n: u32) -> Self {
        self.with(|s| s.max_attempts = n)
    }
    fn min_ram_mb(self, mb: u64) -> Self {
        self.with(|s| s.requirements.min_ram_mb = mb)
    }
    fn needs(self, capability: &str) -> Self {
        self.with(|s| s.requirements.capabilities.push(capability.into()))
    }
}

impl SpecBuilder for JobSpec {
    fn with(mut self, f: impl FnOnce(&mut JobSpec)) -> Self {
        f(&mut self);
        self
    }
}

fn facts(pools: &[&str]) -> EngineFacts {
    EngineFacts {
        name: "e".into(),
        hostname: "h".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        cores: 8,
        ram_mb: 16000,
        pools: pools.iter().map(|p| p.to_string()).collect(),
        capabilities: vec!["blender".into()],
        ..Default::default()
    }
}

/// An engine as the simulation plays it: obeys messages, holds attempts,
/// keeps results until they are acknowledged, and remembers what it was told.
#[derive(Debug, Clone)]
struct SimEngine {
    id: EngineId,
    pools: Vec<&'static str>,
    slots: u32,
    hwm: u32,
    alive: bool,
    /// SIGSTOPped: says nothing, does nothing, keeps what it holds.
    stopped: bool,
    held: Vec<AttemptKey>,
    /// Results sent and not yet acknowledged: sent again on registering.
    unacked: Vec<(AttemptKey, Outcome)>,
    /// Attempts the master asked it to stop (even if the message was lost).
    asked_to_stop: BTreeSet<AttemptKey>,
    /// Attempts it held while frozen: the master may have given up on them,
    /// so their results say nothing the oracle can count on.
    frozen_with: BTreeSet<AttemptKey>,
    /// Failures the master heard but whose acks died with the engine: the
    /// master's record may hold them, the oracle's never will.
    lost_failures: Vec<AttemptKey>,
    /// What it holds may be news to the master: the master restarted from a
    /// store that missed its last commit, and this engine has not registered
    /// since. Nothing the master decides can count such an engine.
    unheard_since_lost_commit: bool,
    peak: usize,
    /// Failed attempts since its last success, and of which jobs.
    streak: u32,
    streak_jobs: BTreeSet<JobId>,
}

/// What a retry of a job forgave in the oracle's record.
#[derive(Debug, Clone, Default)]
struct RetryForgave {
    failures: Vec<((usize, JobId), u32)>,
    unacked: Vec<AttemptKey>,
}

/// How often the situations worth testing came up, over a whole run.
#[derive(Debug, Default, Clone)]
struct Coverage {
    successes: u32,
    failures: u32,
    engine_kills_with_work: u32,
    results_in_register: u32,
    lost_commits: u32,
    lost_cancels: u32,
    late_cancels_delivered: u32,
    clean_shutdowns_with_work: u32,
    limit_changes: u32,
    sick_engines: u32,
    blacklistings: u32,
    paused_with_ready: u32,
    forgeries: u32,
    /// Auto-sized jobs that were cut into more than one task.
    auto_cuts: u32,
    /// Tasks that waited for others (a tiled frame's assembly) started.
    assemblies: u32,
}

struct Sim {
    s: Scheduler,
    now: Millis,
    engines: Vec<SimEngine>,
    store: MemoryStore,
    /// The store before its last commit: what a crash mid-commit leaves.
    store_before_last_commit: MemoryStore,
    /// The last commit's acks, sent once the next round starts (a crash
    /// before then loses them with the commit).
    acks_in_flight: Vec<(EngineId, ToEngine)>,
    /// Cancels the network held back, delivered at the next `advance`.
    late_cancels: Vec<(EngineId, Vec<AttemptKey>)>,
    /// While set, Cancel messages are held back rather than delivered.
    hold_cancels: bool,
    jobs: Vec<JobId>,
    /// The oracle's own record, from what the engines saw and said.
    paused: BTreeSet<JobId>,
    /// Paused in the last commit: paused for good once the next one starts.
    pausing: Vec<JobId>,
    /// Engines enabled (or passed a check) in the last commit: their streak
    /// is reset for good once the next one starts.
    forgiving: Vec<usize>,
    /// Successes the master took (the task became done by them)...
    accepted: BTreeSet<AttemptKey>,
    /// ...and, once acknowledged, durable: never to run again.
    done: BTreeSet<TaskKey>,
    /// Failures per (engine, job) since the job's last retry.
    job_failures: BTreeMap<(usize, JobId), u32>,
    /// Attempts the master recorded as counted, as each commit carried them
    /// (a re-delivered result, uncounted, leaves the first record as it is),
    /// and those of the last commit, which a crash may take back.
    counted: BTreeSet<AttemptKey>,
    counted_in_last_commit: Vec<AttemptKey>,
    /// Failures reported before a retry of their job, acknowledged after:
    /// the retry forgave them.
    forgiven: BTreeSet<AttemptKey>,
    /// What retries forgave, not yet committed and in the last commit: a
    /// crash that loses it takes the forgiveness back.
    retries_pending: Vec<RetryForgave>,
    retries_in_last_commit: Vec<RetryForgave>,
    /// Counted failures acknowledged while forgiven, and on which engine.
    acked_forgiven: BTreeMap<AttemptKey, usize>,
    /// Failures acknowledged after an enable or a passed check of their
    /// engine: that reset its streak.
    streak_forgiven: BTreeSet<AttemptKey>,
    /// Every attempt handed to an engine, and to which.
    given: BTreeSet<(EngineId, AttemptKey)>,
    limit: u32,
    /// Work handed where it must not go, seen as it arrives.
    violations: Vec<String>,
    coverage: Coverage,
}

/// Checks come often enough for the generated runs to see them.
fn sim_config() -> Config {
    Config {
        check_interval_ms: 10_000,
        ..Config::default()
    }
}

impl Sim {
    /// A job's blocked reasons as the API words them.
    fn blocked(&self, job: JobId, now: Millis) -> Vec<String> {
        self.s
            .blocked_reasons(job, now)
            .iter()
            .map(|b| b.text(now, &chrono::Utc))
            .collect()
    }

    fn new() -> Sim {
        Sim {
            s: Scheduler::new(sim_config()),
            now: 1_000_000,
            engines: Vec::new(),
            store: MemoryStore::default(),
            store_before_last_commit: MemoryStore::default(),
            acks_in_flight: Vec::new(),
            late_cancels: Vec::new(),
            hold_cancels: false,
            jobs: Vec::new(),
            paused: BTreeSet::new(),
            pausing: Vec::new(),
            forgiving: Vec::new(),
            accepted: BTreeSet::new(),
            done: BTreeSet::new(),
            job_failures: BTreeMap::new(),
            counted: BTreeSet::new(),
            counted_in_last_commit: Vec::new(),
            forgiven: BTreeSet::new(),
            retries_pending: Vec::new(),
            retries_in_last_commit: Vec::new(),
            acked_forgiven: BTreeMap::new(),
            given: BTreeSet::new(),
            streak_forgiven: BTreeSet::new(),
            limit: 0,
            violations: Vec::new(),
            coverage: Coverage::default(),
        }
    }

    /// Submits a job and lets the farm settle (dispatch, deliver, commit).
    fn submit(&mut self, spec: JobSpec) -> JobId {
        let mut fx = Effects::default();
        let id = self
            .s
            .submit(spec, self.now, &mut fx)
            .expect("a valid spec");
        self.settle(fx);
        id
    }

    fn add_engine(&mut self, pools: Vec<&'static str>, slots: u32, hwm: u32) -> usize {
        let id = format!("engine-{}", self.engines.len());
        self.engines.push(SimEngine {
            id: id.into(),
            pools,
            slots,
            hwm,
            alive: false,
            stopped: false,
            unheard_since_lost_commit: false,
            held: Vec::new(),
            unacked: Vec::new(),
            asked_to_stop: BTreeSet::new(),
            frozen_with: BTreeSet::new(),
            lost_failures: Vec::new(),
            peak: 0,
            streak: 0,
            streak_jobs: BTreeSet::new(),
        });
        let i = self.engines.len() - 1;
        self.register(i);
        i
    }

    /// The engine (re)connects: it reports what it holds and delivers the
    /// results it has not had acknowledged, as the core does with Register.
    fn register(&mut self, i: usize) {
        let e = &mut self.engines[i];
        e.alive = true;
        e.stopped = false;
        e.unheard_since_lost_commit = false;
        let (id, f, slots, hwm, held) = (
            e.id.clone(),
            facts(&e.pools),
            e.slots,
            e.hwm,
            e.held.clone(),
        );
        let results = e.unacked.clone();
        let finished: Vec<AttemptKey> = results.iter().map(|(k, _)| *k).collect();
        if !finished.is_empty() {
            self.coverage.results_in_register += 1;
        }
        let mut fx = Effects::default();
        self.s
            .engine_registered(&id, f, slots, hwm, &held, &finished, self.now, &mut fx);
        for (key, outcome) in results {
            self.report(&id, key, outcome, &mut fx);
        }
        self.settle(fx);
    }

    /// Commits what changed; the previous commit's acks go out first.
    fn commit(&mut self) {
        let batch = self.s.take_batch();
        if batch.is_empty() {
            return; // nothing written: the last commit is still the last
        }
        let acks = std::mem::take(&mut self.acks_in_flight);
        self.deliver(acks, &mut Effects::default());
        self.paused.extend(self.pausing.drain(..));
        for i in std::mem::take(&mut self.forgiving) {
            self.forgive_streak(i);
        }
        self.retries_in_last_commit = std::mem::take(&mut self.retries_pending);
        self.store_before_last_commit = self.store.clone();
        self.counted_in_last_commit = batch
            .attempts
            .iter()
            .filter(|a| a.counted)
            .map(|a| a.attempt)
            .collect();
        self.counted
            .extend(self.counted_in_last_commit.iter().copied());
        self.store.commit(batch);
    }

    /// Delivers effects to simulated engines, dispatches, commits.
    fn settle(&mut self, mut fx: Effects) {
        for _ in 0..50 {
            let n = self.s.dispatch(self.now, &mut fx);
            let msgs = std::mem::take(&mut fx.messages);
            let after = std::mem::take(&mut fx.after_commit);
            self.commit();
            self.acks_in_flight.extend(after);
            if msgs.is_empty() && n == 0 {
                break;
            }
            let mut next = Effects::default();
            self.deliver(msgs, &mut next);
            fx = next;
        }
    }

    fn deliver(&mut self, msgs: Vec<(EngineId, ToEngine)>, next: &mut Effects) {
        for (id, m) in msgs {
            let Some(i) = self.engines.iter().position(|e| e.id == id) else {
                continue;
            };
            if !self.engines[i].alive {
                continue;
            }
            if self.engines[i].stopped {
                // Frozen: the message is lost with the connection it came
                // on (the engine reconnects when it thaws); what the master
                // meant still counts.
                if let ToEngine::Cancel(keys) = &m {
                    self.engines[i].asked_to_stop.extend(keys.iter().copied());
                }
                continue;
            }
            match m {
                ToEngine::Assign(a) => {
                    for t in a.tasks {
                        let key = AttemptKey {
                            task: TaskKey {
                                job: a.job.id,
                                index: t.index,
                            },
                            attempt: t.attempt,
                        };
                        self.check_assignment(i, key);
                        self.check_handed_files(key, &t.inputs);
                        self.engines[i].held.push(key);
                    }
                    let e = &mut self.engines[i];
                    e.peak = e.peak.max(e.held.len());
                }
                ToEngine::Cancel(keys) if self.hold_cancels => {
                    self.engines[i].asked_to_stop.extend(keys.iter().copied());
                    self.coverage.lost_cancels += 1;
                    self.late_cancels.push((id, keys));
                }
                ToEngine::Cancel(keys) | ToEngine::Welcome { cancel: keys, .. } => {
                    self.engines[i].asked_to_stop.extend(keys.iter().copied());
                    for k in keys {
                        if let Some(p) = self.engines[i].held.iter().position(|h| *h == k) {
                            self.engines[i].held.remove(p);
                            let out = Outcome {
                                cancelled: true,
                                ..Default::default()
                            };
                            self.engines[i].unacked.push((k, out.clone()));
                            self.s.task_finished(&id, k, out, self.now, next);
                        }
                    }
                }
                ToEngine::Ack(keys) => {
                    for k in &keys {
                        if let Some(p) = self.engines[i].unacked.iter().position(|(u, _)| u == k) {
                            let (_, out) = self.engines[i].unacked.remove(p);
                            self.acknowledged(i, *k, &out);
                        }
                    }
                }
                // The built-in check passes: the engine is well again.
                ToEngine::Check { id: check, .. } => {
                    self.forgiving.push(i);
                    self.s.check_result(&id, check, true, "", next);
                }
                _ => {}
            }
        }
    }

    /// A result is durable: the oracle books it as the engine's record. A
    /// failure counts if the master stored it as counted (a result for an
    /// attempt it had given up on says nothing about the engine).
    fn acknowledged(&mut self, i: usize, key: AttemptKey, out: &Outcome) {
        if self.accepted.remove(&key) {
            self.done.insert(key.task);
            let e = &mut self.engines[i];
            e.streak = 0;
            e.streak_jobs.clear();
            return;
        }
        if out.is_success() || out.cancelled {
            return;
        }
        let forgiven = self.forgiven.remove(&key);
        if !self.counted.contains(&key) {
            return;
        }
        let e = &mut self.engines[i];
        if !self.streak_forgiven.remove(&key) {
            e.streak += 1;
            e.streak_jobs.insert(key.task.job);
        }
        if forgiven {
            // Still part of the engine's streak, not of the job's list,
            // unless the retry that forgave it is lost in a crash.
            self.acked_forgiven.insert(key, i);
            return;
        }
        *self.job_failures.entry((i, key.task.job)).or_default() += 1;
        if self.blacklisted(i, key.task.job) {
            self.coverage.blacklistings += 1;
        }
        if self.surely_sick(i) {
            self.coverage.sick_engines += 1;
        }
    }

    /// The engine's streak starts again (enable, a passed check), with what
    /// it reported and is not yet acknowledged.
    fn forgive_streak(&mut self, i: usize) {
        let e = &mut self.engines[i];
        e.streak = 0;
        e.streak_jobs.clear();
        self.streak_forgiven.extend(
            e.unacked
                .iter()
                .filter(|(_, o)| !o.is_success())
                .map(|(k, _)| *k),
        );
    }

    /// Failures engine `i` has reported and not yet had acknowledged (of one
    /// job, or all): the oracle's record may lag the master's by these.
    fn unacked_failures(&self, i: usize, job: Option<JobId>) -> u32 {
        let e = &self.engines[i];
        let of_job = |k: &AttemptKey| job.is_none_or(|j| k.task.job == j);
        let unacked = e
            .unacked
            .iter()
            .filter(|(k, o)| !o.is_success() && of_job(k))
            .count();
        let lost = e.lost_failures.iter().filter(|k| of_job(k)).count();
        (unacked + lost) as u32
    }

    /// Is engine `i`, by the oracle's own count, surely sick: a streak long
    /// enough, over more than one job, since its last success or check?
    fn surely_sick(&self, i: usize) -> bool {
        let e = &self.engines[i];
        let cfg = self.s.config();
        cfg.sick_after > 0
            && e.streak >= cfg.sick_after
            && e.streak_jobs.len() > 1
            && !self.forgiving.contains(&i)
    }

    /// Might it be sick (any long streak)? Such engines are no witness that
    /// a job had somewhere else to go.
    fn maybe_sick(&self, i: usize) -> bool {
        self.engines[i].streak + self.unacked_failures(i, None) >= self.s.config().sick_after.max(1)
    }

    /// Might the job have blacklisted engine `i` (counting what is unacked)?
    fn maybe_blacklisted(&self, i: usize, job: JobId) -> bool {
        let after = self.s.config().blacklist_after;
        let booked = self.job_failures.get(&(i, job)).copied().unwrap_or(0);
        after > 0 && booked + self.unacked_failures(i, Some(job)) >= after
    }

    fn blacklisted(&self, i: usize, job: JobId) -> bool {
        let after = self.s.config().blacklist_after;
        after > 0 && self.job_failures.get(&(i, job)).copied().unwrap_or(0) >= after
    }

    /// Checks one assignment as it arrives, against the engines' own state
    /// and the oracle's record, never the scheduler's helpers.
    /// A task that waits for others starts only when they are all done,
    /// and is handed each one's files, whatever restarts came between.
    fn check_handed_files(
        &mut self,
        key: AttemptKey,
        inputs: &[drqueue_common::protocol::OutputFile],
    ) {
        let Some(job) = self.s.jobs.get(&key.task.job) else {
            return;
        };
        let after = job.waits_for(key.task.index);
        if after.is_empty() {
            if !inputs.is_empty() {
                self.violations.push(format!(
                    "task {} waits for nothing but was handed {inputs:?}",
                    key.task
                ));
            }
            return;
        }
        self.coverage.assemblies += 1;
        let not_done: Vec<u32> = after
            .clone()
            .filter(|d| job.tasks[*d as usize].status != TaskStatus::Done)
            .collect();
        let want: Vec<String> = after.map(|d| format!("task{d}")).collect();
        let got: Vec<&str> = inputs.iter().map(|f| f.path.as_str()).collect();
        if !not_done.is_empty() || got != want {
            self.violations.push(format!(
                "task {} started with tasks {not_done:?} it waits for not done, handed {got:?} (want {want:?})",
                key.task
            ));
        }
    }

    fn check_assignment(&mut self, i: usize, key: AttemptKey) {
        let engine = self.engines[i].id.clone();
        self.given.insert((engine.clone(), key));
        let job = key.task.job;
        if self.done.contains(&key.task) {
            self.violations.push(format!(
                "done task {} handed out again to {engine}",
                key.task
            ));
        }
        if self.paused.contains(&job) {
            self.violations.push(format!(
                "paused job {job} gave task {} to {engine}",
                key.task
            ));
        }
        if self.surely_sick(i) {
            self.violations
                .push(format!("sick engine {engine} was given job {job}"));
        }
        let spec = self.s.jobs.get(&job).map(|j| j.spec.clone());
        let Some(spec) = spec else {
            return;
        };
        if self.blacklisted(i, job) {
            let elsewhere = (0..self.engines.len()).any(|o| {
                let e = &self.engines[o];
                o != i
                    && e.alive
                    && !e.stopped
                    && e.pools.contains(&spec.pool.as_str())
                    && !self.maybe_sick(o)
                    && !self.maybe_blacklisted(o, job)
            });
            if elsewhere {
                self.violations.push(format!(
                    "engine {engine} is blacklisted by job {job} but got its tasks"
                ));
            }
        }
        // Engines running the job, counted on the engines, with this one;
        // not those whose work the master cannot know of yet.
        if spec.max_engines > 0 {
            let on = (0..self.engines.len())
                .filter(|o| *o == i || self.runs_live(*o, job))
                .filter(|o| *o == i || !self.engines[*o].unheard_since_lost_commit)
                .count() as u32;
            if on > spec.max_engines {
                self.violations.push(format!(
                    "job {job} runs on {on} engines, max_engines is {}",
                    spec.max_engines
                ));
            }
        }
        // Tokens, counted on the engines (attempts being stopped still hold
        // theirs), with this one; not on engines the master has not heard
        // from since it lost a commit.
        if spec.limits.iter().any(|l| l == "lic") {
            let held = self.licensed_on_engines() + 1;
            if held > self.limit {
                self.violations.push(format!(
                    "{held} attempts hold a `lic` token, the limit is {}",
                    self.limit
                ));
            }
        }
    }

    /// A retry of `job` was accepted: its failures are forgiven, and so are
    /// those still on their way.
    pub(super) fn forgive_job(&mut self, job: JobId) {
        let mut forgave = RetryForgave::default();
        self.job_failures.retain(|&(i, j), n| {
            if j == job {
                forgave.failures.push(((i, j), *n));
            }
            j != job
        });
        let unacked: Vec<AttemptKey> = self
            .engines
            .iter()
            .flat_map(|e| e.unacked.iter().map(|(k, _)| *k))
            .filter(|k| k.task.job == job)
            .collect();
        for k in unacked {
            if self.forgiven.insert(k) {
                forgave.unacked.push(k);
            }
        }
        self.retries_pending.push(forgave);
    }

    /// Does engine `o` run an attempt of `job` it was not asked to stop?
    fn runs_live(&self, o: usize, job: JobId) -> bool {
        let e = &self.engines[o];
        e.alive
            && !e.stopped
            && e.held
                .iter()
                .any(|k| k.task.job == job && !e.asked_to_stop.contains(k))
    }

    /// Tokens held on engines whose work the master can know of (see
    /// `unheard_since_lost_commit`).
    fn licensed_on_engines(&self) -> u32 {
        self.engines
            .iter()
            .filter(|e| e.alive && !e.stopped && !e.unheard_since_lost_commit)
            .flat_map(|e| e.held.iter())
            .filter(|k| {
                self.s
                    .jobs
                    .get(&k.task.job)
                    .is_some_and(|j| j.spec.limits.iter().any(|l| l == "lic"))
            })
            .count() as u32
    }

    /// Reports a result as the core does, noting a success the master took.
    fn report(&mut self, engine: &str, key: AttemptKey, out: Outcome, fx: &mut Effects) {
        let success = out.is_success();
        self.s.task_finished(engine, key, out, self.now, fx);
        let by_it = self
            .s
            .task_record(key.task)
            .is_some_and(|t| t.status == TaskStatus::Done && t.engine.as_deref() == Some(engine));
        if success && by_it {
            self.accepted.insert(key);
        }
    }

    /// Engine `forger` reports success for an attempt another engine holds.
    fn forge(&mut self, forger: usize, victim: usize) {
        let busy: Vec<usize> = (0..self.engines.len())
            .filter(|&i| !self.engines[i].held.is_empty())
            .collect();
        let others: Vec<usize> = (0..self.engines.len())
            .filter(|&i| self.engines[i].alive && !self.engines[i].stopped)
            .collect();
        if busy.is_empty() || others.is_empty() {
            return;
        }
        let v = busy[victim % busy.len()];
        let f = others[forger % others.len()];
        let key = self.engines[v].held[0];
        if f == v || self.engines[f].held.contains(&key) {
            return;
        }
        self.coverage.forgeries += 1;
        let id = self.engines[f].id.clone();
        let mut fx = Effects::default();
        let out = Outcome {
            exit_code: Some(0),
            ..Default::default()
        };
        self.s.task_finished(&id, key, out, self.now, &mut fx);
        // Its acks must not reach the forger's books: it holds no result.
        fx.after_commit.retain(|(to, _)| *to != id);
        self.settle(fx);
    }

    fn finish(&mut self, engine: usize, pick: usize, success: bool) {
        let out = Outcome {
            exit_code: Some(if success { 0 } else { 1 }),
            ..Default::default()
        };
        self.finish_with(engine, pick, out);
    }

    /// One of the attempts `engine` runs ends with `out`.
    fn finish_with(&mut self, engine: usize, pick: usize, mut out: Outcome) {
        let success = out.is_success();
        let e = &mut self.engines[engine];
        if !e.alive || e.stopped || e.held.is_empty() {
            return;
        }
        // Engines run in arrival order, a few at once (slots).
        let window = (e.slots as usize).min(e.held.len());
        let key = e.held.remove(pick % window);
        let id = e.id.clone();
        if success && out.outputs.is_empty() {
            // Each success names the file it wrote (and uploaded) after its
            // task, and one it did not upload: a tiled frame's assembly
            // must be handed exactly its tiles' uploaded files.
            let path = format!("task{}", key.task.index);
            out.outputs = vec![
                drqueue_common::protocol::OutputFile {
                    hash: Some(drqueue_common::cas::BlobHash::of(path.as_bytes())),
                    path,
                    size: 1,
                },
                drqueue_common::protocol::OutputFile {
                    path: "not-uploaded.log".into(),
                    size: 1,
                    hash: None,
                },
            ];
        }
        e.unacked.push((key, out.clone()));
        let mut fx = Effects::default();
        self.s.task_started(&id, key, self.now);
        self.report(&id, key, out, &mut fx);
        if success {
            self.coverage.successes += 1;
        } else {
            self.coverage.failures += 1;
        }
        self.settle(fx);
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let late = std::mem::take(&mut self.late_cancels);
        if !late.is_empty() {
            self.coverage.late_cancels_delivered += 1;
        }
        let mut fx = Effects::default();
        self.deliver(
            late.into_iter()
                .map(|(e, k)| (e, ToEngine::Cancel(k)))
                .collect(),
            &mut fx,
        );
        for e in &self.engines {
            if e.alive && !e.stopped {
                self.s.heartbeat(
                    &e.id,
                    Heartbeat {
                        load: 0.0,
                        free_ram_mb: 1000,
                        held: e.held.len() as u32,
                        peak_held: e.peak as u32,
                    },
                    self.now,
                );
            }
        }
        self.s.tick(self.now, &mut fx);
        self.settle(fx);
    }

    /// The engine process dies: its work and unsent results are gone; the
    /// master notices later.
    fn kill(&mut self, i: usize) {
        if !self.engines[i].held.is_empty() {
            self.coverage.engine_kills_with_work += 1;
        }
        self.drop_unacked(i);
        let e = &mut self.engines[i];
        e.alive = false;
        e.held.clear();
        e.asked_to_stop.clear();
    }

    /// The engine goes with results unacknowledged. The master heard them:
    /// a success it took reset the engine's streak; failures it may hold
    /// stay in the oracle's upper bound.
    fn drop_unacked(&mut self, i: usize) {
        let unacked = std::mem::take(&mut self.engines[i].unacked);
        for (k, out) in unacked {
            if self.accepted.remove(&k) {
                let e = &mut self.engines[i];
                e.streak = 0;
                e.streak_jobs.clear();
            } else if !out.is_success() {
                self.engines[i].lost_failures.push(k);
            }
        }
    }

    /// SIGTERM: the engine hands back what it holds and goes.
    fn shut_down(&mut self, i: usize) {
        let e = &mut self.engines[i];
        if !e.alive || e.stopped {
            return;
        }
        let held = std::mem::take(&mut e.held);
        if !held.is_empty() {
            self.coverage.clean_shutdowns_with_work += 1;
        }
        let id = e.id.clone();
        e.alive = false;
        self.drop_unacked(i);
        self.s.released(&id, &held, self.now);
        self.settle(Effects::default());
    }

    /// The master dies and restarts from what it had committed; with
    /// `lose_last`, the last commit never made it (nor its acks).
    fn restart_master(&mut self, lose_last: bool) {
        if lose_last {
            if !self.acks_in_flight.is_empty() {
                self.coverage.lost_commits += 1;
            }
            self.store = self.store_before_last_commit.clone();
            self.acks_in_flight.clear();
            self.pausing.clear();
            self.forgiving.clear();
            let lost_retries = std::mem::take(&mut self.retries_in_last_commit);
            for r in lost_retries
                .into_iter()
                .chain(self.retries_pending.drain(..))
            {
                for (k, n) in r.failures {
                    *self.job_failures.entry(k).or_default() += n;
                }
                for k in r.unacked {
                    if self.forgiven.remove(&k) {
                        continue;
                    }
                    if let Some(i) = self.acked_forgiven.remove(&k) {
                        *self.job_failures.entry((i, k.task.job)).or_default() += 1;
                    }
                }
            }
            for k in std::mem::take(&mut self.counted_in_last_commit) {
                self.counted.remove(&k);
            }
            // A success the master took but never committed is news to the
            // restarted master: the engine still holds it unacknowledged.
            for e in &mut self.engines {
                e.unheard_since_lost_commit = true;
                for (k, _) in &e.unacked {
                    self.accepted.remove(k);
                }
            }
        } else {
            self.commit();
            let acks = std::mem::take(&mut self.acks_in_flight);
            self.deliver(acks, &mut Effects::default());
        }
        self.late_cancels.clear();
        self.s = Scheduler::restore(
            sim_config(),
            self.store.snapshot(),
            self.now,
            &mut Effects::default(),
        );
        let lic = self.limit;
        if self.s.set_limit("lic", lic).is_ok() {
            self.store.commit(self.s.take_batch());
        }
        // Engines that run (not frozen) notice and re-register.
        for i in 0..self.engines.len() {
            if self.engines[i].alive && !self.engines[i].stopped {
                self.register(i);
            }
        }
        self.settle(Effects::default());
    }

    /// Prints what each engine holds, was told to stop, and has not had
    /// acknowledged (`SIM_TRACE`).
    fn trace_engines(&self) {
        let keys = |ks: &mut dyn Iterator<Item = &AttemptKey>| {
            ks.map(|k| format!("{}#{}", k.task, k.attempt))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for e in &self.engines {
            eprintln!(
                "  {}{}{} holds [{}] stopping [{}] unacked [{}]",
                e.id,
                if e.alive { "" } else { " (dead)" },
                if e.stopped { " (frozen)" } else { "" },
                keys(&mut e.held.iter()),
                keys(&mut e.asked_to_stop.iter()),
                keys(&mut e.unacked.iter().map(|(k, _)| k)),
            );
        }
        eprintln!("  failures per (engine, job): {:?}", self.job_failures);
    }

    /// After every step: the engines' own state, and the scheduler's books.
    fn check_invariants(&self) -> Result<(), TestCaseError> {
        prop_assert!(self.violations.is_empty(), "{:?}", self.violations);
        // Progress is a running task's, within 0-100; a job's too.
        for id in &self.jobs {
            let Some(view) = self.s.job_view(*id, self.now) else {
                continue;
            };
            prop_assert!(
                view.progress.is_none_or(|p| (0.0..=100.0).contains(&p)),
                "{view:?}"
            );
            for t in self.s.task_views(*id, None).unwrap_or_default() {
                prop_assert!(
                    t.progress
                        .is_none_or(|p| t.status.is_held() && (0.0..=100.0).contains(&p)),
                    "job {id} task {t:?}"
                );
            }
        }
        // No task's live attempt runs on two engines.
        let mut live: BTreeMap<TaskKey, Vec<&str>> = BTreeMap::new();
        for e in self.engines.iter().filter(|e| e.alive && !e.stopped) {
            for k in e.held.iter().filter(|k| !e.asked_to_stop.contains(k)) {
                live.entry(k.task).or_default().push(&e.id);
            }
        }
        for (t, on) in live {
            prop_assert!(on.len() <= 1, "task {t} runs on {on:?}");
        }
        for e in &self.engines {
            prop_assert!(
                e.peak as u32 <= e.hwm,
                "engine {} itself held {} > hwm {}",
                e.id,
                e.peak,
                e.hwm
            );
        }
        for e in self.s.engines() {
            prop_assert!(
                e.outstanding() <= e.hwm,
                "the master has engine {} hold {} > hwm {}",
                e.id,
                e.outstanding(),
                e.hwm
            );
        }
        for (id, job) in &self.s.jobs {
            let mut c = Counts::default();
            for t in &job.tasks {
                c.add(t.status);
            }
            prop_assert_eq!(c, job.counts, "counts of job {} drifted", id);
            // Every frame is in exactly one task, however the job was cut
            // (a tiled one: in a task per tile and its assembly).
            let mut frames: Vec<i64> = job.tasks.iter().flat_map(|t| t.block.frames()).collect();
            frames.sort_unstable();
            let copies = job.spec.tiles.map_or(1, |t| t.count() as usize + 1);
            let want: Vec<i64> = drqueue_common::frames::FrameSet::parse(&job.spec.frames)
                .map(|f| {
                    f.frames()
                        .flat_map(|x| std::iter::repeat_n(x, copies))
                        .collect()
                })
                .unwrap_or_default();
            prop_assert_eq!(
                frames,
                want,
                "the tasks of job {} lost or doubled frames",
                id
            );
            let done: u64 = job
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Done)
                .map(|t| t.block.len())
                .sum();
            prop_assert_eq!(done, job.frames_done, "done frames of job {} drifted", id);
        }
        Ok(())
    }

    /// Every done task has run at least once and its record reads back.
    fn check_done_records(&self) -> Result<(), TestCaseError> {
        for (id, job) in &self.s.jobs {
            for index in 0..job.tasks.len() as u32 {
                let key = TaskKey { job: *id, index };
                let Some(t) = self.s.task_record(key) else {
                    continue;
                };
                if t.status != TaskStatus::Done {
                    continue;
                }
                prop_assert!(t.attempts >= 1, "task {key} is done with attempts 0");
                let Some(by) = t.engine.clone() else {
                    return Err(TestCaseError::fail(format!(
                        "task {key} is done by no engine"
                    )));
                };
                // Done only on the word of an engine given this or an earlier
                // attempt of the task.
                prop_assert!(
                    self.given
                        .iter()
                        .any(|(e, a)| *e == by && a.task == key && a.attempt <= t.attempts),
                    "task {key} is done by {by}, which was never given an attempt of it"
                );
                let history = t.history(self.store.attempts(key));
                prop_assert!(
                    history.iter().any(|a| a.attempt.attempt == t.attempts),
                    "task {key}: no record of its attempt {}",
                    t.attempts
                );
            }
        }
        Ok(())
    }
}
