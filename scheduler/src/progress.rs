//! Live signs of running attempts and what they tell: progress reported by
//! engines (held in memory only, never stored), a job's percent done and
//! when it may end, tasks that have gone quiet (stalls) and tasks running
//! far longer than their siblings (outliers). Time comes in as `now`.

use super::state::{Job, Live};
use super::{Effects, EngineIdx, Notice, Observation, Scheduler};
use drqueue_common::model::TaskKey;
use drqueue_common::model::{Blocked, Eta, JobId, OnStall, TaskStatus};
use drqueue_common::protocol::{AttemptKey, ToEngine};
use drqueue_common::Millis;

/// A task's own estimate needs this much progress, and this long running.
const TASK_ETA_MIN_PERCENT: f32 = 5.0;
const TASK_ETA_MIN_MS: Millis = 30_000;
/// The newest finished tasks an estimate looks at.
const SAMPLE: usize = 1000;
/// Outliers are judged once this many tasks are done.
const OUTLIER_AFTER_DONE: usize = 5;

impl Scheduler {
    /// An engine says how far an attempt it runs has got. Ignored unless
    /// that engine holds that attempt, like every report.
    pub fn task_progress(&mut self, engine: &str, key: AttemptKey, percent: f32, now: Millis) {
        if percent.is_finite() {
            self.note_live(engine, key, Some(percent.clamp(0.0, 100.0)), now);
        }
    }

    /// An engine sent output of an attempt it runs: it is alive.
    pub fn task_activity(&mut self, engine: &str, key: AttemptKey, now: Millis) {
        self.note_live(engine, key, None, now);
    }

    fn note_live(&mut self, engine: &str, key: AttemptKey, progress: Option<f32>, now: Millis) {
        if !self.owns_attempt(engine, key) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let held = job
            .tasks
            .get(key.task.index as usize)
            .is_some_and(|t| t.status.is_held() && t.attempts == key.attempt);
        if !held {
            return;
        }
        let live = job.live.entry(key.task.index).or_insert(Live {
            attempt: key.attempt,
            progress: None,
            active_ms: now,
        });
        if live.attempt != key.attempt {
            *live = Live {
                attempt: key.attempt,
                progress: None,
                active_ms: now,
            };
        }
        live.active_ms = now;
        if progress.is_some() {
            live.progress = progress;
        }
    }

    /// Stalls alone, for a caller with no heartbeats to judge (run-local,
    /// whose one engine never goes silent): what [`Scheduler::tick`] does
    /// about them on the farm.
    pub fn check_stalls(&mut self, now: Millis, fx: &mut Effects) {
        self.stop_stalled(now, fx);
    }

    /// Running tasks quiet for their job's `stall_after`: with `requeue`
    /// the attempt is stopped, counts as a failed attempt of the job (not of
    /// the engine: a cancel says nothing about it) and runs again, elsewhere
    /// if it can; with `warn` the job's explanations say so.
    pub(super) fn stop_stalled(&mut self, now: Millis, fx: &mut Effects) {
        let mut stalled: Vec<(TaskKey, u32, EngineIdx, Millis)> = Vec::new();
        for (&id, job) in &self.jobs {
            if job.spec.on_stall != OnStall::Requeue {
                continue;
            }
            for (index, quiet) in job.quiet_tasks(now) {
                let t = &job.tasks[index as usize];
                if let Some(e) = t.engine {
                    stalled.push((TaskKey { job: id, index }, t.attempts, e, quiet));
                }
            }
        }
        for (task, attempt, e, quiet_ms) in stalled {
            let key = AttemptKey { task, attempt };
            let engine = &mut self.engines[e];
            let Some(held) = engine.held.get_mut(&key) else {
                continue;
            };
            if held.cancelling {
                continue;
            }
            held.cancelling = true;
            fx.messages
                .push((engine.id.clone(), ToEngine::Cancel(vec![key])));
            fx.observed.push(Observation::Stalled);
            fx.notices.push(Notice::Stalled {
                engine: engine.id.clone(),
                attempt: key,
                quiet_ms,
            });
        }
    }

    /// Stalls (with `warn`) and outliers among the job's running tasks.
    pub(super) fn running_notes(&self, id: JobId, now: Millis) -> Vec<Blocked> {
        let Some(job) = self.jobs.get(&id) else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        if job.spec.on_stall == OnStall::Warn {
            for (task, quiet) in job.quiet_tasks(now) {
                notes.push(Blocked::Stalled {
                    task,
                    quiet_s: quiet / 1000,
                });
            }
        }
        if let Some((per_frame_limit, per_frame_median)) = job.outlier_threshold() {
            for task in job.running() {
                let t = &job.tasks[task as usize];
                let running = t.started_ms.map_or(0, |s| now.saturating_sub(s));
                let (threshold, median) = (
                    per_frame_limit * t.block.len(),
                    per_frame_median * t.block.len(),
                );
                if running > threshold {
                    notes.push(Blocked::Outlier {
                        task,
                        running_s: running / 1000,
                        median_s: median / 1000,
                    });
                }
            }
        }
        notes
    }

    /// When the job may end, while it has work left.
    pub(super) fn eta(&self, id: JobId, now: Millis) -> Option<Eta> {
        let job = self.jobs.get(&id)?;
        if job.status.is_terminal() {
            return None;
        }
        let left = (job.frames_total - job.frames_ended) as f64 - job.live_frames();
        if left <= 0.0 {
            return None;
        }
        let times = job.done_times();
        if !times.is_empty() {
            let slots = self.slots_for(id).max(1) as f64;
            let quartile = |q: usize| times[(times.len() - 1) * q / 4] as f64;
            let secs = |frame_ms: f64| (left * frame_ms / slots / 1000.0).ceil() as u64;
            return Some(Eta {
                low_s: secs(quartile(1)),
                high_s: secs(quartile(3)),
                method: "frame_times".into(),
            });
        }
        // Nothing finished yet: the running tasks' own estimates.
        let estimates: Vec<u64> = job
            .live
            .iter()
            .filter_map(|(&i, live)| {
                let p = live.progress?;
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
        let live = self.live.get(&index)?;
        let t = self.tasks.get(index as usize)?;
        (t.status.is_held() && t.attempts == live.attempt)
            .then_some(live.progress)
            .flatten()
    }

    /// Whether a running task is an outlier now, given the job's
    /// [`Job::outlier_threshold`] (worked out once per listing).
    pub(super) fn is_outlier(&self, index: u32, now: Millis, threshold: Option<Millis>) -> bool {
        let t = &self.tasks[index as usize];
        t.status == TaskStatus::Running
            && threshold.is_some_and(|per_frame| {
                t.started_ms
                    .is_some_and(|s| now.saturating_sub(s) > per_frame * t.block.len())
            })
    }

    fn running(&self) -> Vec<u32> {
        self.by_status.page(TaskStatus::Running, None, usize::MAX)
    }

    /// Running tasks quiet past `stall_after`, with how long (ms).
    fn quiet_tasks(&self, now: Millis) -> Vec<(u32, Millis)> {
        let limit = self.spec.stall_after_secs.saturating_mul(1000);
        if limit == 0 || self.counts.get(TaskStatus::Running) == 0 {
            return Vec::new();
        }
        self.running()
            .into_iter()
            .filter_map(|i| {
                let t = &self.tasks[i as usize];
                let since = match self.live.get(&i) {
                    Some(l) if l.attempt == t.attempts => l.active_ms,
                    _ => t.started_ms?,
                };
                let quiet = now.saturating_sub(since);
                (quiet > limit).then_some((i, quiet))
            })
            .collect()
    }

    /// The newest finished tasks' run times per frame, sorted.
    fn done_times(&self) -> Vec<Millis> {
        let mut times: Vec<Millis> = self
            .tasks
            .iter()
            .rev()
            .filter(|t| t.status == TaskStatus::Done)
            .filter_map(|t| Some(t.ended_ms?.saturating_sub(t.started_ms?) / t.block.len().max(1)))
            .take(SAMPLE)
            .collect();
        times.sort_unstable();
        times
    }

    /// max(3 × median, median + 5 × MAD) of the finished tasks' times per
    /// frame, and the median; None before [`OUTLIER_AFTER_DONE`] are done.
    pub(super) fn outlier_threshold(&self) -> Option<(Millis, Millis)> {
        if (self.counts.get(TaskStatus::Done) as usize) < OUTLIER_AFTER_DONE
            || self.counts.get(TaskStatus::Running) == 0
        {
            return None;
        }
        let times = self.done_times();
        let median = *times.get(times.len() / 2)?;
        let mut deviations: Vec<Millis> = times.iter().map(|t| t.abs_diff(median)).collect();
        deviations.sort_unstable();
        let mad = deviations[deviations.len() / 2];
        Some(((3 * median).max(median + 5 * mad), median))
    }

    /// Frames the running tasks have done by their own progress.
    fn live_frames(&self) -> f64 {
        self.live
            .keys()
            .filter_map(|&i| Some((i, self.task_progress(i)?)))
            .map(|(i, p)| f64::from(p) / 100.0 * self.tasks[i as usize].block.len() as f64)
            .sum()
    }

    /// Percent done: done tasks and running tasks' fractions; None before
    /// anything ran.
    pub(super) fn progress(&self) -> Option<f32> {
        let done = self.frames_done as f64;
        let live = self.live_frames();
        if done == 0.0 && live == 0.0 && self.counts.get(TaskStatus::Running) == 0 {
            return None;
        }
        let total = self.frames_total.max(1) as f64;
        Some(((done + live) / total * 100.0).min(100.0) as f32)
    }
}
