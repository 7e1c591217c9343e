//! Rebuilding the scheduler from what a previous master stored.

use super::state::{new_job, Held};
use super::{Config, Effects, Notice, Scheduler};
use crate::records::{Snapshot, TaskRecord};
use drqueue_common::frames::Block;
use drqueue_common::model::{Counts, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::Millis;
use std::collections::HashMap;

impl Scheduler {
    /// Rebuilds the state a previous master left. Engines that were online
    /// keep their attempts for `recovery_ms`, waiting to re-register;
    /// meanwhile nothing is dispatched, so no task runs twice. Stored jobs
    /// that cannot be rebuilt are left out, with a notice in `fx`.
    pub fn restore(cfg: Config, snap: Snapshot, now: Millis, fx: &mut Effects) -> Scheduler {
        let mut s = Scheduler::new(cfg);
        s.next_job_id = snap.next_job_id.max(JobId::FIRST);
        s.limits = snap.limits.into_iter().map(|l| (l.name, l.count)).collect();
        for rec in snap.engines {
            let idx = s.intern_engine(&rec.id);
            let e = &mut s.engines[idx];
            e.facts = rec.facts;
            e.slots = rec.slots;
            e.hwm = rec.hwm;
            e.disabled = rec.disabled;
            e.revoked = rec.revoked;
            e.recovering = rec.online;
            e.last_seen = rec.last_seen_ms;
            e.tasks_done = rec.tasks_done;
            e.tasks_failed = rec.tasks_failed;
            e.failures_in_row = rec.failures_in_row;
            e.streak_job = rec.streak_job;
            e.streak_mixed = rec.streak_mixed;
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
            let blocks = match rec.spec.validate().and_then(|f| rec.spec.cut_tasks(&f)) {
                // An auto-sized job was cut as it ran: its stored tasks say how.
                Ok(_) if rec.spec.auto_blocksize() && stored_cuts_are_whole(&recs) => recs
                    .iter()
                    .map(|t| Block {
                        first: t.first,
                        last: t.last,
                        step: t.step,
                    })
                    .collect(),
                Ok(b) => b,
                Err(e) => {
                    fx.notices.push(Notice::SkippedStoredJob {
                        job: rec.id,
                        error: e.to_string(),
                    });
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
            job.frames_done = 0;
            job.frames_ended = 0;
            job.ready.clear();
            let by_index: HashMap<u32, TaskRecord> =
                recs.into_iter().map(|t| (t.index, t)).collect();
            for (i, task) in job.tasks.iter_mut().enumerate() {
                if let Some(r) = by_index.get(&(i as u32)) {
                    task.status = r.status;
                    task.attempts = r.attempts;
                    task.highest_attempt = r.attempts;
                    task.failures = r.failures;
                    // An engine named only by tasks (its own record is
                    // missing) is interned offline: the task keeps saying
                    // who ran it, and held attempts there run again below.
                    task.engine = r.engine.as_ref().map(|id| s.intern_engine(id));
                    task.started_ms = r.started_ms;
                    task.ended_ms = r.ended_ms;
                    task.exit_code = r.exit_code;
                    task.peak_rss_kb = r.peak_rss_kb;
                    task.cpu_ms = r.cpu_ms;
                    if !r.outputs.is_empty() {
                        job.handoff.insert(i as u32, r.outputs.clone());
                    }
                }
            }
            // A released job's tasks that start alike and were never
            // stored (or stored before the release) are ready.
            let released =
                rec.released || job.tasks.iter().any(|t| t.status != TaskStatus::Waiting);
            if released && job.tasks_start_alike() {
                for t in job.tasks.iter_mut() {
                    if t.status == TaskStatus::Waiting {
                        t.status = TaskStatus::Ready;
                    }
                }
            }
            // A cancelled job wrote no rows for the tasks its cancel ended
            // (see `cancel_tasks`): whatever they were, they are cancelled.
            if rec.status == JobStatus::Cancelled {
                for t in job.tasks.iter_mut().filter(|t| !t.status.is_terminal()) {
                    t.status = TaskStatus::Cancelled;
                    t.ended_ms = rec.finished_ms;
                }
            }
            for i in 0..job.tasks.len() {
                let t = &mut job.tasks[i];
                if t.status.is_held() {
                    match t.engine {
                        Some(e) if s.engines[e].recovering => {
                            s.engines[e].held.insert(
                                AttemptKey {
                                    task: TaskKey {
                                        job: rec.id,
                                        index: i as u32,
                                    },
                                    attempt: t.attempts,
                                },
                                Held {
                                    assigned_ms: None,
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
                let frames = job.tasks[i].block.len();
                job.frames_done += frames * u64::from(st == TaskStatus::Done);
                job.frames_ended += frames * u64::from(st.is_terminal());
                job.by_status.clear(i as u32, TaskStatus::Waiting);
                job.by_status.set(i as u32, st);
                if st == TaskStatus::Ready {
                    job.ready.push_back(i as u32);
                }
            }
            // Released once any task left waiting (a tiled job's assemble
            // tasks wait for their tiles after the release).
            job.released = released;
            s.jobs.insert(rec.id, job);
        }
        if s.engines.iter().any(|e| e.recovering) {
            s.recovery_deadline = now + s.cfg.recovery_ms;
        }
        s
    }
}

/// Stored tasks numbered 0.. without a gap, each a sane block: one commit
/// writes a cut and its remainder together, so a whole set covers the job.
fn stored_cuts_are_whole(recs: &[TaskRecord]) -> bool {
    !recs.is_empty()
        && recs
            .iter()
            .enumerate()
            .all(|(i, t)| t.index == i as u32 && t.step >= 1 && t.first <= t.last)
}
