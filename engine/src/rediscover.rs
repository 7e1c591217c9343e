//! An engine that found its master on the network (mDNS, DNS SRV) looks
//! again when that master falls silent for a while: a standby on another
//! host took over, or the master came back on other ports. Only a master
//! with the trusted key is taken (see `link::trusted_fingerprint`).

use drqueue_discovery::{Resolver, Want};
use std::path::PathBuf;

/// Consecutive lost connections before the engine looks again.
pub const AFTER_SILENT: u32 = 3;

#[derive(Debug, Clone)]
pub struct Rediscover {
    pub domain: Option<String>,
    pub master_pin: PathBuf,
    pub join_token: Option<String>,
}

impl Rediscover {
    /// Where discovery finds the master now, and how (off the async
    /// threads: a browse blocks up to 2 s).
    pub async fn find(&self) -> Option<(String, String)> {
        let mut resolver = Resolver::new(Want::Engines);
        resolver.domain = self.domain.clone();
        resolver.trusted =
            crate::link::trusted_fingerprint(&self.master_pin, self.join_token.as_deref());
        tokio::task::spawn_blocking(move || {
            let (found, _) = resolver.resolve().ok()?;
            let usable = found.discovered() || found.via == drqueue_discovery::Via::Loopback;
            usable.then(|| (found.address, found.via.to_string()))
        })
        .await
        .ok()
        .flatten()
    }
}
