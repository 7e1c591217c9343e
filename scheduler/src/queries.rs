//! Read-only views of the state for the API.

use super::{Engine, Scheduler};
use crate::records::TaskRecord;
use drqueue_common::model::{
    JobId, JobStatus, JobView, PoolView, TaskKey, TaskStatus, TaskView, DEFAULT_POOL,
};
use drqueue_common::Millis;
use std::collections::BTreeMap;

impl Scheduler {
    pub fn job_view(&self, id: JobId, now: Millis) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        let blocked_by = self.blocked_reasons(id, now);
        Some(JobView {
            id,
            name: job.spec.name.clone(),
            owner: job.spec.owner.clone(),
            status: job.status,
            priority: job.spec.priority,
            pool: job.spec.pool.clone(),
            counts: job.counts,
            tasks_total: job.tasks.len() as u64,
            // UTC, not the host's zone: the same farm reads the same anywhere.
            blocked: blocked_by
                .iter()
                .map(|b| b.text(now, &chrono::Utc))
                .collect(),
            blocked_by,
            command: job.spec.command.clone(),
            frames: job.spec.frames.clone(),
            blocksize: job.spec.blocksize,
            max_attempts: job.spec.max_attempts,
            timeout_secs: job.spec.timeout_secs,
            max_engines: job.spec.max_engines,
            requirements: job.spec.requirements.clone(),
            limits: job.spec.limits.clone(),
            after: job.spec.after.clone(),
            blacklisted: job
                .engine_failures
                .keys()
                .filter(|e| job.is_blacklisted(**e, &self.cfg))
                .map(|e| self.engines[*e].id.clone())
                .collect(),
            job_faults: job.job_faults.iter().cloned().collect(),
            reason: job.reason.clone(),
            notification: job.notification.clone(),
            submitted_ms: job.submitted_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
        })
    }

    pub fn job_views(&self, status: Option<JobStatus>, now: Millis) -> Vec<JobView> {
        self.jobs
            .iter()
            .filter(|(_, j)| status.is_none_or(|s| j.status == s))
            .filter_map(|(id, _)| self.job_view(*id, now))
            .collect()
    }

    pub fn task_views(&self, id: JobId, status: Option<TaskStatus>) -> Option<Vec<TaskView>> {
        let job = self.jobs.get(&id)?;
        Some(
            (0..job.tasks.len() as u32)
                .filter(|i| status.is_none_or(|s| job.tasks[*i as usize].status == s))
                .filter_map(|index| self.task_record(TaskKey { job: id, index }))
                .map(TaskRecord::view)
                .collect(),
        )
    }

    pub fn task_attempts(&self, key: TaskKey) -> Option<u32> {
        Some(
            self.jobs
                .get(&key.job)?
                .tasks
                .get(key.index as usize)?
                .attempts,
        )
    }

    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// An engine by id or by name, as users type either.
    pub fn find_engine(&self, id_or_name: &str) -> Option<&Engine> {
        self.engine(id_or_name)
            .or_else(|| self.engines.iter().find(|e| e.facts.name == id_or_name))
    }

    /// Every pool an engine is in (and `default`), with how many engines.
    pub fn pool_views(&self) -> Vec<PoolView> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        counts.insert(DEFAULT_POOL.into(), 0);
        for e in &self.engines {
            for p in &e.facts.pools {
                *counts.entry(p.clone()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|(name, engines)| PoolView { name, engines })
            .collect()
    }

    pub fn engine(&self, id: &str) -> Option<&Engine> {
        self.engine_index.get(id).map(|e| &self.engines[*e])
    }

    pub fn job_status(&self, id: JobId) -> Option<JobStatus> {
        self.jobs.get(&id).map(|j| j.status)
    }

    /// Jobs whose tasks are still to finish (not terminal).
    pub fn unfinished_jobs(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| !j.status.is_terminal())
            .count()
    }
}
