//! `--watch-dir`: the watch folder run inside the master
//! ([`drqueue_watch`]), submitting through the core's own requests on a
//! thread of its own (it reads and moves files; never on the async threads).

use crate::events::{Event, Request};
use drqueue_common::graph::Graph;
use drqueue_common::model::JobId;
use drqueue_common::Millis;
use drqueue_watch::{Farm, Options, Outcome, SubmitError, Watcher};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The master's core, as the watch folder sees it.
struct Core {
    events: mpsc::UnboundedSender<Event>,
}

impl Core {
    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, SubmitError> {
        let (tx, rx) = oneshot::channel();
        let stopping = || SubmitError::Unavailable("the master is stopping".into());
        self.events
            .send(Event::Request(make(tx)))
            .map_err(|_| stopping())?;
        rx.blocking_recv().map_err(|_| stopping())
    }
}

impl Farm for Core {
    fn submit(&mut self, graph: Graph) -> Result<Vec<JobId>, SubmitError> {
        let views = self.ask(|reply| Request::SubmitGraph {
            graph,
            require_runnable: false,
            reply,
        })?;
        views
            .map(|v| v.into_iter().map(|j| j.id).collect())
            .map_err(|e| SubmitError::Refused(e.to_string()))
    }

    fn submitted_since(
        &mut self,
        owner: &str,
        name: &str,
        since: Millis,
    ) -> Result<Vec<JobId>, SubmitError> {
        let filter = drqueue_watch::since_filter(owner, name);
        let (rows, _) = self.ask(|reply| Request::ListJobs {
            filter,
            after: None,
            limit: 1000,
            reply,
        })?;
        Ok(drqueue_watch::submitted_since(rows, name, since))
    }
}

/// Starts watching `dir`: a file that has stopped changing for `settle` is
/// submitted as `owner`'s, then moved to `submitted/` or `rejected/`.
pub fn spawn(
    dir: PathBuf,
    owner: String,
    settle: Duration,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let opts = Options {
        dir: dir.clone(),
        owner,
        settle_ms: settle.as_millis() as u64,
    };
    let mut watcher = Watcher::open(opts, Core { events })
        .map_err(|e| anyhow::anyhow!("--watch-dir {}: {e}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "watching for job files (moved to submitted/ or rejected/ once taken)");
    std::thread::Builder::new()
        .name("drqueue-watch".into())
        .spawn(move || loop {
            match watcher.turn(drqueue_common::now_millis()) {
                Ok(outcomes) => outcomes.iter().for_each(log),
                Err(e) => tracing::warn!("watch folder: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        })?;
    Ok(())
}

fn log(o: &Outcome) {
    match o {
        Outcome::Submitted { file, jobs, .. } => {
            tracing::info!(file, jobs = ?jobs, "watch folder: submitted")
        }
        Outcome::Rejected { file, error, .. } => {
            tracing::warn!(file, error, "watch folder: rejected")
        }
        Outcome::Waiting { file, why } => {
            tracing::warn!(file, why, "watch folder: waiting for the master")
        }
    }
}
