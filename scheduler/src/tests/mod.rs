//! Scheduler tests: hand-written cases, then property tests that drive the
//! state machine with generated event sequences against simulated engines
//! and a simulated store (so master restarts go through `restore`).
//!
//! `mod.rs` is the harness (the simulated farm); the cases are by topic.

mod audit;
mod dispatch;
mod failures;
mod jobs;
mod property;
mod recovery;

use super::*;
use crate::memory::MemoryStore;
use drqueue_common::model::{
    Counts, Dependency, EngineState, JobSpec, JobStatus, NotifyState, Requirements, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, Heartbeat, Outcome};
use proptest::prelude::*;

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
