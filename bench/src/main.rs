//! `drqueue-bench`: the farm's speed, measured on this machine.
//!
//! ```text
//! cargo build --release --bins
//! target/release/drqueue-bench [sched|dispatch|e2e|util|readers|blocks|monitors|uploads|tiles|engines|all] [--tasks N] [--count N]
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
//!
//! Figures go to stdout; nothing here is asserted.

use drqueue_client::Client;
use drqueue_common::keys::KeyPair;
use drqueue_common::model::{EngineFacts, JobSpec, JobStatus, TaskKey};
use drqueue_common::protocol::{
    AttemptKey, Finished, FromEngine, Heartbeat, Outcome, Register, ToEngine,
};
use drqueue_engine::link::{Credentials, Link};
use drqueue_master::server::{self, MasterOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod blocks;
mod engines;
mod monitors;
mod readers;
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
        "engines", "all",
    ]
    .contains(&case.as_str())
    {
        anyhow::bail!(
            "usage: drqueue-bench [sched|dispatch|e2e|util|readers|blocks|monitors|uploads|tiles|engines|all] [--tasks N (uploads: MiB)] [--count N (engines)] [--db DIR|mongodb://…]"
        );
    }
    if case == "sched" || case == "all" {
        scheduler_alone(tasks_arg.unwrap_or(200_000));
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
        rt.block_on(dispatch(tasks_arg.unwrap_or(100_000), db_arg.clone()))?;
    }
    if case == "e2e" || case == "all" {
        rt.block_on(end_to_end(tasks_arg.unwrap_or(10_000)))?;
    }
    if case == "util" || case == "all" {
        rt.block_on(utilisation(tasks_arg.unwrap_or(2_000)))?;
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
    Ok(())
}

/// The number after `flag`, if given.
fn arg_after(args: &[String], flag: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

/// The pure scheduler under a simulated farm: every held attempt finishes
/// at once, then the scheduler dispatches again.
fn scheduler_alone(tasks: u64) {
    use drqueue_master::scheduler::{Config, Effects, Scheduler};
    println!("== scheduler alone: 50 engines (4 slots, HWM 5), {tasks} tasks in 200 jobs, no I/O");
    for (label, owners, rules) in [
        ("1 owner", 1usize, false),
        ("8 owners taking turns", 8, false),
        ("8 owners, a limit and max_engines on every job", 8, true),
    ] {
        let mut s = Scheduler::new(Config::default());
        let mut fx = Effects::default();
        let now = 1_000_000;
        if rules {
            s.set_limit("lic", 120).expect("valid limit");
        }
        for i in 0..50 {
            let facts = EngineFacts {
                name: format!("e{i}"),
                os: "linux".into(),
                cores: 16,
                ram_mb: 64_000,
                pools: vec!["default".into()],
                ..Default::default()
            };
            s.engine_registered(&format!("e{i}").into(), facts, 4, 5, &[], &[], now, &mut fx);
        }
        let per_job = (tasks / 200).max(1);
        for j in 0..200 {
            let mut sp = spec(&["true"], per_job);
            sp.owner = format!("artist{}", j % owners);
            if rules {
                sp.limits = vec!["lic".into()];
                sp.max_engines = 10;
            }
            s.submit(sp, now, &mut fx).expect("valid job");
        }
        s.persist(&mut fx);
        fx = Effects::default();
        let start = Instant::now();
        let (mut done, mut rounds) = (0u64, 0u64);
        let mut dispatch_time = Duration::ZERO;
        while done < per_job * 200 {
            let t = Instant::now();
            s.dispatch(now, &mut fx);
            dispatch_time += t.elapsed();
            rounds += 1;
            let msgs = std::mem::take(&mut fx.messages);
            if msgs.is_empty() {
                break;
            }
            for (engine, m) in msgs {
                if let ToEngine::Assign(a) = m {
                    for t in a.tasks {
                        let key = AttemptKey {
                            task: TaskKey {
                                job: a.job.id,
                                index: t.index,
                            },
                            attempt: t.attempt,
                        };
                        let ok = Outcome {
                            exit_code: Some(0),
                            ..Default::default()
                        };
                        s.task_finished(&engine, key, ok, now, &mut fx);
                        done += 1;
                    }
                }
            }
            fx.after_commit.clear();
            fx.ended_jobs.clear();
            s.persist(&mut fx);
            fx.batch = Default::default();
            fx.observed.clear();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "   {label}: {done} tasks in {secs:.2} s = {:.0} tasks/s; dispatch {:.1} µs per round over {rounds} rounds",
            done as f64 / secs,
            dispatch_time.as_secs_f64() * 1e6 / rounds as f64
        );
    }
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
/// submit instant and the elapsed time to the end.
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
            std::thread::sleep(Duration::from_millis(5));
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

// ----- (a) dispatch ceiling --------------------------------------------------

/// A simulated engine's link, registered: the engine's own handshake,
/// enrollment and sealing, with `slots_hwm` slots and HWM.
async fn sim_link(
    endpoint: &str,
    name: String,
    master_pin: PathBuf,
    (slots, hwm): (u32, u32),
    ram_mb: u64,
) -> anyhow::Result<Link> {
    let creds = Credentials {
        keys: KeyPair::generate().map_err(anyhow::Error::msg)?,
        engine: name.as_str().into(),
        name: name.clone(),
        join_token: None,
        master_pin,
        discovered: false,
    };
    let mut link = Link::connect(endpoint, &creds, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    link.send(&FromEngine::Register(Register {
        engine: name.as_str().into(),
        session: rand::random(),
        time_ms: drqueue_common::now_millis(),
        facts: EngineFacts {
            name,
            pools: vec!["default".into()],
            cores: 8,
            ram_mb,
            ..Default::default()
        },
        slots,
        hwm,
        held: vec![],
        finished: vec![],
    }))
    .await?;
    Ok(link)
}

/// A simulated engine: the engine's own link (handshake, enrollment,
/// encryption), registers, and finishes each task the moment it arrives,
/// noting when it arrived.
async fn sim_engine(
    endpoint: String,
    name: String,
    hwm: u32,
    starts: Arc<Mutex<Vec<Instant>>>,
) -> anyhow::Result<()> {
    let pin = scratch(&format!("pin-{name}")).join("master.pub");
    let mut link = sim_link(&endpoint, name, pin, (hwm, hwm), 1024).await?;
    let mut beat = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            to = link.recv() => {
                let Some(to) = to else { anyhow::bail!("the master closed the link") };
                if let ToEngine::Assign(a) = to {
                    let now = Instant::now();
                    starts.lock().expect("lock").extend(std::iter::repeat_n(now, a.tasks.len()));
                    // Sent together, as the engine sends a loop turn's results.
                    let done: Vec<FromEngine> = a.tasks.iter().map(|t| FromEngine::Finished(Finished {
                        attempt: AttemptKey { task: TaskKey { job: a.job.id, index: t.index }, attempt: t.attempt },
                        outcome: Outcome { exit_code: Some(0), ..Default::default() },
                    })).collect();
                    link.send_all(&done).await?;
                }
            }
            _ = beat.tick() => {
                let hb = FromEngine::Heartbeat(Heartbeat { load: 0.0, free_ram_mb: 1024, held: 0, peak_held: 0 });
                link.send(&hb).await?;
            }
        }
    }
}

async fn dispatch(tasks: u64, db: Option<String>) -> anyhow::Result<()> {
    let dir = scratch("dispatch");
    let db = db.unwrap_or_else(|| dir.join("db").display().to_string());
    let store = if db.starts_with("mongodb") {
        "MongoDB"
    } else {
        "SQLite, synchronous=FULL"
    };
    println!("== (a) dispatch ceiling: in-process master ({store}), 4 simulated engines, {tasks} no-op tasks");
    let master = start_master_on(db).await?;
    let starts = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let mut sims = Vec::new();
    for i in 0..4 {
        let (ep, st) = (master.engines_endpoint.clone(), starts.clone());
        sims.push(tokio::spawn(async move {
            if let Err(e) = sim_engine(ep, format!("sim-{i}"), 256, st).await {
                eprintln!("simulated engine stopped: {e}");
            }
        }));
    }
    wait_engines(&master.http_url, 4).await?;
    // Single-task latency on an idle farm.
    let mut idle = Vec::new();
    for _ in 0..50 {
        starts.lock().expect("lock").clear();
        let (t0, _) = run_job(master.http_url.clone(), spec(&["true"], 1)).await?;
        let s = starts.lock().expect("lock")[0];
        idle.push(s.duration_since(t0).as_secs_f64() * 1000.0);
    }
    idle.sort_by(f64::total_cmp);
    starts.lock().expect("lock").clear();
    let commits0 = master
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let trips0 = master
        .stats
        .round_trips
        .load(std::sync::atomic::Ordering::Relaxed);
    let (t0, _) = run_job(master.http_url.clone(), spec(&["true"], tasks)).await?;
    master.flush().await;
    let elapsed = t0.elapsed();
    let commits = master
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed)
        - commits0;
    let mut lat: Vec<f64> = starts
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.duration_since(t0).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let rate = tasks as f64 / elapsed.as_secs_f64();
    println!(
        "   {tasks} tasks in {:.2} s: {:.0} tasks/s (submit to job done, all committed)",
        elapsed.as_secs_f64(),
        rate
    );
    println!("   submit->start, bulk job: p50 {:.0} ms, p99 {:.0} ms (queueing behind the job's own tasks)", percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "   submit->start, one task on an idle farm (50 runs): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99)
    );
    let trips = master
        .stats
        .round_trips
        .load(std::sync::atomic::Ordering::Relaxed)
        - trips0;
    println!(
        "   store: {commits} commits, {trips} round trips for {tasks} tasks = {:.2} round trips per 1,000 tasks",
        trips as f64 * 1000.0 / tasks as f64
    );
    for sim in sims {
        sim.abort();
    }
    master.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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

/// The physical limit: spawn and reap `argv` `total` times on `lanes` threads.
fn bare_loop(argv: &[&str], total: u64, lanes: u64) -> Duration {
    let (own0, kids0) = (self_cpu(), children_cpu());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..lanes)
        .map(|lane| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let n = total / lanes + u64::from(lane < total % lanes);
            std::thread::spawn(move || {
                for _ in 0..n {
                    let _ = Command::new(&argv[0]).args(&argv[1..]).status();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = t0.elapsed();
    println!(
        "   bare loop CPU per spawn: parent {:.0} us, process {:.0} us",
        (self_cpu() - own0) * 1e6 / total as f64,
        (children_cpu() - kids0) * 1e6 / total as f64
    );
    elapsed
}

async fn farm_vs_bare(
    label: &str,
    argv: &[&'static str],
    tasks: u64,
    engines: usize,
    slots: u32,
) -> anyhow::Result<(f64, f64)> {
    let dir = scratch(label);
    let master = start_master(&dir).await?;
    let _engines = start_engines(&master.engines_endpoint, &dir, engines, slots)?;
    wait_engines(&master.http_url, engines).await?;
    let lanes = engines as u64 * slots as u64;
    let argv_owned: Vec<&'static str> = argv.to_vec();
    // DRQUEUE_BENCH_NO_BARE=1 skips the bare loop (to profile the farm alone).
    let bare = if std::env::var_os("DRQUEUE_BENCH_NO_BARE").is_some() {
        Duration::from_secs(1)
    } else {
        tokio::task::spawn_blocking(move || bare_loop(&argv_owned, tasks, lanes)).await?
    };
    let master_cpu0 = self_cpu();
    let engine_cpu0: Vec<(f64, f64)> = _engines.0.iter().map(|c| proc_cpu(c.id())).collect();
    let (_, farm) = run_job(master.http_url.clone(), spec(argv, tasks)).await?;
    let master_cpu = self_cpu() - master_cpu0;
    let (mut own, mut kids) = (0.0, 0.0);
    for (c, (o0, k0)) in _engines.0.iter().zip(engine_cpu0) {
        let (o, k) = proc_cpu(c.id());
        own += o - o0;
        kids += k - k0;
    }
    println!(
        "   CPU per task: master {:.0} us, engines {:.0} us, task processes {:.0} us",
        master_cpu * 1e6 / tasks as f64,
        own * 1e6 / tasks as f64,
        kids * 1e6 / tasks as f64
    );
    master.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((farm.as_secs_f64(), bare.as_secs_f64()))
}

async fn end_to_end(tasks: u64) -> anyhow::Result<()> {
    // DRQUEUE_BENCH_ENGINES=N spreads the 4 slots over N engine processes.
    let engines: usize = std::env::var("DRQUEUE_BENCH_ENGINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 4);
    let slots = 4 / engines as u32;
    println!(
        "== (b) end to end: {engines} real engines x {slots} slots running `true`, {tasks} tasks"
    );
    let (farm, bare) = farm_vs_bare("e2e", &["true"], tasks, engines, slots).await?;
    let (farm_rate, bare_rate) = (tasks as f64 / farm, tasks as f64 / bare);
    println!("   farm: {farm:.2} s = {farm_rate:.0} tasks/s; bare spawn loop on {} lanes: {bare:.2} s = {bare_rate:.0} spawns/s", engines * slots as usize);
    println!(
        "   farm reaches {:.1} % of the bare spawn rate",
        100.0 * farm_rate / bare_rate
    );
    Ok(())
}

async fn utilisation(tasks: u64) -> anyhow::Result<()> {
    println!("== (c) utilisation: {tasks} tasks of `sleep 0.01` on 1 engine x 4 slots");
    let (farm, bare) = farm_vs_bare("util", &["sleep", "0.01"], tasks, 1, 4).await?;
    let ideal = tasks as f64 * 0.01 / 4.0;
    println!("   farm makespan {farm:.2} s; bare 4-lane loop {bare:.2} s; ideal (sleep time only) {ideal:.2} s");
    println!("   farm reaches {:.1} % of the bare loop's rate ({:.1} % of ideal; the bare loop reaches {:.1} % of ideal)", 100.0 * bare / farm, 100.0 * ideal / farm, 100.0 * ideal / bare);
    Ok(())
}
