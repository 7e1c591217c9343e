//! Scheduler tests: hand-written cases, then property tests that drive the
//! state machine with generated event sequences against simulated engines
//! and a simulated store (so master restarts go through `restore`).

use super::*;
use crate::memory::MemoryStore;
use drqueue_common::model::{
    Counts, Dependency, EngineState, JobSpec, JobStatus, NotifyState, Requirements, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, Heartbeat, Outcome};
use proptest::prelude::*;

const POOLS: [&str; 3] = ["default", "gpu", "cpu"];

fn spec(frames: &str, blocksize: u32) -> JobSpec {
    JobSpec {
        name: "t".into(),
        command: vec!["true".into()],
        frames: frames.into(),
        blocksize,
        ..Default::default()
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

/// An engine as the simulation plays it: obeys messages, holds attempts.
#[derive(Debug, Clone)]
struct SimEngine {
    id: String,
    pools: Vec<&'static str>,
    slots: u32,
    hwm: u32,
    alive: bool,
    held: Vec<AttemptKey>,
    peak: usize,
}

struct Sim {
    s: Scheduler,
    now: Millis,
    engines: Vec<SimEngine>,
    store: MemoryStore,
    jobs: Vec<JobId>,
    /// Work handed where it must not go, seen as it arrives.
    violations: Vec<String>,
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
            jobs: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn add_engine(&mut self, pools: Vec<&'static str>, slots: u32, hwm: u32) -> usize {
        let id = format!("engine-{}", self.engines.len());
        self.engines.push(SimEngine {
            id,
            pools,
            slots,
            hwm,
            alive: false,
            held: Vec::new(),
            peak: 0,
        });
        let i = self.engines.len() - 1;
        self.register(i);
        i
    }

    fn register(&mut self, i: usize) {
        let e = &mut self.engines[i];
        e.alive = true;
        let (id, f, slots, hwm, held) = (
            e.id.clone(),
            facts(&e.pools),
            e.slots,
            e.hwm,
            e.held.clone(),
        );
        let mut fx = Effects::default();
        self.s
            .engine_registered(&id, f, slots, hwm, &held, &[], self.now, &mut fx);
        self.settle(fx);
    }

    /// Delivers effects to simulated engines, dispatches, commits.
    fn settle(&mut self, mut fx: Effects) {
        for _ in 0..50 {
            let n = self.s.dispatch(self.now, &mut fx);
            let msgs = std::mem::take(&mut fx.messages);
            let after = std::mem::take(&mut fx.after_commit);
            self.store.commit(self.s.take_batch());
            if msgs.is_empty() && n == 0 {
                drop(after);
                break;
            }
            let mut next = Effects::default();
            for (id, m) in msgs.into_iter().chain(after) {
                let Some(i) = self.engines.iter().position(|e| e.id == id) else {
                    continue;
                };
                if !self.engines[i].alive {
                    continue;
                }
                match m {
                    ToEngine::Assign(a) => {
                        self.check_assignment(&id, a.job.id);
                        for t in a.tasks {
                            self.engines[i].held.push(AttemptKey {
                                task: TaskKey {
                                    job: a.job.id,
                                    index: t.index,
                                },
                                attempt: t.attempt,
                            });
                        }
                        let e = &mut self.engines[i];
                        e.peak = e.peak.max(e.held.len());
                    }
                    ToEngine::Cancel(keys) | ToEngine::Welcome { cancel: keys, .. } => {
                        for k in keys {
                            if let Some(p) = self.engines[i].held.iter().position(|h| *h == k) {
                                self.engines[i].held.remove(p);
                                let out = Outcome {
                                    cancelled: true,
                                    ..Default::default()
                                };
                                self.s.task_finished(&id, k, out, self.now, &mut next);
                            }
                        }
                    }
                    // The built-in check passes: the engine is well again.
                    ToEngine::Check { id: check, .. } => {
                        self.s.check_result(&id, check, true, "", &mut next);
                    }
                    _ => {}
                }
            }
            fx = next;
        }
    }

    /// A sick engine, or one a job has blacklisted, must get none of its work.
    fn check_assignment(&mut self, engine: &str, job: JobId) {
        let Some(&e) = self.s.engine_index.get(engine) else {
            return;
        };
        if let Some(why) = &self.s.engines[e].sick {
            self.violations
                .push(format!("sick engine {engine} ({why}) was given job {job}"));
        }
        if let Some(j) = self.s.jobs.get(&job) {
            if j.is_blacklisted(e, &self.s.cfg) && self.s.can_run_elsewhere(j, e) {
                self.violations.push(format!(
                    "engine {engine} is blacklisted by job {job} but got its tasks"
                ));
            }
        }
    }

    fn finish(&mut self, engine: usize, pick: usize, success: bool) {
        let e = &mut self.engines[engine];
        if !e.alive || e.held.is_empty() {
            return;
        }
        // Engines run in arrival order, a few at once (slots).
        let window = (e.slots as usize).min(e.held.len());
        let key = e.held.remove(pick % window);
        let id = e.id.clone();
        let mut fx = Effects::default();
        self.s.task_started(&id, key, self.now);
        let out = Outcome {
            exit_code: Some(if success { 0 } else { 1 }),
            ..Default::default()
        };
        self.s.task_finished(&id, key, out, self.now, &mut fx);
        self.settle(fx);
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for e in &self.engines {
            if e.alive {
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
        let mut fx = Effects::default();
        self.s.tick(self.now, &mut fx);
        self.settle(fx);
    }

    /// The engine process dies: its work is gone; the master notices later.
    fn kill(&mut self, i: usize) {
        self.engines[i].alive = false;
        self.engines[i].held.clear();
    }

    /// The master dies and restarts from what it had committed.
    fn restart_master(&mut self) {
        self.s = Scheduler::restore(
            sim_config(),
            self.store.snapshot(),
            self.now,
            &mut Effects::default(),
        );
        // Engines that are alive notice and re-register with what they hold.
        for i in 0..self.engines.len() {
            if self.engines[i].alive {
                self.register(i);
            }
        }
        self.settle(Effects::default());
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let mut live_holders: HashMap<TaskKey, usize> = HashMap::new();
        for e in self.s.engines() {
            prop_assert!(
                e.outstanding() <= e.hwm,
                "engine {} holds {} > hwm {}",
                e.id,
                e.outstanding(),
                e.hwm
            );
            for (k, h) in &e.held {
                if !h.cancelling {
                    *live_holders.entry(k.task).or_default() += 1;
                }
            }
        }
        for (t, n) in live_holders {
            prop_assert!(n <= 1, "task {t} is held by {n} engines");
        }
        // The master never hands out more tokens of a limit than it has.
        let licensed = self
            .s
            .engines()
            .iter()
            .flat_map(|e| e.held.iter())
            .filter(|(k, h)| {
                !h.cancelling
                    && self
                        .s
                        .jobs
                        .get(&k.task.job)
                        .is_some_and(|j| j.spec.limits.iter().any(|l| l == "lic"))
            })
            .count() as u32;
        prop_assert!(
            licensed <= LICENCES,
            "{} tasks hold a `lic` token, the limit is {}",
            licensed,
            LICENCES
        );
        for e in &self.engines {
            prop_assert!(
                e.peak as u32 <= e.hwm,
                "engine {} itself held {} > hwm {}",
                e.id,
                e.peak,
                e.hwm
            );
        }
        prop_assert!(self.violations.is_empty(), "{:?}", self.violations);
        for (id, job) in &self.s.jobs {
            if job.spec.max_engines > 0 {
                let on = self.s.engines_running(*id);
                prop_assert!(
                    on <= job.spec.max_engines,
                    "job {} runs on {} engines, max_engines is {}",
                    id,
                    on,
                    job.spec.max_engines
                );
            }
            let mut c = Counts::default();
            for t in &job.tasks {
                c.add(t.status);
            }
            prop_assert_eq!(c, job.counts, "counts of job {} drifted", id);
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        frames: u32,
        blocksize: u32,
        priority: u32,
        pool: usize,
        max_attempts: u32,
        owner: usize,
        max_engines: u32,
    },
    AddEngine {
        pool: usize,
        slots: u32,
        extra_hwm: u32,
    },
    Finish {
        engine: usize,
        pick: usize,
        success: bool,
    },
    Advance(u64),
    Kill(usize),
    Stop(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
    Cancel(usize),
    Retry(usize),
    Enable(usize),
    RestartMaster,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..20, 1u32..4, 0u32..3, 0usize..3, 1u32..4, 0usize..3, 0u32..3).prop_map(|(frames, blocksize, p, pool, max_attempts, owner, max_engines)| Op::Submit {
            frames, blocksize, priority: p * 100, pool, max_attempts, owner, max_engines
        }),
        1 => (0usize..3, 1u32..3, 0u32..3).prop_map(|(pool, slots, extra_hwm)| Op::AddEngine { pool, slots, extra_hwm }),
        // One attempt in four fails: enough for blacklists and sick engines.
        12 => (0usize..8, 0usize..4, prop::bool::weighted(0.75)).prop_map(|(engine, pick, success)| Op::Finish { engine, pick, success }),
        2 => (100u64..7000).prop_map(Op::Advance),
        1 => (0usize..8).prop_map(Op::Kill),
        1 => (0usize..8).prop_map(Op::Stop),
        1 => (0usize..8).prop_map(Op::Restart),
        1 => (0usize..8).prop_map(Op::Pause),
        1 => (0usize..8).prop_map(Op::Resume),
        1 => (0usize..8).prop_map(Op::Cancel),
        1 => (0usize..8).prop_map(Op::Retry),
        1 => (0usize..8).prop_map(Op::Enable),
        1 => Just(Op::RestartMaster),
    ]
}

/// Jobs of an even number of frames take a token of this limit.
const LICENCES: u32 = 2;

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut sim = Sim::new();
    sim.s.set_limit("lic", LICENCES).expect("valid limit");
    sim.add_engine(vec!["default"], 1, 2);
    let mut stopped: Vec<bool> = vec![false; 64];
    for op in ops {
        match op {
            Op::Submit {
                frames,
                blocksize,
                priority,
                pool,
                max_attempts,
                owner,
                max_engines,
            } => {
                let mut sp = spec(&format!("1-{frames}"), blocksize);
                sp.owner = ["ana", "ben", "cy"][owner].into();
                sp.max_engines = max_engines;
                if frames % 2 == 0 {
                    sp.limits = vec!["lic".into()];
                }
                sp.priority = priority;
                sp.pool = POOLS[pool].into();
                sp.max_attempts = max_attempts;
                let mut fx = Effects::default();
                let id = sim.s.submit(sp, sim.now, &mut fx).expect("valid spec");
                sim.jobs.push(id);
                sim.settle(fx);
            }
            Op::AddEngine {
                pool,
                slots,
                extra_hwm,
            } => {
                if sim.engines.len() < 8 {
                    sim.add_engine(vec![POOLS[pool], "default"], slots, slots + extra_hwm);
                }
            }
            Op::Finish {
                engine,
                pick,
                success,
            } => {
                if engine < sim.engines.len() && !stopped[engine] {
                    // Engine 1 is a bad node: it fails far more often, so
                    // runs see it fall sick, recover, and fall sick again.
                    let success = success && (engine != 1 || pick % 4 == 0);
                    sim.finish(engine, pick, success);
                }
            }
            Op::Advance(ms) => {
                // A stopped (SIGSTOP) engine sends no heartbeats.
                let saved: Vec<bool> = sim.engines.iter().map(|e| e.alive).collect();
                for (i, e) in sim.engines.iter_mut().enumerate() {
                    if stopped[i] {
                        e.alive = false;
                    }
                }
                sim.advance(ms);
                for (e, a) in sim.engines.iter_mut().zip(saved) {
                    e.alive = a;
                }
            }
            Op::Kill(i) => {
                if i < sim.engines.len() {
                    sim.kill(i);
                }
            }
            Op::Stop(i) => {
                if i < sim.engines.len() {
                    stopped[i] = true;
                }
            }
            Op::Restart(i) => {
                if i < sim.engines.len() {
                    stopped[i] = false;
                    sim.register(i);
                }
            }
            Op::Pause(j) => {
                if let Some(id) = sim.jobs.get(j) {
                    let _ = sim.s.pause(*id);
                }
            }
            Op::Resume(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.resume(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Cancel(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.cancel(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Retry(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.retry(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Enable(i) => {
                if i < sim.engines.len() {
                    let id = sim.engines[i].id.clone();
                    let mut fx = Effects::default();
                    let _ = sim.s.set_engine_disabled(&id, false, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::RestartMaster => sim.restart_master(),
        }
        sim.check_invariants()?;
    }
    // Let the farm finish: stopped engines resume, an engine per pool joins,
    // and every held task completes.
    for (i, s) in stopped.iter_mut().enumerate().take(sim.engines.len()) {
        if *s {
            *s = false;
            sim.register(i);
        }
    }
    sim.add_engine(POOLS.to_vec(), 2, 3);
    for _ in 0..5000 {
        let busy: Vec<usize> = (0..sim.engines.len())
            .filter(|i| sim.engines[*i].alive && !sim.engines[*i].held.is_empty())
            .collect();
        if busy.is_empty() {
            sim.advance(7000);
            if sim.engines.iter().all(|e| !e.alive || e.held.is_empty()) {
                break;
            }
            continue;
        }
        for i in busy {
            sim.finish(i, 0, true);
        }
        sim.check_invariants()?;
    }
    for (id, job) in &sim.s.jobs {
        if matches!(job.status, JobStatus::Paused | JobStatus::Cancelled) {
            continue;
        }
        prop_assert!(
            matches!(job.status, JobStatus::Done | JobStatus::Failed),
            "job {} ended {} with counts {:?}",
            id,
            job.status,
            job.counts
        );
        for (i, t) in job.tasks.iter().enumerate() {
            prop_assert!(
                matches!(t.status, TaskStatus::Done | TaskStatus::Failed),
                "task {}.{} ended {}",
                id,
                i,
                t.status
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold_over_random_farms(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

// ----- hand-written cases ----------------------------------------------------

#[test]
fn hwm_bounds_what_an_engine_holds_and_prefetches_one() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    sim.s.submit(spec("1-10", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 1, 2);
    assert_eq!(sim.engines[0].held.len(), 2, "slot + one prefetched");
    sim.finish(0, 0, true);
    assert_eq!(sim.engines[0].held.len(), 2);
}

#[test]
fn higher_priority_goes_first_then_submission_order() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let low = sim.s.submit(spec("1-3", 1), sim.now, &mut fx).unwrap();
    let mut hi = spec("1-3", 1);
    hi.priority = 900;
    let high = sim.s.submit(hi, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 1, 1);
    assert_eq!(sim.engines[0].held[0].task.job, high);
    for _ in 0..3 {
        sim.finish(0, 0, true);
    }
    assert_eq!(sim.engines[0].held[0].task.job, low);
}

#[test]
fn failures_retry_elsewhere_then_fail_the_job() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.max_attempts = 2;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let first = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
    sim.finish(first, 0, false);
    let second = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
    assert_ne!(first, second, "the retry goes to the other engine");
    sim.finish(second, 0, false);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let tasks = sim.s.task_views(id, None).unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].attempts),
        (TaskStatus::Failed, 2)
    );
}

#[test]
fn a_lost_engines_tasks_run_elsewhere_and_its_late_success_counts_once() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let stale = sim.engines[0].held[0];
    // Engine 0 goes silent (SIGSTOP); engine 1 joins; the timeout passes.
    sim.engines[0].alive = false;
    sim.add_engine(vec!["default"], 1, 1);
    sim.advance(6000);
    assert_eq!(sim.engines[1].held.len(), 1, "requeued onto engine 1");
    // Engine 0 wakes with a success for the old attempt.
    let mut fx = Effects::default();
    let ok = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    sim.s
        .task_finished("engine-0", stale, ok.clone(), sim.now, &mut fx);
    assert!(fx
        .messages
        .iter()
        .any(|(e, m)| e == "engine-1" && matches!(m, ToEngine::Cancel(_))));
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.counts.get(TaskStatus::Done), 1);
    // The replaced attempt reporting success too changes nothing.
    let current = sim.engines[1].held[0];
    sim.s
        .task_finished("engine-1", current, ok, sim.now, &mut fx);
    assert_eq!(
        sim.s
            .job_view(id, sim.now)
            .unwrap()
            .counts
            .get(TaskStatus::Done),
        1
    );
}

#[test]
fn a_restarted_master_adopts_what_engines_still_run() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 2, 2);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1-4", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let held_before = sim.engines[0].held.clone();
    // The master dies before committing: the store has tasks as ready.
    sim.store.tasks.values_mut().for_each(|t| {
        t.status = TaskStatus::Ready;
        t.attempts = 0;
        t.engine = None
    });
    sim.restart_master();
    assert_eq!(sim.engines[0].held, held_before, "no task given out twice");
    let running = sim.s.task_views(id, Some(TaskStatus::Assigned)).unwrap();
    assert_eq!(running.len(), 2);
    for _ in 0..4 {
        sim.finish(0, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}

#[test]
fn restart_waits_for_engines_then_gives_up_on_them() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1-2", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.kill(0);
    sim.restart_master();
    sim.add_engine(vec!["default"], 1, 1);
    assert!(
        sim.engines[1].held.is_empty(),
        "nothing dispatched while engine 0 may come back"
    );
    assert!(!sim.blocked(id, sim.now).is_empty());
    sim.advance(7000);
    assert_eq!(sim.engines[1].held.len(), 1);
}

#[test]
fn dependencies_wait_then_run_or_cancel() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let a = sim.s.submit(spec("1", 1), sim.now, &mut fx).unwrap();
    let mut b = spec("1", 1);
    b.after = vec![Dependency {
        job: a,
        on: vec![JobStatus::Done],
    }];
    let b = sim.s.submit(b, sim.now, &mut fx).unwrap();
    let mut c = spec("1", 1);
    c.after = vec![Dependency {
        job: b,
        on: vec![JobStatus::Failed],
    }];
    let c = sim.s.submit(c, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(sim.s.job_status(b), Some(JobStatus::Waiting));
    assert_eq!(
        sim.blocked(b, sim.now),
        vec![format!("waiting for job {a}")]
    );
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(a), Some(JobStatus::Done));
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(b), Some(JobStatus::Done));
    assert_eq!(sim.s.job_status(c), Some(JobStatus::Cancelled));
}

#[test]
fn cancel_kills_held_attempts_and_keeps_their_credit_until_they_end() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1-4", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 1, 2);
    let mut fx = Effects::default();
    sim.s.cancel(id, sim.now, &mut fx).unwrap();
    let cancels: Vec<_> = fx
        .messages
        .iter()
        .filter(|(_, m)| matches!(m, ToEngine::Cancel(_)))
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(sim.s.engine("engine-0").unwrap().outstanding(), 2);
    sim.settle(fx);
    assert_eq!(sim.s.engine("engine-0").unwrap().outstanding(), 0);
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(
        (view.status, view.counts.get(TaskStatus::Cancelled)),
        (JobStatus::Cancelled, 4)
    );
}

#[test]
fn blocked_reasons_name_pool_and_requirements() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut gpu = spec("1", 1);
    gpu.pool = "gpu".into();
    let gpu = sim.s.submit(gpu, sim.now, &mut fx).unwrap();
    let mut big = spec("1", 1);
    big.requirements = Requirements {
        min_ram_mb: 64000,
        capabilities: vec!["houdini".into()],
        ..Default::default()
    };
    let big = sim.s.submit(big, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(
        sim.blocked(gpu, sim.now),
        vec!["no engine in pool `gpu`".to_string()]
    );
    let reasons = sim.blocked(big, sim.now);
    assert!(
        reasons.contains(&"needs 64000 MB RAM, the largest engine has 16000 MB".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"1 engine lacks capability `houdini`".to_string()),
        "{reasons:?}"
    );
}

#[test]
fn a_result_delivered_with_the_register_is_not_run_again() {
    // The engine finished a task while the master was down; the result was
    // never acknowledged. Re-registering must not requeue that task.
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1-2", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let done = sim.engines[0].held.remove(0);
    let still_held = sim.engines[0].held.clone();
    sim.s = Scheduler::restore(
        sim_config(),
        sim.store.snapshot(),
        sim.now,
        &mut Effects::default(),
    );
    let mut fx = Effects::default();
    sim.s.engine_registered(
        &"engine-0".to_string(),
        facts(&["default"]),
        1,
        2,
        &still_held,
        &[done],
        sim.now,
        &mut fx,
    );
    // Whatever runs between the Register and the result must not hand the
    // finished task out again.
    sim.s.dispatch(sim.now, &mut fx);
    let ok = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    sim.s.task_finished("engine-0", done, ok, sim.now, &mut fx);
    let reassigned: Vec<_> = fx
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            ToEngine::Assign(a) => Some(a.tasks.iter().map(|t| t.index).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        !reassigned.contains(&done.task.index),
        "task {} was handed out again",
        done.task
    );
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.counts.get(TaskStatus::Done), 1);
}

#[test]
fn a_limit_caps_running_tasks_and_says_so() {
    let mut sim = Sim::new();
    sim.s.set_limit("nuke", 1).unwrap();
    sim.add_engine(vec!["default"], 2, 2);
    sim.add_engine(vec!["default"], 2, 2);
    let mut fx = Effects::default();
    let mut sp = spec("1-4", 1);
    sp.limits = vec!["nuke".into()];
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let held: usize = sim.engines.iter().map(|e| e.held.len()).sum();
    assert_eq!(held, 1, "one token, one task");
    assert_eq!(
        sim.blocked(id, sim.now),
        vec!["limit `nuke` 1/1 in use".to_string()]
    );
    let views = sim.s.limit_views();
    assert_eq!((views[0].count, views[0].in_use), (1, 1));
    for _ in 0..4 {
        let e = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
        sim.finish(e, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    assert!(sim.s.set_limit("bad name", 1).is_err());
}

#[test]
fn owners_of_equal_priority_take_turns() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    // Ana submits two big jobs first; Ben's job comes later.
    let mut ids = Vec::new();
    for owner in ["ana", "ana", "ben"] {
        let mut sp = spec("1-10", 1);
        sp.owner = owner.into();
        ids.push(sim.s.submit(sp, sim.now, &mut fx).unwrap());
    }
    sim.settle(fx);
    for _ in 0..4 {
        sim.add_engine(vec!["default"], 1, 1);
    }
    let per_owner = |sim: &Sim, owner: &str| {
        sim.engines
            .iter()
            .flat_map(|e| &e.held)
            .filter(|k| sim.s.jobs[&k.task.job].spec.owner == owner)
            .count()
    };
    assert_eq!((per_owner(&sim, "ana"), per_owner(&sim, "ben")), (2, 2));
    // Within Ana's share, her older job goes first.
    assert!(sim
        .engines
        .iter()
        .flat_map(|e| &e.held)
        .all(|k| k.task.job != ids[1]));
    // Freed slots keep the balance.
    for _ in 0..3 {
        for e in 0..4 {
            sim.finish(e, 0, true);
        }
        assert_eq!((per_owner(&sim, "ana"), per_owner(&sim, "ben")), (2, 2));
    }
}

#[test]
fn higher_priority_still_beats_fair_share() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let mut urgent = spec("1-10", 1);
    urgent.owner = "ana".into();
    urgent.priority = 900;
    let urgent = sim.s.submit(urgent, sim.now, &mut fx).unwrap();
    let mut other = spec("1-10", 1);
    other.owner = "ben".into();
    sim.s.submit(other, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 2, 2);
    sim.add_engine(vec!["default"], 2, 2);
    assert!(sim
        .engines
        .iter()
        .flat_map(|e| &e.held)
        .all(|k| k.task.job == urgent));
}

#[test]
fn max_engines_caps_the_engines_one_job_runs_on() {
    let mut sim = Sim::new();
    for _ in 0..3 {
        sim.add_engine(vec!["default"], 2, 2);
    }
    let mut fx = Effects::default();
    let mut sp = spec("1-20", 1);
    sp.max_engines = 2;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let busy = sim.engines.iter().filter(|e| !e.held.is_empty()).count();
    assert_eq!(busy, 2);
    assert_eq!(sim.s.engines_running(id), 2);
    assert_eq!(
        sim.blocked(id, sim.now),
        vec!["max_engines 2 reached".to_string()]
    );
    // Each of the two engines holds what its HWM allows.
    assert_eq!(sim.engines.iter().map(|e| e.held.len()).sum::<usize>(), 4);
}

#[test]
fn an_engine_that_fails_a_job_twice_gets_no_more_of_it() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    let mut fx = Effects::default();
    let mut sp = spec("1-6", 1);
    sp.max_attempts = 5;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    let other = sim.s.submit(spec("1-4", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    // A second engine joins, busy with the other job for now.
    sim.add_engine(vec!["default"], 1, 1);
    sim.finish(0, 0, false);
    sim.finish(0, 0, false);
    // Blacklisted: engine 0's queued task of the job was taken back; from
    // now on it runs only the other job.
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.blacklisted, vec!["engine-0".to_string()]);
    for _ in 0..20 {
        assert!(sim.engines[0].held.iter().all(|k| k.task.job == other));
        sim.finish(0, 0, true);
        sim.finish(1, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    // Retry forgives it.
    let mut fx = Effects::default();
    sim.s.retry(id, sim.now, &mut fx).unwrap();
    assert!(sim.s.job_view(id, sim.now).unwrap().blacklisted.is_empty());
}

#[test]
fn a_blacklisted_engine_keeps_a_job_no_other_engine_can_run() {
    // One engine, a job that always fails: it must end failed by its
    // max_attempts, not wait forever for an engine that will never come.
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.max_attempts = 4;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    for _ in 0..4 {
        sim.finish(0, 0, false);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    assert_eq!(sim.s.task_views(id, None).unwrap()[0].attempts, 4);
}

#[test]
fn five_failures_in_a_row_make_an_engine_sick_until_it_is_enabled() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    // One attempt each: the failures are of different jobs.
    let ids: Vec<JobId> = (0..6)
        .map(|_| {
            let mut sp = spec("1", 1);
            sp.max_attempts = 1;
            sim.s.submit(sp, sim.now, &mut fx).unwrap()
        })
        .collect();
    sim.settle(fx);
    for _ in 0..5 {
        sim.finish(0, 0, false);
    }
    let e = sim.s.engine("engine-0").unwrap();
    assert_eq!(e.view().state, EngineState::Sick);
    assert!(e
        .sick
        .as_deref()
        .unwrap()
        .starts_with("failed 5 tasks in a row"));
    assert!(sim.engines[0].held.is_empty(), "no work for a sick engine");
    let reasons = sim.blocked(ids[5], sim.now);
    assert!(reasons[0].contains("sick (1)"), "{reasons:?}");
    let mut fx = Effects::default();
    sim.s
        .set_engine_disabled("engine-0", false, sim.now, &mut fx)
        .unwrap();
    sim.settle(fx);
    assert_eq!(sim.s.engine("engine-0").unwrap().failures_in_row, 0);
    assert_eq!(sim.engines[0].held.len(), 1, "enabled: work again");
}

#[test]
fn one_bad_job_does_not_make_an_engine_sick() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.max_attempts = 8;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    for _ in 0..8 {
        sim.finish(0, 0, false);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let e = sim.s.engine("engine-0").unwrap();
    assert_eq!((e.failures_in_row, e.sick.is_none()), (8, true));
}

#[test]
fn a_sick_engine_that_passes_its_check_gets_work_again() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    for _ in 0..6 {
        let mut sp = spec("1", 1);
        sp.max_attempts = 1;
        sim.s.submit(sp, sim.now, &mut fx).unwrap();
    }
    sim.settle(fx);
    for _ in 0..5 {
        sim.finish(0, 0, false);
    }
    assert!(sim.s.engine("engine-0").unwrap().sick.is_some());
    // Before the check interval nothing is sent; after it the simulated
    // engine answers its check with a pass.
    sim.advance(1000);
    assert!(sim.s.engine("engine-0").unwrap().sick.is_some());
    sim.advance(4000);
    sim.advance(4000);
    sim.advance(2000);
    assert!(sim.s.engine("engine-0").unwrap().sick.is_none());
    assert_eq!(sim.engines[0].held.len(), 1);
    // A failed check keeps it sick and says why.
    let e = sim.s.engine_index["engine-0"];
    sim.s.engines[e].sick = Some("x".into());
    sim.s.engines[e].check_pending = Some(99);
    sim.s
        .check_result("engine-0", 99, false, "disk full", &mut Effects::default());
    assert!(sim
        .s
        .engine("engine-0")
        .unwrap()
        .sick
        .as_deref()
        .unwrap()
        .ends_with("disk full"));
}

#[test]
fn ram_requirements_use_the_free_ram_of_the_last_heartbeat() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 4, 4);
    let mut fx = Effects::default();
    let mut sp = spec("1-8", 1);
    sp.requirements.min_ram_mb = 6000;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    // 16000 MB and nothing running: room for two.
    assert_eq!(sim.engines[0].held.len(), 2);
    // The next heartbeat says 1000 MB free (the simulation's figure): when
    // a task ends, its successor does not fit.
    sim.advance(100);
    sim.finish(0, 0, true);
    assert_eq!(sim.engines[0].held.len(), 1);
    let reasons = sim.blocked(id, sim.now);
    assert_eq!(
        reasons,
        vec!["needs 6000 MB RAM free; the most free on an eligible engine is 1000 MB".to_string()]
    );
}

#[test]
fn refreshed_facts_bring_new_renderers_into_play() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.requirements.capabilities = vec!["houdini".into()];
    sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert!(sim.engines[0].held.is_empty());
    let mut f = facts(&["default"]);
    f.capabilities.push("houdini".into());
    sim.s.facts_refreshed("engine-0", f);
    sim.settle(Effects::default());
    assert_eq!(sim.engines[0].held.len(), 1);
}

#[test]
fn disabling_an_engine_hands_its_queued_tasks_to_others() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 3);
    let mut fx = Effects::default();
    sim.s.submit(spec("1-3", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(sim.engines[0].held.len(), 3);
    // The first has started; the two prefetched ones have not.
    let running = sim.engines[0].held[0];
    sim.s.task_started("engine-0", running, sim.now);
    let mut fx = Effects::default();
    sim.s
        .set_engine_disabled("engine-0", true, sim.now, &mut fx)
        .unwrap();
    sim.settle(fx);
    assert_eq!(sim.engines[0].held, vec![running]);
    sim.add_engine(vec!["default"], 2, 2);
    assert_eq!(sim.engines[1].held.len(), 2);
}

#[test]
fn one_assign_per_engine_and_job_per_dispatch() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 2, 6);
    let mut fx = Effects::default();
    sim.s.submit(spec("1-10", 1), sim.now, &mut fx).unwrap();
    sim.s.dispatch(sim.now, &mut fx);
    let assigns: Vec<usize> = fx
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            ToEngine::Assign(a) => Some(a.tasks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(assigns, vec![6], "idle slots and prefetch in one message");
}

#[test]
fn start_after_names_the_clock_time() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.start_after = Some(sim.now + 90 * 60 * 1000);
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    let reasons = sim.blocked(id, sim.now);
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].starts_with("starts at "), "{reasons:?}");
    assert!(reasons[0].ends_with("(in 1h 30m)"), "{reasons:?}");
}

#[test]
fn a_notification_waits_for_the_end_then_retries_with_backoff_until_sent() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let state = |sim: &Sim| sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(state(&sim).state, NotifyState::Waiting);
    assert!(sim.s.due_notifications(sim.now).is_empty());
    sim.finish(0, 0, true);
    assert_eq!(state(&sim).state, NotifyState::Pending);
    // Due once: a second call while it is in flight gives nothing.
    assert_eq!(sim.s.due_notifications(sim.now), vec![id]);
    assert!(sim.s.due_notifications(sim.now).is_empty());
    // In flight is stored as pending: a crash now sends it again, never loses it.
    let stored = sim.s.jobs[&id].record(id, &sim.s.engines).notification;
    assert_eq!(stored.map(|n| n.state), Some(NotifyState::Pending));
    sim.s
        .notification_result(id, Err("SMTP: refused".into()), false, sim.now);
    let n = state(&sim);
    assert_eq!(
        (n.state, n.attempts, n.next_try_ms),
        (NotifyState::Pending, 1, Some(sim.now + 1000))
    );
    assert!(sim.s.due_notifications(sim.now + 999).is_empty());
    assert_eq!(sim.s.due_notifications(sim.now + 1000), vec![id]);
    sim.s
        .notification_result(id, Err("SMTP: refused".into()), false, sim.now + 1000);
    assert_eq!(
        state(&sim).next_try_ms,
        Some(sim.now + 3000),
        "backoff doubles"
    );
    sim.s.due_notifications(sim.now + 3000);
    sim.s.notification_result(id, Ok(()), false, sim.now + 3000);
    let n = state(&sim);
    assert_eq!(
        (n.state, n.attempts, n.last_error),
        (NotifyState::Sent, 3, None)
    );
    // A late or repeated result changes nothing.
    sim.s
        .notification_result(id, Err("late".into()), false, sim.now + 4000);
    assert_eq!(state(&sim).state, NotifyState::Sent);
}

#[test]
fn a_notification_gives_up_after_its_attempts_or_at_once_when_permanent() {
    let mut sim = Sim::new();
    sim.s.cfg.mail_attempts = 2;
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    sp.notify_on = drqueue_common::model::NotifyOn::Failed;
    let quiet = sim.s.submit(sp.clone(), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, true);
    let n = sim.s.jobs[&quiet].notification.clone().unwrap();
    assert_eq!(
        n.state,
        NotifyState::Skipped,
        "done, but only failures notify"
    );

    let mut fx = Effects::default();
    sp.notify_on = drqueue_common::model::NotifyOn::Both;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, true);
    for t in [0, 1000] {
        assert_eq!(sim.s.due_notifications(sim.now + t), vec![id]);
        sim.s
            .notification_result(id, Err("SMTP: refused".into()), false, sim.now + t);
    }
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(
        (n.state, n.attempts, n.last_error.as_deref()),
        (NotifyState::Failed, 2, Some("SMTP: refused"))
    );
}

#[test]
fn retrying_a_job_arms_its_notification_for_the_next_end() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    sp.max_attempts = 1;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, false);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    sim.s.due_notifications(sim.now);
    sim.s.notification_result(id, Ok(()), false, sim.now);
    let mut fx = Effects::default();
    assert_eq!(sim.s.retry(id, sim.now, &mut fx).unwrap(), 1);
    sim.settle(fx);
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(n.state, NotifyState::Waiting);
    sim.finish(0, 0, true);
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!((n.state, n.attempts), (NotifyState::Pending, 0));
}

#[test]
fn a_graph_is_created_whole_or_not_at_all() {
    use drqueue_common::graph::{Graph, GraphJob, NamedDependency};
    let mut sim = Sim::new();
    let job = |name: &str, after: &[&str], cmd: &str| GraphJob {
        name: name.into(),
        spec: JobSpec {
            command: vec![cmd.into()],
            ..spec("1", 1)
        },
        after_names: after
            .iter()
            .map(|a| NamedDependency {
                name: a.to_string(),
                on: vec![JobStatus::Done],
            })
            .collect(),
    };
    let mut fx = Effects::default();
    // A cycle, or a bad spec anywhere: nothing is created.
    let cyclic = Graph {
        jobs: vec![job("a", &["b"], "x"), job("b", &["a"], "x")],
    };
    assert!(sim.s.submit_graph(cyclic, sim.now, &mut fx).is_err());
    let mut broken = job("c", &["a"], "x");
    broken.spec.frames = "nope".into();
    let bad = Graph {
        jobs: vec![job("a", &[], "x"), broken],
    };
    assert!(sim.s.submit_graph(bad, sim.now, &mut fx).is_err());
    assert!(sim.s.jobs.is_empty() && sim.s.next_job_id == 1);
    // A good one: dependencies first, names resolved to ids in `after` and
    // in `{job:NAME}`.
    let good = Graph {
        jobs: vec![
            job("encode", &["render"], "ffmpeg-{job:render}"),
            job("render", &[], "blender"),
        ],
    };
    let ids = sim.s.submit_graph(good, sim.now, &mut fx).unwrap();
    assert_eq!(
        ids,
        vec![("render".to_string(), 1), ("encode".to_string(), 2)]
    );
    let encode = &sim.s.jobs[&2];
    assert_eq!(encode.spec.command, ["ffmpeg-1"]);
    assert_eq!(encode.spec.after[0].job, 1);
    assert_eq!(encode.status, JobStatus::Waiting);
}

/// The audit's defect: the assignment's commit is lost in a crash, the
/// engine runs the attempt anyway and delivers its result inside Register.
/// The task must end done with the attempt it ran (not "attempt 0"), so its
/// log and history can be read.
#[test]
fn a_result_in_register_after_a_lost_assignment_keeps_its_attempt() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1", 1), sim.now, &mut fx).unwrap();
    sim.store.commit(sim.s.take_batch());
    let before_assignment = sim.store.snapshot();
    sim.settle(fx);
    let key = sim.engines[0].held.pop().expect("the engine got the task");
    assert_eq!(key.attempt, 1);

    // The master dies having lost the assignment's commit; the engine ran
    // the attempt meanwhile and reports it on registering again.
    sim.now += 1000;
    let mut fx = Effects::default();
    sim.s = Scheduler::restore(sim_config(), before_assignment, sim.now, &mut fx);
    sim.s.engine_registered(
        &"engine-0".to_string(),
        facts(&["default"]),
        1,
        1,
        &[],
        &[key],
        sim.now,
        &mut fx,
    );
    let ok = Outcome {
        exit_code: Some(0),
        wall_ms: 10,
        ..Default::default()
    };
    sim.s.task_finished("engine-0", key, ok, sim.now, &mut fx);
    sim.settle(fx);

    let task = sim.s.task_record(TaskKey { job: id, index: 0 }).unwrap();
    assert_eq!(task.status, TaskStatus::Done);
    assert_eq!(task.attempts, 1, "the attempt that ran, not attempt 0");
    assert_eq!(task.engine.as_deref(), Some("engine-0"));
    let history = task.history(Vec::new());
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].attempt, key);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}
