//! Live progress and estimates: what engines report of running attempts
//! (held in memory only, never stored), a job's percent done, and when it
//! may end. Time comes in as `now`; nothing here reads a clock.

use super::state::Job;
use super::Scheduler;
use drqueue_common::model::{Eta, JobId, TaskStatus};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::Millis;

/// A task's own estimate needs this much progress, and this long running.
const TASK_ETA_MIN_PERCENT: f32 = 5.0;
const TASK_ETA_MIN_MS: Millis = 30_000;
/// The newest finished tasks an estimate looks at.
const SAMPLE: usize = 1000;

impl Scheduler {
    /// An engine says how far an attempt it runs has got. Ignored unless
    /// that engine holds that attempt, like every report.
    pub fn task_progress(&mut self, engine: &str, key: AttemptKey, percent: f32) {
        if !percent.is_finite() || !self.owns_attempt(engine, key) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let held = job
            .tasks
            .get(key.task.index as usize)
            .is_some_and(|t| t.status.is_held() && t.attempts == key.attempt);
        if held {
            job.live_progress
                .insert(key.task.index, (key.attempt, percent.clamp(0.0, 100.0)));
        }
    }

    /// When the job may end, while it has work left.
    pub(super) fn eta(&self, id: JobId, now: Millis) -> Option<Eta> {
        let job = self.jobs.get(&id)?;
        if job.status.is_terminal() {
            return None;
        }
        let total = job.tasks.len() as f64;
        let left = total - job.counts.terminal() as f64 - job.live_fraction_sum();
        if left <= 0.0 {
            return None;
        }
        let mut times: Vec<Millis> = job
            .tasks
            .iter()
            .rev()
            .filter(|t| t.status == TaskStatus::Done)
            .filter_map(|t| Some(t.ended_ms?.saturating_sub(t.started_ms?)))
            .take(SAMPLE)
            .collect();
        if !times.is_empty() {
            times.sort_unstable();
            let slots = self.slots_for(id).max(1) as f64;
            let quartile = |q: usize| times[(times.len() - 1) * q / 4] as f64;
            let secs = |task_ms: f64| (left * task_ms / slots / 1000.0).ceil() as u64;
            return Some(Eta {
                low_s: secs(quartile(1)),
                high_s: secs(quartile(3)),
                method: "frame_times".into(),
            });
        }
        // Nothing finished yet: the running tasks' own estimates.
        let estimates: Vec<u64> = job
            .live_progress
            .iter()
            .filter_map(|(&i, &(_, p))| {
                let started = job.tasks.get(i as usize)?.started_ms?;
                let elapsed = now.saturating_sub(started);
                (p >= TASK_ETA_MIN_PERCENT && elapsed >= TASK_ETA_MIN_MS && p < 100.0)
                    .then(|| (elapsed as f64 * f64::from(100.0 - p) / f64::from(p) / 1000.0) as u64)
            })
            .collect();
        let (low, high) = (estimates.iter().min()?, estimates.iter().max()?);
        Some(Eta {
            low_s: *low,
            high_s: *high,
            method: "task_progress".into(),
        })
    }

    /// Slots of the engines that could run the job now (its `max_engines`
    /// respected).
    fn slots_for(&self, id: JobId) -> u32 {
        let Some(job) = self.jobs.get(&id) else {
            return 0;
        };
        let mut slots: Vec<u32> = self
            .engines
            .iter()
            .filter(|e| e.online && !e.disabled && e.sick.is_none())
            .filter(|e| super::fitness::eligible(e, &job.spec))
            .map(|e| e.slots)
            .collect();
        if job.spec.max_engines > 0 {
            slots.sort_unstable_by(|a, b| b.cmp(a));
            slots.truncate(job.spec.max_engines as usize);
        }
        slots.iter().sum()
    }
}

impl Job {
    /// A running task's reported progress, for its current attempt.
    pub(super) fn task_progress(&self, index: u32) -> Option<f32> {
        let (attempt, p) = *self.live_progress.get(&index)?;
        let t = self.tasks.get(index as usize)?;
        (t.status.is_held() && t.attempts == attempt).then_some(p)
    }

    fn live_fraction_sum(&self) -> f64 {
        self.live_progress
            .keys()
            .filter_map(|&i| self.task_progress(i))
            .map(|p| f64::from(p) / 100.0)
            .sum()
    }

    /// Percent done: done tasks and running tasks' fractions; None before
    /// anything ran.
    pub(super) fn progress(&self) -> Option<f32> {
        let done = self.counts.get(TaskStatus::Done) as f64;
        let live = self.live_fraction_sum();
        if done == 0.0 && live == 0.0 && self.counts.get(TaskStatus::Running) == 0 {
            return None;
        }
        let total = self.tasks.len().max(1) as f64;
        Some(((done + live) / total * 100.0).min(100.0) as f32)
    }
}
