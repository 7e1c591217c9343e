//! Read-only views of the state for the API.

use super::state::Job;
use super::{Engine, Scheduler};
use drqueue_common::listing::{JobFilter, JobSummary, Order};
use drqueue_common::model::{
    JobId, JobStatus, JobView, PoolView, TaskKey, TaskStatus, TaskView, DEFAULT_POOL,
};
use drqueue_common::Millis;
use std::collections::BTreeMap;

/// Blocked reasons a summary row carries; `show` has them all.
const MAX_SUMMARY_REASONS: usize = 4;

impl Scheduler {
    /// Who a job belongs to (for the API's "only your own jobs" rule).
    pub fn job_owner(&self, id: JobId) -> Option<&str> {
        self.jobs.get(&id).map(|j| j.spec.owner.as_str())
    }

    /// The manifest of each job's uploaded folder (jobs sharing one name it
    /// once); only `owner`'s jobs when given.
    pub fn input_manifests(&self, owner: Option<&str>) -> Vec<drqueue_common::cas::BlobHash> {
        let mut all: Vec<_> = self
            .jobs
            .values()
            .filter(|j| owner.is_none_or(|o| j.spec.owner == o))
            .filter_map(|j| j.spec.inputs)
            .collect();
        all.sort();
        all.dedup();
        all
    }

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
            target_task_minutes: job.spec.target_task_minutes,
            max_attempts: job.spec.max_attempts,
            timeout_secs: job.spec.timeout_secs,
            max_engines: job.spec.max_engines,
            requirements: job.spec.requirements.clone(),
            limits: job.spec.limits.clone(),
            after: job.spec.after.clone(),
            inputs: job.spec.inputs,
            collect: job.spec.collect.clone(),
            tiles: job.spec.tiles,
            // A scan, not an index: views are built for one job at a time,
            // and a dependency is rare enough that keeping an index in step
            // with submit, delete, restore and eviction is not worth it.
            dependents: self
                .jobs
                .iter()
                .filter(|(_, j)| j.spec.after.iter().any(|d| d.job == id))
                .map(|(jid, _)| *jid)
                .collect(),
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
            progress: job.progress(),
            eta: self.eta(id, now),
        })
    }

    /// Every job in `status` (all when None), oldest first: for tests and
    /// `run-local`; the API lists pages ([`Scheduler::job_page`]).
    pub fn job_views(&self, status: Option<JobStatus>, now: Millis) -> Vec<JobView> {
        self.jobs
            .iter()
            .filter(|(_, j)| status.is_none_or(|s| j.status == s))
            .filter_map(|(id, _)| self.job_view(*id, now))
            .collect()
    }

    /// Up to `limit` jobs matching `filter`, from just past `after` in the
    /// filter's order, as summary rows; and whether more remain.
    pub fn job_page(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
        now: Millis,
    ) -> (Vec<JobSummary>, bool) {
        let range: Box<dyn Iterator<Item = (&JobId, &Job)>> = match (filter.order, after) {
            (Order::Newest, None) => Box::new(self.jobs.iter().rev()),
            (Order::Newest, Some(a)) => Box::new(self.jobs.range(..a).rev()),
            (Order::Oldest, None) => Box::new(self.jobs.iter()),
            (Order::Oldest, Some(a)) => Box::new(self.jobs.range(JobId(a.0 + 1)..)),
        };
        let mut rows: Vec<JobSummary> = range
            .filter(|(_, j)| filter.matches(j.status, &j.spec.owner, &j.spec.pool, &j.spec.name))
            .take(limit.saturating_add(1))
            .map(|(id, j)| self.job_summary(*id, j, now))
            .collect();
        let more = rows.len() > limit;
        rows.truncate(limit);
        (rows, more)
    }

    /// One job's summary row, as listings show it.
    pub fn job_summary_of(&self, id: JobId, now: Millis) -> Option<JobSummary> {
        Some(self.job_summary(id, self.jobs.get(&id)?, now))
    }

    /// Some tasks of one job as the API shows them (the outlier threshold
    /// worked out once for all).
    pub fn task_views_of(&self, id: JobId, indices: &[u32], now: Millis) -> Vec<TaskView> {
        let Some(job) = self.jobs.get(&id) else {
            return Vec::new();
        };
        let outliers = job.outlier_threshold().map(|(limit, _)| limit);
        indices
            .iter()
            .filter_map(|&index| {
                let mut view = self.task_record(TaskKey { job: id, index })?.view();
                view.progress = job.task_progress(index);
                view.outlier = job.is_outlier(index, now, outliers);
                Some(view)
            })
            .collect()
    }

    fn job_summary(&self, id: JobId, job: &Job, now: Millis) -> JobSummary {
        let reasons = self.blocked_reasons(id, now);
        let mut blocked: Vec<String> = reasons
            .iter()
            .take(MAX_SUMMARY_REASONS)
            .map(|b| b.text(now, &chrono::Utc))
            .collect();
        if reasons.len() > MAX_SUMMARY_REASONS {
            blocked.push(format!(
                "… and {} more (drqueue show {id})",
                reasons.len() - MAX_SUMMARY_REASONS
            ));
        }
        JobSummary {
            id,
            name: job.spec.name.clone(),
            owner: job.spec.owner.clone(),
            status: job.status,
            priority: job.spec.priority,
            pool: job.spec.pool.clone(),
            counts: job.counts,
            tasks_total: job.tasks.len() as u64,
            blocked,
            submitted_ms: job.submitted_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            progress: job.progress(),
            eta: self.eta(id, now),
        }
    }

    /// Every task of a job in `status` (all when None).
    pub fn task_views(&self, id: JobId, status: Option<TaskStatus>) -> Option<Vec<TaskView>> {
        self.task_page(id, status, None, usize::MAX, 0)
            .map(|(v, _)| v)
    }

    /// Up to `limit` tasks of a job after index `after`, in index order, in
    /// `status` when given; and whether more remain. Served from the
    /// status index: an empty status costs nothing, a sparse one little.
    pub fn task_page(
        &self,
        id: JobId,
        status: Option<TaskStatus>,
        after: Option<u32>,
        limit: usize,
        now: Millis,
    ) -> Option<(Vec<TaskView>, bool)> {
        let job = self.jobs.get(&id)?;
        let want = limit.saturating_add(1);
        let mut indices: Vec<u32> = match status {
            Some(s) if job.counts.get(s) == 0 => Vec::new(),
            Some(s) => job.by_status.page(s, after, want),
            None => {
                let from = after.map_or(0, |a| a.saturating_add(1));
                let to = (from as usize).saturating_add(want).min(job.tasks.len());
                (from..to as u32).collect()
            }
        };
        let more = indices.len() > limit;
        indices.truncate(limit);
        let outliers = job.outlier_threshold().map(|(limit, _)| limit);
        let views = indices
            .into_iter()
            .filter_map(|index| {
                let mut view = self.task_record(TaskKey { job: id, index })?.view();
                view.progress = job.task_progress(index);
                view.outlier = job.is_outlier(index, now, outliers);
                Some(view)
            })
            .collect();
        Some((views, more))
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

    /// Every job's id and status, oldest first.
    pub fn job_statuses(&self) -> impl Iterator<Item = (JobId, JobStatus)> + '_ {
        self.jobs.iter().map(|(id, j)| (*id, j.status))
    }

    /// Tasks by status across every job the master holds.
    pub fn task_totals(&self) -> drqueue_common::model::Counts {
        let mut all = drqueue_common::model::Counts::default();
        for job in self.jobs.values() {
            for (sum, n) in all.0.iter_mut().zip(job.counts.0) {
                *sum += n;
            }
        }
        all
    }

    /// When a job may end, as its view says.
    pub fn job_eta(&self, id: JobId, now: Millis) -> Option<drqueue_common::model::Eta> {
        self.eta(id, now)
    }

    /// Jobs whose tasks are still to finish (not terminal).
    pub fn unfinished_jobs(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| !j.status.is_terminal())
            .count()
    }
}
