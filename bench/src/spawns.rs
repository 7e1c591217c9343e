//! `e2e` (b) and `util` (c): real engines running real processes, beside a
//! bare loop that spawns and reaps the same processes on as many lanes.

use crate::{
    children_cpu, proc_cpu, run_job, scratch, self_cpu, spec, start_engines, start_master,
    wait_engines,
};
use std::process::Command;
use std::time::{Duration, Instant};

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

pub async fn end_to_end(tasks: u64) -> anyhow::Result<()> {
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

pub async fn utilisation(tasks: u64) -> anyhow::Result<()> {
    println!("== (c) utilisation: {tasks} tasks of `sleep 0.01` on 1 engine x 4 slots");
    let (farm, bare) = farm_vs_bare("util", &["sleep", "0.01"], tasks, 1, 4).await?;
    let ideal = tasks as f64 * 0.01 / 4.0;
    println!("   farm makespan {farm:.2} s; bare 4-lane loop {bare:.2} s; ideal (sleep time only) {ideal:.2} s");
    println!("   farm reaches {:.1} % of the bare loop's rate ({:.1} % of ideal; the bare loop reaches {:.1} % of ideal)", 100.0 * bare / farm, 100.0 * ideal / farm, 100.0 * ideal / bare);
    Ok(())
}
