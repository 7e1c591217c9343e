//! mDNS (DNS-SD on the local link): the master registers
//! `_drqueue._tcp.local.` on the interfaces its engine endpoint is bound
//! to; engines and clients browse for at most a couple of seconds. The
//! `mdns-sd` daemon runs on its own thread; dropping an [`Advertisement`]
//! unregisters it (a goodbye packet) and stops the daemon.

use crate::advert::{host_of, Advert};
use crate::MDNS_SERVICE;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A master's registration; unregistered when dropped.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Advertisement {
    /// Registers `advert` on the interface that holds `bound` (every
    /// interface for an unspecified address such as `0.0.0.0`).
    pub fn start(advert: &Advert, bound: IpAddr) -> Result<Advertisement, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
        if !bound.is_unspecified() {
            daemon
                .disable_interface(IfKind::All)
                .and_then(|()| daemon.enable_interface(IfKind::Addr(bound)))
                .map_err(|e| format!("mDNS: {e}"))?;
        }
        let host = format!("{}.local.", sanitize(&drqueue_common::hostname()));
        let props: HashMap<String, String> = advert.to_txt().into_iter().collect();
        let port = advert
            .http
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(0);
        let info = if bound.is_unspecified() {
            ServiceInfo::new(MDNS_SERVICE, &advert.instance, &host, "", port, props)
                .map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(MDNS_SERVICE, &advert.instance, &host, bound, port, props)
        }
        .map_err(|e| format!("mDNS: {e}"))?;
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(|e| format!("mDNS: {e}"))?;
        Ok(Advertisement { daemon, fullname })
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// A host name as a DNS label: letters, digits and `-`.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    if s.is_empty() {
        "drqueue-master".into()
    } else {
        s
    }
}

/// Browses for masters for at most `wait`, stopping early at the first
/// advertisement `enough` accepts. Malformed advertisements are skipped
/// (and named in the returned notes).
pub fn browse(
    wait: Duration,
    enough: &dyn Fn(&Advert) -> bool,
) -> Result<(Vec<Advert>, Vec<String>), String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
    let events = daemon
        .browse(MDNS_SERVICE)
        .map_err(|e| format!("mDNS: {e}"))?;
    let deadline = Instant::now() + wait;
    let (mut found, mut notes) = (Vec::<Advert>::new(), Vec::new());
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        let ServiceEvent::ServiceResolved(svc) = event else {
            continue;
        };
        let seen_at = svc
            .get_addresses_v4()
            .into_iter()
            .min()
            .map(IpAddr::V4)
            .map(host_of);
        let pairs = svc.get_properties().iter().map(|p| (p.key(), p.val_str()));
        match Advert::from_txt(svc.get_fullname(), pairs, seen_at.as_deref()) {
            Ok(a) => {
                let done = enough(&a);
                if !found.iter().any(|f| f.instance == a.instance) {
                    found.push(a);
                }
                if done {
                    break;
                }
            }
            Err(e) => notes.push(format!("{}: {e}", svc.get_fullname())),
        }
    }
    let _ = daemon.stop_browse(MDNS_SERVICE);
    let _ = daemon.shutdown();
    Ok((found, notes))
}
