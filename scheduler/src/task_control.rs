//! Controls finer than a whole job: cancel or retry some of its tasks
//! (`drqueue cancel JOB --tasks 3,7-12`), and change its priority.
//!
//! A job whose tasks have all ended is `done` only when every task is done;
//! `failed` when any failed; otherwise (some cancelled, the rest done) it is
//! `cancelled`. So cancelling the last unfinished tasks of a job ends it
//! `cancelled`, and jobs waiting for it to be done do not start. The same
//! rule holds on the farm and in run-local, which share this scheduler.

use super::{Effects, RequestError, Scheduler};
use drqueue_common::model::{JobId, MAX_PRIORITY};
use drqueue_common::Millis;
use std::collections::BTreeSet;

impl Scheduler {
    /// Cancels the listed tasks that have not ended (running ones are
    /// killed); returns how many. Every index must be one of the job's.
    pub fn cancel_some(
        &mut self,
        id: JobId,
        tasks: &[u32],
        now: Millis,
        fx: &mut Effects,
    ) -> Result<u32, RequestError> {
        let picked = self.task_set(id, tasks)?;
        let n = self.cancel_tasks_where(id, now, fx, |i| picked.contains(&i));
        if n > 0 {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.reason = Some(format!("{n} task(s) cancelled by user"));
            }
            self.dirty_jobs.insert(id);
            self.update_job_status(id, now, fx);
        }
        Ok(n)
    }

    /// Puts the listed failed or cancelled tasks back to ready.
    pub fn retry_some(
        &mut self,
        id: JobId,
        tasks: &[u32],
        now: Millis,
        fx: &mut Effects,
    ) -> Result<u32, RequestError> {
        let picked = self.task_set(id, tasks)?;
        self.retry_where(id, now, fx, |i| picked.contains(&i))
    }

    /// A new priority: it applies from the next dispatch on.
    pub fn set_priority(&mut self, id: JobId, priority: u32) -> Result<(), RequestError> {
        if priority > MAX_PRIORITY {
            return Err(RequestError::Invalid(format!(
                "priority {priority} is out of range: use 0 to {MAX_PRIORITY} (higher runs first)"
            )));
        }
        let job = self.jobs.get_mut(&id).ok_or(RequestError::NoJob(id))?;
        if job.spec.priority != priority {
            job.spec.priority = priority;
            self.dirty_jobs.insert(id);
        }
        Ok(())
    }

    fn task_set(&self, id: JobId, tasks: &[u32]) -> Result<BTreeSet<u32>, RequestError> {
        let job = self.jobs.get(&id).ok_or(RequestError::NoJob(id))?;
        let count = job.tasks.len() as u32;
        if let Some(bad) = tasks.iter().find(|&&i| i >= count) {
            return Err(RequestError::Invalid(format!(
                "tasks: job {id} has no task {bad}; its tasks are 0 to {} (`drqueue tasks {id}`)",
                count.saturating_sub(1)
            )));
        }
        if tasks.is_empty() {
            return Err(RequestError::Invalid(
                "tasks: the set is empty; name tasks like 3,7-12".into(),
            ));
        }
        Ok(tasks.iter().copied().collect())
    }
}
