//! `drqueue submit`: the flags (shared with `run-local`), presets, `--then`,
//! job files, and what is checked here before anything is sent.

use crate::error::{CliError, CliResult};
use crate::output::Output;
use clap::Args;
use drqueue_client::Client;
use drqueue_common::model::{Dependency, JobId, JobSpec, JobStatus, Requirements};
use std::collections::BTreeMap;

/// `drqueue submit`: prints the new job's id (each id, for a graph). A job
/// that no engine could run now is accepted (engines may join later) with a
/// warning saying why, or refused with `--require-runnable`.
pub fn run(client: &Client, args: SubmitArgs, out: &dyn Output) -> CliResult<()> {
    let strict = args.farm.require_runnable;
    let upload = args.farm.upload.clone();
    let exclude = args.farm.upload_exclude.clone();
    let mut submission = submission(args.job, args.farm)?;
    if let Some(dir) = upload {
        let report = client.upload_dir(&dir, &exclude, &crate::transfer::Bars::new())?;
        eprintln!(
            "drqueue: {} files, {}; sent {} new blobs, {} (the master had the rest)",
            report.files,
            crate::transfer::size(report.bytes),
            report.sent_blobs,
            crate::transfer::size(report.sent_bytes)
        );
        match &mut submission {
            Submission::One(spec) => spec.inputs = Some(report.manifest),
            Submission::Graph(g) => {
                for job in &mut g.jobs {
                    job.spec.inputs = Some(report.manifest);
                }
            }
        }
    }
    let views = match submission {
        Submission::One(spec) => {
            let view = client.submit_opts(&spec, strict)?;
            out.submitted(&view)?;
            vec![view]
        }
        Submission::Graph(g) => {
            let views = client.submit_graph_opts(&g, strict)?;
            out.submitted_graph(&views)?;
            views
        }
    };
    for v in &views {
        let gaps: Vec<String> = v
            .blocked_by
            .iter()
            .filter(|b| b.is_engine_gap())
            .map(|b| b.text(drqueue_common::now_millis(), &chrono::Local))
            .collect();
        if !gaps.is_empty() {
            eprintln!(
                "drqueue: warning: job {} is queued, but no engine can run it now: {}. It starts when one can (--require-runnable refuses such a job instead)",
                v.id,
                gaps.join("; ")
            );
        }
    }
    Ok(())
}

/// `submit`'s flags: the job's own, and those only a farm has.
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub farm: FarmArgs,
}

/// What a job is and how each task runs: `submit` and `run-local` alike.
#[derive(Args)]
pub struct JobArgs {
    /// A job file (TOML, or JSON by its .json name): one job, or a graph of
    /// named jobs with `after` by name. Submitted all or nothing.
    #[arg(long, conflicts_with_all = ["preset", "command"])]
    file: Option<std::path::PathBuf>,
    /// Run a command after this job is done, as a dependent one-task job:
    /// `… -- CMD ARGS --then -- CMD2 ARGS`, or `--preset … --then -- CMD2`.
    /// In CMD2, {job} is this job's id and {start}/{end} its first and last frame.
    #[arg(long)]
    then: bool,
    /// The job's name in listings (default: the program's file name).
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
    /// Split each frame into COLSxROWS tiles rendered across the farm, then
    /// stitched by an assemble task per frame (--preset povray or blender,
    /// with --resolution and --output).
    #[arg(long, requires_all = ["preset", "resolution", "output"], value_parser = parse_grid)]
    tiles: Option<(u32, u32)>,
    /// The image's size with --tiles: WIDTHxHEIGHT in pixels, e.g. 1920x1080.
    #[arg(long, requires = "tiles", value_parser = parse_resolution)]
    resolution: Option<(u32, u32)>,
    /// With --tiles: pixels each tile renders past its edges, cropped off
    /// when stitching (for filters that reach across tile edges).
    #[arg(long, requires = "tiles", default_value_t = 0)]
    tile_overlap: u32,
    /// With --tiles: keep the tile images after stitching (on a shared file
    /// system they are removed otherwise).
    #[arg(long, requires = "tiles")]
    keep_tiles: bool,
    /// Where the preset writes images (renderer's own pattern; `####` pads
    /// the frame). Without --preset: the file each frame must write
    /// (`frames/f_####.png`); a task that leaves it missing fails.
    #[arg(long)]
    output: Option<String>,
    /// A running task that prints nothing and reports no progress for this
    /// long is stalled: 30s, 15m, 2h; 0 never.
    #[arg(long, default_value = "15m", value_parser = parse_duration_ms)]
    stall_after: u64,
    /// What a stall does: requeue (stop it and run it again, elsewhere if
    /// it can; it counts as a failed attempt) or warn (say so in `show`).
    #[arg(long, default_value = "requeue")]
    on_stall: drqueue_common::model::OnStall,
    /// The smallest an expected output may be, in bytes.
    #[arg(long, default_value_t = 1)]
    min_output_bytes: u64,
    /// Houdini ROP (default /out/mantra1) or Nuke Write node, for those presets.
    #[arg(long)]
    render_node: Option<String>,
    /// Frame set: 1-100, 1-100x5, 1,3,7-9.
    #[arg(long, default_value = "1")]
    frames: String,
    /// Frames per task, or `auto`: each engine's task is cut to its measured
    /// speed, about --target-task-minutes long.
    #[arg(long, default_value = "1")]
    blocksize: drqueue_common::task_blocks::Blocksize,
    /// With --blocksize auto: the minutes each task aims at (default 10).
    #[arg(long)]
    target_task_minutes: Option<u32>,
    /// 0-1000, higher first.
    #[arg(long, default_value_t = drqueue_common::model::DEFAULT_PRIORITY)]
    priority: u32,
    /// Environment for the command, K=V (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The directory the command runs in, on the engine (default: the
    /// engine's own working directory).
    #[arg(long)]
    cwd: Option<String>,
    /// Attempts per task before it is failed (a cancel or a lost engine
    /// does not count).
    #[arg(long, default_value_t = drqueue_common::model::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Per-task time limit in seconds.
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Retry tasks even after a line the renderer prints only for failures
    /// no retry fixes (a missing scene, a build without a feature): by
    /// default those fail at their first attempt.
    #[arg(long)]
    retry_deterministic: bool,
    /// Per-task log cap in MiB: past it the log keeps its first and last
    /// halves and marks the gap.
    #[arg(long, default_value_t = drqueue_common::model::DEFAULT_MAX_LOG_MB)]
    max_log_mb: u32,
    /// The command and its arguments, after `--` (with --preset: extra
    /// arguments for the renderer).
    #[arg(last = true, required_unless_present_any = ["preset", "file"])]
    command: Vec<String>,
}

/// What only a farm has: owners, pools, engine requirements, limits,
/// dependencies on farm jobs, start times and mail. `run-local` has none.
#[derive(Args, Default)]
pub struct FarmArgs {
    /// Submit on behalf of this user (wranglers and admins, e.g. for a
    /// pipeline daemon; the audit trail records who did it). Default: you.
    #[arg(long)]
    owner: Option<String>,
    /// Only engines in this pool run it (`drqueue pools` lists them).
    #[arg(long, default_value = drqueue_common::model::DEFAULT_POOL)]
    pool: String,
    /// Only engines on this OS run it: linux, macos or windows.
    #[arg(long)]
    os: Option<String>,
    /// Only engines with at least this many cores run it.
    #[arg(long, default_value_t = 0)]
    min_cores: u32,
    /// Only engines with at least this much RAM (MiB) run it.
    #[arg(long, default_value_t = 0)]
    min_ram_mb: u64,
    /// Capability an engine must have (repeatable), e.g. blender.
    #[arg(long = "require")]
    requires: Vec<String>,
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
    /// Refuse the job, instead of queueing it with a warning, when no engine
    /// could run it now (wrong pool, OS, RAM or missing renderer).
    #[arg(long)]
    require_runnable: bool,
    /// Upload this folder (only the files the master lacks, by content
    /// hash): each task runs in its own copy of it on the engine, so no
    /// shared file system is needed. Relative paths in the command, --cwd
    /// and {jobdir} point into that copy.
    #[arg(long)]
    upload: Option<std::path::PathBuf>,
    /// With --upload: leave out files whose relative path or name matches
    /// this glob (repeatable), e.g. '*.blend1'.
    #[arg(long = "upload-exclude", requires = "upload")]
    upload_exclude: Vec<String>,
    /// Bring back the files each task writes that match this glob, relative
    /// to its folder (repeatable), e.g. 'out/*.png'; `drqueue download JOB`
    /// fetches them. `*` matches across folders.
    #[arg(long = "collect")]
    collect: Vec<String>,
}

impl JobArgs {
    /// The scene a preset job renders, if one was given.
    pub fn local_scene(&self) -> Option<&str> {
        self.preset.and(self.scene.as_deref())
    }
}

impl FarmArgs {
    /// `run-local`: none of the farm's settings apply on one machine.
    pub fn for_local() -> FarmArgs {
        FarmArgs {
            pool: drqueue_common::model::DEFAULT_POOL.into(),
            ..FarmArgs::default()
        }
    }
}

/// `30s`, `15m`, `12h`, `7d` (or `0`) as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: give a duration like 30s, 15m, 12h or 7d"))?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: give a duration like 30s, 15m, 12h or 7d")),
    };
    n.checked_mul(ms)
        .ok_or_else(|| format!("{s:?} is too long ago"))
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

/// What `submit` (or `run-local`) was asked to run.
pub enum Submission {
    One(Box<JobSpec>),
    Graph(drqueue_common::graph::Graph),
}

pub fn submission(mut a: JobArgs, mut farm: FarmArgs) -> CliResult<Submission> {
    // Empty: the master makes the job the caller's (the token's user).
    let owner = farm.owner.take().unwrap_or_default();
    if let Some(path) = &a.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
        let graph = drqueue_common::graph::parse(
            &path.display().to_string(),
            &text,
            &owner,
            drqueue_common::now_millis(),
        )
        .map_err(|e| CliError::Input(e.to_string()))?;
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
            return Err(CliError::Input(
                        "--then goes after the job's command: drqueue submit … -- CMD ARGS --then -- CMD2 ARGS".into(),
                    ));
        }
        then_cmd = Some(std::mem::take(&mut a.command));
    }
    if then_cmd.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(CliError::Input(
            "--then needs a command: --then -- ffmpeg -i frames/%04d.png movie.mp4".into(),
        ));
    }
    let mut outputs = Vec::new();
    let tiles = match (a.tiles, a.resolution) {
        (Some((cols, rows)), Some((width, height))) => Some(drqueue_common::tiles::Tiles {
            cols,
            rows,
            overlap: a.tile_overlap,
            width,
            height,
            keep: a.keep_tiles,
        }),
        _ => None,
    };
    if let Some(preset) = a.preset {
        let frames = drqueue_common::frames::FrameSet::parse(&a.frames)
            .map_err(|e| CliError::Input(format!("frames: {e}")))?;
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
        let expanded = match &tiles {
            Some(t) => drqueue_common::preset_tiles::expand_tiled(preset, &args, &frames, t)
                .map_err(|e| CliError::Input(e.to_string()))?,
            None => drqueue_common::preset::expand(preset, &args, &frames)
                .map_err(|e| CliError::Input(e.to_string()))?,
        };
        a.command = expanded.command;
        outputs = expanded.outputs;
        if !farm.requires.contains(&expanded.capability) {
            farm.requires.push(expanded.capability);
        }
    } else if a.scene.is_some() || a.render_node.is_some() {
        return Err(CliError::Input(
                    "--scene and --render-node go with --preset; without one, write the whole command after --".into(),
                ));
    } else if let Some(o) = a.output.take() {
        outputs = vec![drqueue_common::preset::frame_template(&o)];
    }
    let mut spec = JobSpec {
        name: a.name.unwrap_or_default(),
        owner,
        command: a.command,
        frames: a.frames,
        blocksize: 1,
        priority: a.priority,
        pool: farm.pool,
        requirements: Requirements {
            os: farm.os,
            min_cores: farm.min_cores,
            min_ram_mb: farm.min_ram_mb,
            capabilities: farm.requires,
        },
        env: a.env.into_iter().collect::<BTreeMap<_, _>>(),
        // An uploaded job runs in its own folder on the engine; --cwd is
        // then inside it.
        cwd: if farm.upload.is_some() {
            a.cwd
        } else {
            a.cwd.or_else(|| {
                std::env::current_dir()
                    .ok()
                    .map(|d| d.display().to_string())
            })
        },
        max_attempts: a.max_attempts,
        timeout_secs: a.timeout,
        max_log_mb: a.max_log_mb,
        max_engines: farm.max_engines,
        limits: farm.limits,
        after: farm.after,
        start_after: farm.start_after,
        notify: farm.notify,
        notify_on: farm.notify_on,
        paused: farm.paused,
        retry_deterministic: a.retry_deterministic,
        outputs,
        min_output_bytes: a.min_output_bytes,
        stall_after_secs: a.stall_after.div_ceil(1000),
        on_stall: a.on_stall,
        target_task_minutes: None,
        inputs: None,
        collect: farm.collect,
        tiles,
    };
    spec.set_blocksize(a.blocksize, a.target_task_minutes)
        .map_err(CliError::Input)?;
    // Judge it here too, for an error before any network round trip.
    let frames = spec
        .validate()
        .map_err(|e| CliError::Input(e.to_string()))?;
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

fn parse_grid(s: &str) -> Result<(u32, u32), String> {
    drqueue_common::tiles::parse_grid(s).map_err(|e| e.to_string())
}

fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    drqueue_common::tiles::parse_resolution(s).map_err(|e| e.to_string())
}
