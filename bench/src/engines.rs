//! `engines`: a thousand engines on one master.
//!
//! The real `drqueue-master` binary runs as a child process, so its CPU and
//! RSS are its own (read from /proc). `--count` simulated engines run in this
//! process, on a runtime of their own: each is the engine's own link
//! (handshake, enrollment, sealing) on its own DEALER socket, registers with
//! one slot, beats as an engine does (every second with work, every
//! `IDLE_BEATS` when idle) and runs each task it is given as a timer of the task's length (no
//! child process), reporting `Started` and `Finished` as an engine does.
//!
//! Reported: the time to register them all; the master's CPU at idle with
//! all of them beating; for a job of ten tasks per engine, the time until
//! every slot is busy, the dispatch rate of that first wave, submit→start
//! percentiles, and the makespan against the ideal (tasks ÷ slots × the
//! task's length, the bare baseline); and the master's RSS. Nothing is
//! asserted.

use super::{percentile, proc_cpu, scratch, spec};
use drqueue_client::Client;
use drqueue_common::model::TaskKey;
use drqueue_common::protocol::{
    AttemptKey, Finished, FromEngine, Heartbeat, Outcome, ToEngine, IDLE_BEATS,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long each task "runs" on a simulated engine.
const TASK: Duration = Duration::from_secs(1);

/// The master child, killed when dropped.
struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real master binary and reads its HTTP URL and engine endpoint
/// from its log.
fn start_master(dir: &Path) -> anyhow::Result<(Master, String, String)> {
    let bin = std::env::current_exe()?.with_file_name("drqueue-master");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release --bins",
        bin.display()
    );
    let log = dir.join("master.log");
    let child = Command::new(&bin)
        .arg("--db")
        .arg(dir.join("db"))
        .arg("--keys-dir")
        .arg(dir.join("keys"))
        .args(["--http", "127.0.0.1:0", "--engines", "tcp://127.0.0.1:0"])
        .args(["--no-advertise", "--http-max-connections", "4096"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let master = Master(child);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("master accepting work")) {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(str::to_string)
            };
            if let (Some(http), Some(engines)) = (field("http="), field("engines=")) {
                return Ok((master, http, engines));
            }
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the master did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_kb(pid: u32) -> (u64, u64) {
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

/// One simulated engine: connects, registers one slot, and runs what it is
/// given one at a time, noting each start.
async fn sim(
    endpoint: String,
    name: String,
    dir: std::path::PathBuf,
    starts: Arc<Mutex<Vec<Instant>>>,
) -> anyhow::Result<()> {
    let pin = dir.join(format!("{name}.pub"));
    let mut link = super::sim_link(&endpoint, name, pin, (1, 2), 16_384).await?;
    let mut queue: std::collections::VecDeque<AttemptKey> = Default::default();
    let mut running: Option<(AttemptKey, tokio::time::Instant)> = None;
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut last_beat = Instant::now();
    loop {
        if running.is_none() {
            if let Some(key) = queue.pop_front() {
                starts.lock().expect("lock").push(Instant::now());
                running = Some((key, tokio::time::Instant::now() + TASK));
                link.send(&FromEngine::Started {
                    attempt: key,
                    ago_ms: 0,
                })
                .await?;
            }
        }
        let until = running.map(|(_, t)| t);
        tokio::select! {
            to = link.recv() => match to {
                Some(ToEngine::Assign(a)) => queue.extend(a.tasks.iter().map(|t| AttemptKey {
                    task: TaskKey { job: a.job.id, index: t.index },
                    attempt: t.attempt,
                })),
                Some(_) => {}
                None => anyhow::bail!("the master closed the link"),
            },
            _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                if let Some((key, _)) = running.take() {
                    link.send(&FromEngine::Finished(Finished {
                        attempt: key,
                        outcome: Outcome { exit_code: Some(0), wall_ms: TASK.as_millis() as u64, ..Default::default() },
                    }))
                    .await?;
                }
            }
            _ = beat.tick() => {
                let idle = running.is_none() && queue.is_empty();
                if !idle || last_beat.elapsed() >= Duration::from_millis(u64::from(IDLE_BEATS) * 1000 - 100) {
                    let held = queue.len() as u32 + u32::from(running.is_some());
                    link.send(&FromEngine::Heartbeat(Heartbeat { load: 0.0, free_ram_mb: 16_384, held, peak_held: held })).await?;
                    last_beat = Instant::now();
                }
            }
        }
    }
}

fn connected(client: &Client) -> usize {
    client.engines().map_or(0, |e| {
        e.iter()
            .filter(|v| !matches!(v.state.as_str(), "offline" | "pending" | "revoked"))
            .count()
    })
}

pub fn engines(count: usize, tasks: u64) -> anyhow::Result<()> {
    println!(
        "== engines: {count} simulated engines (1 slot each; real link, no child processes) on the real master binary, {tasks} tasks of {} s",
        TASK.as_secs()
    );
    let dir = scratch("engines");
    let (master, http, endpoint) = start_master(&dir)?;
    let pid = master.0.id();
    let client = Client::new(Some(&http), None);
    let sims_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sim-engine")
        .enable_all()
        .build()?;
    let starts = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let pins = dir.join("pins");
    std::fs::create_dir_all(&pins)?;
    let t0 = Instant::now();
    for i in 0..count {
        let (ep, st, pins) = (endpoint.clone(), starts.clone(), pins.clone());
        sims_rt.spawn(async move {
            if let Err(e) = sim(ep, format!("sim-{i}"), pins, st).await {
                eprintln!("simulated engine {i} stopped: {e}");
            }
        });
    }
    while connected(&client) < count {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "only {} of {count} engines registered in 300 s",
            connected(&client)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let registration = t0.elapsed();
    println!(
        "   registration of {count} engines: {:.2} s",
        registration.as_secs_f64()
    );

    // Idle: every engine beating, nothing to do.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, _) = proc_cpu(pid);
    let idle_window = Duration::from_secs(10);
    std::thread::sleep(idle_window);
    let (cpu1, _) = proc_cpu(pid);
    let idle = (cpu1 - cpu0) / idle_window.as_secs_f64();
    let (rss_idle, _) = rss_kb(pid);
    println!(
        "   master at idle: {:.1} % of a core over {} s; RSS {:.1} MB",
        idle * 100.0,
        idle_window.as_secs(),
        rss_idle as f64 / 1024.0
    );

    // A job of `tasks` tasks: how fast the slots fill, and the makespan.
    let (cpu0, _) = proc_cpu(pid);
    let submitted = Instant::now();
    let job = client.submit(&spec(&["sleep", "1"], tasks))?;
    let slots = count.min(tasks as usize);
    let mut all_busy = None;
    loop {
        let started = starts.lock().expect("lock").len();
        if all_busy.is_none() && started >= slots {
            all_busy = Some(submitted.elapsed());
        }
        if started as u64 >= tasks {
            let v = client.job(job.id)?;
            if v.status.is_terminal() {
                break;
            }
        }
        anyhow::ensure!(
            submitted.elapsed() < Duration::from_secs(600),
            "the job did not finish in 600 s ({started} started)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let makespan = submitted.elapsed();
    let (cpu1, _) = proc_cpu(pid);
    let (rss, hwm) = rss_kb(pid);
    let mut lat: Vec<f64> = starts
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.duration_since(submitted).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let first_wave = &lat[..slots.min(lat.len())];
    let fill = all_busy.unwrap_or(makespan).as_secs_f64();
    println!(
        "   every slot busy {fill:.2} s after the submit: first wave dispatched at {:.0} tasks/s",
        slots as f64 / fill
    );
    println!(
        "   submit->start, first wave ({slots} tasks): p50 {:.0} ms, p99 {:.0} ms; all {tasks} tasks (waves queue behind it): p50 {:.0} ms, p99 {:.0} ms",
        percentile(first_wave, 0.5),
        percentile(first_wave, 0.99),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let ideal = (tasks as f64 / slots as f64).ceil() * TASK.as_secs_f64();
    println!(
        "   makespan {:.2} s against the ideal {ideal:.2} s (tasks / slots x task length): {:.1} % of ideal; master CPU {:.0} us a task",
        makespan.as_secs_f64(),
        100.0 * ideal / makespan.as_secs_f64(),
        (cpu1 - cpu0) * 1e6 / tasks as f64
    );
    println!(
        "   master RSS {:.1} MB now, {:.1} MB at most",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    sims_rt.shutdown_background();
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
