//! The core's side of `GET /metrics`: the scheduler's observations counted
//! as each round hands them out, and the farm's state read at a scrape.

use super::Core;
use crate::metrics::FarmGauges;
use drqueue_common::model::{EngineState, JobStatus, TaskStatus, DEFAULT_POOL};

impl Core {
    /// Counts the observations the round's outputs carry.
    pub(super) fn count_observations(&mut self) {
        for o in self.fx.observed.drain(..) {
            self.metrics.observe(&o);
        }
    }

    /// The scrape's text: the counters so far, and the gauges as they are now.
    pub(super) fn metrics_text(&self) -> String {
        self.metrics.render(&self.farm_gauges())
    }

    fn farm_gauges(&self) -> FarmGauges {
        let mut g = FarmGauges::default();
        g.slots.insert(DEFAULT_POOL.into(), (0, 0));
        for e in self.sched.engines() {
            let state = e.view().state;
            *g.engines.entry(state.as_str()).or_default() += 1;
            if matches!(state, EngineState::Offline | EngineState::Revoked) {
                continue;
            }
            let (slots, busy) = (u64::from(e.slots), u64::from(e.outstanding().min(e.slots)));
            for pool in &e.facts.pools {
                let entry = g.slots.entry(pool.clone()).or_default();
                entry.0 += slots;
                entry.1 += busy;
            }
        }
        let totals = self.sched.task_totals();
        for s in TaskStatus::ALL {
            g.tasks.insert(s.as_str(), totals.get(*s));
        }
        g.jobs = JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (_, status) in self.sched.job_statuses() {
            *g.jobs.entry(status.as_str()).or_default() += 1;
        }
        g
    }
}
