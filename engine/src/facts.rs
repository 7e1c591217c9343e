//! What an engine tells the master about its machine: host, OS, cores, RAM,
//! pools, and which renderers it finds on its PATH (with their versions,
//! where asking is cheap).

use drqueue_common::model::{EngineFacts, DEFAULT_POOL};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sysinfo::System;

/// A program looked for on PATH: the capability it gives, and the flag that
/// prints its version when that is cheap. Houdini, Maya, Nuke, Arnold and
/// RenderMan check licences on start, so they are not asked.
pub struct Renderer {
    pub program: &'static str,
    pub capability: &'static str,
    pub version_flag: Option<&'static str>,
}

const fn r(
    program: &'static str,
    capability: &'static str,
    flag: Option<&'static str>,
) -> Renderer {
    Renderer {
        program,
        capability,
        version_flag: flag,
    }
}

pub const RENDERERS: &[Renderer] = &[
    r("blender", "blender", Some("--version")),
    r("hrender", "houdini", None),
    r("hython", "houdini", None),
    r("Render", "maya", None),
    r("nuke", "nuke", None),
    r("povray", "povray", Some("--version")),
    r("kick", "arnold", None),
    r("prman", "renderman", None),
    r("ffmpeg", "ffmpeg", Some("-version")),
    r("python3", "python3", Some("--version")),
];

/// How long one `--version` may take before it is given up on.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);

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

/// Capabilities from the renderers found on PATH, and their versions.
pub fn detect_renderers() -> (Vec<String>, BTreeMap<String, String>) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path).collect();
    let found: Vec<(&Renderer, PathBuf)> = RENDERERS
        .iter()
        .filter_map(|r| {
            dirs.iter()
                .map(|d| d.join(r.program))
                .find(|p| is_executable(p))
                .map(|p| (r, p))
        })
        .collect();
    let mut caps: Vec<String> = found
        .iter()
        .map(|(r, _)| r.capability.to_string())
        .collect();
    caps.sort();
    caps.dedup();
    // Asked in parallel, so a slow one costs its own time, not the sum.
    let versions = std::thread::scope(|s| {
        let asks: Vec<_> = found
            .iter()
            .filter_map(|(r, p)| r.version_flag.map(|f| (r.capability, p, f)))
            .map(|(cap, p, flag)| s.spawn(move || (cap, ask_version(p, flag))))
            .collect();
        asks.into_iter()
            .filter_map(|h| h.join().ok())
            .filter_map(|(cap, v)| v.map(|v| (cap.to_string(), v)))
            .collect()
    });
    (caps, versions)
}

/// Runs `program flag` and picks the version out of what it prints.
fn ask_version(program: &Path, flag: &str) -> Option<String> {
    let out = run_with_timeout(Command::new(program).arg(flag), VERSION_TIMEOUT).ok()?;
    parse_version(&out.text)
}

/// The first word that starts with a digit and holds a dot: `Blender 4.0.2`,
/// `POV-Ray 3.7.0.10.unofficial`, `ffmpeg version 5.1.6-0+deb12u1`.
pub fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(|w| w.trim_end_matches([',', ';', ':']).to_string())
}

/// What a finished (or timed-out) helper process said.
pub struct Ran {
    pub success: bool,
    /// The exit code, if it exited (rather than died of a signal).
    pub code: Option<i32>,
    /// Stdout then stderr, lossily decoded.
    pub text: String,
}

/// Runs a helper command (not a task: tasks go through the runner) with a
/// time limit, killing it if it overruns.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> std::io::Result<Ran> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {} s", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Ran {
        success: out.status.success(),
        code: out.status.code(),
        text,
    })
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn gather(name: Option<String>, pools: Vec<String>) -> EngineFacts {
    let (capabilities, versions) = detect_renderers();
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
        capabilities,
        versions,
        containment: String::new(), // the engine fills it in
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
    fn versions_are_picked_out_of_version_banners() {
        let pov = "povray: cannot open the user configuration file /root/.povray/3.7/povray.conf\nPOV-Ray 3.7.0.10.unofficial\n";
        assert_eq!(parse_version(pov).as_deref(), Some("3.7.0.10.unofficial"));
        assert_eq!(parse_version("Python 3.11.2").as_deref(), Some("3.11.2"));
        assert_eq!(
            parse_version("ffmpeg version 5.1.6-0+deb12u1 Copyright").as_deref(),
            Some("5.1.6-0+deb12u1")
        );
        assert_eq!(parse_version("no version here"), None);
    }

    #[test]
    fn a_helper_that_overruns_is_killed() {
        let err = run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(err.is_err());
        let ok = run_with_timeout(Command::new("sh").args(["-c", "echo hi"]), VERSION_TIMEOUT)
            .expect("sh runs");
        assert!(ok.success && ok.text.trim() == "hi");
    }

    #[test]
    fn facts_describe_this_machine() {
        let f = gather(None, vec!["default".into()]);
        assert!(f.cores >= 1 && f.ram_mb > 0);
        assert_eq!(f.os, std::env::consts::OS);
    }
}
