//! Where the master is, in a fixed order, the first answer winning:
//!
//! 1. a flag (`--url` for clients, `--master` for engines);
//! 2. the environment (`DRQUEUE_URL`, `DRQUEUE_MASTER`);
//! 3. the config file (`url`, `engines`; see [`crate::config`]);
//! 4. the loopback default (port 5580 or 5555), if something answers there;
//! 5. DNS SRV `_drqueue._tcp.DOMAIN`, only when a domain is given (`--domain`,
//!    `DRQUEUE_DOMAIN` or the config file), so nothing asks the host's resolver
//!    unasked;
//! 6. an mDNS browse of at most `mdns_wait` (2 s).
//!
//! The answer says which one it came from, so `drqueue farm` and the engine's
//! log can tell the user.

use crate::advert::Advert;
use crate::{config, mdns, srv};
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// What is being looked for: the HTTP API (clients) or the engine endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Api,
    Engines,
}

impl Want {
    fn flag(self) -> &'static str {
        match self {
            Want::Api => "--url",
            Want::Engines => "--master",
        }
    }
    fn env(self) -> &'static str {
        match self {
            Want::Api => "DRQUEUE_URL",
            Want::Engines => "DRQUEUE_MASTER",
        }
    }
    fn loopback(self) -> &'static str {
        match self {
            Want::Api => "http://127.0.0.1:5580",
            Want::Engines => "tcp://127.0.0.1:5555",
        }
    }
    fn of(self, advert: &Advert) -> String {
        match self {
            Want::Api => advert.http.clone(),
            Want::Engines => advert.engines.clone(),
        }
    }
}

/// Which step of the order gave the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Flag(&'static str),
    Env(&'static str),
    Config(PathBuf),
    Loopback,
    DnsSrv(String),
    Mdns(String),
    /// Nothing was found: the loopback default, which nobody answered.
    Default,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Flag(flag) => write!(f, "the {flag} flag"),
            Via::Env(var) => write!(f, "the environment ({var})"),
            Via::Config(path) => write!(f, "the config file {}", path.display()),
            Via::Loopback => write!(f, "a master answering on loopback"),
            Via::DnsSrv(name) => write!(f, "DNS SRV {name}"),
            Via::Mdns(instance) => write!(f, "mDNS ({instance})"),
            Via::Default => write!(f, "the loopback default (no master found)"),
        }
    }
}

/// The master's address and how it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub address: String,
    pub via: Via,
    /// The advertisement, when it came from DNS SRV or mDNS.
    pub advert: Option<Advert>,
}

impl Found {
    /// Whether it came from the network (DNS SRV or mDNS) rather than from
    /// something a user or an admin wrote down.
    pub fn discovered(&self) -> bool {
        matches!(self.via, Via::DnsSrv(_) | Via::Mdns(_))
    }
}

pub struct Resolver {
    pub want: Want,
    pub flag: Option<String>,
    pub domain: Option<String>,
    pub mdns_wait: Duration,
    /// Only a master whose key has this fingerprint (an enrolled engine's
    /// pinned key, or the one its join token names).
    pub trusted: Option<String>,
}

impl Resolver {
    pub fn new(want: Want) -> Resolver {
        Resolver {
            want,
            flag: None,
            domain: None,
            mdns_wait: Duration::from_secs(2),
            trusted: None,
        }
    }

    /// Whether a discovered master may be used: same protocol, active, and
    /// holding the trusted key when one is known.
    pub fn accepts(&self, advert: &Advert) -> Result<(), String> {
        if advert.protocol != drqueue_common::protocol::PROTOCOL_VERSION {
            return Err(format!(
                "{} speaks protocol {}, this side {}",
                advert.instance,
                advert.protocol,
                drqueue_common::protocol::PROTOCOL_VERSION
            ));
        }
        if advert.is_standby() {
            return Err(format!("{} is a standby master", advert.instance));
        }
        if let Some(fp) = &self.trusted {
            if &advert.fingerprint != fp && advert.fingerprint != "unknown" {
                return Err(format!(
                    "{} has key {}, not the trusted {fp}",
                    advert.instance, advert.fingerprint
                ));
            }
        }
        Ok(())
    }

    /// Walks the order. An unusable config file is an error; finding
    /// nothing is `Via::Default` (the caller's connection error then names
    /// the address), with what was tried in the notes.
    pub fn resolve(&self) -> Result<(Found, Vec<String>), String> {
        let want = self.want;
        let plain = |address: String, via: Via| Found {
            address,
            via,
            advert: None,
        };
        if let Some(v) = self.flag.clone().filter(|s| !s.is_empty()) {
            return Ok((plain(v, Via::Flag(want.flag())), Vec::new()));
        }
        if let Some(v) = std::env::var(want.env()).ok().filter(|s| !s.is_empty()) {
            return Ok((plain(v, Via::Env(want.env())), Vec::new()));
        }
        let file = config::load()?;
        let mut domain = self.domain.clone();
        let mut dns_server = None;
        if let Some((path, cfg)) = &file {
            let v = match want {
                Want::Api => cfg.url.clone(),
                Want::Engines => cfg.engines.clone(),
            };
            if let Some(v) = v.filter(|s| !s.is_empty()) {
                return Ok((plain(v, Via::Config(path.clone())), Vec::new()));
            }
            domain = domain.or_else(|| cfg.domain.clone());
            dns_server = cfg.dns_server.clone();
        }
        if answers(want.loopback()) {
            return Ok((plain(want.loopback().into(), Via::Loopback), Vec::new()));
        }
        let mut notes = vec![format!("nothing answers at {}", want.loopback())];
        if let Some(domain) = domain.filter(|d| !d.is_empty()) {
            match self.srv(&domain, dns_server.as_deref()) {
                Ok(Some(found)) => return Ok((found, notes)),
                Ok(None) => notes.push(format!("no usable {}.{domain} SRV record", crate::SERVICE)),
                Err(e) => notes.push(e),
            }
        }
        match mdns::browse(self.mdns_wait, &|a| self.accepts(a).is_ok()) {
            Ok((adverts, skipped)) => {
                notes.extend(skipped);
                for a in adverts {
                    match self.accepts(&a) {
                        Ok(()) => {
                            let via = Via::Mdns(a.instance.clone());
                            return Ok((
                                Found {
                                    address: want.of(&a),
                                    via,
                                    advert: Some(a),
                                },
                                notes,
                            ));
                        }
                        Err(e) => notes.push(e),
                    }
                }
                notes.push(format!(
                    "no {} answered mDNS within {} ms",
                    crate::MDNS_SERVICE,
                    self.mdns_wait.as_millis()
                ));
            }
            Err(e) => notes.push(e),
        }
        Ok((plain(want.loopback().into(), Via::Default), notes))
    }

    fn srv(&self, domain: &str, server: Option<&str>) -> Result<Option<Found>, String> {
        let server = dns_server(server)?;
        let name = format!("{}.{domain}", crate::SERVICE);
        for a in srv::lookup(server, domain, Duration::from_secs(2))? {
            if self.accepts(&a).is_ok() {
                let address = self.want.of(&a);
                return Ok(Some(Found {
                    address,
                    via: Via::DnsSrv(name),
                    advert: Some(a),
                }));
            }
        }
        Ok(None)
    }
}

/// The DNS server to ask: the config file's `dns_server`, else the first
/// `nameserver` of /etc/resolv.conf.
pub fn dns_server(configured: Option<&str>) -> Result<SocketAddr, String> {
    if let Some(s) = configured {
        return s
            .parse()
            .or_else(|_| format!("{s}:53").parse())
            .map_err(|_| format!("config file: dns_server {s:?} is not IP:PORT"));
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    srv::system_server(&text).ok_or_else(|| {
        "no nameserver in /etc/resolv.conf; set dns_server in the config file".into()
    })
}

/// Whether a TCP connect to a loopback endpoint completes quickly.
fn answers(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// Every master this machine can see: DNS SRV when a domain is given, and
/// all mDNS answers within `wait`.
pub fn list(wait: Duration, domain: Option<&str>) -> (Vec<(Advert, Via)>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let cfg = config::load().unwrap_or_else(|e| {
        notes.push(e);
        None
    });
    let domain = domain
        .map(String::from)
        .or_else(|| cfg.as_ref().and_then(|(_, c)| c.domain.clone()));
    if let Some(domain) = domain {
        let server = cfg.as_ref().and_then(|(_, c)| c.dns_server.clone());
        let name = format!("{}.{domain}", crate::SERVICE);
        match dns_server(server.as_deref())
            .and_then(|s| srv::lookup(s, &domain, Duration::from_secs(2)))
        {
            Ok(found) => out.extend(found.into_iter().map(|a| (a, Via::DnsSrv(name.clone())))),
            Err(e) => notes.push(e),
        }
    }
    match mdns::browse(wait, &|_| false) {
        Ok((found, skipped)) => {
            notes.extend(skipped);
            out.extend(found.into_iter().map(|a| {
                let via = Via::Mdns(a.instance.clone());
                (a, via)
            }));
        }
        Err(e) => notes.push(e),
    }
    (out, notes)
}
