//! Dependencies between tasks of one job: a tiled frame's assemble task
//! waits for that frame's tile tasks ([`drqueue_common::tiles`]), and is
//! handed their output files when it is assigned.
//!
//! The edges follow from the job's spec (the tile grid and the frame
//! count), so the stores keep them by keeping the spec; what travels along
//! an edge, the files of a done task, is kept per task (`TaskRecord::outputs`).
//!
//! The rules, one function each below:
//! - a task waits until the job may start and every task it waits for is done;
//! - one it waits for failing or being cancelled cancels it, since it can
//!   never run;
//! - a retry of that one puts it back to waiting.

use super::state::Job;
use super::Scheduler;
use drqueue_common::model::{JobId, TaskKey, TaskStatus};
use drqueue_common::protocol::{Outcome, OutputFile};
use drqueue_common::Millis;
use std::ops::Range;

impl Job {
    /// The tasks task `i` waits for.
    pub(super) fn waits_for(&self, i: u32) -> Range<u32> {
        self.body.tiles.map_or(0..0, |t| t.tiles.after(i, t.frames))
    }

    /// The task that waits for task `i`, if any.
    pub(super) fn waited_on_by(&self, i: u32) -> Option<u32> {
        self.body.tiles.and_then(|t| t.tiles.dependent(i, t.frames))
    }

    fn deps_done(&self, i: u32) -> bool {
        self.waits_for(i)
            .all(|d| self.tasks[d as usize].status == TaskStatus::Done)
    }

    fn deps_broken(&self, i: u32) -> bool {
        self.waits_for(i).any(|d| {
            matches!(
                self.tasks[d as usize].status,
                TaskStatus::Failed | TaskStatus::Cancelled
            )
        })
    }

    /// Where a task (re)starts: ready once the job has been released and
    /// what it waits for is done, else waiting.
    pub(super) fn start_status(&self, i: u32) -> TaskStatus {
        if self.released && self.deps_done(i) {
            TaskStatus::Ready
        } else {
            TaskStatus::Waiting
        }
    }

    /// The files task `i` is handed: those of the tasks it waits for.
    pub(super) fn inputs_of(&self, i: u32) -> Vec<OutputFile> {
        self.waits_for(i)
            .filter_map(|d| self.handoff.get(&d))
            .flatten()
            .cloned()
            .collect()
    }
}

impl Scheduler {
    /// Task `i` of job `id` changed in a way its dependent may care about
    /// (it ended, or was retried): the dependent becomes ready, is
    /// cancelled, or (`reopen`, after a retry) waits again.
    pub(super) fn settle_dependent(&mut self, id: JobId, i: u32, reopen: bool, now: Millis) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(d) = job.waited_on_by(i) else {
            return;
        };
        let status = job.tasks[d as usize].status;
        let new = match status {
            TaskStatus::Waiting if job.deps_broken(d) => TaskStatus::Cancelled,
            TaskStatus::Waiting => job.start_status(d),
            TaskStatus::Cancelled if reopen && !job.deps_broken(d) => job.start_status(d),
            _ => return,
        };
        if new == status {
            return;
        }
        job.set_task_status(d, new);
        match new {
            TaskStatus::Ready => job.ready.push_back(d),
            TaskStatus::Cancelled => job.tasks[d as usize].ended_ms = Some(now),
            _ => job.tasks[d as usize].ended_ms = None,
        }
        self.dirty_tasks.insert(TaskKey { job: id, index: d });
    }

    /// A result was applied to task `key`: when it is done and another task
    /// waits for it, keep the files it wrote, which that one is handed
    /// ([`Job::inputs_of`]); then settle that one.
    pub(super) fn result_for_dependent(&mut self, key: TaskKey, outcome: &Outcome, now: Millis) {
        let Some(job) = self.jobs.get_mut(&key.job) else {
            return;
        };
        if job.waited_on_by(key.index).is_none() {
            return;
        }
        if job.tasks[key.index as usize].status == TaskStatus::Done {
            // Only what it uploaded can travel; bounded, so the assembly's
            // assignment stays small whatever the renderer reported.
            let files = outcome
                .outputs
                .iter()
                .filter(|f| f.hash.is_some())
                .take(drqueue_common::tiles::MAX_FILES_PER_TILE)
                .cloned()
                .collect();
            job.handoff.insert(key.index, files);
        }
        self.settle_dependent(key.job, key.index, false, now);
    }
}
