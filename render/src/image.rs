//! The pixel loop: rays from the camera through each pixel (several jittered
//! samples each), progress as it goes, and the finished frame written as a
//! PNG, atomically (a half-written file is never seen under its name).

use crate::scene::Scene;
use crate::vec3::Vec3;
use std::fmt;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// What to render, and where to write it.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub frame: i64,
    /// Frames one full orbit takes: the animation's loop length.
    pub frames_per_orbit: u32,
    pub width: u32,
    pub height: u32,
    /// Samples per pixel (anti-aliasing, and the CPU work per frame).
    pub samples: u32,
    pub output: PathBuf,
}

/// The largest image side accepted: a frame must fit in memory comfortably.
pub const MAX_SIDE: u32 = 8192;
pub const MAX_SAMPLES: u32 = 1024;

#[derive(Debug)]
pub enum RenderError {
    /// An option out of range, named.
    Option(String),
    /// The PNG could not be written.
    Write(PathBuf, String),
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Option(m) => f.write_str(m),
            RenderError::Write(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for RenderError {}

/// Renders one frame; `progress` hears the percentage done (0–100), once per
/// whole percent at most.
pub fn render(opts: &RenderOptions, progress: &mut dyn FnMut(u32)) -> Result<(), RenderError> {
    for (name, value, max) in [
        ("--width", opts.width, MAX_SIDE),
        ("--height", opts.height, MAX_SIDE),
        ("--samples", opts.samples, MAX_SAMPLES),
    ] {
        if value == 0 || value > max {
            return Err(RenderError::Option(format!(
                "{name} {value} is out of range: give 1 to {max}"
            )));
        }
    }
    let scene = Scene::at(opts.frame, opts.frames_per_orbit);
    let camera = Camera::new(&scene, opts.width, opts.height);
    let mut pixels = Vec::with_capacity(opts.width as usize * opts.height as usize * 3);
    let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ opts.frame as u64);
    let mut said = 0;
    for y in 0..opts.height {
        for x in 0..opts.width {
            let mut sum = Vec3(0.0, 0.0, 0.0);
            for _ in 0..opts.samples {
                let dir = camera.ray(f64::from(x) + jitter.next(), f64::from(y) + jitter.next());
                sum = sum + scene.trace(scene.eye, dir, 0);
            }
            let c = sum * (1.0 / f64::from(opts.samples));
            pixels.extend([to_byte(c.0), to_byte(c.1), to_byte(c.2)]);
        }
        let percent = (y + 1) * 100 / opts.height;
        if percent > said {
            said = percent;
            progress(percent);
        }
    }
    write_png(&opts.output, opts.width, opts.height, &pixels)
        .map_err(|e| RenderError::Write(opts.output.clone(), e))
}

struct Camera {
    corner: Vec3,
    right: Vec3,
    down: Vec3,
}

impl Camera {
    fn new(scene: &Scene, width: u32, height: u32) -> Camera {
        let forward = (scene.look_at - scene.eye).unit();
        let right = forward.cross(Vec3(0.0, 1.0, 0.0)).unit() * -1.0;
        let up = right.cross(forward).unit() * -1.0;
        let aspect = f64::from(width) / f64::from(height);
        let half_h = (25f64.to_radians()).tan();
        let half_w = half_h * aspect;
        let corner = forward + up * half_h - right * half_w;
        Camera {
            corner,
            right: right * (2.0 * half_w / f64::from(width)),
            down: up * (-2.0 * half_h / f64::from(height)),
        }
    }

    fn ray(&self, x: f64, y: f64) -> Vec3 {
        (self.corner + self.right * x + self.down * y).unit()
    }
}

/// A small deterministic generator for sample positions: the same frame
/// always renders the same image.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn to_byte(linear: f64) -> u8 {
    (linear.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0).round() as u8
}

fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), String> {
    let name = path.file_name().ok_or("the output path names no file")?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let result = encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(rgb))
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(frame: i64, output: PathBuf) -> RenderOptions {
        RenderOptions {
            frame,
            frames_per_orbit: 48,
            width: 64,
            height: 48,
            samples: 2,
            output,
        }
    }

    fn decode(path: &Path) -> Vec<u8> {
        let file = std::fs::File::open(path).expect("png written");
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("decodes");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("image data");
        assert_eq!((info.width, info.height), (64, 48));
        buf.truncate(info.buffer_size());
        buf
    }

    #[test]
    fn frames_are_real_images_that_move_and_repeat_exactly() {
        let dir = std::env::temp_dir().join(format!("drqueue-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut seen = Vec::new();
        for (frame, name) in [(1, "a.png"), (2, "b.png"), (1, "c.png")] {
            let mut progress = Vec::new();
            render(&opts(frame, dir.join(name)), &mut |p| progress.push(p)).unwrap();
            assert_eq!(progress.last(), Some(&100));
            assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
            seen.push(decode(&dir.join(name)));
        }
        assert_ne!(seen[0], seen[1], "the moons move between frames");
        assert_eq!(seen[0], seen[2], "the same frame renders the same pixels");
        let distinct: std::collections::HashSet<_> = seen[0].chunks(3).collect();
        assert!(distinct.len() > 100, "a real picture, not a flat fill");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_out_of_range_are_named() {
        let mut o = opts(1, PathBuf::from("/nonexistent/x.png"));
        o.samples = 0;
        let e = render(&o, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("--samples 0"), "{e}");
        o.samples = 1;
        let e = render(&o, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("cannot write /nonexistent/x.png"), "{e}");
    }
}
