//! `blocks`: the makespan of one job on two real engines of different
//! speed, cut by a fixed `--blocksize` and by `--blocksize auto`.
//!
//! Each engine's stand-in renderer pays a start-up (a scene load) per task,
//! then a time per frame: 0.05 s on the fast engine, 0.2 s on the slow one.
//! The baseline is the ideal in the same run: every frame shared out in
//! proportion to speed, one start-up per engine. Nothing is asserted.

use super::{run_job, scratch, spec, start_master, wait_engines, Engines};
use std::process::{Command, Stdio};

const STARTUP_S: f64 = 0.3;
const PER_FRAME_S: [(&str, f64); 2] = [("fast", 0.05), ("slow", 0.2)];

pub async fn blocks(frames: u64) -> anyhow::Result<()> {
    println!(
        "== blocks: {frames} frames on 2 engines (1 slot each): start-up {STARTUP_S} s a task, {} s / {} s a frame",
        PER_FRAME_S[0].1, PER_FRAME_S[1].1
    );
    let rate: f64 = PER_FRAME_S.iter().map(|(_, s)| 1.0 / s).sum();
    let ideal = STARTUP_S + frames as f64 / rate;
    println!("   ideal (frames shared by speed, one start-up each): {ideal:.2} s");
    for cut in ["1", "10", "30", "auto"] {
        let dir = scratch(&format!("blocks-{cut}"));
        let master = start_master(&dir).await?;
        let _engines = start_speed_engines(&master.engines_endpoint, &dir)?;
        wait_engines(&master.http_url, 2).await?;
        let mut job = spec(&["frame-render", "{start}", "{end}"], frames);
        if cut == "auto" {
            job.target_task_minutes = Some(1);
        } else {
            job.blocksize = cut.parse()?;
        }
        let (_, took) = run_job(master.http_url.clone(), job).await?;
        let secs = took.as_secs_f64();
        let tasks = task_count(&master.http_url).await?;
        println!(
            "   --blocksize {cut:>4}: makespan {secs:6.2} s in {tasks:3} tasks = {:.2} × ideal",
            secs / ideal
        );
        master.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Tasks of the one job on the farm.
async fn task_count(url: &str) -> anyhow::Result<usize> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let c = drqueue_client::Client::new(Some(&url), None);
        let job = c.jobs(None)?.first().map(|j| j.id);
        let job = job.ok_or_else(|| anyhow::anyhow!("no job"))?;
        Ok(c.tasks(job, None)?.len())
    })
    .await?
}

/// Two engines, each with its own `frame-render` on PATH.
fn start_speed_engines(endpoint: &str, dir: &std::path::Path) -> anyhow::Result<Engines> {
    let bin = std::env::current_exe()?.with_file_name("drqueue-engine");
    let mut children = Vec::new();
    for (name, per_frame) in PER_FRAME_S {
        let tools = dir.join(format!("bin-{name}"));
        std::fs::create_dir_all(&tools)?;
        let script = tools.join("frame-render");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep {STARTUP_S}\nf=$1\nwhile [ \"$f\" -le \"$2\" ]; do sleep {per_frame}; f=$((f + 1)); done\n"
            ),
        )?;
        let mut perms = std::fs::metadata(&script)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms)?;
        children.push(
            Command::new(&bin)
                .args(["--master", endpoint, "--name", name, "--slots", "1"])
                .arg("--state-dir")
                .arg(dir.join(format!("engine-{name}")))
                .env("PATH", format!("{}:/usr/bin:/bin", tools.display()))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    Ok(Engines(children))
}
