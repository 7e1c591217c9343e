//! `drqueue run-local`: a job or a job file's graph on this machine, with a
//! progress bar per job; the farm's scheduler runs it (see
//! `drqueue_client::local`).

use crate::error::{CliError, CliResult};
use crate::jobs::progress_bar;
use crate::output::Output;
use crate::submit::{submission, Submission, SubmitArgs};
use clap::Args;
use drqueue_client::local::{self, AttemptEnd, JobProgress, Observer};
use drqueue_common::graph::{Graph, GraphJob};
use drqueue_common::model::{JobStatus, TaskStatus};
use indicatif::ProgressBar;
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Args)]
pub struct RunLocalArgs {
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Where attempt logs go (JOB-TASK-ATTEMPT.log).
    #[arg(long, default_value = "drqueue-local")]
    log_dir: std::path::PathBuf,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// Exits 1 if any job did not end done.
pub fn run(r: RunLocalArgs, out: &dyn Output) -> CliResult<ExitCode> {
    let graph = match submission(r.submit)? {
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
    let multi = indicatif::MultiProgress::new();
    if !std::io::stderr().is_terminal() {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut bars = Bars {
        multi,
        bars: Vec::new(),
    };
    let ends = local::run(&graph, r.slots, &r.log_dir, &mut bars)
        .map_err(|e| CliError::Local(format!("{e:#}")))?;
    for b in &bars.bars {
        b.finish();
    }
    out.local_run(&ends, &r.log_dir)?;
    let ok = ends.iter().all(|j| j.status == JobStatus::Done);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Bars {
    multi: indicatif::MultiProgress,
    bars: Vec<ProgressBar>,
}
impl Observer for Bars {
    fn progress(&mut self, jobs: &[JobProgress]) {
        while self.bars.len() < jobs.len() {
            let bar = self.multi.add(progress_bar(true));
            self.bars.push(bar);
        }
        for (bar, j) in self.bars.iter().zip(jobs) {
            bar.set_prefix(format!("job {} {}", j.id, j.name));
            bar.set_length(j.tasks);
            bar.set_position(j.counts.get(TaskStatus::Done) + j.counts.get(TaskStatus::Failed));
            bar.set_message(format!(
                "{} | {} running",
                j.status,
                j.counts.get(TaskStatus::Running)
            ));
        }
    }
    fn attempt_ended(&mut self, e: &AttemptEnd) {
        if !e.outcome.is_success() {
            let _ = self.multi.println(format!(
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
