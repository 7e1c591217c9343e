//! `drqueue-engine render-demo`: the built-in renderer's command line.

use drqueue_render::{render, RenderOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RenderDemoArgs {
    /// The frame to render (the moons' positions follow it).
    #[arg(long, allow_negative_numbers = true)]
    frame: i64,
    /// Where to write the PNG (its folder must exist).
    #[arg(long, short)]
    output: PathBuf,
    /// Frames one orbit takes: the animation's loop length.
    #[arg(long, default_value_t = 48)]
    frames_per_orbit: u32,
    /// Image width in pixels.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// Samples per pixel: more is smoother, and slower.
    #[arg(long, default_value_t = 16)]
    samples: u32,
}

pub fn run(a: &RenderDemoArgs) -> ExitCode {
    let opts = RenderOptions {
        frame: a.frame,
        frames_per_orbit: a.frames_per_orbit,
        width: a.width,
        height: a.height,
        samples: a.samples,
        output: a.output.clone(),
    };
    println!(
        "render-demo: frame {} at {}x{}, {} samples per pixel",
        a.frame, a.width, a.height, a.samples
    );
    let mut stdout = std::io::stdout();
    // Every 10 %: enough to follow, few enough lines for the log.
    let result = render(&opts, &mut |p| {
        if p % 10 == 0 {
            let _ = writeln!(stdout, "drqueue_progress: {p}");
            let _ = stdout.flush();
        }
    });
    match result {
        Ok(()) => {
            println!("drqueue_output: {}", a.output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("render-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
