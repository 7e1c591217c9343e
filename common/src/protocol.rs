//! Every message between master and engine, and how it travels.
//!
//! One enum per direction: [`FromEngine`] and [`ToEngine`]. On the wire a
//! message is one ZeroMQ frame (after the ROUTER's identity frame):
//!
//! ```text
//! +---------+---------+------------------+     +-------------------------+
//! | version | seq     | body (postcard)  |  +  | HMAC-SHA256 of frame 1  |  (only with a farm key)
//! | u16 LE  | u64 LE  |                  |     | 32 bytes                |
//! +---------+---------+------------------+     +-------------------------+
//! ```
//!
//! The fixed header lets a receiver refuse a wrong version before touching the
//! body; the size cap is checked before anything is decoded; decoding returns
//! [`DecodeError`] values and never panics. Sequence numbers start from the
//! sender's clock in microseconds, so they keep rising across restarts and a
//! [`ReplayGuard`] can refuse a replayed message.

use crate::frames::Block;
use crate::model::{EngineFacts, EngineId, JobId, TaskKey};
use crate::Millis;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u16 = 3;

/// The largest message either side accepts; larger ones are refused unread.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The most one message may put on the wire, all its frames together (the
/// body, its header and MAC, with room to spare). The transport ends a
/// connection whose frame header announces more, before allocating for it.
pub const MAX_WIRE_BYTES: usize = MAX_MESSAGE_BYTES + 4096;

const HEADER: usize = 10;
const MAC_LEN: usize = 32;

/// A task attempt: the unit of assignment, result and acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
}

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Registration accepted. `cancel` names held attempts the master no
    /// longer wants run (given to another engine meanwhile).
    Welcome {
        heartbeat_ms: u32,
        cancel: Vec<AttemptKey>,
    },
    /// Run these tasks of one job. The job's command travels once per batch.
    Assign(Assign),
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
}

fn default_max_log_bytes() -> u64 {
    u64::from(crate::model::DEFAULT_MAX_LOG_MB) << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub index: u32,
    pub attempt: u32,
    pub block: Block,
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
    #[error("message has no authentication code, but this farm requires a key: give the engine --key-file")]
    Unauthenticated,
    #[error("authentication code does not match: master and engine have different farm keys")]
    BadMac,
    #[error("too many frames ({0})")]
    TooManyFrames(usize),
    #[error("malformed body: {0}")]
    Malformed(String),
}

/// The shared secret of a farm. Messages carry an HMAC-SHA256 made with it.
#[derive(Clone)]
pub struct FarmKey(Vec<u8>);

impl std::fmt::Debug for FarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FarmKey(..)")
    }
}

impl FarmKey {
    pub const MIN_LEN: usize = 16;

    pub fn new(bytes: &[u8]) -> Result<FarmKey, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "farm key is {} bytes; use at least {} (e.g. `head -c 32 /dev/urandom | base64 > farm.key`)",
                bytes.len(),
                Self::MIN_LEN
            ));
        }
        Ok(FarmKey(bytes.to_vec()))
    }

    /// Reads a key file; surrounding white space is not part of the key.
    pub fn load(path: &std::path::Path) -> Result<FarmKey, String> {
        let raw = std::fs::read(path)
            .map_err(|e| format!("cannot read farm key {}: {e}", path.display()))?;
        let trimmed = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
        FarmKey::new(&trimmed).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

/// Encodes a message into its frames.
pub fn encode<T: Serialize>(msg: &T, seq: u64, key: Option<&FarmKey>) -> Vec<Bytes> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    // Serialising our own in-memory types into a Vec cannot fail.
    let buf = postcard::to_extend(msg, buf).expect("protocol types serialise");
    let mut frames = Vec::with_capacity(2);
    if let Some(key) = key {
        let mut mac = key.mac();
        mac.update(&buf);
        frames.push(Bytes::from(buf));
        frames.push(Bytes::copy_from_slice(&mac.finalize().into_bytes()));
    } else {
        frames.push(Bytes::from(buf));
    }
    frames
}

/// Decodes a message from its frames (without the ROUTER's identity frame),
/// returning its sequence number and body.
pub fn decode<T: DeserializeOwned>(
    frames: &[Bytes],
    key: Option<&FarmKey>,
) -> Result<(u64, T), DecodeError> {
    let body = frames.first().ok_or(DecodeError::Empty)?;
    if frames.len() > 2 {
        return Err(DecodeError::TooManyFrames(frames.len()));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversized(body.len()));
    }
    if body.len() < HEADER {
        return Err(DecodeError::Truncated(body.len()));
    }
    let version = u16::from_le_bytes([body[0], body[1]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::WrongVersion { got: version });
    }
    if let Some(key) = key {
        let tag = frames.get(1).ok_or(DecodeError::Unauthenticated)?;
        if tag.len() != MAC_LEN {
            return Err(DecodeError::BadMac);
        }
        let mut mac = key.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| DecodeError::BadMac)?;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[2..HEADER]);
    let msg =
        postcard::from_bytes(&body[HEADER..]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok((u64::from_le_bytes(seq), msg))
}

/// A sequence counter that starts from the clock, so it rises across restarts.
#[derive(Debug)]
pub struct SeqCounter(u64);

impl SeqCounter {
    pub fn from_clock() -> SeqCounter {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        SeqCounter(micros)
    }
    pub fn advance(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// Refuses a sequence number that is not above every one seen before.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayGuard {
    last: u64,
}

impl ReplayGuard {
    /// True (and remembered) when `seq` is fresh; false for a replay.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq > self.last {
            self.last = seq;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> FarmKey {
        FarmKey::new(b"0123456789abcdef0123").unwrap()
    }

    fn sample() -> FromEngine {
        FromEngine::Finished(Finished {
            attempt: AttemptKey {
                task: TaskKey {
                    job: JobId(3),
                    index: 9,
                },
                attempt: 2,
            },
            outcome: Outcome {
                exit_code: Some(0),
                wall_ms: 12,
                ..Default::default()
            },
        })
    }

    #[test]
    fn round_trips_with_and_without_key() {
        let frames = encode(&sample(), 42, None);
        let (seq, back): (u64, FromEngine) = decode(&frames, None).unwrap();
        assert_eq!((seq, back), (42, sample()));
        let frames = encode(&sample(), 43, Some(&key()));
        assert_eq!(frames.len(), 2);
        let (seq, back): (u64, FromEngine) = decode(&frames, Some(&key())).unwrap();
        assert_eq!((seq, back), (43, sample()));
    }

    #[test]
    fn refuses_bad_messages_as_values() {
        let frames = encode(&sample(), 1, None);
        assert_eq!(
            decode::<FromEngine>(&frames, Some(&key())).unwrap_err(),
            DecodeError::Unauthenticated
        );
        let other = FarmKey::new(b"another key of 16+ bytes").unwrap();
        let signed = encode(&sample(), 1, Some(&other));
        assert_eq!(
            decode::<FromEngine>(&signed, Some(&key())).unwrap_err(),
            DecodeError::BadMac
        );
        let mut wrong = frames[0].to_vec();
        wrong[0] = 99;
        assert!(matches!(
            decode::<FromEngine>(&[Bytes::from(wrong)], None),
            Err(DecodeError::WrongVersion { got: 99 })
        ));
        let big = Bytes::from(vec![1u8; MAX_MESSAGE_BYTES + 1]);
        assert!(matches!(
            decode::<FromEngine>(&[big], None),
            Err(DecodeError::Oversized(_))
        ));
        assert_eq!(
            decode::<FromEngine>(&[], None).unwrap_err(),
            DecodeError::Empty
        );
        assert!(matches!(
            decode::<FromEngine>(&[Bytes::from_static(b"abc")], None),
            Err(DecodeError::Truncated(3))
        ));
    }

    #[test]
    fn replay_guard_refuses_old_sequence_numbers() {
        let mut g = ReplayGuard::default();
        assert!(g.accept(5));
        assert!(!g.accept(5));
        assert!(!g.accept(4));
        assert!(g.accept(6));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(FarmKey::new(b"short").is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..300), tag in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut with_version = PROTOCOL_VERSION.to_le_bytes().to_vec();
            with_version.extend_from_slice(&body);
            let _ = decode::<FromEngine>(&[Bytes::from(body.clone())], None);
            let _ = decode::<ToEngine>(&[Bytes::from(with_version.clone())], None);
            let _ = decode::<FromEngine>(&[Bytes::from(with_version), Bytes::from(tag)], Some(&key()));
        }
    }
}
