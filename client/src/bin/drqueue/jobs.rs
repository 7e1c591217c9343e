//! Job commands: listing, `show`, tasks, logs, waiting and watching, and
//! the controls (pause, resume, cancel, retry, delete).

use crate::error::CliResult;
use crate::output::{JobDetail, Output};
use crate::select::JobSelection;
use drqueue_client::Client;
use drqueue_common::listing::{JobFilter, Order};
use drqueue_common::model::{JobId, JobStatus, JobView, TaskStatus};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// `drqueue jobs`: which jobs to list.
#[derive(clap::Args)]
pub struct JobsArgs {
    /// Only jobs in this status: waiting, queued, running, paused, done,
    /// failed or cancelled.
    #[arg(long)]
    status: Option<JobStatus>,
    /// Only this user's jobs.
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    pool: Option<String>,
    /// Only names matching this glob (`shot_*`).
    #[arg(long)]
    name: Option<String>,
    /// Oldest first (default: newest first).
    #[arg(long)]
    oldest: bool,
    /// Show at most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Show every job that matches (no --limit).
    #[arg(long, conflicts_with = "limit")]
    all: bool,
}

pub fn list(client: &Client, a: JobsArgs, out: &dyn Output) -> CliResult<()> {
    let filter = JobFilter {
        status: a.status,
        owner: a.owner,
        pool: a.pool,
        name: a.name,
        order: if a.oldest {
            Order::Oldest
        } else {
            Order::Newest
        },
    };
    if a.all {
        return out.jobs(&client.jobs_where(&filter)?);
    }
    let (jobs, more) = client.jobs_first(&filter, a.limit as usize)?;
    out.jobs(&jobs)?;
    if more {
        eprintln!(
            "(the {} {} shown; more match: --limit N or --all)",
            jobs.len(),
            if a.oldest { "oldest" } else { "newest" }
        );
    }
    Ok(())
}

/// `show`: the job, with blacklisted engines by name and its failed tasks.
pub fn show(client: &Client, job: JobId, out: &dyn Output) -> CliResult<()> {
    let view = client.job(job)?;
    let mut blacklisted = Vec::new();
    if !view.blacklisted.is_empty() {
        let engines = client.engines()?;
        blacklisted = view
            .blacklisted
            .iter()
            .map(|id| {
                engines
                    .iter()
                    .find(|e| e.id == *id)
                    .map_or_else(|| id.to_string(), |e| e.name.clone())
            })
            .collect();
    }
    let failed = if view.counts.get(TaskStatus::Failed) > 0 {
        client.tasks(job, Some(TaskStatus::Failed))?
    } else {
        Vec::new()
    };
    out.job(&JobDetail {
        view,
        blacklisted,
        failed,
    })
}

pub fn tasks(
    client: &Client,
    job: JobId,
    status: Option<TaskStatus>,
    out: &dyn Output,
) -> CliResult<()> {
    out.tasks(&client.tasks(job, status)?)
}

/// How long one follower's request waits for more log at the master.
const FOLLOW_WAIT_SECS: u64 = 20;

/// Prints an attempt's log (window after window); with `follow`, keeps
/// printing until the attempt ends.
pub fn log(
    client: &Client,
    job: JobId,
    task: u32,
    attempt: Option<u32>,
    follow: bool,
) -> CliResult<()> {
    let mut offset = 0u64;
    let mut attempt = attempt;
    let mut stdout = std::io::stdout().lock();
    loop {
        // A follower long-polls: the master answers once there is more.
        let wait = if follow { FOLLOW_WAIT_SECS } else { 0 };
        let chunk = match client.log_window(job, task, attempt, offset, wait) {
            // Following a task that has not started yet: wait for it.
            Err(drqueue_client::ClientError::NotFound(m))
                if follow && attempt.is_none() && m.contains("has not run yet") =>
            {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            other => other?,
        };
        // Stay with the attempt the first answer named, should a retry start.
        attempt = Some(chunk.attempt);
        let _ = stdout.write_all(&chunk.data);
        let _ = stdout.flush();
        offset += chunk.data.len() as u64;
        if chunk.data.is_empty() && (!follow || !chunk.live) {
            return Ok(());
        }
    }
}

/// `wait` (a bar only on a terminal) and `watch` (always a bar).
pub fn wait(
    client: &Client,
    job: JobId,
    timeout: Option<u64>,
    always_show: bool,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    let bar = progress_bar(always_show || std::io::stderr().is_terminal());
    let view = client.wait(job, timeout.map(Duration::from_secs), |v| {
        update_bar(&bar, v)
    })?;
    if always_show {
        bar.finish();
    } else {
        bar.finish_and_clear();
    }
    out.job_ended(&view)?;
    Ok(ended(&view))
}

/// `pause`, `resume`, `cancel`, `retry`.
/// pause, resume, cancel or retry each selected job, reporting each; exit 1
/// if any was refused.
pub fn control(
    client: &Client,
    sel: &JobSelection,
    action: &str,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    for_each(&sel.resolve(client, action)?, |job| {
        out.job_changed(&client.control(job, action)?)
    })
}

pub fn delete(
    client: &Client,
    sel: &JobSelection,
    force: bool,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    for_each(&sel.resolve(client, "delete")?, |job| {
        client.delete(job, force)?;
        out.job_deleted(job)
    })
}

/// Runs `act` on every job; a refusal is reported and the rest go on.
fn for_each(jobs: &[JobId], mut act: impl FnMut(JobId) -> CliResult<()>) -> CliResult<ExitCode> {
    let mut failed = 0;
    for &job in jobs {
        if let Err(e) = act(job) {
            // One job: its error is the command's, as before.
            if jobs.len() == 1 {
                return Err(e);
            }
            eprintln!("drqueue: job {job}: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("drqueue: {failed} of {} jobs refused", jobs.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// 0 for a job that ended done; 1, with the counts on stderr, otherwise.
fn ended(v: &JobView) -> ExitCode {
    match v.status {
        JobStatus::Done => ExitCode::SUCCESS,
        s => {
            eprintln!(
                "drqueue: job {} ended {} ({} done, {} failed, {} cancelled of {})",
                v.id,
                s,
                v.counts.get(TaskStatus::Done),
                v.counts.get(TaskStatus::Failed),
                v.counts.get(TaskStatus::Cancelled),
                v.tasks_total
            );
            ExitCode::from(1)
        }
    }
}

pub fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:40.green/white}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn update_bar(bar: &ProgressBar, v: &JobView) {
    bar.set_prefix(format!("job {} {}", v.id, v.name));
    bar.set_length(v.tasks_total);
    bar.set_position(v.counts.get(TaskStatus::Done) + v.counts.get(TaskStatus::Failed));
    let mut msg = format!(
        "{} | {} running",
        v.status,
        v.counts.get(TaskStatus::Running) + v.counts.get(TaskStatus::Assigned)
    );
    if v.counts.get(TaskStatus::Failed) > 0 {
        msg.push_str(&format!(", {} failed", v.counts.get(TaskStatus::Failed)));
    }
    if let Some(reason) = v.blocked_here(drqueue_common::now_millis()).first() {
        msg.push_str(&format!(" | {reason}"));
    }
    bar.set_message(msg);
}
