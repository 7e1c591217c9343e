//! `drqueue`: the command-line client. Talks HTTP to the master.
//!
//! | module | commands |
//! |---|---|
//! | `submit` | `submit` (flags, presets, `--then`, job files) |
//! | `jobs` | `jobs`, `show`, `tasks`, `log`, `wait`, `watch`, pause … delete |
//! | `select` | which jobs pause … delete act on: ids, ranges, filters |
//! | `engines` | `engines`, `engine show/disable/enable/drain` |
//! | `deploy` | `engine deploy --ssh`, `engine undeploy --ssh` |
//! | `admin` | `pools`, `limits`, `limit set` |
//! | `users` | `user add/list/remove`, `token create/revoke`, `audit`, `whoami` |
//! | `usage` | `usage` (CPU and wall hours by owner, pool, job or day) |
//! | `transfer` | `download`, `cas`, and the bars of `submit --upload` |
//! | `local` | `run-local` |
//! | `watchdir` | `watch-dir` (the watch folder as a client) |
//! | `nodes`, `farm` | `nodes scan`; `farm`, `farms` (finding the master) |
//! | `output` | every command's output: human tables or `--json` |
//!
//! Exit codes: 0 ok; 1 failure (including `wait` on a job that ended failed
//! or cancelled); 2 usage error (clap's own).

mod admin;
mod deploy;
mod engines;
mod error;
mod farm;
mod jobs;
mod local;
mod logview;
mod nodes;
mod output;
mod progress;
mod select;
mod show;
mod submit;
mod table;
mod transfer;
mod usage;
mod users;
mod watchdir;

use clap::{Parser, Subcommand};
use drqueue_client::Client;
use drqueue_common::model::{JobId, TaskStatus};
use error::CliResult;
use output::Output;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "drqueue", version, about = "DrQueue render farm client")]
struct Cli {
    /// Master URL. Without it: DRQUEUE_URL, the config file
    /// (~/.config/drqueue/config.toml), a master on 127.0.0.1:5580, DNS SRV
    /// with --domain, then mDNS (`drqueue farm` says which was used).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Look the master up as DNS SRV `_drqueue._tcp.DOMAIN`.
    #[arg(long, global = true, env = "DRQUEUE_DOMAIN")]
    domain: Option<String>,
    /// Print JSON instead of tables and sentences (every listing and `show`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit a job; prints its id.
    Submit(Box<submit::SubmitArgs>),
    /// List jobs.
    Jobs(jobs::JobsArgs),
    /// Show one job, with the reasons its tasks are not running.
    Show { job: JobId },
    /// List a job's tasks.
    Tasks {
        job: JobId,
        /// Only tasks in this status: waiting, ready, assigned, running,
        /// done, failed or cancelled.
        #[arg(long)]
        status: Option<TaskStatus>,
    },
    /// List a task's attempts: engine, start, time, CPU, peak RSS, and
    /// whether each counted against --max-attempts.
    Attempts { job: JobId, task: u32 },
    /// List the files a job's done tasks wrote (or one task's): path and size.
    Outputs { job: JobId, task: Option<u32> },
    /// Print a task's log (the latest attempt by default).
    Log {
        job: JobId,
        task: u32,
        /// Which attempt's log (1 is the first; default: the latest).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing as the attempt runs.
        #[arg(long, short)]
        follow: bool,
        /// Only what the task printed: no header and footer.
        #[arg(long)]
        raw: bool,
    },
    /// Wait for a job to end: exit 0 if done, 1 if failed or cancelled.
    Wait {
        job: JobId,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Show live progress bars until the job ends.
    Watch { job: JobId },
    /// Stop starting new tasks of jobs; running ones finish.
    Pause(select::JobSelection),
    /// Resume paused jobs.
    Resume(select::JobSelection),
    /// Cancel jobs (or some of a job's tasks): running tasks are killed.
    Cancel(jobs::TaskControl),
    /// Put failed and cancelled tasks of jobs (or some tasks) back to ready.
    Retry(jobs::TaskControl),
    /// Change a job's priority: `drqueue priority 12 800` (0-1000, higher first).
    Priority {
        job: JobId,
        #[arg(value_parser = clap::value_parser!(u32).range(0..=drqueue_common::model::MAX_PRIORITY as i64))]
        priority: u32,
    },
    /// Delete ended jobs older than a time: `drqueue clean --older-than 7d`.
    Clean(jobs::CleanArgs),
    /// Delete a finished job (any job with --force).
    Delete {
        #[command(flatten)]
        jobs: select::JobSelection,
        /// Delete it even if it has not ended: its running tasks are killed.
        #[arg(long)]
        force: bool,
    },
    /// List engines.
    Engines,
    /// Show or control one engine.
    Engine {
        #[command(subcommand)]
        action: engines::EngineCmd,
    },
    /// List pools with their engine counts.
    Pools,
    /// List limits (named token counts) and how many are in use.
    Limits,
    /// Set a limit: `drqueue limit set houdini 5`.
    Limit {
        #[command(subcommand)]
        action: admin::LimitCmd,
    },
    /// Manage users (admins): `drqueue user add alice --role artist`.
    User {
        #[command(subcommand)]
        action: users::UserCmd,
    },
    /// Make or revoke API tokens.
    Token {
        #[command(subcommand)]
        action: users::TokenCmd,
    },
    /// Who changed what, newest first (wranglers and admins).
    Audit(users::AuditArgs),
    /// CPU-hours, wall-hours, tasks and failures by owner, pool, job or
    /// day; deleted jobs count too.
    Usage(usage::UsageArgs),
    /// Show who the master takes you for (the user of DRQUEUE_TOKEN).
    Whoami,
    /// Fetch a job's collected outputs (`submit --collect`) into a folder,
    /// laid out by their paths; resumes, and checks each file's hash.
    Download {
        job: JobId,
        /// Where to put them (default: the current folder).
        #[arg(long, default_value = ".")]
        to: std::path::PathBuf,
    },
    /// What the master's content store holds, and its free-disk floor;
    /// `cas gc` removes now what no job names and nobody used for the
    /// master's --cas-keep-days (admins).
    Cas {
        #[command(subcommand)]
        action: Option<transfer::CasCmd>,
    },
    /// Run a job or a job file's graph on this machine, no master: to debug
    /// it before it goes to the farm. Exits 1 if anything failed.
    RunLocal(Box<local::RunLocalArgs>),
    /// Submit the job files dropped in a folder, once each has stopped
    /// changing; then move each to submitted/ or rejected/.
    WatchDir(watchdir::WatchDirArgs),
    /// Which master this client uses, and how it was found.
    Farm,
    /// List the masters this machine can see (mDNS; DNS SRV with --domain).
    Farms {
        /// How long to listen for mDNS answers.
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
    /// Find render nodes: `nodes scan RANGE` lists hosts with SSH open.
    Nodes {
        #[command(subcommand)]
        action: nodes::NodesCmd,
    },
}

/// Exit codes, as the README gives them.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // Output into a closed pipe (`drqueue jobs | head`) ends the program
    // quietly, as it does every Unix tool, instead of a panic.
    // SAFETY: resetting a signal's disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let domain = cli.domain.clone();
    let client = Client::new(cli.url.as_deref(), None).with_domain(cli.domain);
    let out = output::for_mode(cli.json);
    match run(&client, domain.as_deref(), cli.cmd, out.as_ref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drqueue: {e}");
            // Refused here, before the master was asked: a usage error.
            let code = match e {
                error::CliError::Input(_) => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
            ExitCode::from(code)
        }
    }
}

fn run(client: &Client, domain: Option<&str>, cmd: Cmd, out: &dyn Output) -> CliResult<ExitCode> {
    match cmd {
        Cmd::Submit(a) => submit::run(client, *a, out)?,
        Cmd::RunLocal(r) => return local::run(*r, out),
        Cmd::Jobs(a) => jobs::list(client, a, out)?,
        Cmd::Show { job } => jobs::show(client, job, out)?,
        Cmd::Tasks { job, status } => jobs::tasks(client, job, status, out)?,
        Cmd::Attempts { job, task } => jobs::attempts(client, job, task, out)?,
        Cmd::Outputs { job, task } => jobs::outputs(client, job, task, out)?,
        Cmd::Log {
            job,
            task,
            attempt,
            follow,
            raw,
        } => logview::log(
            client,
            &logview::LogArgs {
                job,
                task,
                attempt,
                follow,
                raw,
            },
        )?,
        Cmd::Wait { job, timeout } => return jobs::wait(client, job, timeout, false, out),
        Cmd::Watch { job } => return jobs::wait(client, job, None, true, out),
        Cmd::Pause(sel) => return jobs::control(client, &sel, "pause", out),
        Cmd::Resume(sel) => return jobs::control(client, &sel, "resume", out),
        Cmd::Cancel(c) => return jobs::control_tasks(client, &c, "cancel", out),
        Cmd::Retry(c) => return jobs::control_tasks(client, &c, "retry", out),
        Cmd::Priority { job, priority } => out.job_changed(&client.set_priority(job, priority)?)?,
        Cmd::Clean(a) => return jobs::clean(client, &a, out),
        Cmd::Delete { jobs, force } => return jobs::delete(client, &jobs, force, out),
        Cmd::Engines => engines::list(client, out)?,
        Cmd::Engine { action } => return engines::run(client, action, out),
        Cmd::Pools => admin::pools(client, out)?,
        Cmd::Limits => admin::limits(client, out)?,
        Cmd::Limit { action } => admin::limit(client, action, out)?,
        Cmd::User { action } => users::user(client, action, out)?,
        Cmd::Token { action } => users::token(client, action, out)?,
        Cmd::Audit(a) => users::audit(client, a, out)?,
        Cmd::Usage(a) => usage::usage(client, a, out)?,
        Cmd::Whoami => users::whoami(client, out)?,
        Cmd::Download { job, to } => transfer::download(client, job, &to, out)?,
        Cmd::Cas { action } => transfer::cas(client, action, out)?,
        Cmd::Nodes { action } => nodes::run(action, out)?,
        Cmd::Farm => farm::farm(client, out)?,
        Cmd::WatchDir(a) => return watchdir::run(client, a, out.is_json()),
        Cmd::Farms { wait_ms } => farm::farms(domain, wait_ms, out)?,
    }
    Ok(ExitCode::SUCCESS)
}
