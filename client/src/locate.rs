//! Where the master's API is: the `--url` flag, `DRQUEUE_URL`, the config
//! file, a master answering on loopback, DNS SRV (with a domain), then
//! mDNS (`drqueue_discovery::resolve`). Looked up on the first request, not
//! before: `drqueue nodes scan` or `run-local` never wait for a browse.

use drqueue_discovery::{Resolver, Via, Want};
use std::sync::OnceLock;

/// The answer, kept for the client's life.
#[derive(Debug, Clone)]
pub struct Located {
    /// The API's base URL, without a trailing `/`.
    pub url: String,
    pub via: Via,
    /// What was tried and found wanting (for the error when nothing answers).
    pub notes: Vec<String>,
    /// The lookup itself failed (an unusable config file): every request
    /// fails with this.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Location {
    flag: Option<String>,
    domain: Option<String>,
    cell: OnceLock<Located>,
}

impl Location {
    pub fn new(flag: Option<String>, domain: Option<String>) -> Location {
        Location {
            flag,
            domain,
            cell: OnceLock::new(),
        }
    }

    pub fn flag(&self) -> Option<String> {
        self.flag.clone()
    }

    pub fn get(&self) -> &Located {
        self.cell.get_or_init(|| {
            let mut resolver = Resolver::new(Want::Api);
            resolver.flag = self.flag.clone();
            resolver.domain = self.domain.clone().or_else(|| {
                std::env::var("DRQUEUE_DOMAIN")
                    .ok()
                    .filter(|d| !d.is_empty())
            });
            match resolver.resolve() {
                Ok((found, notes)) => Located {
                    url: normalize(&found.address),
                    via: found.via,
                    notes,
                    error: None,
                },
                Err(e) => Located {
                    url: normalize(crate::DEFAULT_URL),
                    via: Via::Default,
                    notes: Vec::new(),
                    error: Some(e),
                },
            }
        })
    }
}

/// `127.0.0.1:5580` means what it says: plain HTTP there.
fn normalize(base: &str) -> String {
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    base.trim_end_matches('/').to_string()
}
