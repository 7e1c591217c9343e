//! `drqueue run-local`: a job or a graph of jobs run on this machine, with no
//! master, to debug it before it goes to the farm.
//!
//! It drives the farm's own [`Scheduler`] (with an in-memory store) and one
//! local "engine" made of the farm's process runner, so dependencies, their
//! end statuses, retries, priority, `{job:NAME}` and how a job ends follow
//! the farm's rules by construction. What cannot apply to one machine is
//! cleared: pool, requirements, limits, `max_engines`, `start_after` and
//! pause; sickness and blacklists are off, so the one engine never
//! quarantines itself.

use drqueue_common::frames::Block;
use drqueue_common::graph::Graph;
use drqueue_common::model::{
    Counts, EngineFacts, EngineId, JobId, JobStatus, Requirements, TaskKey, TaskStatus,
    DEFAULT_POOL,
};
use drqueue_common::now_millis;
use drqueue_common::protocol::{AttemptKey, JobBody, Outcome, ToEngine};
use drqueue_runner::contain::{Choice, Containment};
use drqueue_runner::{Attempt, Control, Pool, RunnerEvent};
use drqueue_scheduler::memory::MemoryStore;
use drqueue_scheduler::{Config, Effects, Scheduler};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where a local run stands, after each change (`run-local --json` prints
/// the last).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobProgress {
    pub id: JobId,
    pub name: String,
    pub status: JobStatus,
    pub counts: Counts,
    pub tasks: u64,
    /// Each task's status, by index.
    pub task_status: Vec<TaskStatus>,
}

/// What happened to one attempt, for the caller to print.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub job: JobId,
    pub name: String,
    pub task: u32,
    pub attempt: u32,
    pub block: Block,
    pub outcome: Outcome,
    pub log: PathBuf,
}

pub trait Observer {
    fn progress(&mut self, jobs: &[JobProgress]);
    fn attempt_ended(&mut self, end: &AttemptEnd);
}

/// The local engine's id in the scheduler.
const LOCAL_ENGINE: &str = "local";

/// The farm's rules, less those that need a farm: no sickness, no
/// blacklists, no checks, and an engine that is never lost.
fn local_config() -> Config {
    Config {
        engine_timeout_ms: u64::MAX / 4,
        recovery_ms: 0,
        blacklist_after: 0,
        sick_after: 0,
        check_interval_ms: 0,
        ..Config::default()
    }
}

/// Runs the graph with `slots` tasks at once; logs go to `log_dir`. Returns
/// every job's end.
pub fn run(
    graph: &Graph,
    slots: u32,
    log_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Vec<JobProgress>> {
    std::fs::create_dir_all(log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", log_dir.display()))?;
    let graph = for_one_machine(graph)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(LocalFarm::new(graph, slots.max(1), log_dir)?.drive(observer))
}

/// The graph with what cannot apply on one machine cleared.
fn for_one_machine(graph: &Graph) -> anyhow::Result<Graph> {
    let mut graph = graph.clone();
    for j in &mut graph.jobs {
        if let Some(d) = j.spec.after.first() {
            anyhow::bail!(
                "job {:?} waits for farm job {}: run-local runs only what is in the file",
                j.name,
                d.job
            );
        }
        let spec = &mut j.spec;
        spec.pool = DEFAULT_POOL.into();
        spec.requirements = Requirements::default();
        spec.limits.clear();
        spec.max_engines = 0;
        spec.start_after = None;
        spec.paused = false;
        spec.notify.clear();
    }
    Ok(graph)
}

/// The scheduler, its store, and the one engine: the runner's slot threads.
struct LocalFarm {
    sched: Scheduler,
    store: MemoryStore,
    fx: Effects,
    jobs: Vec<JobId>,
    pool: Pool,
    events: mpsc::UnboundedReceiver<RunnerEvent>,
    running: HashMap<AttemptKey, (Arc<Control>, Option<Instant>)>,
    log_dir: PathBuf,
}

impl LocalFarm {
    fn new(graph: Graph, slots: u32, log_dir: &Path) -> anyhow::Result<LocalFarm> {
        let now = now_millis();
        let mut sched = Scheduler::new(local_config());
        let mut fx = Effects::default();
        let jobs = sched
            .submit_graph(graph, now, &mut fx)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let facts = EngineFacts {
            name: LOCAL_ENGINE.into(),
            pools: vec![DEFAULT_POOL.into()],
            ..Default::default()
        };
        sched.engine_registered(
            &EngineId::from(LOCAL_ENGINE),
            facts,
            slots,
            slots,
            &[],
            &[],
            now,
            &mut fx,
        );
        let (tx, events) = mpsc::unbounded_channel();
        Ok(LocalFarm {
            sched,
            store: MemoryStore::default(),
            fx,
            jobs,
            pool: Pool::new(
                slots,
                tx,
                Arc::new(Containment::new(
                    &format!("local-{}", std::process::id()),
                    Choice::Best,
                )),
                // run-local reads the job's files where they are.
                None,
            )?,
            events,
            running: HashMap::new(),
            log_dir: log_dir.to_path_buf(),
        })
    }

    async fn drive(mut self, observer: &mut dyn Observer) -> anyhow::Result<Vec<JobProgress>> {
        loop {
            let now = now_millis();
            self.sched.check_stalls(now, &mut self.fx);
            self.sched.dispatch(now, &mut self.fx);
            self.carry_out();
            self.sched.persist(&mut self.fx);
            self.fx.observed.clear(); // a run on one machine keeps no metrics
            self.store.commit(std::mem::take(&mut self.fx.batch));
            observer.progress(&self.progress());
            if self.running.is_empty() {
                if self.sched.unfinished_jobs() > 0 {
                    anyhow::bail!("nothing can run: {}", self.why_stuck(now));
                }
                return Ok(self.progress());
            }
            match tokio::time::timeout(Duration::from_millis(100), self.events.recv()).await {
                Ok(Some(event)) => self.on_runner(event, observer),
                Ok(None) => anyhow::bail!("the task runner stopped"),
                Err(_) => {}
            }
            let now = Instant::now();
            for (control, deadline) in self.running.values() {
                if deadline.is_some_and(|d| now >= d) {
                    control.time_out();
                }
            }
        }
    }

    /// Does what the scheduler decided: start assigned attempts, stop
    /// cancelled ones.
    fn carry_out(&mut self) {
        let messages = std::mem::take(&mut self.fx.messages);
        self.fx.after_commit.clear(); // acks: the runner keeps no results
        self.fx.ended_jobs.clear();
        self.fx.notices.clear();
        self.fx.mail_due.clear(); // run-local sends no mail (`notify` is cleared)
        for (_, msg) in messages {
            match msg {
                ToEngine::Assign(a) => {
                    let body = Arc::new(a.job);
                    for t in a.tasks {
                        self.start(&body, t.index, t.attempt, t.block);
                    }
                }
                ToEngine::Cancel(keys) => {
                    for key in keys {
                        if let Some((control, _)) = self.running.get(&key) {
                            control.cancel();
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn start(&mut self, body: &Arc<JobBody>, index: u32, attempt: u32, block: Block) {
        let key = AttemptKey {
            task: TaskKey {
                job: body.id,
                index,
            },
            attempt,
        };
        let control = Arc::new(Control::default());
        let deadline = (body.timeout_secs > 0)
            .then(|| Instant::now() + Duration::from_secs(body.timeout_secs));
        self.running.insert(key, (control.clone(), deadline));
        self.pool.start(Attempt {
            key,
            body: body.clone(),
            block,
            // run-local refuses tiled jobs, the only ones with task inputs.
            inputs: Vec::new(),
            log_path: attempt_log(&self.log_dir, key),
            control,
        });
    }

    fn on_runner(&mut self, event: RunnerEvent, observer: &mut dyn Observer) {
        let now = now_millis();
        match event {
            RunnerEvent::Started(key) => self.sched.task_started(LOCAL_ENGINE, key, now),
            // The runner writes the log file itself; output is a sign of life.
            RunnerEvent::Log { key, .. } => self.sched.task_activity(LOCAL_ENGINE, key, now),
            RunnerEvent::Progress(key, percent) => {
                self.sched.task_progress(LOCAL_ENGINE, key, percent, now)
            }
            RunnerEvent::Finished(key, outcome) => {
                self.running.remove(&key);
                let task = self.sched.task_record(key.task);
                let name = self
                    .sched
                    .job_view(key.task.job, now)
                    .map(|v| v.name)
                    .unwrap_or_default();
                let end = AttemptEnd {
                    job: key.task.job,
                    name,
                    task: key.task.index,
                    attempt: key.attempt,
                    block: task.map_or(
                        Block {
                            first: 0,
                            last: 0,
                            step: 1,
                        },
                        |t| Block {
                            first: t.first,
                            last: t.last,
                            step: t.step,
                        },
                    ),
                    outcome: outcome.clone(),
                    log: attempt_log(&self.log_dir, key),
                };
                self.sched
                    .task_finished(LOCAL_ENGINE, key, outcome, now, &mut self.fx);
                observer.attempt_ended(&end);
            }
        }
    }

    fn progress(&self) -> Vec<JobProgress> {
        let now = now_millis();
        self.jobs
            .iter()
            .filter_map(|id| self.sched.job_view(*id, now))
            .map(|v| JobProgress {
                task_status: self
                    .sched
                    .task_views(v.id, None)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| t.status)
                    .collect(),
                id: v.id,
                name: v.name,
                status: v.status,
                counts: v.counts,
                tasks: v.tasks_total,
            })
            .collect()
    }

    /// What the scheduler says keeps the unfinished jobs from running.
    fn why_stuck(&self, now: u64) -> String {
        let reasons: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|id| self.sched.job_view(*id, now))
            .filter(|v| !v.status.is_terminal())
            .map(|v| {
                format!(
                    "job {:?} is {} ({})",
                    v.name,
                    v.status,
                    v.blocked.join("; ")
                )
            })
            .collect();
        reasons.join(", ")
    }
}

fn attempt_log(dir: &Path, key: AttemptKey) -> PathBuf {
    dir.join(format!(
        "{}-{}-{}.log",
        key.task.job, key.task.index, key.attempt
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet(Vec<AttemptEnd>);
    impl Observer for Quiet {
        fn progress(&mut self, _: &[JobProgress]) {}
        fn attempt_ended(&mut self, end: &AttemptEnd) {
            self.0.push(end.clone());
        }
    }

    use std::collections::HashMap;

    fn graph(text: &str) -> Graph {
        drqueue_common::graph::parse("g.toml", text, "t", 0).expect("valid graph")
    }

    #[test]
    fn a_chain_runs_in_order_with_retries_and_a_broken_dependency_cancels() {
        let dir = std::env::temp_dir().join(format!("drq-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("order.txt");
        let o = out.display();
        let text = format!(
            r#"
[[jobs]]
name = "first"
frames = "1-3"
command = ["sh", "-c", "echo first {{frame}} >> {o}"]

[[jobs]]
name = "second"
after = ["first"]
max_attempts = 2
command = ["sh", "-c", "echo try $DRQUEUE_ATTEMPT; echo second {{job:first}} $DRQUEUE_ATTEMPT >> {o}; test $DRQUEUE_ATTEMPT = 2"]

[[jobs]]
name = "never"
after = ["third"]
command = ["true"]

[[jobs]]
name = "third"
after = ["second:failed"]
command = ["true"]
"#
        );
        let mut q = Quiet(Vec::new());
        let ends = run(&graph(&text), 2, &dir.join("logs"), &mut q).unwrap();
        let status: HashMap<String, JobStatus> =
            ends.iter().map(|j| (j.name.clone(), j.status)).collect();
        assert_eq!(status["first"], JobStatus::Done);
        assert_eq!(status["second"], JobStatus::Done);
        assert_eq!(status["third"], JobStatus::Cancelled, "second did not fail");
        assert_eq!(status["never"], JobStatus::Cancelled);
        let lines = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[..3].iter().all(|l| l.starts_with("first")));
        assert_eq!(&lines[3..], ["second 1 1", "second 1 2"]);
        assert_eq!(q.0.len(), 5);
        // Each attempt that printed has its own log.
        for e in q.0.iter().filter(|e| e.name == "second") {
            let log = std::fs::read_to_string(&e.log).unwrap();
            assert_eq!(log, format!("try {}\n", e.attempt));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
