//! The DrQueue master.
//!
//! | module | concern |
//! |---|---|
//! | [`scheduler`] | the pure state machine that decides what runs where |
//! | [`events`] | what flows into the core: events, typed API requests, replies |
//! | [`core`] | the event loop that owns the scheduler and feeds it |
//! | [`router`] | the engines' ZeroMQ ROUTER socket: decode, authenticate, send |
//! | [`http`] | the HTTP/JSON API and dashboard |
//! | [`notify`] | email notifications: the mailer (lettre over SMTP) |
//! | [`store`] | persistence behind one trait, group-committed by one writer thread |
//! | [`server`] | wiring it all together |
pub mod core;
pub mod events;
pub mod http;
pub mod notify;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod store;
