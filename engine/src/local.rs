//! `drqueue run-local`: a job or a graph of jobs run on this machine, with no
//! master, to debug it before it goes to the farm.
//!
//! The tasks run exactly as on an engine (the same [`runner`](crate::runner):
//! no shell, own process group, per-frame placeholders, a log per attempt,
//! timeouts that kill the tree). The rules are the farm's where they apply
//! to one machine: dependencies with their end statuses (a broken one
//! cancels the job), retries up to `max_attempts`, higher priority first,
//! then graph order. Pools, requirements, limits and `start_after` do not
//! apply here.

use drqueue_common::frames::Block;
use drqueue_common::graph::Graph;
use drqueue_common::model::{Counts, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::protocol::{AttemptKey, JobBody, Outcome};
use drqueue_runner::{Attempt, Control, Pool, RunnerEvent};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where a local run stands, after each change.
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub id: JobId,
    pub name: String,
    pub status: JobStatus,
    pub counts: Counts,
    pub tasks: u64,
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

struct LocalJob {
    name: String,
    body: Arc<JobBody>,
    blocks: Vec<Block>,
    status: Vec<TaskStatus>,
    failures: Vec<u32>,
    attempts: Vec<u32>,
    max_attempts: u32,
    priority: u32,
    deps: Vec<(usize, Vec<JobStatus>)>,
    job_status: JobStatus,
    reason: Option<String>,
}

impl LocalJob {
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.status {
            c.add(*s);
        }
        c
    }
}

/// Runs the graph with `slots` tasks at once; logs go to `log_dir`. Returns
/// every job's end (ids are 1, 2, … in dependency order).
pub fn run(
    graph: &Graph,
    slots: u32,
    log_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Vec<JobProgress>> {
    std::fs::create_dir_all(log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", log_dir.display()))?;
    let ids: HashMap<&str, usize> = graph
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut jobs = Vec::new();
    for (i, j) in graph.jobs.iter().enumerate() {
        if let Some(d) = j.spec.after.first() {
            anyhow::bail!(
                "job {:?} waits for farm job {}: run-local runs only what is in the file",
                j.name,
                d.job
            );
        }
        let frames = j
            .spec
            .validate()
            .map_err(|e| anyhow::anyhow!("job {:?}: {e}", j.name))?;
        let blocks = frames
            .blocks(j.spec.blocksize)
            .map_err(|e| anyhow::anyhow!("job {:?}: {e}", j.name))?;
        let mut command = j.spec.command.clone();
        for arg in &mut command {
            for (name, k) in &ids {
                *arg = arg.replace(&format!("{{job:{name}}}"), &(k + 1).to_string());
            }
        }
        let deps = j
            .after_names
            .iter()
            .map(|d| {
                ids.get(d.name.as_str())
                    .map(|k| (*k, d.on.clone()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("job {:?} waits for unknown {:?}", j.name, d.name)
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let n = blocks.len();
        jobs.push(LocalJob {
            name: j.name.clone(),
            body: Arc::new(JobBody {
                id: i as JobId + 1,
                command,
                env: j
                    .spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd: j.spec.cwd.clone(),
                timeout_secs: j.spec.timeout_secs,
            }),
            blocks,
            status: vec![TaskStatus::Waiting; n],
            failures: vec![0; n],
            attempts: vec![0; n],
            max_attempts: j.spec.max_attempts.max(1),
            priority: j.spec.priority,
            deps,
            job_status: JobStatus::Waiting,
            reason: None,
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(drive(jobs, slots.max(1), log_dir, observer))
}

async fn drive(
    mut jobs: Vec<LocalJob>,
    slots: u32,
    log_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Vec<JobProgress>> {
    let (events, mut rx) = mpsc::unbounded_channel();
    let pool = Pool::new(slots, events)?;
    let mut running: HashMap<AttemptKey, (Arc<Control>, Option<Instant>)> = HashMap::new();
    loop {
        release(&mut jobs);
        start_ready(&mut jobs, &pool, &mut running, slots, log_dir);
        observer.progress(&progress(&jobs));
        if running.is_empty() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(RunnerEvent::Finished(key, outcome))) => {
                running.remove(&key);
                let j = &mut jobs[key.task.job as usize - 1];
                let i = key.task.index as usize;
                let log = attempt_log(log_dir, key);
                if outcome.is_success() {
                    j.status[i] = TaskStatus::Done;
                } else {
                    j.failures[i] += 1;
                    j.status[i] = if j.failures[i] >= j.max_attempts {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Ready
                    };
                }
                observer.attempt_ended(&AttemptEnd {
                    job: key.task.job,
                    name: j.name.clone(),
                    task: key.task.index,
                    attempt: key.attempt,
                    block: j.blocks[i],
                    outcome,
                    log,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("the task runner stopped"),
            Err(_) => {}
        }
        let now = Instant::now();
        for (control, deadline) in running.values() {
            if deadline.is_some_and(|d| now >= d) {
                control.time_out();
            }
        }
    }
    Ok(progress(&jobs))
}

/// Moves jobs whose dependencies ended to running (or cancelled), and ends
/// jobs whose tasks all ended.
fn release(jobs: &mut [LocalJob]) {
    loop {
        let mut changed = false;
        for k in 0..jobs.len() {
            let status = jobs[k].job_status;
            if status.is_terminal() {
                continue;
            }
            if status == JobStatus::Waiting {
                let mut ready = true;
                let mut broken = None;
                for (d, on) in &jobs[k].deps {
                    let ds = jobs[*d].job_status;
                    if !ds.is_terminal() {
                        ready = false;
                    } else if !on.contains(&ds) {
                        broken = Some(format!("{} ended {ds}", jobs[*d].name));
                    }
                }
                let j = &mut jobs[k];
                if let Some(why) = broken {
                    j.status.iter_mut().for_each(|s| *s = TaskStatus::Cancelled);
                    j.job_status = JobStatus::Cancelled;
                    j.reason = Some(why);
                    changed = true;
                } else if ready {
                    j.status.iter_mut().for_each(|s| *s = TaskStatus::Ready);
                    j.job_status = JobStatus::Running;
                    changed = true;
                }
                continue;
            }
            let j = &mut jobs[k];
            if j.status.iter().all(|s| s.is_terminal()) {
                j.job_status = if j.status.iter().all(|s| *s == TaskStatus::Done) {
                    JobStatus::Done
                } else {
                    JobStatus::Failed
                };
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

fn start_ready(
    jobs: &mut [LocalJob],
    pool: &Pool,
    running: &mut HashMap<AttemptKey, (Arc<Control>, Option<Instant>)>,
    slots: u32,
    log_dir: &Path,
) {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|k| std::cmp::Reverse(jobs[*k].priority)); // stable: graph order within a priority
    for k in order {
        let j = &mut jobs[k];
        for i in 0..j.status.len() {
            if running.len() >= slots as usize {
                return;
            }
            if j.status[i] != TaskStatus::Ready {
                continue;
            }
            j.status[i] = TaskStatus::Running;
            j.attempts[i] += 1;
            let key = AttemptKey {
                task: TaskKey {
                    job: j.body.id,
                    index: i as u32,
                },
                attempt: j.attempts[i],
            };
            let control = Arc::new(Control::default());
            let deadline = (j.body.timeout_secs > 0)
                .then(|| Instant::now() + Duration::from_secs(j.body.timeout_secs));
            running.insert(key, (control.clone(), deadline));
            pool.start(Attempt {
                key,
                body: j.body.clone(),
                block: j.blocks[i],
                log_path: attempt_log(log_dir, key),
                control,
            });
        }
    }
}

fn attempt_log(dir: &Path, key: AttemptKey) -> PathBuf {
    dir.join(format!(
        "{}-{}-{}.log",
        key.task.job, key.task.index, key.attempt
    ))
}

fn progress(jobs: &[LocalJob]) -> Vec<JobProgress> {
    jobs.iter()
        .map(|j| JobProgress {
            id: j.body.id,
            name: j.name.clone(),
            status: j.job_status,
            counts: j.counts(),
            tasks: j.status.len() as u64,
        })
        .collect()
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
