//! The DrQueue master.
//!
//! - [`scheduler`]: the pure state machine that decides what runs where;
//! - [`store`]: persistence behind one trait, with group commit;
pub mod scheduler;
pub mod store;
