//! `drqueue run-local`: a job or a job file's graph on this machine, with a
//! progress bar per job; the farm's scheduler runs it (see
//! `drqueue_client::local`).

use crate::error::{CliError, CliResult};
use crate::output::Output;
use crate::progress::{Progress, Snapshot};
use crate::submit::{submission, FarmArgs, JobArgs, Submission};
use clap::Args;
use drqueue_client::local::{self, AttemptEnd, JobProgress, Observer};
use drqueue_common::graph::{Graph, GraphJob};
use drqueue_common::model::JobStatus;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct RunLocalArgs {
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Where runs keep their logs: each run gets its own folder in it
    /// (run-1, run-2 …), with JOB-TASK-ATTEMPT.log files.
    #[arg(long, default_value = "drqueue-local")]
    log_dir: std::path::PathBuf,
    #[command(flatten)]
    job: JobArgs,
}

/// Exits 1 if any job did not end done.
pub fn run(r: RunLocalArgs, out: &dyn Output) -> CliResult<ExitCode> {
    if let Some(scene) = r.job.local_scene() {
        if !std::path::Path::new(scene).exists() {
            return Err(CliError::Input(format!(
                "--scene {scene}: no such file here; run-local renders on this machine, so the scene must be on it (check the path and the working directory)"
            )));
        }
    }
    let graph = match submission(r.job, FarmArgs::for_local())? {
        Submission::Graph(g) => g,
        Submission::One(spec) => {
            let mut spec = *spec;
            spec.ensure_name();
            Graph {
                jobs: vec![GraphJob {
                    name: spec.name.clone(),
                    spec,
                    after_names: Vec::new(),
                }],
            }
        }
    };
    if graph.jobs.iter().any(|j| j.spec.tiles.is_some()) {
        return Err(CliError::Input(
            "--tiles needs a farm: the tiles travel to their assemble task through the master's content store. On one machine, render whole frames (leave out --tiles)".into(),
        ));
    }
    let run_dir = new_run_dir(&r.log_dir)?;
    let mut watcher = Watcher {
        progress: Progress::shown(out.is_json()),
    };
    let ends = local::run(&graph, r.slots, &run_dir, &mut watcher)
        .map_err(|e| CliError::Local(format!("{e:#}")))?;
    watcher.progress.finish(true);
    out.local_run(&ends, &run_dir)?;
    let ok = ends.iter().all(|j| j.status == JobStatus::Done);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `LOG_DIR/run-N`, N one past the highest there: every run keeps its logs,
/// and two runs started at once still get a folder each.
fn new_run_dir(base: &Path) -> CliResult<PathBuf> {
    std::fs::create_dir_all(base)
        .map_err(|e| CliError::Local(format!("cannot create {}: {e}", base.display())))?;
    let highest = std::fs::read_dir(base)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", base.display())))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("run-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    for n in highest + 1.. {
        let dir = base.join(format!("run-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(CliError::Local(format!(
                    "cannot create {}: {e}",
                    dir.display()
                )))
            }
        }
    }
    unreachable!("a run number is always free")
}

struct Watcher {
    progress: Progress,
}

impl Observer for Watcher {
    fn progress(&mut self, jobs: &[JobProgress]) {
        let snapshots: Vec<Snapshot<'_>> = jobs
            .iter()
            .map(|j| Snapshot {
                id: j.id,
                name: &j.name,
                status: j.status,
                counts: &j.counts,
                total: j.tasks,
                blocked: None,
                percent: None,
                eta: None,
            })
            .collect();
        self.progress.update(&snapshots);
    }
    fn attempt_ended(&mut self, e: &AttemptEnd) {
        if !e.outcome.is_success() {
            self.progress.println(&format!(
                "job {} {} task {} (frames {}-{}) attempt {}: {}; log: {}",
                e.job,
                e.name,
                e.task,
                e.block.first,
                e.block.last,
                e.attempt,
                e.outcome.describe(),
                e.log.display()
            ));
        }
    }
}
