//! A store in memory: batches applied to maps, read back as a [`Snapshot`].
//! `drqueue run-local` keeps its one-machine farm here, and the scheduler's
//! property tests restart masters from it.

use crate::records::{
    AttemptRecord, Batch, EngineRecord, JobRecord, LimitRecord, Snapshot, TaskRecord,
};
use drqueue_common::model::{EngineId, JobId, TaskKey};
use drqueue_common::protocol::AttemptKey;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    jobs: BTreeMap<JobId, JobRecord>,
    /// Open to the scheduler's tests, which tear stores on purpose.
    pub(crate) tasks: BTreeMap<TaskKey, TaskRecord>,
    engines: BTreeMap<EngineId, EngineRecord>,
    limits: BTreeMap<String, u32>,
    attempts: BTreeMap<AttemptKey, AttemptRecord>,
    logs: BTreeMap<AttemptKey, Vec<u8>>,
    next_job_id: JobId,
}

impl MemoryStore {
    /// Applies one batch, as a real store's commit would.
    pub fn commit(&mut self, b: Batch) {
        for j in b.jobs {
            self.jobs.insert(j.id, j);
        }
        for t in b.tasks {
            self.tasks.insert(t.key(), t);
        }
        for e in b.engines {
            self.engines.insert(e.id.clone(), e);
        }
        for a in b.attempts {
            // As the real stores: a result delivered again, uncounted,
            // does not replace the record there.
            if !a.counted && self.attempts.contains_key(&a.attempt) {
                continue;
            }
            self.attempts.insert(a.attempt, a);
        }
        for chunk in b.logs {
            let log = self.logs.entry(chunk.attempt).or_default();
            // Chunks are idempotent: whatever overlaps the stored end is trimmed.
            let skip = (log.len() as u64).saturating_sub(chunk.offset) as usize;
            if chunk.offset <= log.len() as u64 && skip < chunk.data.len() {
                log.extend_from_slice(&chunk.data[skip..]);
            }
        }
        for id in b.deleted_jobs {
            self.jobs.remove(&id);
            self.tasks.retain(|k, _| k.job != id);
            self.attempts.retain(|k, _| k.task.job != id);
            self.logs.retain(|k, _| k.task.job != id);
        }
        if let Some(n) = b.next_job_id {
            self.next_job_id = n;
        }
        for l in b.limits {
            self.limits.insert(l.name, l.count);
        }
        for name in b.deleted_limits {
            self.limits.remove(&name);
        }
    }

    /// Everything a restarting scheduler loads.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            jobs: self.jobs.values().cloned().collect(),
            tasks: self.tasks.values().cloned().collect(),
            engines: self.engines.values().cloned().collect(),
            pools: Vec::new(),
            limits: self
                .limits
                .iter()
                .map(|(n, c)| LimitRecord {
                    name: n.clone(),
                    count: *c,
                })
                .collect(),
            next_job_id: self.next_job_id,
        }
    }

    /// A task's stored attempt rows (not the completing one; see
    /// [`TaskRecord::history`]).
    pub fn attempts(&self, task: TaskKey) -> Vec<AttemptRecord> {
        self.attempts
            .range(
                AttemptKey { task, attempt: 0 }..=AttemptKey {
                    task,
                    attempt: u32::MAX,
                },
            )
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// One attempt's log from `offset`.
    pub fn read_log(&self, attempt: AttemptKey, offset: u64) -> &[u8] {
        let log = self.logs.get(&attempt).map(Vec::as_slice).unwrap_or(&[]);
        log.get(offset as usize..).unwrap_or(&[])
    }
}
