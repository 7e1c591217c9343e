//! What an engine tells the master about its machine: host, OS, cores, RAM,
//! pools, and which renderers it finds on its PATH.

use drqueue_common::model::{EngineFacts, DEFAULT_POOL};
use sysinfo::System;

/// Programs looked for on PATH, and the capability each one gives.
pub const RENDERERS: &[(&str, &str)] = &[
    ("blender", "blender"),
    ("hrender", "houdini"),
    ("hython", "houdini"),
    ("Render", "maya"),
    ("nuke", "nuke"),
    ("povray", "povray"),
    ("kick", "arnold"),
    ("prman", "renderman"),
    ("ffmpeg", "ffmpeg"),
    ("python3", "python3"),
];

/// Splits `gpu, lookdev` into pool names; none means `default`.
pub fn parse_pools(text: Option<&str>) -> Vec<String> {
    let mut pools: Vec<String> = text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    pools.dedup();
    if pools.is_empty() {
        pools.push(DEFAULT_POOL.into());
    }
    pools
}

/// Capabilities from the renderers found on PATH.
pub fn detect_capabilities() -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path).collect();
    let mut caps: Vec<String> = RENDERERS
        .iter()
        .filter(|(bin, _)| dirs.iter().any(|d| is_executable(&d.join(bin))))
        .map(|(_, cap)| cap.to_string())
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn gather(name: Option<String>, pools: Vec<String>) -> EngineFacts {
    let mut sys = System::new();
    sys.refresh_memory();
    let hostname = System::host_name().unwrap_or_else(|| "unknown".into());
    EngineFacts {
        name: name.unwrap_or_else(|| hostname.clone()),
        hostname,
        os: std::env::consts::OS.to_string(),
        os_version: System::long_os_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        ram_mb: sys.total_memory() / (1024 * 1024),
        pools,
        capabilities: detect_capabilities(),
    }
}

/// Load average and free RAM, for heartbeats.
pub fn load_and_free_ram(sys: &mut System) -> (f32, u64) {
    sys.refresh_memory();
    (
        System::load_average().one as f32,
        sys.available_memory() / (1024 * 1024),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_come_from_a_comma_list_or_default() {
        assert_eq!(parse_pools(Some("gpu, lookdev,")), vec!["gpu", "lookdev"]);
        assert_eq!(parse_pools(None), vec!["default"]);
        assert_eq!(parse_pools(Some(" ")), vec!["default"]);
    }

    #[test]
    fn facts_describe_this_machine() {
        let f = gather(None, vec!["default".into()]);
        assert!(f.cores >= 1 && f.ram_mb > 0);
        assert_eq!(f.os, std::env::consts::OS);
    }
}
