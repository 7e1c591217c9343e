//! The core's side of the live feed ([`crate::feed`]): what each commit
//! changed is noted by key, and every [`BATCH_MS`] turned into events with
//! views built from the scheduler. While nobody listens nothing is noted
//! or built; the feed is told so, and a resuming client reloads.

use super::Core;
use crate::feed::{Feed, Pending, Topic, BATCH_MS};
use drqueue_common::model::{EngineState, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::Millis;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};

/// Tasks one job event carries; past it the event says to fetch the page.
const MAX_TASKS_PER_EVENT: usize = 2000;
/// Log bytes one log event carries per task and batch.
const MAX_LOG_BYTES_PER_EVENT: usize = 64 * 1024;
/// Minutes of finished-task counts kept for the farm chart.
const CHART_MINUTES: usize = 60;

/// The feed and what the core keeps for it.
#[derive(Default)]
pub(super) struct FeedOut {
    feed: Option<Feed>,
    pending: Pending,
    /// Changes went by unseen since the feed last heard of it.
    skipped: bool,
    last_publish: Millis,
    /// Tasks done per minute, newest last: (minute since the epoch, count).
    done_per_minute: VecDeque<(u64, u64)>,
}

impl FeedOut {
    pub(super) fn new(feed: Feed) -> FeedOut {
        FeedOut {
            feed: Some(feed),
            ..FeedOut::default()
        }
    }

    /// Whether changes are worth noting now.
    fn listening(&mut self) -> bool {
        match &self.feed {
            Some(f) if f.has_subscribers() => true,
            Some(f) => {
                if !self.skipped {
                    f.skipped();
                    self.skipped = true;
                }
                self.pending = Pending::default();
                false
            }
            None => false,
        }
    }
}

impl Core {
    /// Notes what one commit changes (called with the batch, before it goes
    /// to the writer). Done tasks count toward the farm's chart always.
    pub(super) fn note_for_feed(&mut self, batch: &crate::scheduler::records::Batch) {
        let minute = self.now / 60_000;
        let done = batch
            .tasks
            .iter()
            .filter(|t| {
                t.status == TaskStatus::Done && t.ended_ms.is_some_and(|e| e / 60_000 == minute)
            })
            .count() as u64;
        if done > 0 {
            let chart = &mut self.feed_out.done_per_minute;
            match chart.back_mut() {
                Some((m, n)) if *m == minute => *n += done,
                _ => chart.push_back((minute, done)),
            }
            while chart.len() > CHART_MINUTES {
                chart.pop_front();
            }
        }
        if !self.feed_out.listening() {
            return;
        }
        let p = &mut self.feed_out.pending;
        p.jobs.extend(batch.jobs.iter().map(|j| j.id));
        p.deleted_jobs.extend(batch.deleted_jobs.iter().copied());
        for t in &batch.tasks {
            p.jobs.insert(t.job);
            p.tasks.insert(TaskKey {
                job: t.job,
                index: t.index,
            });
            // The engine's running count and task list changed with it.
            if let Some(e) = &t.engine {
                p.engines.insert(e.clone());
            }
        }
        p.engines.extend(batch.engines.iter().map(|e| e.id.clone()));
        for l in &batch.logs {
            p.logs
                .push((l.attempt.task, l.attempt.attempt, l.offset, l.data.clone()));
        }
    }

    /// A job's tasks changed together without a record each (a release, a
    /// whole-job cancel): its watchers are told to read them again.
    pub(super) fn note_tasks_reread(&mut self, job: JobId) {
        if self.feed_out.listening() {
            self.feed_out.pending.jobs.insert(job);
            self.feed_out.pending.tasks_reread.insert(job);
        }
    }

    /// A running task's progress moved: not a stored change, but news.
    pub(super) fn note_progress(&mut self, task: TaskKey) {
        if self.feed_out.listening() {
            self.feed_out.pending.jobs.insert(task.job);
            self.feed_out.pending.tasks.insert(task);
        }
    }

    /// Builds and publishes the events of what changed, at most every
    /// [`BATCH_MS`].
    pub(super) fn publish_feed(&mut self) {
        if self.now.saturating_sub(self.feed_out.last_publish) < BATCH_MS {
            return;
        }
        let Some(feed) = self.feed_out.feed.clone() else {
            return;
        };
        if !self.feed_out.listening() || self.feed_out.pending.is_empty() {
            return;
        }
        self.feed_out.last_publish = self.now;
        self.feed_out.skipped = false;
        let p = std::mem::take(&mut self.feed_out.pending);
        let mut events = Vec::new();
        let now = self.now;
        let summaries: Vec<_> = p
            .jobs
            .iter()
            .filter_map(|id| self.sched.job_summary_of(*id, now))
            .collect();
        if !summaries.is_empty() || !p.deleted_jobs.is_empty() {
            events.push((
                Topic::Jobs,
                json!({"changed": summaries, "deleted": p.deleted_jobs}).to_string(),
            ));
        }
        let mut tasks_by_job: BTreeMap<JobId, Vec<u32>> = BTreeMap::new();
        for t in &p.tasks {
            tasks_by_job.entry(t.job).or_default().push(t.index);
        }
        for id in &p.jobs {
            let Some(view) = self.sched.job_view(*id, now) else {
                continue;
            };
            let mut indices = tasks_by_job.remove(id).unwrap_or_default();
            // Past the cap, or changed without a record each: the client
            // reads the tasks again.
            let truncated = indices.len() > MAX_TASKS_PER_EVENT || p.tasks_reread.contains(id);
            indices.truncate(MAX_TASKS_PER_EVENT);
            let tasks = self.sched.task_views_of(*id, &indices, now);
            events.push((
                Topic::Job(*id),
                json!({"job": view, "tasks": tasks, "tasks_truncated": truncated}).to_string(),
            ));
        }
        for id in &p.deleted_jobs {
            events.push((Topic::Job(*id), json!({"deleted": id}).to_string()));
        }
        events.extend(log_events(p.logs));
        if !p.engines.is_empty() {
            let changed: Vec<_> = p
                .engines
                .iter()
                .filter_map(|id| self.sched.engine(id))
                .map(|e| self.sched.engine_view(e))
                .collect();
            events.push((Topic::Engines, json!({ "changed": changed }).to_string()));
        }
        events.push((Topic::Farm, self.farm_totals().to_string()));
        feed.publish(events);
    }

    /// Slots, engines by state, jobs by status, tasks done a minute over
    /// the last hour, and the job expected to end next.
    pub(super) fn farm_totals(&self) -> serde_json::Value {
        let mut engines: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut slots, mut busy) = (0u64, 0u64);
        for e in self.sched.engines() {
            let state = e.view().state;
            *engines.entry(state.as_str()).or_default() += 1;
            if !matches!(state, EngineState::Offline | EngineState::Revoked) {
                slots += u64::from(e.slots);
                busy += u64::from(e.outstanding().min(e.slots));
            }
        }
        let mut jobs: BTreeMap<&str, u64> =
            JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut next_end: Option<(u64, JobId)> = None;
        for v in self.sched.job_statuses() {
            *jobs.entry(v.1.as_str()).or_default() += 1;
            if v.1 == JobStatus::Running {
                if let Some(eta) = self.sched.job_eta(v.0, self.now) {
                    if next_end.is_none_or(|(s, _)| eta.high_s < s) {
                        next_end = Some((eta.high_s, v.0));
                    }
                }
            }
        }
        let minute = self.now / 60_000;
        let per_minute: Vec<u64> = (0..CHART_MINUTES as u64)
            .rev()
            .map(|ago| {
                let m = minute.saturating_sub(ago);
                self.feed_out
                    .done_per_minute
                    .iter()
                    .find(|(at, _)| *at == m)
                    .map_or(0, |(_, n)| *n)
            })
            .collect();
        json!({
            "slots": slots,
            "slots_busy": busy,
            "engines": engines,
            "jobs": jobs,
            "done_per_minute": per_minute,
            "next_to_end": next_end.map(|(s, id)| json!({"job": id, "eta_high_s": s})),
            "at_ms": self.now,
        })
    }
}

/// Log chunks as one event per task, the batch's bytes joined (bounded).
fn log_events(logs: Vec<(TaskKey, u32, u64, Vec<u8>)>) -> Vec<(Topic, String)> {
    let mut by_task: BTreeMap<(TaskKey, u32), (u64, Vec<u8>)> = BTreeMap::new();
    for (task, attempt, offset, data) in logs {
        let entry = by_task
            .entry((task, attempt))
            .or_insert_with(|| (offset, Vec::new()));
        // Chunks come in order; a repeat (a re-sent chunk) is skipped.
        let end = entry.0 + entry.1.len() as u64;
        if offset + data.len() as u64 <= end {
            continue;
        }
        let skip = end.saturating_sub(offset) as usize;
        let room = MAX_LOG_BYTES_PER_EVENT.saturating_sub(entry.1.len());
        entry.1.extend(data.iter().skip(skip).take(room));
    }
    by_task
        .into_iter()
        .map(|((task, attempt), (offset, data))| {
            (
                Topic::Log(task),
                json!({
                    "job": task.job,
                    "task": task.index,
                    "attempt": attempt,
                    "offset": offset,
                    // The raw length: text that was not UTF-8 reads longer,
                    // and a client that needs exact bytes reads the log.
                    "bytes": data.len(),
                    "text": String::from_utf8_lossy(&data),
                })
                .to_string(),
            )
        })
        .collect()
}
