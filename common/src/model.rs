//! The farm's model as users see it: jobs, tasks, engines, pools and limits.
//! What the API returns for them lives in [`crate::views`], re-exported here.
//!
//! These types are what the HTTP API returns and what the CLI and Python
//! module print; field names are fixed by SPEC.md. The master keeps its own
//! compact state for scheduling and converts to these views on demand.

pub use crate::blocked::Blocked;
use crate::frames::{FrameSet, FrameSetError};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A job's id, assigned by the master in submission order. On the wire and
/// in the store it is the bare number.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl JobId {
    /// The first job's id on a new farm.
    pub const FIRST: JobId = JobId(1);

    /// The id the master hands out after this one.
    pub fn next(self) -> JobId {
        JobId(self.0 + 1)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(JobId)
    }
}

impl From<u64> for JobId {
    fn from(n: u64) -> Self {
        JobId(n)
    }
}

/// A task is named by its job and its index within the job.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct TaskKey {
    pub job: JobId,
    pub index: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.index)
    }
}

/// An engine's stable id: chosen by the engine on first start and kept in its
/// state directory, so a restarted engine is the same engine to the master.
/// On the wire and in the store it is the bare string.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct EngineId(String);

impl EngineId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EngineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for EngineId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// So maps keyed by id are looked up with a `&str` from a request.
impl std::borrow::Borrow<str> for EngineId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EngineId {
    fn from(s: &str) -> Self {
        EngineId(s.to_string())
    }
}

impl From<String> for EngineId {
    fn from(s: String) -> Self {
        EngineId(s)
    }
}

impl From<EngineId> for String {
    fn from(id: EngineId) -> Self {
        id.0
    }
}

impl PartialEq<str> for EngineId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for EngineId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {:?}; expected one of: {}",
                        stringify!($name), s, [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// A job's status.
    JobStatus {
        Waiting => "waiting",
        Queued => "queued",
        Running => "running",
        Paused => "paused",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobStatus {
    /// Done, failed and cancelled jobs never change again on their own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

string_enum!(
    /// A task's status.
    TaskStatus {
        Waiting => "waiting",
        Ready => "ready",
        Assigned => "assigned",
        Running => "running",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
    /// Held by an engine: counts against its HWM.
    pub fn is_held(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::Running)
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

string_enum!(
    /// What the farm does with a task that prints nothing and reports no
    /// progress for `stall_after_secs`.
    OnStall {
        Warn => "warn",
        Requeue => "requeue",
    }
);

// string_enum! takes no variant attributes, so `#[default]` cannot be used.
#[allow(clippy::derivable_impls)]
impl Default for OnStall {
    fn default() -> Self {
        OnStall::Requeue
    }
}

/// A task quiet this long is stalled, unless the job says otherwise.
pub const DEFAULT_STALL_AFTER_SECS: u64 = 15 * 60;

fn default_stall_after_secs() -> u64 {
    DEFAULT_STALL_AFTER_SECS
}

string_enum!(
    /// An engine's state as the master sees it.
    EngineState {
        Idle => "idle",
        Busy => "busy",
        Offline => "offline",
        Disabled => "disabled",
        Sick => "sick",
        Revoked => "revoked",
        Pending => "pending",
    }
);

string_enum!(
    /// Which endings of a job send its notification.
    NotifyOn {
        Done => "done",
        Failed => "failed",
        Both => "both",
    }
);

// string_enum! takes no variant attributes, so `#[default]` cannot be used.
#[allow(clippy::derivable_impls)]
impl Default for NotifyOn {
    fn default() -> Self {
        NotifyOn::Both
    }
}

impl NotifyOn {
    /// Does a job that ended `status` notify? `failed` covers cancelled too:
    /// anything that did not render.
    pub fn fires_on(self, status: JobStatus) -> bool {
        match self {
            NotifyOn::Both => status.is_terminal(),
            NotifyOn::Done => status == JobStatus::Done,
            NotifyOn::Failed => matches!(status, JobStatus::Failed | JobStatus::Cancelled),
        }
    }
}

string_enum!(
    /// Where a job's notification stands.
    NotifyState {
        Waiting => "waiting",
        Pending => "pending",
        Sending => "sending",
        Sent => "sent",
        Failed => "failed",
        Skipped => "skipped",
    }
);

/// A job's email notification: a dependent task that runs on the master
/// when the job ends, persisted with the job and retried until sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notification {
    pub state: NotifyState,
    pub to: Vec<String>,
    pub on: NotifyOn,
    /// Sending attempts made so far.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<Millis>,
}

/// What a job needs of an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    pub min_cores: u32,
    pub min_ram_mb: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// A dependency on another job: this job waits until `job` ends in one of `on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub job: JobId,
    #[serde(default = "default_dependency_statuses")]
    pub on: Vec<JobStatus>,
}

fn default_dependency_statuses() -> Vec<JobStatus> {
    vec![JobStatus::Done]
}

pub const DEFAULT_PRIORITY: u32 = 500;
pub const MAX_PRIORITY: u32 = 1000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_POOL: &str = "default";
/// A task's log keeps at most this many MiB by default: its head and tail.
pub const DEFAULT_MAX_LOG_MB: u32 = 64;
pub const MAX_MAX_LOG_MB: u32 = 4096;
pub use crate::task_blocks::{DEFAULT_TARGET_TASK_MINUTES, MAX_TARGET_TASK_MINUTES};

/// A job as a client submits it. Unknown fields are refused so that a typo in
/// a job file or HTTP body is an error, not a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub owner: String,
    pub command: Vec<String>,
    pub frames: String,
    pub blocksize: u32,
    pub priority: u32,
    pub pool: String,
    pub requirements: Requirements,
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub max_attempts: u32,
    /// Per-task wall-clock limit in seconds; 0 means none.
    pub timeout_secs: u64,
    /// Per-task log cap in MiB: past it the log keeps its head and tail.
    pub max_log_mb: u32,
    /// How many engines may run this job at once; 0 means no cap.
    pub max_engines: u32,
    pub limits: Vec<String>,
    pub after: Vec<Dependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_after: Option<Millis>,
    pub notify: Vec<String>,
    pub notify_on: NotifyOn,
    pub paused: bool,
    /// Retry even a failure that no retry can fix (a renderer's fatal-error
    /// line): by default such a task fails at its first attempt.
    #[serde(default)]
    pub retry_deterministic: bool,
    /// Files each frame must write (`{frame}`, `{padframe:N}`), relative to
    /// `cwd`: a task that leaves one missing, or smaller than
    /// `min_output_bytes`, fails however it exited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default = "default_min_output_bytes")]
    pub min_output_bytes: u64,
    /// A running task with no new output and no progress for this long is
    /// stalled (0: never).
    #[serde(default = "default_stall_after_secs")]
    pub stall_after_secs: u64,
    #[serde(default)]
    pub on_stall: OnStall,
    /// `--blocksize auto`: each engine's task is cut at dispatch to about
    /// this many minutes of its measured speed (`blocksize` is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_task_minutes: Option<u32>,
    /// The manifest (a blob in the master's content store) of the folder
    /// `drqueue submit --upload` sent: each task runs in its own copy of it
    /// on the engine, and `{jobdir}` names that copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<crate::cas::BlobHash>,
    /// Globs relative to the task's folder (`out/*.png`): files matching
    /// them that are new or changed after a task are uploaded to the master
    /// and fetched with `drqueue download`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collect: Vec<String>,
    /// `--tiles`: each frame rendered as tiles across the farm and stitched
    /// by an assemble task ([`crate::tiles`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<crate::tiles::Tiles>,
}

fn default_min_output_bytes() -> u64 {
    1
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            name: String::new(),
            owner: String::new(),
            command: Vec::new(),
            frames: "1".into(),
            blocksize: 1,
            priority: DEFAULT_PRIORITY,
            pool: DEFAULT_POOL.into(),
            requirements: Requirements::default(),
            env: BTreeMap::new(),
            cwd: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout_secs: 0,
            max_log_mb: DEFAULT_MAX_LOG_MB,
            max_engines: 0,
            limits: Vec::new(),
            after: Vec::new(),
            start_after: None,
            notify: Vec::new(),
            notify_on: NotifyOn::Both,
            paused: false,
            retry_deterministic: false,
            outputs: Vec::new(),
            min_output_bytes: 1,
            stall_after_secs: DEFAULT_STALL_AFTER_SECS,
            on_stall: OnStall::Requeue,
            target_task_minutes: None,
            inputs: None,
            collect: Vec::new(),
            tiles: None,
        }
    }
}

/// Why a job spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the job has no command: give one after `--`, e.g. `drqueue submit -- blender -b scene.blend -f {{frame}}`")]
    NoCommand,
    #[error("frames: {0}")]
    Frames(#[from] FrameSetError),
    #[error("priority {0} is out of range: use 0 to {MAX_PRIORITY} (higher runs first)")]
    Priority(u32),
    #[error("max_attempts must be at least 1")]
    MaxAttempts,
    #[error("max_log_mb {0} is out of range: use 1 to {MAX_MAX_LOG_MB}")]
    MaxLogMb(u32),
    #[error("{field} {value:?} is not a valid name: use letters, digits, '-', '_' and '.'")]
    BadName { field: &'static str, value: String },
    #[error("--notify {0:?} is not an email address (user@example.com)")]
    BadAddress(String),
    #[error("{field} is too long: {len} bytes, the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field}: {count} entries, the limit is {max}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{field} holds a NUL byte, which no program can be given: remove it")]
    Nul { field: &'static str },
    #[error("target_task_minutes {0} is out of range: use 1 to {MAX_TARGET_TASK_MINUTES}")]
    TargetTaskMinutes(u32),
    #[error("field `collect`: {0}")]
    Collect(String),
    #[error("{0}")]
    Tiles(#[from] crate::tiles::TilesError),
    #[error("--tiles renders one frame a task: leave --blocksize at 1 (not {0})")]
    TilesBlocksize(String),
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl JobSpec {
    /// Checks the spec and returns its frame set; the one place where a
    /// submission is judged, used by the master, `run-local` and clients.
    pub fn validate(&self) -> Result<FrameSet, SpecError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SpecError::NoCommand);
        }
        crate::spec_bounds::check(self)?;
        let frames = FrameSet::parse(&self.frames)?;
        self.cut_tasks(&frames)?;
        if self.priority > MAX_PRIORITY {
            return Err(SpecError::Priority(self.priority));
        }
        if self.max_attempts == 0 {
            return Err(SpecError::MaxAttempts);
        }
        if !(1..=MAX_MAX_LOG_MB).contains(&self.max_log_mb) {
            return Err(SpecError::MaxLogMb(self.max_log_mb));
        }
        if !is_simple_name(&self.pool) {
            return Err(SpecError::BadName {
                field: "pool",
                value: self.pool.clone(),
            });
        }
        for a in &self.notify {
            let plausible = a.len() <= 254
                && a.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && (host.contains('.') || host == "localhost")
                })
                && !a.chars().any(|c| c.is_whitespace() || "<>,;\"".contains(c));
            if !plausible {
                return Err(SpecError::BadAddress(a.clone()));
            }
        }
        for l in &self.limits {
            if !is_simple_name(l) {
                return Err(SpecError::BadName {
                    field: "limit",
                    value: l.clone(),
                });
            }
        }
        Ok(frames)
    }

    /// The name shown when the user gave none: the program's file name.
    pub fn default_name(&self) -> String {
        self.command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
            .unwrap_or_else(|| "job".into())
    }

    /// Gives the spec its default name if it has none (the one place that
    /// rule is applied).
    pub fn ensure_name(&mut self) {
        if self.name.is_empty() {
            self.name = self.default_name();
        }
    }
}

/// What an engine tells the master about its machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFacts {
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub arch: String,
    pub cores: u32,
    pub ram_mb: u64,
    pub pools: Vec<String>,
    pub capabilities: Vec<String>,
    /// Renderer versions where asking is cheap: capability → version.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// How the engine keeps a task's processes from outliving it. (Never
    /// skipped when empty: facts travel in postcard, which is positional.)
    #[serde(default)]
    pub containment: String,
}

pub use crate::views::*;

mod counts;
pub use counts::Counts;

#[cfg(test)]
mod tests;
