//! Job files: one job, or a graph of named jobs with dependencies by name,
//! in TOML or JSON. Keys are the `submit` flags' long names with `_` for `-`,
//! plus `command` (an array) and `after` (names of jobs in the same file, or
//! ids of jobs already on the farm, each optionally `:done,failed,…`).
//!
//! [`parse`] turns a file into a validated [`Graph`]: every job's spec is
//! checked, names are unique, every `after` resolves, and there is no cycle.
//! Errors name the file, the line and the field. The CLI submits the graph
//! in one request and the master creates it in one commit: all or nothing.

use crate::frames::FrameSet;
use crate::model::{
    Dependency, JobId, JobSpec, JobStatus, NotifyOn, Requirements, SpecError, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_LOG_MB, DEFAULT_POOL, DEFAULT_PRIORITY,
};
use crate::preset::{self, Preset, PresetArgs};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One job of a graph: its spec, its name, and its dependencies on other
/// jobs of the same graph (by name). Dependencies on jobs already on the
/// farm are in `spec.after`, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GraphJob {
    pub name: String,
    pub spec: JobSpec,
    #[serde(default)]
    pub after_names: Vec<NamedDependency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NamedDependency {
    pub name: String,
    pub on: Vec<JobStatus>,
}

/// Jobs in an order where each comes after those it depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Graph {
    pub jobs: Vec<GraphJob>,
}

/// A job as written in a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJob {
    name: Option<String>,
    command: Option<Vec<String>>,
    preset: Option<String>,
    scene: Option<String>,
    output: Option<String>,
    render_node: Option<String>,
    frames: Option<String>,
    blocksize: Option<crate::task_blocks::Blocksize>,
    target_task_minutes: Option<u32>,
    priority: Option<u32>,
    pool: Option<String>,
    os: Option<String>,
    min_cores: Option<u32>,
    min_ram_mb: Option<u64>,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    max_attempts: Option<u32>,
    timeout: Option<u64>,
    max_log_mb: Option<u32>,
    max_engines: Option<u32>,
    #[serde(default)]
    limit: Vec<String>,
    #[serde(default)]
    after: Vec<AfterEntry>,
    start_after: Option<String>,
    #[serde(default)]
    notify: Vec<String>,
    notify_on: Option<NotifyOn>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    retry_deterministic: bool,
    /// Files each task brings back (`--collect`).
    #[serde(default)]
    collect: Vec<String>,
    /// `--tiles`, `--resolution`, `--tile-overlap`, `--keep-tiles`.
    tiles: Option<String>,
    resolution: Option<String>,
    tile_overlap: Option<u32>,
    #[serde(default)]
    keep_tiles: bool,
}

/// `"sim"`, `"sim:done,failed"`, or a job id (`12`, `"12:failed"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AfterEntry {
    Id(JobId),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGraph {
    jobs: Vec<FileJob>,
}

/// A file that is not a valid job graph: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct GraphError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Reads and validates a job file; `file` is its name for messages (`.json`
/// means JSON, anything else TOML). `now` resolves `start_after = "+2h"`.
pub fn parse(file: &str, text: &str, owner: &str, now: Millis) -> Result<Graph, GraphError> {
    let err = |line: Option<usize>, message: String| GraphError {
        file: file.to_string(),
        line,
        message,
    };
    let json = file.ends_with(".json");
    let jobs: Vec<FileJob> = if json {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| err(Some(e.line()), format!("not valid JSON: {e}")))?;
        let one = |e: serde_json::Error| err(locate_json_error(text, &e), e.to_string());
        if v.get("jobs").is_some() {
            serde_json::from_str::<FileGraph>(text).map_err(one)?.jobs
        } else {
            vec![serde_json::from_str::<FileJob>(text).map_err(one)?]
        }
    } else {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            err(
                toml_line(text, &e),
                format!("not valid TOML: {}", e.message()),
            )
        })?;
        let one = |e: toml::de::Error| err(toml_line(text, &e), e.message().to_string());
        if table.contains_key("jobs") {
            toml::from_str::<FileGraph>(text).map_err(one)?.jobs
        } else {
            vec![toml::from_str::<FileJob>(text).map_err(one)?]
        }
    };
    if jobs.is_empty() {
        return Err(err(
            None,
            "no jobs: write one job, or several under [[jobs]]".into(),
        ));
    }
    // Names first, so `after` can be checked against all of them.
    let mut names: Vec<String> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let name = j.name.clone().unwrap_or_else(|| format!("job{}", i + 1));
        if names.contains(&name) {
            return Err(err(
                locate(text, "name", &name, 2),
                format!("jobs[{i}] field `name`: {name:?} names two jobs; names must be unique"),
            ));
        }
        names.push(name);
    }
    let single_unnamed = jobs.len() == 1 && jobs[0].name.is_none();
    let mut out = Vec::new();
    for (i, (j, name)) in jobs.into_iter().zip(&names).enumerate() {
        let at = |field: &str, value: &str| locate(text, field, value, 1);
        let what = format!("jobs[{i}] ({name})");
        let mut spec = JobSpec {
            name: name.clone(),
            owner: owner.to_string(),
            command: j.command.clone().unwrap_or_default(),
            frames: j.frames.clone().unwrap_or_else(|| "1".into()),
            blocksize: 1,
            priority: j.priority.unwrap_or(DEFAULT_PRIORITY),
            pool: j.pool.clone().unwrap_or_else(|| DEFAULT_POOL.into()),
            requirements: Requirements {
                os: j.os.clone(),
                min_cores: j.min_cores.unwrap_or(0),
                min_ram_mb: j.min_ram_mb.unwrap_or(0),
                capabilities: j.require.clone(),
            },
            env: j.env.clone(),
            cwd: j.cwd.clone(),
            max_attempts: j.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout_secs: j.timeout.unwrap_or(0),
            max_log_mb: j.max_log_mb.unwrap_or(DEFAULT_MAX_LOG_MB),
            max_engines: j.max_engines.unwrap_or(0),
            limits: j.limit.clone(),
            after: Vec::new(),
            start_after: None,
            notify: j.notify.clone(),
            notify_on: j.notify_on.unwrap_or_default(),
            paused: j.paused,
            retry_deterministic: j.retry_deterministic,
            outputs: Vec::new(),
            min_output_bytes: 1,
            stall_after_secs: crate::model::DEFAULT_STALL_AFTER_SECS,
            on_stall: Default::default(),
            target_task_minutes: None,
            inputs: None,
            collect: j.collect.clone(),
            tiles: None,
        };
        let blocksize = j
            .blocksize
            .unwrap_or(crate::task_blocks::Blocksize::Frames(1));
        spec.set_blocksize(blocksize, j.target_task_minutes)
            .map_err(|e| {
                err(
                    at("blocksize", ""),
                    format!("{what} field `blocksize`: {e}"),
                )
            })?;
        if let Some(p) = &j.preset {
            let preset: Preset = p
                .parse()
                .map_err(|e: String| err(at("preset", p), format!("{what} field `preset`: {e}")))?;
            if j.command.is_some() {
                return Err(err(
                    at("preset", p),
                    format!("{what}: give `preset` or `command`, not both"),
                ));
            }
            let frames = FrameSet::parse(&spec.frames).map_err(|e| {
                err(
                    at("frames", &spec.frames),
                    format!("{what} field `frames`: {e}"),
                )
            })?;
            let args = PresetArgs {
                scene: j.scene.clone().unwrap_or_default(),
                output: j.output.clone(),
                node: j.render_node.clone(),
                extra: Vec::new(),
            };
            spec.tiles = match &j.tiles {
                Some(grid) => Some(
                    crate::tiles::from_fields(
                        grid,
                        j.resolution.as_deref(),
                        j.tile_overlap,
                        j.keep_tiles,
                    )
                    .map_err(|e| err(at("tiles", grid), format!("{what} field `tiles`: {e}")))?,
                ),
                None => None,
            };
            let x = match &spec.tiles {
                Some(t) => crate::preset_tiles::expand_tiled(preset, &args, &frames, t)
                    .map_err(|e| err(at("tiles", ""), format!("{what}: {e}")))?,
                None => preset::expand(preset, &args, &frames)
                    .map_err(|e| err(at("preset", p), format!("{what}: {e}")))?,
            };
            spec.command = x.command;
            spec.outputs = x.outputs;
            if !spec.requirements.capabilities.contains(&x.capability) {
                spec.requirements.capabilities.push(x.capability);
            }
        } else if j.tiles.is_some() {
            return Err(err(
                at("tiles", ""),
                format!("{what} field `tiles`: tiles need a `preset` (povray or blender)"),
            ));
        } else if let Some(o) = &j.output {
            // Without a preset, `output` names the file each frame writes.
            spec.outputs = vec![preset::frame_template(o)];
        }
        if let Some(t) = &j.start_after {
            spec.start_after = Some(parse_time(t, now).map_err(|e| {
                err(
                    at("start_after", t),
                    format!("{what} field `start_after`: {e}"),
                )
            })?);
        }
        spec.validate().map_err(|e| {
            let (field, value) = spec_error_field(&e, &spec);
            let why = match &e {
                SpecError::Frames(f) => f.to_string(), // without its "frames: "
                other => other.to_string(),
            };
            err(at(field, &value), format!("{what} field `{field}`: {why}"))
        })?;
        let mut after_names = Vec::new();
        for a in &j.after {
            match a {
                AfterEntry::Id(id) => spec.after.push(Dependency {
                    job: *id,
                    on: vec![JobStatus::Done],
                }),
                AfterEntry::Text(t) => {
                    let (target, statuses) = t.split_once(':').unwrap_or((t, "done"));
                    let on = parse_statuses(statuses).map_err(|e| {
                        err(at("after", t), format!("{what} field `after`: {t:?}: {e}"))
                    })?;
                    if let Ok(id) = target.parse::<JobId>() {
                        spec.after.push(Dependency { job: id, on });
                    } else if names.iter().any(|n| n == target) {
                        if target == name {
                            return Err(err(
                                at("after", t),
                                format!("{what} field `after`: a job cannot wait for itself"),
                            ));
                        }
                        after_names.push(NamedDependency {
                            name: target.to_string(),
                            on,
                        });
                    } else {
                        return Err(err(
                            at("after", t),
                            format!(
                                "{what} field `after`: {target:?} is not a job in this file ({}) nor a job id",
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        // A lone job without a name is named as `submit` names it.
        if single_unnamed {
            spec.ensure_name();
        }
        out.push(GraphJob {
            name: spec.name.clone(),
            spec,
            after_names,
        });
    }
    let order = topological_order(&out).map_err(|cycle| {
        err(
            locate(text, "name", &cycle[0], 1),
            format!(
                "field `after`: the jobs wait for each other in a cycle: {}",
                cycle.join(" → ")
            ),
        )
    })?;
    let mut by_name: HashMap<String, GraphJob> =
        out.into_iter().map(|j| (j.name.clone(), j)).collect();
    Ok(Graph {
        jobs: order
            .into_iter()
            .filter_map(|n| by_name.remove(&n))
            .collect(),
    })
}

/// The jobs' names, dependencies first; or the names of a cycle.
pub fn topological_order(jobs: &[GraphJob]) -> Result<Vec<String>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut mark = vec![Mark::New; jobs.len()];
    let mut order = Vec::new();
    // Iterative depth-first search, so a long chain cannot overflow the stack.
    for start in 0..jobs.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some((node, next)) = stack.pop() {
            let deps = &jobs[node].after_names;
            if next < deps.len() {
                stack.push((node, next + 1));
                let Some(&dep) = index.get(deps[next].name.as_str()) else {
                    continue;
                };
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| jobs[*n].name.clone())
                            .collect();
                        cycle.push(jobs[dep].name.clone());
                        return Err(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                order.push(jobs[node].name.clone());
            }
        }
    }
    Ok(order)
}

fn parse_statuses(s: &str) -> Result<Vec<JobStatus>, String> {
    s.split(',')
        .map(|st| match st.trim().parse::<JobStatus>() {
            Ok(s @ (JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)) => Ok(s),
            _ => Err(format!("{st:?}: after takes done, failed or cancelled")),
        })
        .collect()
}

/// `--start-after`: RFC 3339, or `+30s`, `+30m`, `+2h`, `+1d` from `now`.
pub fn parse_time(s: &str, now: Millis) -> Result<Millis, String> {
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected +N followed by s, m, h or d"))?;
        let secs = match unit {
            "s" | "" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
        };
        return Ok(now + secs * 1000);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| format!("{s:?} is not RFC 3339 (2026-11-23T22:00:00+01:00) or +2h: {e}"))
}

/// The file field a spec error is about, and its value (to find its line).
fn spec_error_field(e: &SpecError, spec: &JobSpec) -> (&'static str, String) {
    match e {
        SpecError::NoCommand => ("command", String::new()),
        SpecError::Frames(_) => ("frames", spec.frames.clone()),
        SpecError::Priority(p) => ("priority", p.to_string()),
        SpecError::MaxAttempts => ("max_attempts", "0".into()),
        SpecError::MaxLogMb(n) => ("max_log_mb", n.to_string()),
        SpecError::BadName { field, value } => (
            if *field == "limit" { "limit" } else { field },
            value.clone(),
        ),
        SpecError::BadAddress(a) => ("notify", a.clone()),
        SpecError::TooLong { field, .. }
        | SpecError::TooMany { field, .. }
        | SpecError::Nul { field } => (field, String::new()),
        SpecError::TargetTaskMinutes(n) => ("target_task_minutes", n.to_string()),
        SpecError::Collect(_) => ("collect", String::new()),
        // Job files have no tiles yet: they come from the command line.
        SpecError::Tiles(_) | SpecError::TilesBlocksize(_) => ("tiles", String::new()),
    }
}

/// The 1-based line where `field` holds `value` for the `nth` time (JSON
/// and TOML alike; the value may sit in an array below its key), or the
/// first line with that key.
fn locate(text: &str, field: &str, value: &str, nth: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // The key each line belongs to: its own, or the nearest one above.
    let mut owner: Vec<Option<&str>> = Vec::with_capacity(lines.len());
    let mut current = None;
    for l in &lines {
        if let Some(k) = key_of(l) {
            current = Some(k);
        }
        owner.push(current);
    }
    if !value.is_empty() {
        for needle in [format!("\"{value}\""), value.to_string()] {
            let hits: Vec<usize> = (0..lines.len())
                .filter(|&i| owner[i] == Some(field) && lines[i].contains(&needle))
                .collect();
            if let Some(i) = hits.get(nth - 1) {
                return Some(i + 1);
            }
        }
    }
    (0..lines.len())
        .find(|&i| key_of(lines[i]) == Some(field))
        .map(|i| i + 1)
}

/// The key a line starts with: `name = …` (TOML) or `"name": …` (JSON).
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start().trim_start_matches(['{', ',', '[', ' ']);
    let quoted = t.starts_with('"');
    let t = t.trim_start_matches('"');
    let end = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (k, rest) = t.split_at(end);
    let rest = rest.strip_prefix('"').filter(|_| quoted).unwrap_or(rest);
    let sep = rest.trim_start();
    (!k.is_empty() && (sep.starts_with('=') || sep.starts_with(':'))).then_some(k)
}

fn toml_line(text: &str, e: &toml::de::Error) -> Option<usize> {
    e.span()
        .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1)
}

fn locate_json_error(_text: &str, e: &serde_json::Error) -> Option<usize> {
    (e.line() > 0).then_some(e.line())
}

#[cfg(test)]
mod tests;
