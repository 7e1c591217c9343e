//! User requests: submit, pause, resume, cancel, retry, delete, and
//! taking an engine out of service.

use super::state::new_job;
use super::{Effects, EngineIdx, RequestError, Scheduler};
use drqueue_common::frames::Block;
use drqueue_common::graph::{topological_order, Graph, GraphJob};
use drqueue_common::model::{
    Dependency, JobId, JobSpec, JobStatus, NotifyState, TaskKey, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, ToEngine};
use drqueue_common::Millis;
use std::collections::{BTreeMap, HashMap};

impl Scheduler {
    /// Accepts a new job and returns its id.
    pub fn submit(
        &mut self,
        spec: JobSpec,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<JobId, RequestError> {
        let blocks = self.check_spec(&spec)?;
        Ok(self.create_job(spec, &blocks, now, fx))
    }

    /// Accepts a graph of jobs, all or nothing: every job is checked before
    /// any is created, and all are created in one round, so one commit
    /// stores them together. `{job:NAME}` in a command becomes the id of the
    /// graph's job NAME. Returns each job's name and id, dependencies first.
    pub fn submit_graph(
        &mut self,
        graph: Graph,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<Vec<(String, JobId)>, RequestError> {
        let order = topological_order(&graph.jobs).map_err(|cycle| {
            RequestError::Invalid(format!(
                "the jobs wait for each other in a cycle: {}",
                cycle.join(" → ")
            ))
        })?;
        let mut by_name: HashMap<String, GraphJob> = HashMap::new();
        for j in graph.jobs {
            let name = j.name.clone();
            if by_name.insert(name.clone(), j).is_some() {
                return Err(RequestError::Invalid(format!(
                    "{name:?} names two jobs; names must be unique"
                )));
            }
        }
        let ids: HashMap<String, JobId> = order
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), JobId(self.next_job_id.0 + k as u64)))
            .collect();
        let mut ready = Vec::new();
        for name in &order {
            let Some(j) = by_name.remove(name) else {
                continue;
            };
            let mut spec = j.spec;
            for dep in j.after_names {
                let Some(id) = ids.get(&dep.name) else {
                    return Err(RequestError::Invalid(format!(
                        "job {name:?} waits for {:?}, which is not in the graph",
                        dep.name
                    )));
                };
                spec.after.push(Dependency {
                    job: *id,
                    on: dep.on,
                });
            }
            for arg in &mut spec.command {
                for (n, id) in &ids {
                    let placeholder = format!("{{job:{n}}}");
                    if arg.contains(&placeholder) {
                        *arg = arg.replace(&placeholder, &id.to_string());
                    }
                }
            }
            if spec.name.is_empty() {
                spec.name = name.clone();
            }
            // Dependencies inside the graph are created just before.
            let blocks = self.check_spec_in(&spec, &ids)?;
            ready.push((name.clone(), spec, blocks));
        }
        Ok(ready
            .into_iter()
            .map(|(name, spec, blocks)| (name, self.create_job(spec, &blocks, now, fx)))
            .collect())
    }

    /// Checks a spec and cuts its tasks; `after` must name existing jobs.
    pub(super) fn check_spec(&self, spec: &JobSpec) -> Result<Vec<Block>, RequestError> {
        self.check_spec_in(spec, &HashMap::new())
    }

    /// As [`Self::check_spec`], where `after` may also name jobs about to be
    /// created (`pending`, by name → id).
    pub(super) fn check_spec_in(
        &self,
        spec: &JobSpec,
        pending: &HashMap<String, JobId>,
    ) -> Result<Vec<Block>, RequestError> {
        let frames = spec
            .validate()
            .map_err(|e| RequestError::Invalid(format!("job {:?}: {e}", spec.name)))?;
        let blocks = spec
            .cut_tasks(&frames)
            .map_err(|e| RequestError::Invalid(format!("job {:?}: {e}", spec.name)))?;
        for dep in &spec.after {
            if !self.jobs.contains_key(&dep.job) && !pending.values().any(|id| *id == dep.job) {
                return Err(RequestError::Invalid(format!(
                    "--after names job {}, which does not exist",
                    dep.job
                )));
            }
        }
        Ok(blocks)
    }

    pub(super) fn create_job(
        &mut self,
        spec: JobSpec,
        blocks: &[Block],
        now: Millis,
        fx: &mut Effects,
    ) -> JobId {
        let id = self.next_job_id;
        self.next_job_id = self.next_job_id.next();
        self.next_id_dirty = true;
        let job = new_job(id, spec, blocks, now);
        // Tasks in their start state need no records of their own (the
        // job's says where they start): a million-task job is one record.
        if !job.tasks_start_alike() {
            self.dirty_tasks
                .extend((0..job.tasks.len() as u32).map(|index| TaskKey { job: id, index }));
        }
        self.jobs.insert(id, job);
        self.dirty_jobs.insert(id);
        self.update_job_status(id, now, fx);
        id
    }

    pub fn pause(&mut self, id: JobId) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        if !job.status.is_terminal() {
            job.spec.paused = true;
            job.status = JobStatus::Paused;
            self.dirty_jobs.insert(id);
        }
        Ok(())
    }

    pub fn resume(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        job.spec.paused = false;
        self.dirty_jobs.insert(id);
        self.update_job_status(id, now, fx);
        Ok(())
    }

    /// Cancels every unfinished task; running ones are killed on their engines.
    pub fn cancel(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<(), RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        if job.status.is_terminal() {
            return Ok(());
        }
        job.reason = Some("cancelled by user".into());
        self.cancel_tasks(id, now, fx);
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        job.status = JobStatus::Cancelled;
        job.finished_ms = Some(now);
        self.dirty_jobs.insert(id);
        fx.ended_jobs.push(id);
        self.on_job_ended(id, now, fx);
        Ok(())
    }

    /// Cancels a whole job's unfinished tasks, which then need no rows of
    /// their own: the job's Cancelled record says they are cancelled, ended
    /// when it did (see `Scheduler::restore`). A million-task cancel writes
    /// one record.
    pub(super) fn cancel_tasks(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        if self.cancel_some_tasks(id, now, fx, |_| true, false) > 0 {
            fx.tasks_changed_unrecorded.push(id);
        }
    }

    /// Cancels the unfinished tasks `pick` chooses; returns how many.
    pub(super) fn cancel_tasks_where(
        &mut self,
        id: JobId,
        now: Millis,
        fx: &mut Effects,
        pick: impl Fn(u32) -> bool,
    ) -> u32 {
        self.cancel_some_tasks(id, now, fx, pick, true)
    }

    fn cancel_some_tasks(
        &mut self,
        id: JobId,
        now: Millis,
        fx: &mut Effects,
        pick: impl Fn(u32) -> bool,
        write_rows: bool,
    ) -> u32 {
        let Some(job) = self.jobs.get_mut(&id) else {
            return 0;
        };
        let mut kills: BTreeMap<EngineIdx, Vec<AttemptKey>> = BTreeMap::new();
        let mut n = 0;
        let mut waited_on = Vec::new();
        for i in 0..job.tasks.len() as u32 {
            let t = &job.tasks[i as usize];
            if t.status.is_terminal() || !pick(i) {
                continue;
            }
            n += 1;
            if t.status.is_held() {
                if let Some(e) = t.engine {
                    let key = AttemptKey {
                        task: TaskKey { job: id, index: i },
                        attempt: t.attempts,
                    };
                    if let Some(h) = self.engines[e].held.get_mut(&key) {
                        h.cancelling = true;
                        kills.entry(e).or_default().push(key);
                    }
                }
            }
            job.set_task_status(i, TaskStatus::Cancelled);
            job.tasks[i as usize].ended_ms = Some(now);
            if write_rows {
                self.dirty_tasks.insert(TaskKey { job: id, index: i });
            }
            if job.waited_on_by(i).is_some() {
                waited_on.push(i);
            }
        }
        for i in waited_on {
            self.settle_dependent(id, i, false, now);
        }
        for (e, keys) in kills {
            fx.messages
                .push((self.engines[e].id.clone(), ToEngine::Cancel(keys)));
        }
        n
    }

    /// Puts failed and cancelled tasks back to ready with a fresh count.
    pub fn retry(&mut self, id: JobId, now: Millis, fx: &mut Effects) -> Result<u32, RequestError> {
        self.retry_where(id, now, fx, |_| true)
    }

    /// [`Scheduler::retry`] for the failed and cancelled tasks `pick` chooses.
    pub(super) fn retry_where(
        &mut self,
        id: JobId,
        now: Millis,
        fx: &mut Effects,
        pick: impl Fn(u32) -> bool,
    ) -> Result<u32, RequestError> {
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        let mut n = 0;
        let mut retried_waited_on = Vec::new();
        for i in 0..job.tasks.len() as u32 {
            let st = job.tasks[i as usize].status;
            if matches!(st, TaskStatus::Failed | TaskStatus::Cancelled) && pick(i) {
                // One waiting for other tasks of the job waits again.
                let start = job.start_status(i);
                job.set_task_status(i, start);
                let t = &mut job.tasks[i as usize];
                t.failures = 0;
                t.avoid = None;
                t.ended_ms = None;
                if start == TaskStatus::Ready {
                    job.ready.push_back(i);
                }
                self.dirty_tasks.insert(TaskKey { job: id, index: i });
                if job.waited_on_by(i).is_some() {
                    retried_waited_on.push(i);
                }
                n += 1;
            }
        }
        for i in retried_waited_on {
            self.settle_dependent(id, i, true, now);
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return Ok(n);
        };
        // A retry is a fresh start: engines the job had given up on get
        // another chance (a sick one stays out until it is well).
        if !job.engine_failures.is_empty() {
            job.engine_failures.clear();
            self.dirty_jobs.insert(id);
        }
        if n > 0 {
            job.finished_ms = None;
            job.reason = None;
            // It will end again, and tell again.
            if let Some(note) = job.notification.as_mut() {
                note.state = NotifyState::Waiting;
                note.next_try_ms = None;
            }
            if job.status.is_terminal() {
                job.status = JobStatus::Queued;
            }
            self.dirty_jobs.insert(id);
            self.update_job_status(id, now, fx);
        }
        Ok(n)
    }

    /// Forgets a job. Unfinished jobs need `force`, which cancels them first.
    pub fn delete(
        &mut self,
        id: JobId,
        force: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), RequestError> {
        let job = self.jobs.get(&id).ok_or(RequestError::NoJob(id))?;
        if !job.status.is_terminal() {
            if !force {
                return Err(RequestError::Invalid(format!(
                    "job {id} is {}; cancel it first, or delete with --force",
                    job.status
                )));
            }
            self.cancel(id, now, fx)?;
        }
        self.jobs.remove(&id);
        self.dirty_jobs.remove(&id);
        self.dirty_tasks.retain(|k| k.job != id);
        self.given_up.retain(|k, _| k.task.job != id);
        self.deleted_jobs.push(id);
        Ok(())
    }

    /// Disabling (or draining) gives an engine no new work: what it runs
    /// finishes, what it only queued goes back to be run elsewhere.
    /// Enabling also clears `sick`: the user vouches for the engine.
    pub fn set_engine_disabled(
        &mut self,
        id: &str,
        disabled: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), RequestError> {
        let idx = self.engine_idx(id)?;
        let e = &mut self.engines[idx];
        e.disabled = disabled;
        if disabled {
            self.withdraw_unstarted(idx, None, now, fx);
        } else {
            e.sick = None;
            e.failures_in_row = 0;
            e.streak_job = None;
            e.streak_mixed = false;
            e.check_pending = None;
        }
        self.dirty_engines.insert(idx);
        Ok(())
    }

    /// Cuts an engine off for good: it is refused from now on (and after a
    /// restart), and what it holds runs elsewhere, none of it counted as a
    /// failure. Its results are no longer its own to report. It is told, and
    /// stops what it runs.
    pub fn revoke_engine(
        &mut self,
        id: &str,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), RequestError> {
        let e = self.engine_idx(id)?;
        let engine = &mut self.engines[e];
        engine.revoked = true;
        engine.online = false;
        engine.recovering = false;
        let held = std::mem::take(&mut engine.held);
        let engine_id = engine.id.clone();
        for key in held.keys() {
            self.requeue_lost(e, *key, now);
        }
        self.given_up.retain(|_, owner| *owner != e);
        self.pools_dirty = true;
        self.dirty_engines.insert(e);
        fx.messages.push((engine_id, ToEngine::Revoked));
        Ok(())
    }

    /// The engine a request names by id, or the error that says so.
    fn engine_idx(&self, id: &str) -> Result<EngineIdx, RequestError> {
        self.engine_index
            .get(id)
            .copied()
            .ok_or_else(|| RequestError::NoEngine(id.to_string()))
    }

    /// Is this engine cut off (`revoke`)?
    pub fn is_revoked(&self, id: &str) -> bool {
        self.engine_index
            .get(id)
            .is_some_and(|&e| self.engines[e].revoked)
    }

    /// Takes back the attempts engine `e` holds but has not started (of one
    /// job, or all): they go back to ready at the front of the queue and
    /// the engine is told to drop them. Started ones run on.
    pub(super) fn withdraw_unstarted(
        &mut self,
        e: EngineIdx,
        job: Option<JobId>,
        now: Millis,
        fx: &mut Effects,
    ) {
        let mut keys = Vec::new();
        for (k, h) in self.engines[e].held.iter_mut() {
            if !h.started && !h.cancelling && job.is_none_or(|j| j == k.task.job) {
                h.cancelling = true;
                keys.push(*k);
            }
        }
        if keys.is_empty() {
            return;
        }
        for k in &keys {
            self.requeue_lost(e, *k, now);
        }
        fx.messages
            .push((self.engines[e].id.clone(), ToEngine::Cancel(keys)));
    }
}
