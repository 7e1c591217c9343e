//! The config file: where the master is, for machines that should not rely
//! on finding it. `DRQUEUE_CONFIG` names it; otherwise
//! `$XDG_CONFIG_HOME/drqueue/config.toml` (`~/.config/drqueue/config.toml`),
//! then `/etc/drqueue/config.toml`. Every key is optional:
//!
//! ```toml
//! url = "http://render-master:5580"       # the HTTP API (drqueue, Python)
//! engines = "tcp://render-master:5555"    # the engine endpoint (drqueue-engine)
//! domain = "studio.example"               # look up _drqueue._tcp.studio.example (DNS SRV)
//! dns_server = "10.0.0.53:53"             # default: resolv.conf's first nameserver
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: Option<String>,
    pub engines: Option<String>,
    pub domain: Option<String>,
    pub dns_server: Option<String>,
}

/// A config file larger than this is refused unread.
const MAX_BYTES: u64 = 64 * 1024;

/// Where the config file is looked for, first found wins.
pub fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("DRQUEUE_CONFIG").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => out.push(PathBuf::from(x).join("drqueue/config.toml")),
        None => {
            if let Some(h) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
                out.push(PathBuf::from(h).join(".config/drqueue/config.toml"));
            }
        }
    }
    out.push(PathBuf::from("/etc/drqueue/config.toml"));
    out
}

/// The first config file that exists, read. A file that exists but cannot
/// be used is an error naming it (and the key), never silently skipped.
pub fn load() -> Result<Option<(PathBuf, Config)>, String> {
    for path in candidates() {
        if path.exists() {
            return read(&path).map(|c| Some((path, c)));
        }
    }
    Ok(None)
}

pub fn read(path: &Path) -> Result<Config, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?
        .len();
    if len > MAX_BYTES {
        return Err(format!(
            "config file {}: larger than 64 KiB",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_unknown_ones_are_named() {
        let c = parse("url = \"http://m:5580\"\ndomain = \"studio.test\"\n").unwrap();
        assert_eq!(c.url.as_deref(), Some("http://m:5580"));
        assert_eq!(c.domain.as_deref(), Some("studio.test"));
        let err = parse("urll = \"x\"").unwrap_err();
        assert!(err.contains("urll"), "{err}");
    }
}
