//! Engines' speed scores: on each job two or more engines rendered, an
//! engine's milliseconds per frame against the median of those engines;
//! the score is the geometric mean of those ratios over the newest such
//! jobs. 1.0 is typical, 2.0 twice as fast. Live data, kept in memory:
//! scores are worked out again on the tick after new times came in, shown in
//! `engine show`, and used by dispatch (the fastest free engine picks first)
//! and by `--blocksize auto` (how many frames an engine's task gets).

use super::state::Engine;
use super::{EngineIdx, Scheduler};
use drqueue_common::model::{EngineView, JobId};
use drqueue_common::Millis;

/// The newest jobs a score is judged on.
const RECENT_JOBS: usize = 100;

impl Scheduler {
    /// A done task's time on engine `e`, per frame.
    pub(super) fn note_speed(&mut self, e: EngineIdx, job: JobId, wall_ms: Millis, frames: u64) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let per_frame = wall_ms.max(1) as f64 / frames.max(1) as f64;
        let entry = j.speed.entry(e).or_insert((0.0, 0));
        entry.0 += per_frame;
        entry.1 += 1;
        let first_of_engine = entry.1 == 1;
        self.speed_dirty = true;
        // The job counts from the moment a second engine rendered some of it.
        if j.speed.len() == 2 && first_of_engine {
            self.speed_jobs.push_back(job);
            if self.speed_jobs.len() > RECENT_JOBS {
                self.speed_jobs.pop_front();
            }
        }
    }

    /// An engine as the API shows it, with its speed score.
    pub fn engine_view(&self, engine: &Engine) -> EngineView {
        let mut view = engine.view();
        view.speed = self
            .engine_index
            .get(&engine.id)
            .and_then(|&e| self.speed_score(e));
        view
    }

    /// Engine `e`'s score as of the last refresh; None before it shared a
    /// job with another engine.
    pub(super) fn speed_score(&self, e: EngineIdx) -> Option<f32> {
        self.speed_scores.get(e.0 as usize).copied().flatten()
    }

    /// Works the scores out again when times came in since the last time.
    pub(super) fn refresh_speed_scores(&mut self) {
        if !self.speed_dirty {
            return;
        }
        self.speed_dirty = false;
        self.speed_scores = EngineIdx::all(self.engines.len())
            .map(|e| self.speed_of(e))
            .collect();
    }

    fn speed_of(&self, e: EngineIdx) -> Option<f32> {
        let mut logs = Vec::new();
        for job in &self.speed_jobs {
            let Some(j) = self.jobs.get(job) else {
                continue;
            };
            let Some(&(sum, n)) = j.speed.get(&e) else {
                continue;
            };
            let mut means: Vec<f64> = j.speed.values().map(|&(s, n)| s / f64::from(n)).collect();
            means.sort_unstable_by(f64::total_cmp);
            let mid = means.len() / 2;
            let median = if mid * 2 == means.len() {
                (means[mid - 1] + means[mid]) / 2.0
            } else {
                means[mid]
            };
            logs.push((median / (sum / f64::from(n))).ln());
        }
        if logs.is_empty() {
            return None;
        }
        Some((logs.iter().sum::<f64>() / logs.len() as f64).exp() as f32)
    }
}
