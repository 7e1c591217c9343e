//! Job commands: listing, `show`, tasks, logs, waiting and watching, and
//! the controls (pause, resume, cancel, retry, delete).

use crate::error::{CliError, CliResult};
use crate::output::{EngineNames, JobDetail, Output, OutputRow};
use crate::progress::{Progress, Snapshot};
use crate::select::JobSelection;
use drqueue_client::Client;
use drqueue_common::listing::{JobFilter, JobSummary, Order};
use drqueue_common::model::{JobId, JobStatus, JobView, TaskStatus};
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
    let tasks = client.tasks(job, status)?;
    out.tasks(
        &tasks,
        &engine_names(client, tasks.iter().any(|t| t.engine.is_some()))?,
    )
}

/// `drqueue attempts JOB TASK`: every attempt of a task, counted or not.
pub fn attempts(client: &Client, job: JobId, task: u32, out: &dyn Output) -> CliResult<()> {
    let attempts = client.attempts(job, task)?;
    out.attempts(&attempts, &engine_names(client, !attempts.is_empty())?)
}

/// `drqueue outputs JOB [TASK]`: the files the job's done tasks wrote, from
/// each task's successful attempt.
pub fn outputs(client: &Client, job: JobId, task: Option<u32>, out: &dyn Output) -> CliResult<()> {
    let tasks: Vec<u32> = match task {
        Some(t) => vec![t],
        None => client
            .tasks(job, Some(TaskStatus::Done))?
            .iter()
            .map(|t| t.index)
            .collect(),
    };
    let mut rows = Vec::new();
    for t in tasks {
        let attempts = client.attempts(job, t)?;
        if let Some(a) = attempts.iter().rev().find(|a| a.outcome.is_success()) {
            rows.extend(a.outcome.outputs.iter().map(|o| OutputRow {
                task: t,
                attempt: a.attempt.attempt,
                path: o.path.clone(),
                size: o.size,
            }));
        }
    }
    out.outputs(&rows)
}

/// Engine names by id, when a table needs them.
fn engine_names(client: &Client, needed: bool) -> CliResult<EngineNames> {
    Ok(if needed {
        EngineNames::of(&client.engines()?)
    } else {
        EngineNames::default()
    })
}

/// `wait` (a bar only on a terminal) and `watch` (always a bar).
pub fn wait(
    client: &Client,
    job: JobId,
    timeout: Option<u64>,
    watch: bool,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    let mut progress = if watch {
        Progress::shown(out.is_json())
    } else {
        Progress::on_terminal()
    };
    let view = client.wait(job, timeout.map(Duration::from_secs), |v| {
        progress.update(&[snapshot(v)])
    })?;
    progress.finish(watch);
    out.job_ended(&view)?;
    Ok(ended(&view))
}

fn snapshot(v: &JobView) -> Snapshot<'_> {
    Snapshot {
        id: v.id,
        name: &v.name,
        status: v.status,
        counts: &v.counts,
        total: v.tasks_total,
        blocked: v
            .blocked_here(drqueue_common::now_millis())
            .into_iter()
            .next(),
        percent: v.progress,
        eta: v.eta.as_ref().map(crate::show::eta_text),
    }
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

/// `cancel` and `retry`: jobs, or with `--tasks` some tasks of one job.
#[derive(clap::Args)]
pub struct TaskControl {
    #[command(flatten)]
    jobs: JobSelection,
    /// Only these tasks of the one job named (indices from 0, as `drqueue
    /// tasks` shows): `3,7-12`.
    #[arg(long, value_name = "SET")]
    tasks: Option<String>,
}

pub fn control_tasks(
    client: &Client,
    c: &TaskControl,
    action: &str,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    let Some(tasks) = &c.tasks else {
        return control(client, &c.jobs, action, out);
    };
    drqueue_common::frames::parse_task_set(tasks).map_err(CliError::Input)?;
    let [job] = c.jobs.ids()?[..] else {
        return Err(CliError::Input(format!(
            "--tasks acts on one job: `drqueue {action} JOB --tasks {tasks}`"
        )));
    };
    out.job_changed(&client.control_tasks(job, action, tasks)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `drqueue clean`: which ended jobs to delete.
#[derive(clap::Args)]
pub struct CleanArgs {
    /// Delete jobs that ended longer ago than this: 30m, 12h, 7d.
    #[arg(long, value_parser = crate::submit::parse_duration_ms)]
    older_than: u64,
    /// Only jobs that ended in this status: done, failed or cancelled.
    #[arg(long)]
    status: Option<JobStatus>,
    /// Only this user's jobs.
    #[arg(long)]
    owner: Option<String>,
    /// List what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Deletes ended jobs that finished before `--older-than`; reports each.
pub fn clean(client: &Client, a: &CleanArgs, out: &dyn Output) -> CliResult<ExitCode> {
    if let Some(s) = a.status.filter(|s| !s.is_terminal()) {
        return Err(CliError::Input(format!(
            "--status {s}: clean deletes only ended jobs (done, failed or cancelled)"
        )));
    }
    let cutoff = drqueue_common::now_millis().saturating_sub(a.older_than);
    let filter = JobFilter {
        status: a.status,
        owner: a.owner.clone(),
        order: Order::Oldest,
        ..JobFilter::default()
    };
    let old: Vec<JobSummary> = client
        .jobs_where(&filter)?
        .into_iter()
        .filter(|j| j.status.is_terminal() && j.finished_ms.is_some_and(|f| f < cutoff))
        .collect();
    if a.dry_run {
        out.jobs(&old)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<JobId> = old.iter().map(|j| j.id).collect();
    if ids.is_empty() {
        eprintln!("drqueue: no ended job is older than that");
    }
    for_each(&ids, |job| {
        client.delete(job, false)?;
        out.job_deleted(job)
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
