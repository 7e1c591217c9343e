//! The DrQueue engine: runs tasks on a render node. The processes
//! themselves are `drqueue_runner`'s, shared with `drqueue run-local`.
//!
//! | module | concern |
//! |---|---|
//! | [`engine`] | the loop: link supervision, queue, slots, results kept until acknowledged |
//! | [`link`] | one DEALER connection to the master (the only socket code) |
//! | [`facts`] | what the engine reports about its machine and renderers |
//! | [`check`] | the known-good check a sick engine runs to get work again |
//! | [`identity`] | the engine's id, refused on a copied state directory |
//! | [`logfile`] | the engine's own log file, rotated by size |
pub mod check;
pub mod engine;
pub mod facts;
pub mod identity;
pub mod link;
pub mod logfile;
