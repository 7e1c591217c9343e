//! Limits: named counted tokens, one held per running attempt of a job
//! that names the limit.

use super::{RequestError, Scheduler};
use drqueue_common::model::JobSpec;
use std::collections::HashMap;

impl Scheduler {
    /// Sets (or changes) a limit's token count. Lowering it below what is in
    /// use stops new tasks until enough finish; nothing running is killed.
    pub fn set_limit(&mut self, name: &str, count: u32) -> Result<(), RequestError> {
        let simple = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !simple {
            return Err(RequestError::Invalid(format!(
                "limit name {name:?} is not valid: use letters, digits, '-', '_' and '.'"
            )));
        }
        self.limits.insert(name.to_string(), count);
        self.dirty_limits.insert(name.to_string());
        Ok(())
    }

    /// Removes a limit: jobs naming it are no longer held back by it.
    pub fn delete_limit(&mut self, name: &str) -> Result<(), RequestError> {
        if self.limits.remove(name).is_none() {
            return Err(RequestError::NoLimit(name.to_string()));
        }
        self.dirty_limits.insert(name.to_string());
        Ok(())
    }

    /// Tokens held now, per limit: one per attempt an engine holds (a task
    /// being cancelled keeps its token until it has really ended).
    pub(super) fn tokens_in_use(&self) -> HashMap<String, u32> {
        let mut used: HashMap<String, u32> = HashMap::new();
        for e in &self.engines {
            for key in e.held.keys() {
                if let Some(job) = self.jobs.get(&key.task.job) {
                    for l in &job.spec.limits {
                        *used.entry(l.clone()).or_default() += 1;
                    }
                }
            }
        }
        used
    }

    /// Does any limit the job names exist (and so constrain it)?
    pub(super) fn has_set_limits(&self, spec: &JobSpec) -> bool {
        spec.limits.iter().any(|l| self.limits.contains_key(l))
    }

    /// How many more tasks of a job its limits allow to start now; `None`
    /// when no limit it names exists, so limits do not bound it.
    pub(super) fn limit_room(&self, spec: &JobSpec) -> Option<u32> {
        if !self.has_set_limits(spec) {
            return None;
        }
        self.limit_room_with(spec, &self.tokens_in_use())
    }

    /// [`Self::limit_room`] against tokens already counted in `used`.
    pub(super) fn limit_room_with(
        &self,
        spec: &JobSpec,
        used: &HashMap<String, u32>,
    ) -> Option<u32> {
        spec.limits
            .iter()
            .filter_map(|l| {
                let count = self.limits.get(l)?;
                Some(count.saturating_sub(used.get(l).copied().unwrap_or(0)))
            })
            .min()
    }

    pub fn limit_views(&self) -> Vec<drqueue_common::model::LimitView> {
        let used = self.tokens_in_use();
        self.limits
            .iter()
            .map(|(name, count)| drqueue_common::model::LimitView {
                name: name.clone(),
                count: *count,
                in_use: used.get(name).copied().unwrap_or(0),
            })
            .collect()
    }
}
