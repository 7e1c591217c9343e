//! One still split across the farm: `--tiles 3x3` renders each tile on any
//! engine, and the engine's built-in assembly stitches them. Compared with
//! the renderer's own whole-frame render, pixel for pixel. Real master,
//! engines, CLI, POV-Ray and Blender.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::renders::{download, run_paused_on, scene_folder};
use drqueue_tests::{decode_png, link_program, path_with, which, Farm};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

/// Renders the scene's frame `frame` of `frames` (at most 9) whole, on this
/// machine, into `DIR/NAMEframe.png` (POV-Ray numbers it when there are
/// several): the reference.
fn povray_whole(
    scene_dir: &Path,
    dir: &Path,
    name: &str,
    frame: u32,
    frames: u32,
    extra: &[&str],
) -> PathBuf {
    let out = dir.join(format!("{name}.png"));
    let status = Command::new(which("povray").expect("povray"))
        .current_dir(scene_dir)
        .args(["+Iscene.pov", &format!("+O{}", out.display())])
        .args([
            "+KFI1".to_string(),
            format!("+KFF{frames}"),
            format!("+SF{frame}"),
            format!("+EF{frame}"),
        ])
        .args(["+W96", "+H72", "-D", "+FN"])
        .args(extra)
        .output()
        .expect("run povray");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    match frames {
        1 => out,
        _ => dir.join(format!("{name}{frame}.png")),
    }
}

/// How two images differ: the largest channel difference and the share of
/// pixels that differ at all.
fn difference(a: &Path, b: &Path) -> (u8, f64) {
    let (wa, ha, pa) = decode_png(a);
    let (wb, hb, pb) = decode_png(b);
    assert_eq!(
        (wa, ha, pa.len()),
        (wb, hb, pb.len()),
        "{} vs {}",
        a.display(),
        b.display()
    );
    let channels = pa.len() / (wa * ha) as usize;
    let max = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let differing = pa
        .chunks(channels)
        .zip(pb.chunks(channels))
        .filter(|(x, y)| x != y)
        .count();
    (max, differing as f64 / f64::from(wa * ha))
}

struct TiledRun {
    farm: Farm,
    job: drqueue_common::model::JobId,
    scene: PathBuf,
}

/// A farm of two POV-Ray engines that share nothing with the client; the
/// scene is uploaded and the job tiled. None when POV-Ray is missing.
fn tiled_povray(tiles: &str, flags: &[&str], renderer: &[&str]) -> Option<TiledRun> {
    let Some(povray) = which("povray") else {
        drqueue_common::test_skip::skip("povray is not installed (apt-get install povray)");
        return None;
    };
    let mut farm = Farm::start();
    let bin = farm.dir.join("povray-bin");
    link_program(&bin, &povray);
    let path = path_with(&bin);
    // The folder uploaded holds the scene one level down, in the job's
    // --cwd: the assembly works in a folder of its own all the same.
    let uploaded = farm.dir.join("client-side");
    let scene = uploaded.join("shot");
    scene_folder(&scene);
    let mut args = vec![
        "--paused",
        "--upload",
        uploaded.to_str().unwrap(),
        "--cwd",
        "shot",
        "--collect",
        "out/*.png",
        "--preset",
        "povray",
        "--scene",
        "scene.pov",
        "--output",
        "out/frame.png",
        "--frames",
        "1-2",
        "--resolution",
        "96x72",
        "--tiles",
        tiles,
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "+FN"]);
    args.extend_from_slice(renderer);
    let job = farm.submit(&args);
    run_paused_on(&mut farm, job, &["pov1", "pov2"], &path, LONG);
    Some(TiledRun { farm, job, scene })
}

fn download_run(run: &TiledRun) -> PathBuf {
    let down = run.farm.dir.join("downloaded");
    download(&run.farm, run.job, &down);
    down
}

#[test]
fn a_povray_frame_in_3x3_tiles_equals_the_whole_render_pixel_for_pixel() {
    let Some(run) = tiled_povray("3x3", &["--tile-overlap", "0"], &["-A"]) else {
        return;
    };
    // 2 frames × (9 tiles + 1 assembly), spread over both engines.
    let tasks = run.farm.client().tasks(run.job, None).unwrap();
    assert_eq!(tasks.len(), 20);
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Done));
    let engines: std::collections::BTreeSet<_> =
        tasks.iter().filter_map(|t| t.engine.clone()).collect();
    assert_eq!(engines.len(), 2, "both engines rendered tiles");
    // An assembly started only after its frame's last tile ended.
    for (f, assembly) in tasks[18..].iter().enumerate() {
        let last_tile = tasks[f * 9..f * 9 + 9]
            .iter()
            .filter_map(|t| t.ended_ms)
            .max()
            .unwrap();
        assert!(assembly.started_ms.unwrap() >= last_tile, "{assembly:?}");
    }
    let down = download_run(&run);
    for frame in 1..=2 {
        let reference = povray_whole(&run.scene, &run.farm.dir, "whole", frame, 2, &["-A"]);
        let stitched = down.join(format!("out/frame{frame}.png"));
        assert_eq!(
            difference(&stitched, &reference),
            (0, 0.0),
            "frame {frame}: the stitched image differs from the whole render"
        );
    }
}

/// Anti-aliasing looks at neighbouring pixels, which a tile's edge lacks:
/// POV-Ray's adaptive method 1 (`+AM1`, jitter off) decides whether to
/// supersample a pixel by comparing it with its neighbours.
#[test]
fn anti_aliased_tiles_stay_within_the_stated_tolerance() {
    const AA: [&str; 3] = ["+A0.1", "+AM1", "-J"];
    for overlap in ["0", "2"] {
        let Some(run) = tiled_povray("3x3", &["--tile-overlap", overlap], &AA) else {
            return;
        };
        let down = download_run(&run);
        let reference = povray_whole(&run.scene, &run.farm.dir, "whole-aa", 1, 2, &AA);
        let (max, share) = difference(&down.join("out/frame1.png"), &reference);
        eprintln!(
            "anti-aliased 3x3 tiles, overlap {overlap}: max channel difference {max}, {:.3} % of pixels differ",
            share * 100.0
        );
        // Measured: 0.058 % (max 34) without overlap, 0.014 % (max 30)
        // with 2 pixels; the README states 0.5 % and 64.
        assert!(
            share <= 0.005 && max <= 64,
            "overlap {overlap}: max {max}, share {share}"
        );
    }
}

/// On a shared file system the frame lands where the job said, beside the
/// scene, and the tiles there are removed (kept with --keep-tiles).
#[test]
fn on_a_shared_file_system_the_frame_lands_in_place_and_the_tiles_go() {
    let Some(povray) = which("povray") else {
        drqueue_common::test_skip::skip("povray is not installed (apt-get install povray)");
        return;
    };
    let mut farm = Farm::start();
    let bin = farm.dir.join("povray-bin");
    link_program(&bin, &povray);
    let path = path_with(&bin);
    let shared = farm.dir.join("shared/shot");
    scene_folder(&shared);
    farm.engine_with_env("pov1", &[], &[("PATH", &path)]);
    for keep in [false, true] {
        let mut args = vec![
            "--cwd",
            shared.to_str().unwrap(),
            "--preset",
            "povray",
            "--scene",
            "scene.pov",
            "--output",
            if keep {
                "kept/frame.png"
            } else {
                "out/frame.png"
            },
            "--resolution",
            "96x72",
            "--tiles",
            "2x2",
        ];
        if keep {
            args.push("--keep-tiles");
        }
        args.extend_from_slice(&["--", "+FN", "-A"]);
        let job = farm.submit(&args);
        let view = farm.wait_job(job, LONG);
        assert_eq!(
            view.status,
            JobStatus::Done,
            "{view:?}\n{}",
            farm.engine_log("pov1")
        );
        let dir = shared.join(if keep { "kept" } else { "out" });
        let reference = povray_whole(&shared, &farm.dir, "whole", 1, 1, &["-A"]);
        assert_eq!(difference(&dir.join("frame.png"), &reference), (0, 0.0));
        let tiles: Vec<_> = walk(&dir.join("tiles"));
        assert_eq!(tiles.len(), if keep { 4 } else { 0 }, "{tiles:?}");
    }
}

/// The files under `dir`, at any depth.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A Cycles scene at a fixed seed with denoising and dither off (Debian's
/// Blender has no OpenImageDenoise): three objects, a sun, 96x72.
const BLENDER_SCENE: &str = r#"
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
s = bpy.context.scene
s.render.engine = 'CYCLES'
s.cycles.samples = 8
s.cycles.seed = 0
s.cycles.use_animated_seed = False
s.cycles.use_denoising = False
s.cycles.device = 'CPU'
s.render.resolution_x, s.render.resolution_y, s.render.resolution_percentage = 96, 72, 100
# Dither noise is laid per image: a tile's would differ from the whole's.
s.render.dither_intensity = 0
bpy.ops.mesh.primitive_plane_add(size=8)
bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(0, 0, 0.8))
bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.5, 0.5, 0.4))
cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
s.collection.objects.link(cam)
cam.location, cam.rotation_euler = (0, -5, 2.5), (1.15, 0, 0)
s.camera = cam
sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", 'SUN'))
sun.data.energy = 3
sun.rotation_euler = (0.6, 0.2, 0.3)
s.collection.objects.link(sun)
s.world = bpy.data.worlds.new("w")
s.world.color = (0.2, 0.25, 0.3)
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"#;

#[test]
fn a_blender_cycles_frame_in_3x3_tiles_equals_the_whole_render_pixel_for_pixel() {
    let Some(blender) = which("blender") else {
        drqueue_common::test_skip::skip("blender is not installed (apt-get install blender)");
        return;
    };
    let mut farm = Farm::start();
    let scene = farm.dir.join("client-side/shot");
    std::fs::create_dir_all(&scene).unwrap();
    let made = Command::new(&blender)
        .args(["-b", "--python-expr", BLENDER_SCENE, "--"])
        .arg(scene.join("scene.blend"))
        .env("HOME", &farm.dir)
        .output()
        .expect("run blender");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stdout)
    );
    // The reference: the whole frame, rendered here.
    let whole = Command::new(&blender)
        .arg("-b")
        .arg(scene.join("scene.blend"))
        .arg("-o")
        .arg(farm.dir.join("whole_####.png"))
        .args(["-F", "PNG", "-x", "0", "-f", "1"])
        .env("HOME", &farm.dir)
        .output()
        .expect("run blender");
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stdout)
    );
    let bin = farm.dir.join("blender-bin");
    link_program(&bin, &blender);
    let path = path_with(&bin);
    let job = farm.submit(&[
        "--paused",
        "--upload",
        scene.to_str().unwrap(),
        "--preset",
        "blender",
        "--scene",
        "scene.blend",
        "--output",
        "out/frame_####.png",
        "--resolution",
        "96x72",
        "--tiles",
        "3x3",
    ]);
    run_paused_on(&mut farm, job, &["blender1", "blender2"], &path, LONG);
    let down = farm.dir.join("downloaded");
    download(&farm, job, &down);
    assert_eq!(
        difference(
            &down.join("out/frame_0001.png"),
            &farm.dir.join("whole_0001.png")
        ),
        (0, 0.0),
        "the stitched Cycles frame differs from the whole render"
    );
}
