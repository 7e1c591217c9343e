//! What the renderer tests share: a POV-Ray folder that needs its include
//! file and texture, a paused job run on named engines, a download.

use crate::Farm;
use drqueue_common::model::{JobId, JobStatus, JobView};
use std::path::Path;
use std::time::Duration;

/// Starts engines `names` with `path` as their PATH, waits until all are
/// there (so every one gets work), resumes the paused `job` and waits for
/// it to end done; fails with the engines' logs otherwise.
pub fn run_paused_on(
    farm: &mut Farm,
    job: JobId,
    names: &[&str],
    path: &str,
    limit: Duration,
) -> JobView {
    for name in names {
        farm.engine_with_env(name, &[], &[("PATH", path)]);
    }
    farm.wait_engines(names.len());
    let out = farm.drqueue(&["resume", &job.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = farm.wait_job(job, limit);
    let logs: Vec<String> = names.iter().map(|n| farm.engine_log(n)).collect();
    assert_eq!(
        view.status,
        JobStatus::Done,
        "{view:?}\n{}",
        logs.join("\n")
    );
    view
}

/// `drqueue download JOB --to DIR`, which must succeed.
pub fn download(farm: &Farm, job: JobId, to: &Path) {
    let out = farm.drqueue(&["download", &job.to_string(), "--to", to.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `bytes` to `path`, making its folder.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A POV-Ray scene that needs its folder: an include file and a texture.
pub fn scene_folder(dir: &Path) {
    write(
        &dir.join("scene.pov"),
        br#"#include "lib/things.inc"
camera { location <0, 1.5, -4> look_at <0, 0.5, 0> }
light_source { <3, 5, -4> color rgb 1 }
plane { y, 0 pigment { image_map { png "tex/checker.png" } rotate x*90 scale 2 } }
object { Thing rotate y*360*clock }
"#,
    );
    write(
        &dir.join("lib/things.inc"),
        b"#declare Thing = box { <-0.6, 0, -0.6>, <0.6, 1.2, 0.6> pigment { rgb <0.9, 0.3, 0.1> } finish { phong 0.5 } }\n",
    );
    // A 16x16 checker texture.
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, 16, 16);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..16 * 16)
            .flat_map(|i| {
                let on = ((i % 16) / 4 + (i / 16) / 4) % 2 == 0;
                if on {
                    [230, 230, 230]
                } else {
                    [30, 60, 120]
                }
            })
            .collect();
        w.write_image_data(&data).unwrap();
    }
    write(&dir.join("tex/checker.png"), &png_bytes);
}
