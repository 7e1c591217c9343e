//! How an engine, the CLI and the Python `Client()` find the master when no
//! one told them where it is, and how the master makes itself found.
//!
//! | module | concern |
//! |---|---|
//! | `advert` | what one master says about itself (TXT keys), parsed apart from I/O |
//! | `mdns` | the master's `_drqueue._tcp.local.` registration and the 2 s browse |
//! | `srv` | a DNS SRV + TXT query for `_drqueue._tcp.DOMAIN` over UDP (wire format only here) |
//! | `config` | the config file (`~/.config/drqueue/config.toml`, `/etc/drqueue/config.toml`) |
//! | `resolve` | the order: flag, environment, config file, loopback, DNS SRV, mDNS |

pub mod advert;
pub mod config;
pub mod mdns;
pub mod resolve;
pub mod srv;

pub use advert::Advert;
pub use resolve::{Found, Resolver, Via, Want};

/// The DNS-SD service type, on the link (mDNS) and in a DNS domain (SRV).
pub const SERVICE: &str = "_drqueue._tcp";
/// `SERVICE` in the mDNS domain.
pub const MDNS_SERVICE: &str = "_drqueue._tcp.local.";
