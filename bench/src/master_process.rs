//! The real `drqueue-master` binary as a child process, so its CPU and RSS
//! are its own (read from /proc), and a kill -9 is a real one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `drqueue-master` beside this executable; killed when dropped.
pub struct MasterProcess {
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub http: String,
    /// Its engines' endpoint, `tcp://127.0.0.1:PORT`.
    pub engines: String,
}

impl MasterProcess {
    /// Starts a master on `dir` (database, keys, log), on free loopback
    /// ports, with `extra` flags; returns once it accepts work.
    pub fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<MasterProcess> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, ready) = spawn(dir, "127.0.0.1:0", "tcp://127.0.0.1:0", &extra)?;
        let v: serde_json::Value = serde_json::from_str(&ready)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok(MasterProcess {
            child,
            dir: dir.to_path_buf(),
            extra,
            http: field("http"),
            engines: field("engines"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 and start again on the same database, keys and ports; returns
    /// how long the new process took to accept work (its store reloaded).
    pub fn crash_and_restart(&mut self) -> anyhow::Result<Duration> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let t0 = Instant::now();
        let http = self.http.trim_start_matches("http://").to_string();
        let (child, _) = spawn(&self.dir, &http, &self.engines, &self.extra)?;
        self.child = child;
        Ok(t0.elapsed())
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the master and waits for its ready file; returns the file's text.
fn spawn(
    dir: &Path,
    http: &str,
    engines: &str,
    extra: &[String],
) -> anyhow::Result<(Child, String)> {
    let bin = std::env::current_exe()?.with_file_name("drqueue-master");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release --bins",
        bin.display()
    );
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("master.log"))?;
    let mut child = Command::new(bin)
        .arg("--db")
        .arg(dir.join("db"))
        .arg("--keys-dir")
        .arg(dir.join("keys"))
        .args(["--http", http, "--engines", engines, "--no-advertise"])
        .args(extra)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            if !text.is_empty() {
                return Ok((child, text));
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the master exited ({status}); see {}",
                dir.join("master.log").display()
            );
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the master did not start in 60 s; see {}",
            dir.join("master.log").display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process's RSS and peak RSS in KiB, from /proc.
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
