//! Engine events and liveness: registration, facts, heartbeats, checks,
//! hand-backs, and engines declared lost.

use super::state::Held;
use super::{Effects, EngineIdx, Notice, Observation, Scheduler};
use drqueue_common::model::{EngineFacts, EngineId, JobId, JobStatus, TaskStatus, DEFAULT_POOL};
use drqueue_common::protocol::{AttemptKey, Heartbeat, ToEngine};
use drqueue_common::Millis;
use std::collections::HashSet;

impl Scheduler {
    /// An engine (re)connected. `held` is what it says it holds and
    /// `finished` the attempts whose results it is about to deliver; the
    /// answer is a [`ToEngine::Welcome`] naming held attempts it must drop.
    #[allow(clippy::too_many_arguments)]
    pub fn engine_registered(
        &mut self,
        id: &EngineId,
        facts: EngineFacts,
        slots: u32,
        hwm: u32,
        held: &[AttemptKey],
        finished: &[AttemptKey],
        now: Millis,
        fx: &mut Effects,
    ) {
        let e = self.intern_engine(id);
        if self.engines[e].revoked {
            fx.messages.push((id.clone(), ToEngine::Revoked));
            return;
        }
        // What the master thought the engine held but the engine no longer
        // has (it restarted) goes back to the queue. Finished attempts are
        // not forgotten: their results follow.
        let reported: HashSet<AttemptKey> = held.iter().chain(finished).copied().collect();
        for key in &reported {
            self.attempt_seen(*key);
        }
        let forgotten: Vec<AttemptKey> = self.engines[e]
            .held
            .keys()
            .filter(|k| !reported.contains(k))
            .copied()
            .collect();
        for key in forgotten {
            self.engines[e].held.remove(&key);
            self.requeue_lost(e, key, now);
        }
        // What it held when it went silent and no longer reports is gone.
        self.given_up
            .retain(|k, owner| *owner != e || reported.contains(k));
        // A result for an attempt it was never seen to hold (the commit of
        // its assignment was lost) is its own if the task is still waiting
        // to run that attempt; otherwise the result is dropped when it comes.
        for key in finished {
            if !self.engines[e].held.contains_key(key)
                && self.given_up.get(key) != Some(&e)
                && self.adopt_result(e, *key)
            {
                self.engines[e].held.insert(
                    *key,
                    Held {
                        assigned_ms: None,
                        started: true,
                        cancelling: false,
                    },
                );
            }
        }
        let mut cancel = Vec::new();
        for key in held {
            if let Some(h) = self.engines[e].held.get(key) {
                // A Cancel sent on the old connection may never have
                // arrived: say it again.
                if h.cancelling {
                    cancel.push(*key);
                }
                continue;
            }
            if self.adopt(e, *key, now) {
                self.engines[e].held.insert(
                    *key,
                    Held {
                        assigned_ms: None,
                        started: false,
                        cancelling: false,
                    },
                );
            } else {
                self.engines[e].held.insert(
                    *key,
                    Held {
                        assigned_ms: None,
                        started: false,
                        cancelling: true,
                    },
                );
                cancel.push(*key);
                self.attempt_seen(*key);
            }
        }
        self.set_facts(e, facts);
        let engine = &mut self.engines[e];
        engine.check_pending = None;
        engine.slots = slots.max(1);
        engine.hwm = hwm.max(1);
        engine.online = true;
        engine.recovering = false;
        engine.last_seen = now;
        engine.free_ram_mb = engine.facts.ram_mb;
        engine.peak_outstanding = engine.peak_outstanding.max(engine.outstanding());
        self.dirty_engines.insert(e);
        fx.messages.push((
            id.clone(),
            ToEngine::Welcome {
                // A quarter of the timeout at most: an idle engine beats
                // once in IDLE_BEATS (3) of these, so the master still hears
                // it within three quarters of its timeout.
                heartbeat_ms: self
                    .cfg
                    .heartbeat_ms
                    .min((self.cfg.engine_timeout_ms / 4).min(u64::from(u32::MAX)) as u32)
                    .max(100),
                cancel,
            },
        ));
    }

    pub(super) fn set_facts(&mut self, e: EngineIdx, mut facts: EngineFacts) {
        if facts.pools.is_empty() {
            facts.pools.push(DEFAULT_POOL.into());
        }
        let engine = &mut self.engines[e];
        if engine.facts.pools != facts.pools {
            self.pools_dirty = true;
        }
        engine.facts = facts;
        self.dirty_engines.insert(e);
    }

    /// An engine refreshed its facts (on its cache time): renderers
    /// installed since, RAM added, pools changed by a restart of its wrapper.
    pub fn facts_refreshed(&mut self, id: &str, facts: EngineFacts) {
        if let Some(&e) = self.engine_index.get(id) {
            self.set_facts(e, facts);
        }
    }

    /// The answer to a check task: a sick engine that passes is well again.
    pub fn check_result(&mut self, id: &str, check: u64, ok: bool, detail: &str, fx: &mut Effects) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        let engine = &mut self.engines[e];
        if engine.check_pending != Some(check) {
            return;
        }
        engine.check_pending = None;
        if engine.sick.is_none() {
            return;
        }
        if ok {
            fx.notices.push(Notice::CheckPassed {
                engine: engine.id.clone(),
            });
            engine.sick = None;
            engine.failures_in_row = 0;
            engine.streak_job = None;
            engine.streak_mixed = false;
        } else {
            fx.notices.push(Notice::CheckFailed {
                engine: engine.id.clone(),
                detail: detail.to_string(),
            });
            engine.sick = Some(format!(
                "failed {} tasks in a row; check task failed: {detail}",
                engine.failures_in_row
            ));
        }
        self.dirty_engines.insert(e);
    }

    /// An engine brings the result of an attempt the master never saw it
    /// given: take the attempt as assigned to it, if its task is waiting to
    /// run and the attempt is newer than any the task records. (An attempt
    /// the task records, back in the queue, had its result applied already:
    /// this is that result delivered again, and must not count twice.)
    fn adopt_result(&mut self, e: EngineIdx, key: AttemptKey) -> bool {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return false;
        };
        let Some(task) = job.tasks.get_mut(key.task.index as usize) else {
            return false;
        };
        task.saw_attempt(key.attempt);
        if task.status != TaskStatus::Ready
            || key.attempt <= task.attempts
            || !adoptable(&job.spec, task)
        {
            return false;
        }
        job.set_task_status(key.task.index, TaskStatus::Assigned);
        let task = &mut job.tasks[key.task.index as usize];
        task.attempts = key.attempt;
        task.engine = Some(e);
        self.dirty_tasks.insert(key.task);
        true
    }

    /// An engine reports an attempt the master does not have it holding.
    /// Adopt it when the task is still waiting to run (a restarted master
    /// lost the assignment); otherwise the engine must drop it.
    pub(super) fn adopt(&mut self, e: EngineIdx, key: AttemptKey, now: Millis) -> bool {
        // Adopting takes limit tokens like any start: with none free (the
        // task's tokens went to others while this engine was away), drop it.
        // Nor may it put the job on more engines than max_engines allows.
        match self.jobs.get(&key.task.job) {
            Some(job)
                if self.limit_room(&job.spec) != Some(0)
                    && !self.max_engines_reached(key.task.job, &job.spec, e) => {}
            _ => return false,
        }
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return false;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return false;
        };
        if task.status != TaskStatus::Ready
            || key.attempt < task.attempts
            || !job.is_dispatchable()
            || !adoptable(&job.spec, task)
        {
            return false;
        }
        job.set_task_status(key.task.index, TaskStatus::Assigned);
        let task = &mut job.tasks[key.task.index as usize];
        task.attempts = key.attempt;
        task.saw_attempt(key.attempt);
        task.engine = Some(e);
        task.started_ms = Some(now);
        if job.status == JobStatus::Queued {
            job.status = JobStatus::Running;
            job.started_ms.get_or_insert(now);
            self.dirty_jobs.insert(key.task.job);
        }
        self.dirty_tasks.insert(key.task);
        true
    }

    /// An engine holds an attempt the master did not give it (its
    /// assignment's commit was lost): the task's next attempt must get a new
    /// number, never one that is being cancelled.
    pub(super) fn attempt_seen(&mut self, key: AttemptKey) {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        match job.tasks.get_mut(key.task.index as usize) {
            Some(task) => task.saw_attempt(key.attempt),
            // A cut that no longer exists (its commit was lost): a new cut
            // by that number numbers its attempts past this one.
            None => {
                let ghost = job.ghost_attempts.entry(key.task.index).or_default();
                *ghost = (*ghost).max(key.attempt);
            }
        }
    }

    /// Any message from an engine proves it is alive.
    pub fn engine_seen(&mut self, id: &str, now: Millis) -> bool {
        match self.engine_index.get(id) {
            Some(&e) if self.engines[e].online => {
                self.engines[e].last_seen = now;
                true
            }
            _ => false,
        }
    }

    pub fn heartbeat(&mut self, id: &str, hb: Heartbeat, now: Millis) {
        if let Some(&e) = self.engine_index.get(id) {
            let engine = &mut self.engines[e];
            engine.last_seen = now;
            engine.load = hb.load;
            engine.free_ram_mb = hb.free_ram_mb;
            engine.peak_held = engine.peak_held.max(hb.peak_held);
        }
    }

    /// The engine hands attempts back unrun (it is shutting down).
    pub fn released(&mut self, id: &str, keys: &[AttemptKey], now: Millis) {
        let Some(&e) = self.engine_index.get(id) else {
            return;
        };
        for key in keys {
            if self.engines[e].held.remove(key).is_some() {
                self.requeue_lost(e, *key, now);
            }
        }
    }

    /// The engine is gone (silent past the timeout, or not back after a
    /// restart). Its live attempts go back to the queue, not counted as
    /// failures.
    pub(super) fn lose_engine(&mut self, e: EngineIdx, now: Millis, fx: &mut Effects) {
        let engine = &mut self.engines[e];
        if !engine.online && !engine.recovering {
            return;
        }
        fx.notices.push(Notice::EngineLost {
            engine: engine.id.clone(),
            host: engine.facts.hostname.clone(),
            held: engine.held.len(),
        });
        engine.online = false;
        engine.recovering = false;
        let held = std::mem::take(&mut engine.held);
        for key in held.keys() {
            self.requeue_lost(e, *key, now);
            self.given_up.insert(*key, e);
        }
        self.dirty_engines.insert(e);
    }

    /// Puts a task back to ready if `key` is its live attempt on `e`.
    pub(super) fn requeue_lost(&mut self, e: EngineIdx, key: AttemptKey, _now: Millis) {
        let Some(job) = self.jobs.get_mut(&key.task.job) else {
            return;
        };
        let Some(task) = job.tasks.get(key.task.index as usize) else {
            return;
        };
        if task.status.is_held() && task.attempts == key.attempt && task.engine == Some(e) {
            job.set_task_status(key.task.index, TaskStatus::Ready);
            job.ready.push_front(key.task.index);
            self.dirty_tasks.insert(key.task);
            self.observed.push(Observation::Requeued);
        }
    }

    /// Time passes: engines that fell silent are lost, held jobs may start.
    pub fn tick(&mut self, now: Millis, fx: &mut Effects) {
        let timeout = self.cfg.engine_timeout_ms;
        let past_recovery = now >= self.recovery_deadline;
        for e in EngineIdx::all(self.engines.len()) {
            let engine = &self.engines[e];
            let silent = engine.online && now.saturating_sub(engine.last_seen) > timeout;
            let not_back = engine.recovering && past_recovery;
            if silent || not_back {
                self.lose_engine(e, now, fx);
            }
        }
        self.send_checks(now, fx);
        self.stop_stalled(now, fx);
        self.refresh_speed_scores();
        fx.mail_due.extend(self.due_notifications(now));
        let waiting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.status == JobStatus::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.update_job_status(id, now, fx);
        }
    }

    /// Sick engines that are online get their check task when it is due.
    pub(super) fn send_checks(&mut self, now: Millis, fx: &mut Effects) {
        if self.cfg.check_interval_ms == 0 {
            return;
        }
        for e in &mut self.engines {
            // An unanswered check is simply sent again when the next is due.
            if e.online && e.sick.is_some() && now >= e.check_due {
                let id = self.next_check_id;
                self.next_check_id += 1;
                e.check_pending = Some(id);
                e.check_due = now + self.cfg.check_interval_ms;
                fx.messages.push((
                    e.id.clone(),
                    ToEngine::Check {
                        id,
                        command: self.cfg.check_command.clone(),
                    },
                ));
            }
        }
    }

    pub(super) fn recovering(&self, now: Millis) -> bool {
        now < self.recovery_deadline && self.engines.iter().any(|e| e.recovering)
    }
}

/// Whether an attempt the master lost track of still runs this task's
/// frames. An auto-sized task's frames are cut at dispatch: a lost commit
/// forgets the cut, and the engine may run only the front of what the task
/// now holds. Only a one-frame task cannot have been cut since.
fn adoptable(spec: &drqueue_common::model::JobSpec, task: &super::state::Task) -> bool {
    !spec.auto_blocksize() || task.block.len() == 1
}
