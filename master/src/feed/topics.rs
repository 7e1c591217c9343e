//! What a client subscribes to: `topics=jobs,job:12,log:12.3,engines,farm`.

use drqueue_common::model::{JobId, TaskKey};
use std::collections::BTreeSet;

/// Topics one subscription may name, at most.
pub const MAX_TOPICS: usize = 32;

/// One stream of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// The job list: summaries of jobs that changed, and deletions.
    Jobs,
    /// One job: its view and the tasks that changed.
    Job(JobId),
    /// One task's log as it grows (any attempt).
    Log(TaskKey),
    /// Engines that changed.
    Engines,
    /// Farm totals.
    Farm,
}

impl Topic {
    /// The SSE event name.
    pub fn event_name(&self) -> &'static str {
        match self {
            Topic::Jobs => "jobs",
            Topic::Job(_) => "job",
            Topic::Log(_) => "log",
            Topic::Engines => "engines",
            Topic::Farm => "farm",
        }
    }
}

impl std::str::FromStr for Topic {
    type Err = String;
    fn from_str(s: &str) -> Result<Topic, String> {
        let bad = || {
            format!("topics: {s:?} is not a topic: use jobs, job:ID, log:ID.TASK, engines or farm")
        };
        match s {
            "jobs" => return Ok(Topic::Jobs),
            "engines" => return Ok(Topic::Engines),
            "farm" => return Ok(Topic::Farm),
            _ => {}
        }
        if let Some(id) = s.strip_prefix("job:") {
            return id.parse().map(|n| Topic::Job(JobId(n))).map_err(|_| bad());
        }
        if let Some(key) = s.strip_prefix("log:") {
            let (job, task) = key.split_once('.').ok_or_else(bad)?;
            return Ok(Topic::Log(TaskKey {
                job: JobId(job.parse().map_err(|_| bad())?),
                index: task.parse().map_err(|_| bad())?,
            }));
        }
        Err(bad())
    }
}

/// The topics of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics(BTreeSet<Topic>);

impl Topics {
    /// Every job, engine and farm change (not logs): for tests.
    pub fn all() -> Topics {
        Topics([Topic::Jobs, Topic::Engines, Topic::Farm].into())
    }

    pub fn wants(&self, topic: &Topic) -> bool {
        self.0.contains(topic)
    }
}

impl std::str::FromStr for Topics {
    type Err = String;
    fn from_str(s: &str) -> Result<Topics, String> {
        let set: BTreeSet<Topic> = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if set.is_empty() {
            return Err(
                "topics: name at least one of jobs, job:ID, log:ID.TASK, engines, farm".into(),
            );
        }
        if set.len() > MAX_TOPICS {
            return Err(format!(
                "topics: {} topics, the limit is {MAX_TOPICS}",
                set.len()
            ));
        }
        Ok(Topics(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_and_bad_ones_are_named() {
        let t: Topics = "jobs, job:12,log:12.3,engines,farm".parse().unwrap();
        assert!(t.wants(&Topic::Job(JobId(12))));
        assert!(t.wants(&Topic::Log(TaskKey {
            job: JobId(12),
            index: 3
        })));
        assert!(!t.wants(&Topic::Job(JobId(13))));
        let e = "jobs,job:x".parse::<Topics>().unwrap_err();
        assert!(e.contains("\"job:x\""), "{e}");
        assert!("".parse::<Topics>().is_err());
        assert!("log:1".parse::<Topics>().is_err());
        let many: Vec<String> = (0..40).map(|i| format!("job:{i}")).collect();
        assert!(many
            .join(",")
            .parse::<Topics>()
            .unwrap_err()
            .contains("limit"));
    }
}
