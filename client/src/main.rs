//! `drqueue`: the command-line client. Talks HTTP to the master.
//!
//! Exit codes: 0 ok; 1 failure (including `wait` on a job that ended failed
//! or cancelled); 2 usage error (clap's own).

use clap::{Args, Parser, Subcommand};
use drqueue_client::{Client, ClientError};
use drqueue_common::model::{
    Dependency, JobId, JobSpec, JobStatus, JobView, Requirements, TaskStatus,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "drqueue", version, about = "DrQueue render farm client")]
struct Cli {
    /// Master URL (default: DRQUEUE_URL, then http://127.0.0.1:5580).
    #[arg(long, global = true)]
    url: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit a job; prints its id.
    Submit(Box<SubmitArgs>),
    /// List jobs.
    Jobs {
        #[arg(long)]
        status: Option<JobStatus>,
        #[arg(long)]
        json: bool,
    },
    /// Show one job, with the reasons its tasks are not running.
    Show {
        job: JobId,
        #[arg(long)]
        json: bool,
    },
    /// List a job's tasks.
    Tasks {
        job: JobId,
        #[arg(long)]
        status: Option<TaskStatus>,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's log (the latest attempt by default).
    Log {
        job: JobId,
        task: u32,
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing as the attempt runs.
        #[arg(long, short)]
        follow: bool,
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
    /// Stop starting new tasks of a job; running ones finish.
    Pause { job: JobId },
    /// Resume a paused job.
    Resume { job: JobId },
    /// Cancel a job: running tasks are killed.
    Cancel { job: JobId },
    /// Put failed and cancelled tasks back to ready.
    Retry { job: JobId },
    /// Delete a finished job (any job with --force).
    Delete {
        job: JobId,
        #[arg(long)]
        force: bool,
    },
    /// List engines.
    Engines {
        #[arg(long)]
        json: bool,
    },
    /// Show or control one engine.
    Engine {
        #[command(subcommand)]
        action: EngineCmd,
    },
    /// List pools with their engine counts.
    Pools {
        #[arg(long)]
        json: bool,
    },
    /// List limits (named token counts) and how many are in use.
    Limits {
        #[arg(long)]
        json: bool,
    },
    /// Set a limit: `drqueue limit set houdini 5`.
    Limit {
        #[command(subcommand)]
        action: LimitCmd,
    },
    /// Run a job or a job file's graph on this machine, no master: to debug
    /// it before it goes to the farm. Exits 1 if anything failed.
    RunLocal(Box<RunLocalArgs>),
}

#[derive(Args)]
struct RunLocalArgs {
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Where attempt logs go (JOB-TASK-ATTEMPT.log).
    #[arg(long, default_value = "drqueue-local")]
    log_dir: std::path::PathBuf,
    #[command(flatten)]
    submit: SubmitArgs,
}

#[derive(Subcommand)]
enum LimitCmd {
    /// Set NAME to COUNT tokens (jobs name it with --limit NAME).
    Set { name: String, count: u32 },
}

#[derive(Subcommand)]
enum EngineCmd {
    Show {
        engine: String,
        #[arg(long)]
        json: bool,
    },
    /// Give it no new work.
    Disable {
        engine: String,
    },
    Enable {
        engine: String,
    },
    /// Give it no new work and wait until its running tasks have finished.
    Drain {
        engine: String,
        /// Give up waiting after this many seconds (the engine stays disabled).
        #[arg(long)]
        timeout: Option<u64>,
    },
}

#[derive(Args)]
struct SubmitArgs {
    /// A job file (TOML, or JSON by its .json name): one job, or a graph of
    /// named jobs with `after` by name. Submitted all or nothing.
    #[arg(long, conflicts_with_all = ["preset", "command"])]
    file: Option<std::path::PathBuf>,
    /// Run a command after this job is done, as a dependent one-task job:
    /// `… -- CMD ARGS --then -- CMD2 ARGS`, or `--preset … --then -- CMD2`.
    /// In CMD2, {job} is this job's id and {start}/{end} its first and last frame.
    #[arg(long)]
    then: bool,
    #[arg(long)]
    name: Option<String>,
    /// Render with a known renderer: blender, povray, hrender, maya, nuke,
    /// kick or prman (see README for each command line). Arguments after
    /// `--` are appended to the renderer's command line.
    #[arg(long, requires = "scene")]
    preset: Option<drqueue_common::preset::Preset>,
    /// The scene file the preset renders.
    #[arg(long)]
    scene: Option<String>,
    /// Where the preset writes images (renderer's own pattern; `####` pads the frame).
    #[arg(long)]
    output: Option<String>,
    /// Houdini ROP (default /out/mantra1) or Nuke Write node, for those presets.
    #[arg(long)]
    render_node: Option<String>,
    /// Frame set: 1-100, 1-100x5, 1,3,7-9.
    #[arg(long, default_value = "1")]
    frames: String,
    /// Frames per task.
    #[arg(long, default_value_t = 1)]
    blocksize: u32,
    /// 0-1000, higher first.
    #[arg(long, default_value_t = drqueue_common::model::DEFAULT_PRIORITY)]
    priority: u32,
    #[arg(long, default_value = drqueue_common::model::DEFAULT_POOL)]
    pool: String,
    #[arg(long)]
    os: Option<String>,
    #[arg(long, default_value_t = 0)]
    min_cores: u32,
    #[arg(long, default_value_t = 0)]
    min_ram_mb: u64,
    /// Capability an engine must have (repeatable), e.g. blender.
    #[arg(long = "require")]
    requires: Vec<String>,
    /// Environment for the command, K=V (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[arg(long)]
    cwd: Option<String>,
    #[arg(long, default_value_t = drqueue_common::model::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Per-task time limit in seconds.
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// How many engines may run it at once (0 = no cap).
    #[arg(long, default_value_t = 0)]
    max_engines: u32,
    /// Named limit the job's tasks take a token of (repeatable).
    #[arg(long = "limit")]
    limits: Vec<String>,
    /// Wait for JOB to end (as done, or the listed statuses): JOB[:done,failed].
    #[arg(long = "after", value_parser = parse_after)]
    after: Vec<Dependency>,
    /// Hold the job until this time: RFC 3339, or +30m / +2h / +1d.
    #[arg(long, value_parser = parse_time)]
    start_after: Option<u64>,
    /// Address to mail when the job ends (repeatable).
    #[arg(long = "notify")]
    notify: Vec<String>,
    /// Which endings send the mail: done, failed (failed or cancelled) or both.
    #[arg(long, default_value = "both")]
    notify_on: drqueue_common::model::NotifyOn,
    /// Submit paused.
    #[arg(long)]
    paused: bool,
    /// Print the job as JSON instead of its id.
    #[arg(long)]
    json: bool,
    /// The command and its arguments, after `--` (with --preset: extra
    /// arguments for the renderer).
    #[arg(last = true, required_unless_present_any = ["preset", "file"])]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not K=V"))
}

fn parse_after(s: &str) -> Result<Dependency, String> {
    let (job, statuses) = s.split_once(':').unwrap_or((s, "done"));
    let job: JobId = job
        .parse()
        .map_err(|_| format!("{job:?} is not a job id"))?;
    let on = statuses
        .split(',')
        .map(|st| match st.trim().parse::<JobStatus>() {
            Ok(s @ (JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)) => Ok(s),
            _ => Err(format!("{st:?}: --after takes done, failed or cancelled")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dependency { job, on })
}

fn parse_time(s: &str) -> Result<u64, String> {
    drqueue_common::graph::parse_time(s, drqueue_common::now_millis())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(cli.url.as_deref(), None);
    match run(&client, cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drqueue: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), ClientError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn ms(t: Option<u64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp_millis(t as i64))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn run(client: &Client, cmd: Cmd) -> Result<ExitCode, ClientError> {
    match cmd {
        Cmd::Submit(a) => {
            let json = a.json;
            match submission(*a)? {
                Submission::One(spec) => {
                    let job = client.submit(&spec)?;
                    if json {
                        print_json(&job)?;
                    } else {
                        println!("{}", job.id);
                    }
                }
                Submission::Graph(g) => print_submitted(&client.submit_graph(&g)?, json)?,
            }
        }
        Cmd::RunLocal(r) => return run_local(*r),
        Cmd::Jobs { status, json } => {
            let jobs = client.jobs(status)?;
            if json {
                print_json(&jobs)?;
            } else {
                println!(
                    "{:>6}  {:<24} {:<10} {:<10} {:>4}  {:<10} {:>13}",
                    "ID", "NAME", "OWNER", "STATUS", "PRI", "POOL", "DONE/TOTAL"
                );
                for j in jobs {
                    println!(
                        "{:>6}  {:<24} {:<10} {:<10} {:>4}  {:<10} {:>13}",
                        j.id,
                        truncate(&j.name, 24),
                        truncate(&j.owner, 10),
                        j.status,
                        j.priority,
                        j.pool,
                        format!("{}/{}", j.counts.get(TaskStatus::Done), j.tasks_total)
                    );
                }
            }
        }
        Cmd::Show { job, json } => {
            let j = client.job(job)?;
            if json {
                print_json(&j)?;
            } else {
                show_job(&j);
                if !j.blacklisted.is_empty() {
                    let engines = client.engines()?;
                    let names: Vec<String> = j
                        .blacklisted
                        .iter()
                        .map(|id| {
                            engines
                                .iter()
                                .find(|e| e.id == *id)
                                .map_or_else(|| id.clone(), |e| e.name.clone())
                        })
                        .collect();
                    println!(
                        "  blacklisted {} (failed this job too often; `drqueue retry {job}` forgives them)",
                        names.join(", ")
                    );
                }
                if j.counts.get(TaskStatus::Failed) > 0 {
                    let failed = client.tasks(job, Some(TaskStatus::Failed))?;
                    println!("  failed tasks:");
                    for t in failed.iter().take(10) {
                        let exit = t.exit_description();
                        println!(
                            "    - task {} (frames {}-{}), {} attempts, {exit}: drqueue log {job} {}",
                            t.index, t.first, t.last, t.attempts, t.index
                        );
                    }
                    if failed.len() > 10 {
                        println!(
                            "    … and {} more: drqueue tasks {job} --status failed",
                            failed.len() - 10
                        );
                    }
                }
            }
        }
        Cmd::Tasks { job, status, json } => {
            let tasks = client.tasks(job, status)?;
            if json {
                print_json(&tasks)?;
            } else {
                println!(
                    "{:>6}  {:>15}  {:<9} {:>8}  {:<20} {:>5}",
                    "TASK", "FRAMES", "STATUS", "ATTEMPTS", "ENGINE", "EXIT"
                );
                for t in tasks {
                    let frames = if t.first == t.last {
                        t.first.to_string()
                    } else {
                        format!("{}-{}", t.first, t.last)
                    };
                    println!(
                        "{:>6}  {:>15}  {:<9} {:>8}  {:<20} {:>5}",
                        t.index,
                        frames,
                        t.status,
                        t.attempts,
                        truncate(t.engine.as_deref().unwrap_or("-"), 20),
                        t.exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        Cmd::Log {
            job,
            task,
            attempt,
            follow,
        } => {
            let mut offset = 0u64;
            let mut out = std::io::stdout().lock();
            loop {
                let chunk = client.log(job, task, attempt, offset)?;
                let _ = out.write_all(&chunk.data);
                let _ = out.flush();
                offset += chunk.data.len() as u64;
                if !follow || (!chunk.live && chunk.data.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Cmd::Wait { job, timeout } => {
            let bar = progress_bar(std::io::stderr().is_terminal());
            let view = client.wait(job, timeout.map(Duration::from_secs), |v| {
                update_bar(&bar, v)
            })?;
            bar.finish_and_clear();
            return Ok(ended(&view));
        }
        Cmd::Watch { job } => {
            let bar = progress_bar(true);
            let view = client.wait(job, None, |v| update_bar(&bar, v))?;
            bar.finish();
            return Ok(ended(&view));
        }
        Cmd::Pause { job } => report(client.control(job, "pause")?),
        Cmd::Resume { job } => report(client.control(job, "resume")?),
        Cmd::Cancel { job } => report(client.control(job, "cancel")?),
        Cmd::Retry { job } => report(client.control(job, "retry")?),
        Cmd::Delete { job, force } => {
            client.delete(job, force)?;
            println!("job {job} deleted");
        }
        Cmd::Engines { json } => {
            let engines = client.engines()?;
            if json {
                print_json(&engines)?;
            } else {
                println!(
                    "{:<20} {:<16} {:<9} {:<16} {:>5} {:>8} {:>9} {:>6} {:>6}",
                    "NAME",
                    "HOST",
                    "STATE",
                    "POOLS",
                    "CORES",
                    "RAM MB",
                    "RUN/HWM",
                    "DONE",
                    "FAILED"
                );
                for e in engines {
                    println!(
                        "{:<20} {:<16} {:<9} {:<16} {:>5} {:>8} {:>9} {:>6} {:>6}",
                        truncate(&e.name, 20),
                        truncate(&e.hostname, 16),
                        e.state,
                        truncate(&e.pools.join(","), 16),
                        e.cores,
                        e.ram_mb,
                        format!("{}/{}", e.running, e.hwm),
                        e.tasks_done,
                        e.tasks_failed
                    );
                }
            }
        }
        Cmd::Engine { action } => match action {
            EngineCmd::Show { engine, json } => {
                let e = client.engine(&engine)?;
                if json {
                    print_json(&e)?;
                } else {
                    println!("engine {} ({})", e.name, e.id);
                    println!("  host      {} ({} {})", e.hostname, e.os, e.arch);
                    println!("  state     {}", e.state);
                    println!("  pools     {}", e.pools.join(", "));
                    if let Some(why) = &e.sick {
                        println!(
                            "  sick      {why} (`drqueue engine enable {}` clears it)",
                            e.name
                        );
                    }
                    let caps: Vec<String> = e
                        .capabilities
                        .iter()
                        .map(|c| match e.versions.get(c) {
                            Some(v) => format!("{c} {v}"),
                            None => c.clone(),
                        })
                        .collect();
                    println!("  caps      {}", caps.join(", "));
                    println!(
                        "  cores     {}   RAM {} MB ({} MB free)   load {:.2}",
                        e.cores, e.ram_mb, e.free_ram_mb, e.load
                    );
                    println!(
                        "  slots     {}   HWM {}   holding {}",
                        e.slots, e.hwm, e.running
                    );
                    println!(
                        "  tasks     {} done, {} failed ({} failed in a row)",
                        e.tasks_done, e.tasks_failed, e.failures_in_row
                    );
                }
            }
            EngineCmd::Disable { engine } => {
                let e = client.engine_control(&engine, "disable")?;
                println!(
                    "engine {} disabled; its {} running task(s) finish",
                    e.name, e.running
                );
            }
            EngineCmd::Drain { engine, timeout } => {
                let e = client.engine_control(&engine, "drain")?;
                let spinner = if std::io::stderr().is_terminal() {
                    ProgressBar::new_spinner()
                } else {
                    ProgressBar::hidden()
                };
                spinner.enable_steady_tick(Duration::from_millis(120));
                let until = timeout.map(|t| std::time::Instant::now() + Duration::from_secs(t));
                let mut running = e.running;
                while running > 0 {
                    spinner.set_message(format!("draining {}: {running} task(s) running", e.name));
                    if until.is_some_and(|u| std::time::Instant::now() >= u) {
                        spinner.finish_and_clear();
                        eprintln!(
                            "drqueue: engine {} still runs {running} task(s); it stays disabled",
                            e.name
                        );
                        return Ok(ExitCode::from(1));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    running = client.engine(&e.id)?.running;
                }
                spinner.finish_and_clear();
                println!("engine {} drained and disabled", e.name);
            }
            EngineCmd::Enable { engine } => {
                let e = client.engine_control(&engine, "enable")?;
                println!("engine {} enabled", e.name);
            }
        },
        Cmd::Limits { json } => {
            let limits = client.limits()?;
            if json {
                print_json(&limits)?;
            } else {
                println!("{:<20} {:>7} {:>7}", "LIMIT", "IN USE", "COUNT");
                for l in limits {
                    println!("{:<20} {:>7} {:>7}", l.name, l.in_use, l.count);
                }
            }
        }
        Cmd::Limit {
            action: LimitCmd::Set { name, count },
        } => {
            let l = client.set_limit(&name, count)?;
            println!("limit {} set to {} ({} in use)", l.name, l.count, l.in_use);
        }
        Cmd::Pools { json } => {
            let pools = client.pools()?;
            if json {
                print_json(&pools)?;
            } else {
                println!("{:<20} {:>7}", "POOL", "ENGINES");
                for p in pools {
                    println!("{:<20} {:>7}", p.name, p.engines);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `run-local`: the graph on this machine, with a progress bar per job.
fn run_local(r: RunLocalArgs) -> Result<ExitCode, ClientError> {
    use drqueue_client::local::{self, AttemptEnd, JobProgress, Observer};
    use drqueue_common::graph::{Graph, GraphJob};
    let json = r.submit.json;
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
    let multi = indicatif::MultiProgress::new();
    if !std::io::stderr().is_terminal() {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut bars = Bars {
        multi,
        bars: Vec::new(),
    };
    let ends = local::run(&graph, r.slots, &r.log_dir, &mut bars)
        .map_err(|e| ClientError::BadRequest(format!("{e:#}")))?;
    for b in &bars.bars {
        b.finish();
    }
    let ok = ends.iter().all(|j| j.status == JobStatus::Done);
    if json {
        print_json(&ends)?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    for j in &ends {
        println!(
            "job {} {}: {} ({} of {} tasks done)",
            j.id,
            j.name,
            j.status,
            j.counts.get(TaskStatus::Done),
            j.tasks
        );
    }
    println!("logs in {}", r.log_dir.display());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `submit` (or `run-local`) was asked to run.
enum Submission {
    One(Box<JobSpec>),
    Graph(drqueue_common::graph::Graph),
}

fn submission(mut a: SubmitArgs) -> Result<Submission, ClientError> {
    let owner = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    if let Some(path) = &a.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::BadRequest(format!("cannot read {}: {e}", path.display())))?;
        let graph = drqueue_common::graph::parse(
            &path.display().to_string(),
            &text,
            &owner,
            drqueue_common::now_millis(),
        )
        .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        return Ok(Submission::Graph(graph));
    }
    // `… -- CMD --then -- CMD2`: split the trailing arguments.
    let mut then_cmd = None;
    if let Some(at) = a.command.iter().position(|x| x == "--then") {
        let mut rest = a.command.split_off(at);
        rest.remove(0);
        if rest.first().is_some_and(|x| x == "--") {
            rest.remove(0);
        }
        then_cmd = Some(rest);
    } else if a.then {
        if a.preset.is_none() {
            return Err(ClientError::BadRequest(
                        "--then goes after the job's command: drqueue submit … -- CMD ARGS --then -- CMD2 ARGS".into(),
                    ));
        }
        then_cmd = Some(std::mem::take(&mut a.command));
    }
    if then_cmd.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(ClientError::BadRequest(
            "--then needs a command: --then -- ffmpeg -i frames/%04d.png movie.mp4".into(),
        ));
    }
    if let Some(preset) = a.preset {
        let frames = drqueue_common::frames::FrameSet::parse(&a.frames)
            .map_err(|e| ClientError::BadRequest(format!("frames: {e}")))?;
        let scene = a.scene.take().unwrap_or_default();
        if a.name.is_none() {
            a.name = scene.rsplit('/').next().map(String::from);
        }
        let args = drqueue_common::preset::PresetArgs {
            scene,
            output: a.output.take(),
            node: a.render_node.take(),
            extra: std::mem::take(&mut a.command),
        };
        let expanded = drqueue_common::preset::expand(preset, &args, &frames)
            .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        a.command = expanded.command;
        if !a.requires.contains(&expanded.capability) {
            a.requires.push(expanded.capability);
        }
    } else if a.scene.is_some() || a.output.is_some() || a.render_node.is_some() {
        return Err(ClientError::BadRequest(
                    "--scene, --output and --render-node go with --preset; without one, write the whole command after --".into(),
                ));
    }
    let spec = JobSpec {
        name: a.name.unwrap_or_default(),
        owner,
        command: a.command,
        frames: a.frames,
        blocksize: a.blocksize,
        priority: a.priority,
        pool: a.pool,
        requirements: Requirements {
            os: a.os,
            min_cores: a.min_cores,
            min_ram_mb: a.min_ram_mb,
            capabilities: a.requires,
        },
        env: a.env.into_iter().collect::<BTreeMap<_, _>>(),
        cwd: a.cwd.or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string())
        }),
        max_attempts: a.max_attempts,
        timeout_secs: a.timeout,
        max_engines: a.max_engines,
        limits: a.limits,
        after: a.after,
        start_after: a.start_after,
        notify: a.notify,
        notify_on: a.notify_on,
        paused: a.paused,
    };
    // Judge it here too, for an error before any network round trip.
    let frames = spec
        .validate()
        .map_err(|e| ClientError::BadRequest(e.to_string()))?;
    Ok(match then_cmd {
        Some(cmd) => Submission::Graph(then_graph(spec, &frames, cmd)),
        None => Submission::One(Box::new(spec)),
    })
}

/// The job and its `--then` job as a graph: the second waits for the first
/// to be done and runs once over the first's whole frame range.
fn then_graph(
    mut spec: JobSpec,
    frames: &drqueue_common::frames::FrameSet,
    command: Vec<String>,
) -> drqueue_common::graph::Graph {
    use drqueue_common::graph::{Graph, GraphJob, NamedDependency};
    spec.ensure_name();
    let (first, last) = frames.bounds();
    let main = spec.name.clone();
    let then = JobSpec {
        name: format!("{main} then"),
        owner: spec.owner.clone(),
        command: command
            .into_iter()
            .map(|a| a.replace("{job}", &format!("{{job:{main}}}")))
            .collect(),
        frames: format!("{first}-{last}"),
        blocksize: u32::try_from(last - first + 1).unwrap_or(u32::MAX),
        priority: spec.priority,
        pool: spec.pool.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        ..JobSpec::default()
    };
    Graph {
        jobs: vec![
            GraphJob {
                name: main.clone(),
                spec,
                after_names: Vec::new(),
            },
            GraphJob {
                name: then.name.clone(),
                spec: then,
                after_names: vec![NamedDependency {
                    name: main,
                    on: vec![JobStatus::Done],
                }],
            },
        ],
    }
}

/// Ids one per line, dependencies first (the jobs as JSON with --json).
fn print_submitted(jobs: &[JobView], json: bool) -> Result<(), ClientError> {
    if json {
        return print_json(&jobs);
    }
    for j in jobs {
        println!("{}", j.id);
        eprintln!("job {}: {}", j.id, j.name);
    }
    Ok(())
}

fn report(v: JobView) {
    println!("job {} is {}", v.id, v.status);
}

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

fn progress_bar(visible: bool) -> ProgressBar {
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

fn show_job(j: &JobView) {
    println!("job {}  {}", j.id, j.name);
    println!("  status     {}", j.status);
    println!(
        "  owner      {}   priority {}   pool {}",
        j.owner, j.priority, j.pool
    );
    println!("  command    {}", j.command.join(" "));
    println!(
        "  frames     {} (blocksize {}, {} tasks)",
        j.frames, j.blocksize, j.tasks_total
    );
    let counts: Vec<String> = TaskStatus::ALL
        .iter()
        .filter(|s| j.counts.get(**s) > 0)
        .map(|s| format!("{} {}", j.counts.get(*s), s))
        .collect();
    println!("  tasks      {}", counts.join(", "));
    println!(
        "  submitted  {}   started {}   finished {}",
        ms(Some(j.submitted_ms)),
        ms(j.started_ms),
        ms(j.finished_ms)
    );
    if !j.after.is_empty() {
        let deps: Vec<String> = j
            .after
            .iter()
            .map(|d| {
                format!(
                    "{} ({})",
                    d.job,
                    d.on.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        println!("  after      {}", deps.join(", "));
    }
    let mut rules = Vec::new();
    if j.max_engines > 0 {
        rules.push(format!("max_engines {}", j.max_engines));
    }
    if !j.limits.is_empty() {
        rules.push(format!("limits {}", j.limits.join(", ")));
    }
    let r = &j.requirements;
    if let Some(os) = &r.os {
        rules.push(format!("os {os}"));
    }
    if r.min_cores > 0 {
        rules.push(format!("{}+ cores", r.min_cores));
    }
    if r.min_ram_mb > 0 {
        rules.push(format!("{}+ MB RAM", r.min_ram_mb));
    }
    if !r.capabilities.is_empty() {
        rules.push(format!("needs {}", r.capabilities.join(", ")));
    }
    if !rules.is_empty() {
        println!("  rules      {}", rules.join("; "));
    }
    if let Some(reason) = &j.reason {
        println!("  reason     {reason}");
    }
    if let Some(n) = &j.notification {
        let mut line = format!("{} (on {}): {}", n.to.join(", "), n.on, n.state);
        if n.attempts > 0 {
            line.push_str(&format!(", {} attempt(s)", n.attempts));
        }
        if let Some(t) = n.sent_ms {
            line.push_str(&format!(" at {}", ms(Some(t))));
        }
        if let Some(t) = n.next_try_ms {
            line.push_str(&format!(", next try {}", ms(Some(t))));
        }
        if let Some(e) = &n.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        println!("  notify     {line}");
    }
    let blocked = j.blocked_here(drqueue_common::now_millis());
    if !blocked.is_empty() {
        println!("  not running because:");
        for r in &blocked {
            println!("    - {r}");
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
