//! Persistence: the dirty sets turned into one store batch.

use super::{Effects, Scheduler};
use crate::records::{Batch, LimitRecord, PoolRecord, TaskRecord};
use drqueue_common::model::{EngineId, TaskKey, TaskStatus};
use std::collections::BTreeMap;

impl Scheduler {
    /// Adds everything changed since the last call to the outputs' batch.
    pub fn persist(&mut self, fx: &mut Effects) {
        let batch = self.take_batch();
        fx.batch.append(batch);
        fx.observed.append(&mut self.observed);
    }

    /// Everything changed since the last call, as one store batch.
    pub(crate) fn take_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        for id in std::mem::take(&mut self.dirty_jobs) {
            if let Some(job) = self.jobs.get(&id) {
                batch.jobs.push(job.record(id, &self.engines));
            }
        }
        let mut keys: Vec<TaskKey> = std::mem::take(&mut self.dirty_tasks).into_iter().collect();
        keys.sort_unstable();
        batch.tasks.reserve(keys.len());
        for key in keys {
            if let Some(rec) = self.task_record(key) {
                batch.tasks.push(rec);
            }
        }
        for e in std::mem::take(&mut self.dirty_engines) {
            batch.engines.push(self.engines[e].record());
        }
        batch.deleted_jobs = std::mem::take(&mut self.deleted_jobs);
        batch.attempts = std::mem::take(&mut self.attempts);
        batch.usage = std::mem::take(&mut self.usage);
        if std::mem::take(&mut self.next_id_dirty) {
            batch.next_job_id = Some(self.next_job_id);
        }
        for name in std::mem::take(&mut self.dirty_limits) {
            match self.limits.get(&name) {
                Some(count) => batch.limits.push(LimitRecord {
                    name,
                    count: *count,
                }),
                None => batch.deleted_limits.push(name),
            }
        }
        if std::mem::take(&mut self.pools_dirty) {
            let mut pools: BTreeMap<String, Vec<EngineId>> = BTreeMap::new();
            for e in &self.engines {
                for p in &e.facts.pools {
                    pools.entry(p.clone()).or_default().push(e.id.clone());
                }
            }
            batch.pools = Some(
                pools
                    .into_iter()
                    .map(|(name, engines)| PoolRecord { name, engines })
                    .collect(),
            );
        }
        batch
    }

    pub fn task_record(&self, key: TaskKey) -> Option<TaskRecord> {
        let job = self.jobs.get(&key.job)?;
        let t = job.tasks.get(key.index as usize)?;
        Some(TaskRecord {
            job: key.job,
            index: key.index,
            first: t.block.first,
            last: t.block.last,
            step: t.block.step,
            status: t.status,
            attempts: t.attempts,
            failures: t.failures,
            engine: t.engine.map(|e| self.engines[e].id.clone()),
            started_ms: t.started_ms,
            ended_ms: t.ended_ms,
            exit_code: t.exit_code,
            peak_rss_kb: t.peak_rss_kb,
            cpu_ms: t.cpu_ms,
            // Only while done: a retried task's old files are not handed on.
            outputs: match t.status {
                TaskStatus::Done => job.handoff.get(&key.index).cloned().unwrap_or_default(),
                _ => Vec::new(),
            },
        })
    }
}
