//! Fault attribution: is a failure the engine's fault or the job's?
//!
//! A failure carries a signature (how it ended and its last log line,
//! masked; see `drqueue_common::signature`). When the same job fails with
//! the same signature on two or more engines, the fault is the job's (a bad
//! command, a missing scene file): those failures blacklist nothing and
//! sicken nothing, and the ones already counted against the first engine
//! are taken back. A failure seen on one engine only, while others run the
//! job, stays the engine's fault: "command not found" there means that
//! engine lacks the renderer.

use super::{Effects, EngineIdx, Notice, Scheduler};
use drqueue_common::model::JobId;
use drqueue_common::protocol::Outcome;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Engine,
    Jobs,
}

impl Scheduler {
    /// Judges a counted failure of `job` on engine `e`. For the engine's
    /// fault, the caller counts it against the engine; for the job's, the
    /// signature's earlier counts come off every engine here.
    pub(super) fn attribute_failure(
        &mut self,
        e: EngineIdx,
        job_id: JobId,
        outcome: &Outcome,
        fx: &mut Effects,
    ) -> Fault {
        let Some(signature) = &outcome.signature else {
            return Fault::Engine;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Fault::Engine;
        };
        if job.job_faults.contains(signature) {
            return Fault::Jobs;
        }
        let seen = job.signatures.entry(signature.clone()).or_default();
        if seen.keys().all(|o| *o == e) {
            *seen.entry(e).or_default() += 1;
            return Fault::Engine;
        }
        // A second engine: the job's fault, now and for the earlier ones.
        let earlier = job.signatures.remove(signature).unwrap_or_default();
        job.job_faults.insert(signature.clone());
        self.dirty_jobs.insert(job_id);
        for (o, n) in earlier {
            if let Some(count) = job.engine_failures.get_mut(&o) {
                *count = count.saturating_sub(n);
            }
            let engine = &mut self.engines[o];
            engine.failures_in_row = engine.failures_in_row.saturating_sub(n);
            if engine.sick.is_some() && engine.failures_in_row < self.cfg.sick_after {
                engine.sick = None;
                fx.notices.push(Notice::JobsFault {
                    engine: engine.id.clone(),
                    job: job_id,
                    signature: signature.clone(),
                });
            }
            self.dirty_engines.insert(o);
        }
        Fault::Jobs
    }
}
