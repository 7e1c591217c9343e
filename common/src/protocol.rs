//! Every message between master and engine, and how it travels.
//!
//! One enum per direction: [`FromEngine`] and [`ToEngine`]. A master message
//! travels alone; an engine seals a loop turn's messages together as one
//! `Vec<FromEngine>`. Both go postcard-encoded and sealed in the
//! connection's encrypted session
//! ([`crate::session`], which also owns the framing and the version check).
//! Decoding returns [`DecodeError`] values and never panics.

use crate::cas::BlobHash;
use crate::frames::Block;
use crate::model::{EngineFacts, EngineId, JobId, TaskKey};
use crate::Millis;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u16 = 8;

/// An idle engine (nothing queued or running) beats once in this many of
/// the master's heartbeat intervals: a thousand idle engines cost the master
/// a third of the messages. The master asks for beats at a quarter of its
/// engine timeout at most, so it still hears an idle engine within three
/// quarters of it.
pub const IDLE_BEATS: u32 = 3;

/// The largest message either side accepts; larger ones are refused unread.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The most one message may put on the wire, all its frames together (the
/// body, its header and the chunks' tags, with room to spare). The transport ends a
/// connection whose frame header announces more, before allocating for it.
pub const MAX_WIRE_BYTES: usize = MAX_MESSAGE_BYTES + 4096;

/// A task attempt: the unit of assignment, result and acknowledgement.
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
pub struct AttemptKey {
    pub task: TaskKey,
    pub attempt: u32,
}

/// Messages an engine sends to the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromEngine {
    /// First message of every connection, and again after any reconnect.
    Register(Register),
    /// Sent every heartbeat interval; the master answers [`ToEngine::Pong`].
    Heartbeat(Heartbeat),
    /// A task's process started `ago_ms` ago. Engines send this only for
    /// attempts still running a moment after they start: for quick tasks
    /// the Finished message says it all, at half the messages.
    Started { attempt: AttemptKey, ago_ms: u32 },
    /// Output of an attempt, at `offset` bytes into its log.
    Log {
        attempt: AttemptKey,
        offset: u64,
        data: Vec<u8>,
    },
    /// An attempt ended. Re-sent until the master acknowledges it.
    Finished(Finished),
    /// The engine gives these attempts back unrun (or killed) on shutdown;
    /// they do not count as failed attempts.
    Release(Vec<AttemptKey>),
    /// Fresh facts (renderers installed or removed, RAM changed), sent on
    /// the engine's facts cache time.
    Facts(EngineFacts),
    /// How the check task of [`ToEngine::Check`] `id` went.
    CheckResult { id: u64, ok: bool, detail: String },
    /// How far a running attempt has got, 0–100, as its renderer printed
    /// it: at most every 2 s per attempt, and only when it changed.
    Progress { attempt: AttemptKey, percent: f32 },
    /// Send [`ToEngine::Blob`]: up to [`BLOB_CHUNK`] bytes of a blob from
    /// `offset` (an input the engine's cache lacks).
    Fetch { hash: BlobHash, offset: u64 },
    /// A chunk of a blob the engine stores (an output it collected); the
    /// master answers [`ToEngine::Stored`]. Chunks come in order, one at a
    /// time; `total` is the blob's size.
    Store {
        hash: BlobHash,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
}

/// The most bytes one blob message carries: far under the message cap, so
/// a chunk never holds a control message back for long.
pub const BLOB_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub engine: EngineId,
    /// A fresh random number per connection: tells one session from another.
    pub session: u64,
    pub time_ms: Millis,
    pub facts: EngineFacts,
    pub slots: u32,
    pub hwm: u32,
    /// Attempts the engine holds now (queued or running), so a restarted
    /// master can adopt them instead of running them twice.
    pub held: Vec<AttemptKey>,
    /// Results not yet acknowledged. They travel inside the Register so the
    /// master applies them before it dispatches again: a finished task is
    /// never mistaken for a forgotten one and run twice.
    pub finished: Vec<Finished>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub load: f32,
    pub free_ram_mb: u64,
    /// Attempts queued or running on the engine now.
    pub held: u32,
    /// The most attempts the engine has held at once since it started.
    pub peak_held: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub attempt: AttemptKey,
    pub outcome: Outcome,
}

/// How an attempt ended, with what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    /// The exit code of the last command run, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_rss_kb: u64,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Why the command could not run at all (not found, bad cwd …).
    pub error: Option<String>,
    /// The total length of the attempt's log.
    pub log_bytes: u64,
    /// A failure's [`crate::signature`]: how it ended and its last log line,
    /// masked. What tells the job's fault from the engine's.
    #[serde(default)]
    pub signature: Option<String>,
    /// The line after which no retry can help (the renderer's fatal-error
    /// pattern matched it): the task fails without its other attempts.
    #[serde(default)]
    pub fatal: Option<String>,
    /// The files the attempt wrote, as found when it ended: those the job
    /// expects and those the renderer said it saved (at most
    /// [`MAX_OUTPUTS`]).
    #[serde(default)]
    pub outputs: Vec<OutputFile>,
    /// Small PNGs of the images written, by frame. The master keeps them
    /// apart from the attempt's record.
    #[serde(default)]
    pub thumbnails: Vec<Thumbnail>,
    /// The last progress the renderer printed, 0–100: where a render that
    /// ended early stopped, or 100 for one that finished its pixels.
    #[serde(default)]
    pub progress: Option<f32>,
}

/// The most thumbnails one attempt sends, and the most bytes each may take:
/// together well under one message's cap.
pub const MAX_THUMBNAILS: usize = 16;
pub const MAX_THUMBNAIL_BYTES: usize = 48 * 1024;

/// A small PNG of a frame's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Thumbnail {
    pub frame: i64,
    pub png: Vec<u8>,
}

/// The most output files one attempt records.
pub const MAX_OUTPUTS: usize = 1000;

/// A file an attempt wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutputFile {
    /// As the job names it (relative to its `cwd`) or the renderer printed it.
    pub path: String,
    pub size: u64,
    /// Set when the file was collected into the master's content store
    /// (`--collect`): `drqueue download` fetches it by this. (Never
    /// skipped when None: the engine link's encoding is positional.)
    #[serde(default)]
    pub hash: Option<BlobHash>,
}

impl Outcome {
    /// Only an exit code of 0, with no timeout, cancel or error, is success.
    pub fn is_success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled && self.error.is_none()
    }

    /// A one-line account for logs and `show`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("could not run: {e}");
        }
        if self.timed_out {
            return "timed out".into();
        }
        if self.cancelled {
            return "cancelled".into();
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended".into(),
        }
    }
}

/// Messages the master sends to an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToEngine {
    /// The handshake proved an enrolled engine: register now.
    Admitted,
    /// The engine's key is not enrolled yet. It shows as `pending` in
    /// `drqueue engines` until someone runs `drqueue engine accept NAME`
    /// (comparing this fingerprint) or it comes back with a join token.
    Pending {
        fingerprint: String,
    },
    /// Another connection proved this engine's identity and took over: stop
    /// and do not reconnect, so two processes never take turns.
    TakenOver,
    /// Registration accepted. `cancel` names held attempts the master no
    /// longer wants run (given to another engine meanwhile).
    Welcome {
        heartbeat_ms: u32,
        cancel: Vec<AttemptKey>,
    },
    /// Run these tasks of one job. The job's command travels once per batch.
    Assign(Box<Assign>),
    /// Kill these attempts if they are still running.
    Cancel(Vec<AttemptKey>),
    /// These results are committed to the store: forget them.
    Ack(Vec<AttemptKey>),
    Pong,
    /// The master does not know this engine's session (it restarted, or
    /// declared the engine lost): register again.
    Reregister,
    /// The message was refused; the engine should log this and stop retrying
    /// if the reason is permanent (wrong version, wrong key).
    Refused {
        reason: String,
    },
    /// The engine is revoked (`drqueue engine revoke`): stop every task and
    /// exit, and do not come back without being enrolled afresh.
    Revoked,
    /// A chunk of a blob from `offset`, of `total` bytes in all; None when
    /// the master has no such blob.
    Blob {
        hash: BlobHash,
        offset: u64,
        total: Option<u64>,
        data: Vec<u8>,
    },
    /// How the [`FromEngine::Store`] chunk at `offset` went: `next` is the
    /// offset the master wants next (the blob's size once it is stored), or
    /// `error`.
    Stored {
        hash: BlobHash,
        offset: u64,
        next: u64,
        error: Option<String>,
    },
    /// Run a known-good check task and answer [`FromEngine::CheckResult`]:
    /// a sick engine that passes gets work again. An empty command means the
    /// engine's built-in check (spawn a process, write and read a file).
    Check {
        id: u64,
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assign {
    pub job: JobBody,
    pub tasks: Vec<Assignment>,
}

/// What an engine needs to run any task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBody {
    pub id: JobId,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Per-attempt time limit; 0 = none.
    pub timeout_secs: u64,
    /// The attempt's log keeps at most this many bytes (head and tail).
    #[serde(default = "default_max_log_bytes")]
    pub max_log_bytes: u64,
    /// Files each frame must write ([`crate::model::JobSpec::outputs`]).
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub min_output_bytes: u64,
    /// The manifest of the job's uploaded folder: the engine lays it out
    /// for each task and runs the task in it ([`crate::cas`]).
    pub inputs: Option<BlobHash>,
    /// Globs, relative to the task's folder: matching files new or changed
    /// after the task are uploaded to the master and recorded.
    pub collect: Vec<String>,
    /// `--tiles`: the grid, and the job's frame count, from which each
    /// task's role follows ([`crate::tiles::Tiles::role`]).
    pub tiles: Option<TiledJob>,
}

/// A tiled job as its engines need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TiledJob {
    pub tiles: crate::tiles::Tiles,
    pub frames: u32,
}

impl TiledJob {
    pub fn role(&self, index: u32) -> crate::tiles::TaskRole {
        self.tiles.role(index, self.frames)
    }
}

fn default_max_log_bytes() -> u64 {
    u64::from(crate::model::DEFAULT_MAX_LOG_MB) << 20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub index: u32,
    pub attempt: u32,
    pub block: Block,
    /// The files of the tasks this one waits for (a frame's tiles, for its
    /// assemble task), each with its hash in the master's content store.
    pub inputs: Vec<OutputFile>,
}

/// Why a received message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    Oversized(usize),
    #[error("message of {0} bytes is too short for a header")]
    Truncated(usize),
    #[error("protocol version {got}, this side speaks {PROTOCOL_VERSION}: upgrade the older of master and engine")]
    WrongVersion { got: u16 },
    #[error("message does not decrypt under this connection's session (forged, tampered or from another connection)")]
    Unsealed,
    #[error("message replayed within its session")]
    Replayed,
    #[error("too many frames ({0})")]
    TooManyFrames(usize),
    #[error("malformed body: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_describe_themselves() {
        let ok = Outcome {
            exit_code: Some(0),
            ..Default::default()
        };
        assert!(ok.is_success());
        let timed_out = Outcome {
            exit_code: Some(0),
            timed_out: true,
            ..Default::default()
        };
        assert!(!timed_out.is_success());
        assert_eq!(timed_out.describe(), "timed out");
    }
}
