//! Can this engine take that job now: pool, requirements, RAM, blacklist
//! and `max_engines`.

use super::state::Job;
use super::{Engine, EngineIdx, Scheduler};
use drqueue_common::model::{JobId, JobSpec};

impl Scheduler {
    /// RAM engine `e` can still promise: its whole RAM when it holds
    /// nothing; otherwise the free RAM of its last heartbeat, but never more
    /// than what the requirements of the tasks it holds leave.
    pub(super) fn free_ram_estimate(&self, engine: &Engine) -> u64 {
        if engine.held.is_empty() {
            return engine.facts.ram_mb;
        }
        let reserved: u64 = engine
            .held
            .iter()
            .filter(|(_, h)| !h.cancelling)
            .filter_map(|(k, _)| self.jobs.get(&k.task.job))
            .map(|j| j.spec.requirements.min_ram_mb)
            .sum();
        engine
            .free_ram_mb
            .min(engine.facts.ram_mb.saturating_sub(reserved))
    }

    /// How many more tasks needing `need_mb` each the engine has room for;
    /// `None` when the job asks for no RAM, so RAM does not bound it.
    pub(super) fn ram_room(&self, engine: &Engine, need_mb: u64) -> Option<u32> {
        if need_mb == 0 {
            return None;
        }
        let room = self.free_ram_estimate(engine) / need_mb;
        Some(u32::try_from(room).unwrap_or(u32::MAX))
    }

    /// Could an engine other than `e`, online and not blacklisted, run the job?
    pub(super) fn can_run_elsewhere(&self, job: &Job, e: EngineIdx) -> bool {
        EngineIdx::all(self.engines.len())
            .any(|i| i != e && self.runs_unbanned(job, &self.engines[i], i))
    }

    /// How many engines could run the job now without a blacklist waiver.
    pub(super) fn unbanned_engines(&self, job: &Job) -> u32 {
        EngineIdx::all(self.engines.len())
            .filter(|&i| self.runs_unbanned(job, &self.engines[i], i))
            .count() as u32
    }

    pub(super) fn runs_unbanned(&self, job: &Job, o: &Engine, i: EngineIdx) -> bool {
        o.accepts_work() && eligible(o, &job.spec) && !job.is_blacklisted(i, &self.cfg)
    }

    /// Would giving engine `e` this job put it on more engines than its
    /// `max_engines` allows?
    pub(super) fn max_engines_reached(&self, job: JobId, spec: &JobSpec, e: EngineIdx) -> bool {
        spec.max_engines > 0
            && !self.engines[e].runs_job(job)
            && self.engines_running(job) >= spec.max_engines
    }

    /// How many engines hold a live attempt of this job.
    pub(super) fn engines_running(&self, job: JobId) -> u32 {
        self.engines.iter().filter(|o| o.runs_job(job)).count() as u32
    }
}

/// Can engine `e` run tasks of a job with this spec?
pub(super) fn eligible(e: &Engine, spec: &JobSpec) -> bool {
    let r = &spec.requirements;
    e.facts.pools.contains(&spec.pool)
        && r.os
            .as_ref()
            .is_none_or(|os| e.facts.os.eq_ignore_ascii_case(os))
        && e.facts.cores >= r.min_cores
        && (r.min_ram_mb == 0 || e.facts.ram_mb >= r.min_ram_mb)
        && r.capabilities
            .iter()
            .all(|c| e.facts.capabilities.iter().any(|have| have == c))
}
