//! `engines`: a thousand engines on one master.
//!
//! The real `drqueue-master` binary runs as a child process, so its CPU and
//! RSS are its own (read from /proc). `--count` simulated engines run in this
//! process, on a runtime of their own ([`timed_engine`]): each is the
//! engine's own link (handshake, enrollment, sealing) on its own DEALER
//! socket, registers with one slot, beats as an engine does and runs each
//! task it is given as a timer of the task's length (no child process).
//!
//! Reported: the time to register them all; the master's CPU at idle with
//! all of them beating; for a job of ten tasks per engine, the time until
//! every slot is busy, the dispatch rate of that first wave, submit→start
//! percentiles, and the makespan against the ideal (tasks ÷ slots × the
//! task's length, the bare baseline); and the master's RSS. Nothing is
//! asserted.

use crate::master_process::{rss_kb, MasterProcess};
use crate::sim::{sim_credentials, timed_engine, SimLog};
use crate::{percentile, proc_cpu, scratch, spec};
use drqueue_client::Client;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long each task "runs" on a simulated engine.
const TASK: Duration = Duration::from_secs(1);

/// Starts `count` timed simulated engines (`sim-0` …) on a runtime of their
/// own, all noting into one log.
pub fn start_sims(
    count: usize,
    endpoint: &str,
    pins: &Path,
) -> anyhow::Result<(tokio::runtime::Runtime, Arc<Mutex<SimLog>>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sim-engine")
        .enable_all()
        .build()?;
    std::fs::create_dir_all(pins)?;
    let log = Arc::new(Mutex::new(SimLog::default()));
    for i in 0..count {
        let name = format!("sim-{i}");
        let creds = sim_credentials(&name, pins.join(format!("{name}.pub")))?;
        let (ep, log) = (endpoint.to_string(), log.clone());
        rt.spawn(async move {
            if let Err(e) = timed_engine(ep, creds, TASK, log).await {
                eprintln!("simulated engine {i} stopped: {e}");
            }
        });
    }
    Ok((rt, log))
}

/// Waits until `count` engines are connected; returns how long that took.
pub fn wait_connected(client: &Client, count: usize, since: Instant) -> anyhow::Result<Duration> {
    while connected(client) < count {
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(300),
            "only {} of {count} engines registered in 300 s",
            connected(client)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(since.elapsed())
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
    let master = MasterProcess::start(&dir, &["--http-max-connections", "4096"])?;
    let pid = master.pid();
    let client = Client::new(Some(&master.http), None);
    let t0 = Instant::now();
    let (sims_rt, log) = start_sims(count, &master.engines, &dir.join("pins"))?;
    let registration = wait_connected(&client, count, t0)?;
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
        let started = log.lock().expect("lock").starts.len();
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
    let mut lat: Vec<f64> = log
        .lock()
        .expect("lock")
        .starts
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
