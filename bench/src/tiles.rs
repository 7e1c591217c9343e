//! `tiles`: one 1920x1080 POV-Ray frame (`examples/orbit.pov`, supersampled
//! 16 times a pixel: about 30 s on one core here) rendered whole on one
//! engine, and in 3x3 tiles on two, stitched by the engine's built-in
//! assembly. The baseline is POV-Ray run directly on this machine in the
//! same run. Every render uses one thread (`+WT1`), so an engine is one
//! core's worth. Each tile pays POV-Ray's start-up (about 0.6 s here) and
//! writes a whole-size image, so tiles pay off only for frames far longer
//! than that. Nothing is asserted.

use super::{run_job, scratch, spec, start_engines, start_master, wait_engines};
use drqueue_common::tiles::Tiles;
use std::time::Instant;

const SIZE: (u32, u32) = (1920, 1080);

pub async fn tiles() -> anyhow::Result<()> {
    let scene = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orbit.pov");
    let scene = scene.canonicalize()?;
    let (w, h) = SIZE;
    println!(
        "== tiles: one {w}x{h} POV-Ray frame of orbit.pov (+A0.0 +AM2 +R3, one thread a render)"
    );
    let dir = scratch("tiles");
    std::fs::create_dir_all(dir.join("out"))?;
    // The preset adds -D (no display window) itself.
    let common = [
        "+A0.0".to_string(),
        "+AM2".into(),
        "+R3".into(),
        "+WT1".into(),
        "+FN".into(),
    ];
    // Baseline: POV-Ray alone.
    let t = Instant::now();
    let status = std::process::Command::new("povray")
        .arg(format!("+I{}", scene.display()))
        .arg(format!("+O{}", dir.join("bare.png").display()))
        .args([format!("+W{w}"), format!("+H{h}"), "-D".into()])
        .args(&common)
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "povray failed: is it installed?");
    let bare = t.elapsed().as_secs_f64();
    println!("   POV-Ray alone:                 {bare:6.2} s");
    let preset = |tiles: Option<Tiles>| -> anyhow::Result<drqueue_common::model::JobSpec> {
        let args = drqueue_common::preset::PresetArgs {
            scene: scene.display().to_string(),
            output: Some("out/frame.png".into()),
            node: None,
            extra: common.to_vec(),
        };
        let frames = drqueue_common::frames::FrameSet::parse("1")?;
        let expanded = match &tiles {
            Some(t) => drqueue_common::preset_tiles::expand_tiled(
                drqueue_common::preset::Preset::Povray,
                &args,
                &frames,
                t,
            )?,
            None => {
                let mut e = drqueue_common::preset::expand(
                    drqueue_common::preset::Preset::Povray,
                    &args,
                    &frames,
                )?;
                e.command.extend([format!("+W{w}"), format!("+H{h}")]);
                e
            }
        };
        let mut job = spec(&[], 1);
        job.command = expanded.command;
        job.outputs = expanded.outputs;
        job.cwd = Some(dir.display().to_string());
        job.tiles = tiles;
        Ok(job)
    };
    for (label, engines, tiles) in [
        ("whole, on 1 engine", 1, None),
        (
            "3x3 tiles, on 2 engines",
            2,
            Some(Tiles {
                cols: 3,
                rows: 3,
                overlap: 0,
                width: w,
                height: h,
                keep: false,
            }),
        ),
    ] {
        let run = scratch(&format!("tiles-{engines}"));
        let master = start_master(&run).await?;
        let _engines = start_engines(&master.engines_endpoint, &run, engines, 1)?;
        wait_engines(&master.http_url, engines).await?;
        let (_, took) = run_job(master.http_url.clone(), preset(tiles)?).await?;
        let secs = took.as_secs_f64();
        println!(
            "   {label:<30} {secs:6.2} s = {:.2} × POV-Ray alone",
            secs / bare
        );
        master.shutdown().await;
        let _ = std::fs::remove_dir_all(&run);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
