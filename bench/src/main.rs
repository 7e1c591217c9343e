//! `drqueue-bench`: the farm's speed, measured on this machine.
//!
//! ```text
//! cargo build --release --bins
//! target/release/drqueue-bench [sched|dispatch|e2e|util|readers|blocks|monitors|uploads|tiles|engines|restart|all] [--tasks N] [--count N]
//! ```
//!
//! - `sched`: the scheduler alone (no socket, no store): 50 engines, jobs
//!   from 1 owner and then from 8 owners taking turns, with and without
//!   limits and `max_engines`; what the rules cost per decision.
//! - `dispatch` (a): an in-process master (SQLite store, persistence on) and
//!   4 simulated engines on real DEALER sockets that finish every task the
//!   instant it arrives: the scheduler, protocol, transport and store alone.
//! - `e2e` (b): real `drqueue-engine` processes running `true`, beside a bare
//!   loop that only spawns and reaps `true` on as many lanes as there are slots.
//! - `util` (c): 2,000 tasks of `sleep 0.01` on 4 slots, beside a bare loop
//!   running the same processes back to back on 4 lanes.
//! - `readers`: dispatch of a 1M-task job beside 8 people watching (logs
//!   followed, task pages listed), against dispatch alone; and the master's
//!   RSS under 1,000 concurrent `GET /api/jobs` ([`readers`]).
//! - `blocks`: one job's makespan on a fast and a slow engine, fixed
//!   blocksizes against `--blocksize auto`, beside the ideal ([`blocks`]).
//! - `monitors`: dispatch with 50 live-feed clients watching against none,
//!   and the delay from a task's end to a client ([`monitors`]).
//! - `uploads`: a job folder's upload on loopback, a changed scene's bytes,
//!   an engine's fetch and verified copy, against a bare disk copy
//!   ([`uploads`]).
//! - `tiles`: a 1920x1080 POV-Ray frame whole on one engine and in 3x3
//!   tiles on two, against POV-Ray alone ([`tiles`]).
//! - `engines`: `--count` (1,000) simulated engines on the real master
//!   binary: registration, idle CPU, slots filled, RSS ([`engines`]).
//! - `restart`: a 1M-task job on `--count` (100) simulated engines across a
//!   kill -9 of the real master binary: submit, RSS per task, reload, and
//!   dispatch after the engines are back ([`restart`]).
//!
//! Figures go to stdout; nothing here is asserted.

use drqueue_client::Client;
use drqueue_common::model::{JobSpec, JobStatus};
use drqueue_master::server::{self, MasterOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod blocks;
mod dispatch;
mod engines;
mod master_process;
mod monitors;
mod readers;
mod restart;
mod sched;
mod sim;
mod spawns;
mod tiles;
mod uploads;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let case = args
        .first()
        .map(String::as_str)
        .unwrap_or("all")
        .to_string();
    let tasks_arg = arg_after(&args, "--tasks");
    let db_arg = args
        .iter()
        .position(|a| a == "--db")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if ![
        "sched", "dispatch", "e2e", "util", "readers", "blocks", "monitors", "uploads", "tiles",
        "engines", "restart", "all",
    ]
    .contains(&case.as_str())
    {
        anyhow::bail!(
            "usage: drqueue-bench [sched|dispatch|e2e|util|readers|blocks|monitors|uploads|tiles|engines|restart|all] [--tasks N (uploads: MiB)] [--count N (engines, restart)] [--db DIR|mongodb://…]"
        );
    }
    if case == "sched" || case == "all" {
        sched::scheduler_alone(tasks_arg.unwrap_or(200_000));
    }
    // The master's runtime, as drqueue-master builds it (DRQUEUE_BENCH_CT=1: current-thread,
    // which measured no better here).
    let rt = if std::env::var_os("DRQUEUE_BENCH_CT").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    if case == "dispatch" || case == "all" {
        rt.block_on(dispatch::dispatch(
            tasks_arg.unwrap_or(100_000),
            db_arg.clone(),
        ))?;
    }
    if case == "e2e" || case == "all" {
        rt.block_on(spawns::end_to_end(tasks_arg.unwrap_or(10_000)))?;
    }
    if case == "util" || case == "all" {
        rt.block_on(spawns::utilisation(tasks_arg.unwrap_or(2_000)))?;
    }
    if case == "readers" || case == "all" {
        rt.block_on(readers::readers(tasks_arg.unwrap_or(1_000_000)))?;
    }
    if case == "blocks" || case == "all" {
        rt.block_on(blocks::blocks(tasks_arg.unwrap_or(120)))?;
    }
    if case == "monitors" || case == "all" {
        rt.block_on(monitors::monitors(tasks_arg.unwrap_or(3_000)))?;
    }
    if case == "uploads" || case == "all" {
        rt.block_on(uploads::uploads(tasks_arg.unwrap_or(256)))?;
    }
    if case == "tiles" || case == "all" {
        rt.block_on(tiles::tiles())?;
    }
    if case == "engines" || case == "all" {
        let count = arg_after(&args, "--count").unwrap_or(1000) as usize;
        engines::engines(count, tasks_arg.unwrap_or(10 * count as u64))?;
    }
    if case == "restart" || case == "all" {
        let count = arg_after(&args, "--count").unwrap_or(100) as usize;
        restart::restart(count, tasks_arg.unwrap_or(1_000_000))?;
    }
    Ok(())
}

/// The number after `flag`, if given.
fn arg_after(args: &[String], flag: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("drqueue-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

async fn start_master(dir: &std::path::Path) -> anyhow::Result<server::RunningMaster> {
    start_master_on(dir.join("db").display().to_string()).await
}

async fn start_master_on(db: String) -> anyhow::Result<server::RunningMaster> {
    server::start(MasterOptions {
        keys_dir: Some(scratch("keys")),
        db,
        http: "127.0.0.1:0".into(),
        engines: "tcp://127.0.0.1:0".into(),
        ..MasterOptions::default()
    })
    .await
}

fn spec(command: &[&str], frames: u64) -> JobSpec {
    JobSpec {
        name: "bench".into(),
        owner: "bench".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        frames: format!("1-{frames}"),
        ..JobSpec::default()
    }
}

/// Submits on a blocking thread and polls until the job ends; returns the
/// submit instant and the elapsed time to the end. The polls run on the
/// cores the farm uses (and count as the master's CPU in-process), so they
/// come at a two-hundredth of the time so far: 0.5 % resolution, without
/// taking a bare loop's share away from the farm.
async fn run_job(url: String, spec: JobSpec) -> anyhow::Result<(Instant, Duration)> {
    tokio::task::spawn_blocking(move || {
        let client = Client::new(Some(&url), None);
        let t0 = Instant::now();
        let job = client.submit(&spec)?;
        loop {
            let v = client.job(job.id)?;
            if v.status.is_terminal() {
                anyhow::ensure!(v.status == JobStatus::Done, "bench job ended {}", v.status);
                return Ok((t0, t0.elapsed()));
            }
            let poll =
                (t0.elapsed() / 200).clamp(Duration::from_millis(5), Duration::from_millis(25));
            std::thread::sleep(poll);
        }
    })
    .await?
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_engines(url: &str, n: usize) -> anyhow::Result<()> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let c = Client::new(Some(&url), None);
        let start = Instant::now();
        loop {
            if c.engines()?
                .iter()
                .filter(|e| e.state.as_str() != "offline")
                .count()
                >= n
            {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "engines did not register"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await?
}

// ----- real engines ------------------------------------------------------------

struct Engines(Vec<Child>);

impl Drop for Engines {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds (user + system) of a process and of its reaped children, from /proc.
fn proc_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is 14th, stime 15th, cutime 16th, cstime 17th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    (get(11) + get(12), get(13) + get(14))
}

fn self_cpu() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn start_engines(
    endpoint: &str,
    dir: &std::path::Path,
    count: usize,
    slots: u32,
) -> anyhow::Result<Engines> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("drqueue-engine");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release --bins",
        bin.display()
    );
    // DRQUEUE_BENCH_HWM overrides the engines' HWM (default: twice their slots).
    let hwm = std::env::var("DRQUEUE_BENCH_HWM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(slots * 2);
    let mut children = Vec::new();
    for i in 0..count {
        children.push(
            Command::new(&bin)
                .args(["--master", endpoint, "--name", &format!("bench-{i}")])
                .args(["--slots", &slots.to_string(), "--hwm", &hwm.to_string()])
                .arg("--state-dir")
                .arg(dir.join(format!("engine-{i}")))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    Ok(Engines(children))
}

fn children_cpu() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}
