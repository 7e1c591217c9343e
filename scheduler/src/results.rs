//! Attempt results: started, finished, and what a failure means for the
//! task, the job's blacklist and the engine's health.

use super::attribution::Fault;
use super::{Effects, EngineIdx, Notice, Observation, Scheduler};
use crate::records::{AttemptRecord, UsageRecord};
use drqueue_common::model::{EngineId, JobId, TaskKey, TaskStatus};
use drqueue_common::protocol::{AttemptKey, Outcome, ToEngine};
use drqueue_common::Millis;

impl Scheduler {
    /// The engine started an attempt's process at `at`.
    pub fn task_started(&mut self, id: &str, key: AttemptKey, at: Millis) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        let Some(h) = self.engines[e].held.get_mut(&key) else {
            return;
        };
        h.started = true;
        let assigned_ms = h.assigned_ms;
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return;
        };
        if task.status == TaskStatus::Assigned
            && task.attempts == key.attempt
            && task.engine == Some(e)
        {
            if let Some(assigned_ms) = assigned_ms {
                self.observed.push(Observation::Started {
                    pool: job.spec.pool.clone(),
                    since_submit_ms: at.saturating_sub(job.submitted_ms),
                    since_assign_ms: at.saturating_sub(assigned_ms),
                });
            }
            job.set_task_status(key.task.index, TaskStatus::Running);
            job.tasks[key.task.index as usize].started_ms = Some(at);
            self.dirty_tasks.insert(key.task);
        }
    }

    /// An attempt ended on an engine. The result is recorded whatever it is;
    /// it changes the task only if it is the task's live attempt, or a
    /// success for a task not yet done. The engine is acknowledged once the
    /// record is committed.
    pub fn task_finished(
        &mut self,
        id: &str,
        key: AttemptKey,
        outcome: Outcome,
        now: Millis,
        fx: &mut Effects,
    ) {
        let engine_id = EngineId::from(id);
        // Acknowledged even when dropped: the engine would only send it again.
        fx.after_commit
            .push((engine_id.clone(), ToEngine::Ack(vec![key])));
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        // A quick attempt ends before its engine reports the start: it
        // began wall_ms ago.
        let unreported_start = self.engines[e]
            .held
            .get(&key)
            .filter(|h| !h.started)
            .and_then(|h| h.assigned_ms);
        if !self.take_back(e, key) {
            fx.notices.push(Notice::ForeignAttempt {
                engine: engine_id,
                attempt: key,
                what: "result",
            });
            return;
        }
        self.dirty_engines.insert(e);
        if let Some(job) = self.jobs.get(&key.task.job) {
            if let Some(assigned_ms) = unreported_start {
                let at = now.saturating_sub(outcome.wall_ms).max(assigned_ms);
                self.observed.push(Observation::Started {
                    pool: job.spec.pool.clone(),
                    since_submit_ms: at.saturating_sub(job.submitted_ms),
                    since_assign_ms: at - assigned_ms,
                });
            }
            self.usage.push(UsageRecord {
                job: key.task.job,
                task: key.task.index,
                attempt: key.attempt,
                job_name: job.spec.name.clone(),
                owner: job.spec.owner.clone(),
                pool: job.spec.pool.clone(),
                engine: engine_id.clone(),
                ended_ms: now,
                cpu_ms: outcome.cpu_ms,
                wall_ms: outcome.wall_ms,
                peak_rss_kb: outcome.peak_rss_kb,
                ok: outcome.is_success(),
            });
        }
        let mut counted = false;
        if let Some(job) = self.jobs.get_mut(&key.task.job) {
            if let Some(task) = job.tasks.get_mut(key.task.index as usize) {
                task.saw_attempt(key.attempt);
                let live =
                    task.status.is_held() && task.attempts == key.attempt && task.engine == Some(e);
                let late_success = !live && outcome.is_success() && !task.status.is_terminal();
                if live || late_success {
                    counted = true;
                    self.observed.push(Observation::Ended {
                        pool: job.spec.pool.clone(),
                        ok: outcome.is_success(),
                    });
                    self.apply_result(e, key, &outcome, live, now, fx);
                }
            }
        }
        if counted {
            self.result_for_dependent(key.task, &outcome, now);
        }
        // The attempt that completes a task lives on in the task's own record;
        // history rows are for the others (failures, superseded attempts),
        // which halves the writes of a farm that mostly succeeds. One that
        // wrote files is kept too: the task's record has no room for them.
        if !(counted && outcome.is_success() && outcome.outputs.is_empty()) {
            self.attempts.push(AttemptRecord {
                attempt: key,
                engine: engine_id,
                ended_ms: now,
                outcome,
                counted,
            });
        }
        self.update_job_status(key.task.job, now, fx);
    }

    /// The attempt ended on engine `e`: is it that engine's to report? It
    /// is if the engine holds it, or held it until it went silent.
    fn take_back(&mut self, e: EngineIdx, key: AttemptKey) -> bool {
        if self.engines[e].held.remove(&key).is_some() {
            return true;
        }
        if self.given_up.get(&key) == Some(&e) {
            self.given_up.remove(&key);
            return true;
        }
        false
    }

    /// The most log bytes an attempt of `job` may store.
    pub fn log_cap(&self, job: JobId) -> u64 {
        self.jobs.get(&job).map_or(0, |j| j.body.max_log_bytes)
    }

    /// May engine `id` send this attempt's log? If it holds it, held it
    /// until it went silent, or ran the task's latest attempt, which is this
    /// one (an engine resends logs after its Register, which carries the
    /// result, so they can come after the attempt has ended).
    pub fn owns_attempt(&self, id: &str, key: AttemptKey) -> bool {
        let Some(&e) = self.engine_index.get(id) else {
            return false;
        };
        let ran_latest = self
            .jobs
            .get(&key.task.job)
            .and_then(|j| j.tasks.get(key.task.index as usize))
            .is_some_and(|t| t.engine == Some(e) && t.attempts == key.attempt);
        ran_latest || self.engines[e].held.contains_key(&key) || self.given_up.get(&key) == Some(&e)
    }

    /// A task whose failure another engine had too fails at once, and the
    /// job says why, quoting the failure.
    fn fail_deterministic(&mut self, task: TaskKey, outcome: &Outcome, now: Millis) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        if job.spec.retry_deterministic
            || job.tasks[task.index as usize].status != TaskStatus::Ready
        {
            return;
        }
        job.set_task_status(task.index, TaskStatus::Failed);
        self.dirty_tasks.insert(task);
        if job.reason.is_none() {
            let what = outcome.signature.as_deref().unwrap_or("the same failure");
            job.reason = Some(format!(
                "task {} failed without retrying: {what:?} happened on two engines, so no retry fixes it (--retry-deterministic retries anyway; `drqueue retry` still does)",
                task.index
            ));
            self.dirty_jobs.insert(task.job);
        }
        self.settle_dependent(task.job, task.index, false, now);
    }

    pub(super) fn apply_result(
        &mut self,
        e: EngineIdx,
        key: AttemptKey,
        outcome: &Outcome,
        live: bool,
        now: Millis,
        fx: &mut Effects,
    ) {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let i = key.task.index;
        let max_attempts = job.spec.max_attempts;
        if !live {
            // A success from an attempt we had given up on: the frames are
            // rendered, so take it, and stop the attempt that replaced it.
            let t = &job.tasks[i as usize];
            if t.status.is_held() {
                if let Some(other) = t.engine {
                    let cur = AttemptKey {
                        task: key.task,
                        attempt: t.attempts,
                    };
                    if let Some(h) = self.engines[other].held.get_mut(&cur) {
                        h.cancelling = true;
                        fx.messages
                            .push((self.engines[other].id.clone(), ToEngine::Cancel(vec![cur])));
                    }
                }
            }
        }
        let t = &mut job.tasks[i as usize];
        if !live || t.started_ms.is_none() {
            // No Started came (a quick task): the run began wall_ms ago.
            t.started_ms = Some(now.saturating_sub(outcome.wall_ms));
        }
        t.engine = Some(e);
        // A result can name an attempt the store never saw assigned (its
        // commit was lost in a crash): the task has run that many times.
        t.attempts = t.attempts.max(key.attempt);
        t.ended_ms = Some(now);
        t.exit_code = outcome.exit_code;
        t.cpu_ms = Some(outcome.cpu_ms);
        t.peak_rss_kb = Some(outcome.peak_rss_kb);
        self.dirty_tasks.insert(key.task);
        self.dirty_engines.insert(e);
        let engine = &mut self.engines[e];
        if outcome.is_success() {
            job.set_task_status(i, TaskStatus::Done);
            engine.tasks_done += 1;
            engine.failures_in_row = 0;
            engine.streak_job = None;
            engine.streak_mixed = false;
            let frames = job.tasks[i as usize].block.len();
            self.note_speed(e, key.task.job, outcome.wall_ms, frames);
            return;
        }
        engine.tasks_failed += 1;
        let t = &mut job.tasks[i as usize];
        t.failures += 1;
        t.avoid = Some(e);
        // A line no retry can fix (the scene is missing everywhere): the
        // task fails now, and the job says why, quoting the line.
        let fatal = outcome
            .fatal
            .as_ref()
            .filter(|_| !job.spec.retry_deterministic && !outcome.cancelled);
        if let Some(line) = fatal {
            if job.reason.is_none() {
                job.reason = Some(format!(
                    "task {i} failed without retrying: the renderer printed {line:?}, which no retry fixes (--retry-deterministic retries anyway; `drqueue retry` still does)"
                ));
                self.dirty_jobs.insert(key.task.job);
            }
        }
        if t.failures >= max_attempts || fatal.is_some() {
            job.set_task_status(i, TaskStatus::Failed);
        } else {
            job.set_task_status(i, TaskStatus::Ready);
            job.ready.push_back(i);
        }
        if outcome.cancelled {
            return; // stopped on purpose: says nothing about the engine
        }
        if self.attribute_failure(e, key.task.job, outcome, fx) == Fault::Jobs {
            // The same failure on two engines: the job's own, and as
            // deterministic as a fatal line. It blacklists nothing and
            // sickens nothing, and (unless the job says to retry anyway)
            // the task fails now instead of burning its other attempts.
            self.fail_deterministic(key.task, outcome, now);
            return;
        }
        let (Some(job), engine) = (self.jobs.get_mut(&key.task.job), &mut self.engines[e]) else {
            return;
        };
        // The engine's record with this job, and across jobs.
        *job.engine_failures.entry(e).or_default() += 1;
        self.dirty_jobs.insert(key.task.job);
        let newly_blacklisted = self.cfg.blacklist_after > 0
            && job.engine_failures.get(&e) == Some(&self.cfg.blacklist_after);
        engine.failures_in_row += 1;
        match engine.streak_job {
            None => engine.streak_job = Some(key.task.job),
            Some(j) if j != key.task.job => engine.streak_mixed = true,
            Some(_) => {}
        }
        let sick_now = self.cfg.sick_after > 0
            && engine.sick.is_none()
            && engine.streak_mixed
            && engine.failures_in_row >= self.cfg.sick_after;
        if newly_blacklisted {
            fx.notices.push(Notice::Blacklisted {
                engine: engine.id.clone(),
                job: key.task.job,
                failures: self.cfg.blacklist_after,
            });
            let elsewhere = self
                .jobs
                .get(&key.task.job)
                .is_some_and(|j| self.can_run_elsewhere(j, e));
            if elsewhere {
                self.withdraw_unstarted(e, Some(key.task.job), now, fx);
            }
        }
        if sick_now {
            let engine = &mut self.engines[e];
            let why = format!(
                "failed {} tasks in a row (last: task {} attempt {}, {})",
                engine.failures_in_row,
                key.task,
                key.attempt,
                outcome.describe()
            );
            fx.notices.push(Notice::Sick {
                engine: engine.id.clone(),
                why: why.clone(),
            });
            engine.sick = Some(why);
            engine.check_due = now + self.cfg.check_interval_ms;
            self.withdraw_unstarted(e, None, now, fx);
        }
    }
}
