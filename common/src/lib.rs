//! DrQueue's shared vocabulary.
//!
//! Everything the master, the engines and the clients must agree on lives here
//! and nowhere else:
//!
//! - [`cas`]: content-addressed job inputs: blob hashes, manifests, safe paths;
//! - [`blocked`]: typed reasons ready tasks are not running, and their wording;
//! - [`display`]: how durations and clock times read, in one place;
//! - [`frames`]: frame sets (`1-100x5`, `1,3,7-9`) and how a job is cut into tasks;
//! - [`graph`]: job files (TOML or JSON), one job or a graph of named jobs;
//! - [`keys`]: key pairs, fingerprints and the join-token format;
//! - [`listing`]: pages, job filters and the job summary row of listings;
//! - [`model`]: jobs, tasks, engines and their statuses as users see them;
//! - [`preset`]: renderer presets (`--preset blender`) and their command lines;
//! - [`template`]: the command-template placeholders (`{start}`, `{padframe:4}` …);
//! - [`task_blocks`]: how a job's frames become tasks, fixed or `--blocksize auto`;
//! - [`spec_bounds`]: the size of everything in a job spec, and no NUL bytes;
//! - [`protocol`]: every message between master and engine;
//! - [`session`]: the encrypted, mutually authenticated session they travel
//!   in, its framing and version check.

pub mod blocked;
pub mod cas;
pub mod display;
pub mod frames;
pub mod graph;
pub mod keys;
pub mod listing;
pub mod model;
pub mod preset;
pub mod preset_tiles;
pub mod protocol;
pub mod session;
#[cfg(feature = "signals")]
pub mod signals;
pub mod signature;
pub mod spec_bounds;
pub mod task_blocks;
pub mod template;
#[doc(hidden)]
pub mod test_skip;
pub mod tiles;
pub mod usage;
pub mod users;
pub mod views;

/// Milliseconds since the Unix epoch: the one time unit of the model.
pub type Millis = u64;

/// The current wall-clock time in [`Millis`]. Only I/O code calls this; the
/// scheduler is handed the time with each event.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// This machine's name (Linux), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
