//! The DrQueue master: the I/O around `drqueue_scheduler`, the pure state
//! machine that decides what runs where (re-exported as [`scheduler`]).
//!
//! | module | concern |
//! |---|---|
//! | [`cas`] | the content store: uploaded inputs and collected outputs, by hash |
//! | [`cas_gc`] | its garbage collection: what no live job names, unused for the keep time |
//! | [`events`] | what flows into the core: events, typed API requests, replies |
//! | [`core`] | the event loop that owns the scheduler and feeds it |
//! | [`feed`] | the live feed of changes behind `GET /api/events` |
//! | [`router`] | the engines' ZeroMQ ROUTER socket: decode, authenticate, send |
//! | [`http`] | the HTTP/JSON API and dashboard |
//! | [`notify`] | email notifications: the mailer (lettre over SMTP) |
//! | [`store`] | persistence behind one trait, group-committed by one writer thread |
//! | [`users`] | people and their API tokens: roles, authentication |
//! | [`transfer`] | blob chunks engines fetch (inputs) and store (outputs) over their link |
//! | [`server`] | wiring it all together |
pub mod cas;
pub mod cas_gc;
pub mod core;
pub mod enroll;
pub mod events;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod router;
pub mod server;
pub mod sessions;
pub mod store;
pub mod transfer;
pub mod users;
pub mod watch_folder;

pub use drqueue_scheduler as scheduler;
