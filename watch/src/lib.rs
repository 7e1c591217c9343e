//! The watch folder (`drqueue-master --watch-dir`, `drqueue watch-dir`):
//! each job file dropped in a folder is submitted once it has stopped
//! changing, then moved to `submitted/` (with `NAME.jobs`, the job ids) or
//! to `rejected/` (with `NAME.error`).
//!
//! | module | concern |
//! |---|---|
//! | `names` | which names are taken: not hidden, not a sync tool's temporary |
//! | `settle` | when a file has stopped changing (sans-I/O: observations in, ready names out) |
//! | `rules` | `.drqueue-rules.toml`: other files by glob, e.g. `*.pov` → the povray preset |
//! | `ledger` | exactly once across restarts: each file's move and outcome, appended and synced |
//! | `folder` | the I/O: a turn scans, moves, submits through a [`Farm`], records |
//!
//! A file's life: seen → unchanged for the settle time → a `take` line in
//! the ledger → renamed into `submitted/` (jobs read their scene there) →
//! parsed (a job file, or a rule's job) → submitted → `NAME.jobs` written →
//! a `done` line. A restart finishes what a `take` began: it asks the farm
//! whether the jobs were already accepted before submitting again.

pub mod folder;
pub mod ledger;
pub mod names;
pub mod rules;
pub mod settle;

use drqueue_common::graph::Graph;
use drqueue_common::model::JobId;
use drqueue_common::Millis;

/// What the watcher needs of the master: the HTTP client's calls, or the
/// master's own core.
pub trait Farm {
    /// Submits a graph, all or nothing.
    fn submit(&mut self, graph: Graph) -> Result<Vec<JobId>, SubmitError>;
    /// Jobs of `owner` named `name` submitted at or after `since` (to tell,
    /// after a crash, whether a submission went through).
    fn submitted_since(
        &mut self,
        owner: &str,
        name: &str,
        since: Millis,
    ) -> Result<Vec<JobId>, SubmitError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The master refused the jobs: the file goes to `rejected/`.
    Refused(String),
    /// The master could not be asked: the file waits, and is tried again.
    Unavailable(String),
}

pub use folder::{Options, Outcome, Watcher};

/// The listing filter [`Farm::submitted_since`] asks with: `owner`'s jobs
/// (anyone's when empty) named `name`.
pub fn since_filter(owner: &str, name: &str) -> drqueue_common::listing::JobFilter {
    drqueue_common::listing::JobFilter {
        owner: Some(owner.to_string()).filter(|o| !o.is_empty()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// Of a listing's rows, the jobs named exactly `name` submitted since `since`.
pub fn submitted_since(
    rows: Vec<drqueue_common::listing::JobSummary>,
    name: &str,
    since: Millis,
) -> Vec<JobId> {
    rows.into_iter()
        .filter(|r| r.submitted_ms >= since && r.name == name)
        .map(|r| r.id)
        .collect()
}
