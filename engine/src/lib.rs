//! The DrQueue engine: runs tasks on a render node. The processes
//! themselves are `drqueue_runner`'s, shared with `drqueue run-local`.
//!
//! | module | concern |
//! |---|---|
//! | [`engine`] | the loop: link supervision, queue, slots, results kept until acknowledged |
//! | [`blobs`] | input and output blobs over the link, for the slot threads |
//! | [`link`] | one DEALER connection to the master (the only socket code) |
//! | [`facts`] | what the engine reports about its machine and renderers |
//! | [`check`] | the known-good check a sick engine runs to get work again |
//! | [`identity`] | the engine's id, refused on a copied state directory |
//! | [`logfile`] | the engine's own log file, rotated by size |
pub mod blobs;
pub mod check;
pub mod engine;
pub mod facts;
pub mod identity;
pub mod link;
pub mod logfile;
pub mod rediscover;

/// An error that restarting cannot fix (a copied state directory, a revoked
/// engine): the engine exits with status 78 (`EX_CONFIG`), which the
/// systemd unit does not restart.
#[derive(Debug)]
pub struct Permanent(pub String);

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Permanent {}
