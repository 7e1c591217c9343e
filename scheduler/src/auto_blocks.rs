//! `--blocksize auto`: a job starts as one task per run of its frames, and
//! dispatch cuts each engine's task off the front of a ready one, sized by
//! that engine's speed. A cut and its remainder are dirty together, so one
//! commit stores both and a restart reads the cuts back (`restore.rs`).
//!
//! The size is the smaller of two:
//! - the frames the engine renders in `target_task_minutes` (its own time
//!   per frame on this job, else the job's median scaled by its speed
//!   score), so a renderer's start-up is paid once per task, not per frame;
//! - its fair part of the frames still to hand out, in proportion to its
//!   speed among the engines that can run the job, so the last tasks of
//!   every engine end at about the same time (guided self-scheduling,
//!   weighted by speed).
//!
//! With no time yet for the job, a task is one frame: a probe.

use super::fitness::eligible;
use super::state::{Job, Task};
use super::{EngineIdx, Scheduler};
use drqueue_common::model::{JobId, TaskStatus};
use drqueue_common::task_blocks::split_block;

impl Scheduler {
    /// How many frames engine `e`'s next task of auto-sized job `id` gets;
    /// None for a job of fixed blocksize.
    pub(super) fn auto_task_frames(&self, id: JobId, e: EngineIdx) -> Option<u64> {
        let job = self.jobs.get(&id)?;
        let target_ms = f64::from(job.spec.target_task_minutes?) * 60_000.0;
        let median = job_median_ms_per_frame(job);
        let ms_per_frame = |x: EngineIdx| -> Option<f64> {
            if let Some(&(sum, n)) = job.speed.get(&x) {
                return Some(sum / f64::from(n));
            }
            let score = f64::from(self.speed_score(x).unwrap_or(1.0));
            median.map(|m| m / score.max(0.01))
        };
        let Some(mine) = ms_per_frame(e) else {
            return Some(1);
        };
        let by_target = (target_ms / mine).floor().max(1.0);
        // Frames per millisecond the job's engines render, slot by slot.
        let rate: f64 = EngineIdx::all(self.engines.len())
            .filter(|&x| self.engines[x].accepts_work() && eligible(&self.engines[x], &job.spec))
            .filter_map(|x| Some(f64::from(self.engines[x].slots) / ms_per_frame(x)?))
            .sum();
        let left: u64 = job
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Ready)
            .map(|t| t.block.len())
            .sum();
        let fair = if rate > 0.0 {
            (left as f64 / mine / rate).ceil()
        } else {
            left as f64
        };
        Some(by_target.min(fair).max(1.0) as u64)
    }

    /// The highest attempt any engine holds of job `id`'s tasks numbered
    /// from `from` on. After a lost commit an engine may still hold an
    /// attempt of a cut that no longer exists; a new cut by that number
    /// counts its attempts past it.
    pub(super) fn ghost_attempt(&self, id: JobId, from: u32) -> u32 {
        self.engines
            .iter()
            .flat_map(|e| e.held.keys())
            .filter(|k| k.task.job == id && k.task.index >= from)
            .map(|k| k.attempt)
            .max()
            .unwrap_or(0)
    }
}

impl Job {
    /// Cuts ready task `index` to its first `frames` frames; the rest
    /// becomes a new ready task, first in the queue. Returns its index.
    pub(super) fn cut_task(&mut self, index: u32, frames: u64, ghost_attempt: u32) -> Option<u32> {
        let (head, rest) = split_block(self.tasks.get(index as usize)?.block, frames);
        let rest = rest?;
        self.tasks[index as usize].block = head;
        let mut task = Task::new(rest, TaskStatus::Ready);
        let seen = self.ghost_attempts.remove(&(self.tasks.len() as u32));
        task.highest_attempt = ghost_attempt.max(seen.unwrap_or(0));
        let added = self.push_task(task);
        self.ready.push_front(added);
        Some(added)
    }
}

/// The median of the engines' mean milliseconds per frame on this job.
fn job_median_ms_per_frame(job: &Job) -> Option<f64> {
    let mut means: Vec<f64> = job
        .speed
        .values()
        .map(|&(sum, n)| sum / f64::from(n))
        .collect();
    if means.is_empty() {
        return None;
    }
    means.sort_unstable_by(f64::total_cmp);
    Some(means[means.len() / 2])
}
