//! Thumbnails of what a task rendered: each output image the engine can
//! decode (PNG, JPEG, TGA, PPM/PGM/PAM, and OpenEXR shown as sRGB) is
//! scaled to fit [`SIDE`] pixels and sent with the result as a PNG, capped
//! in size. Anything else is skipped, and the log says why.

use drqueue_common::protocol::{Thumbnail, MAX_THUMBNAILS, MAX_THUMBNAIL_BYTES};
use image::{ImageEncoder, ImageFormat};
use std::path::Path;

/// The longest side of a thumbnail.
pub const SIDE: u32 = 160;
/// Images larger than this are not decoded (a 16k × 16k plate).
const MAX_PIXELS: u64 = 64 * 1024 * 1024;
const MAX_SIDE: u32 = 16 * 1024;
/// What a decoder may allocate: a 64 Mpixel RGB float image and change.
const MAX_DECODE_BYTES: u64 = 1024 * 1024 * 1024;

/// Thumbnails of `files` (frame, path); and a line for the log per file
/// that has none, saying why.
pub fn make(files: &[(i64, std::path::PathBuf)]) -> (Vec<Thumbnail>, Vec<String>) {
    let mut made = Vec::new();
    let mut skipped = Vec::new();
    for (frame, path) in files {
        if made.len() >= MAX_THUMBNAILS {
            break;
        }
        match one(path) {
            Ok(png) => made.push(Thumbnail { frame: *frame, png }),
            Err(why) => skipped.push(format!("no thumbnail for {}: {why}", path.display())),
        }
    }
    (made, skipped)
}

/// The formats decoded, as the log names them.
const DECODED: &str = "PNG, JPEG, TGA, PPM/PGM/PAM and OpenEXR";

fn one(path: &Path) -> Result<Vec<u8>, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let format = match reader.format() {
        Some(
            f @ (ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::Tga
            | ImageFormat::Pnm
            | ImageFormat::OpenExr),
        ) => f,
        Some(f) => {
            return Err(format!(
                "{f:?} is not decoded for thumbnails (only {DECODED})"
            ))
        }
        None => {
            return Err(format!(
                "not an image format decoded for thumbnails ({DECODED})"
            ))
        }
    };
    let mut reader = reader;
    // A file on a render node is input: its header may claim any size.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("{w}×{h} is too large to decode"));
    }
    let rgb: Vec<u8> = if format == ImageFormat::OpenExr {
        // Scene-linear light: to display sRGB, clipped.
        img.to_rgb32f()
            .into_raw()
            .into_iter()
            .map(linear_to_srgb8)
            .collect()
    } else {
        img.to_rgb8().into_raw()
    };
    let small = scaled(&rgb, w, h, 3);
    let png = encode(&small.pixels, small.width, small.height)?;
    if png.len() > MAX_THUMBNAIL_BYTES {
        return Err(format!(
            "its thumbnail takes {} bytes, over the cap",
            png.len()
        ));
    }
    Ok(png)
}

/// One linear channel value as an 8-bit sRGB one.
fn linear_to_srgb8(v: f32) -> u8 {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let s = if v <= 0.003_130_8 {
        12.92 * v
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    };
    (s * 255.0).round() as u8
}

struct Rgb {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Box-filters the image down to fit SIDE × SIDE (never up), as RGB.
fn scaled(src: &[u8], w: u32, h: u32, channels: usize) -> Rgb {
    let scale = (f64::from(SIDE) / f64::from(w.max(h))).min(1.0);
    let (tw, th) = (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    );
    let mut pixels = Vec::with_capacity(tw as usize * th as usize * 3);
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut sum = [0u64; 3];
            let mut n = 0u64;
            for y in y0..y1.min(h) {
                for x in x0..x1.min(w) {
                    let p = (y as usize * w as usize + x as usize) * channels;
                    let px = &src[p..p + channels];
                    // Grey (and grey with alpha) fills all three channels.
                    let rgb = if channels < 3 {
                        [px[0]; 3]
                    } else {
                        [px[0], px[1], px[2]]
                    };
                    for c in 0..3 {
                        sum[c] += u64::from(rgb[c]);
                    }
                    n += 1;
                }
            }
            pixels.extend(sum.map(|s| (s / n.max(1)) as u8));
        }
    }
    Rgb {
        width: tw,
        height: th,
        pixels,
    }
}

fn encode(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half_red_half_blue(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        })
    }

    /// The thumbnail's size and its left and right edge pixels.
    fn look(png: &[u8]) -> ((u32, u32), [u8; 3], [u8; 3]) {
        let img = image::load_from_memory_with_format(png, ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        let (w, h) = img.dimensions();
        (
            (w, h),
            img.get_pixel(0, h / 2).0,
            img.get_pixel(w - 1, h / 2).0,
        )
    }

    #[test]
    fn each_decoded_format_becomes_a_small_png_and_others_say_why() {
        let dir = std::env::temp_dir().join(format!("drqueue-thumb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = half_red_half_blue(640, 320);
        for name in ["a.png", "a.jpg", "a.tga", "a.ppm"] {
            img.save(dir.join(name)).unwrap();
        }
        // Scene-linear light, as a renderer writes EXR: 1.0 is full red.
        let linear = image::Rgb32FImage::from_fn(640, 320, |x, _| {
            if x < 320 {
                image::Rgb([1.0, 0.0, 0.0])
            } else {
                image::Rgb([0.0, 0.0, 4.0])
            }
        });
        image::DynamicImage::ImageRgb32F(linear)
            .save(dir.join("a.exr"))
            .unwrap();
        image::GrayImage::from_raw(2, 2, vec![0, 255, 255, 0])
            .unwrap()
            .save(dir.join("g.png"))
            .unwrap();
        std::fs::write(dir.join("x.exr"), b"not an image").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        let files: Vec<(i64, std::path::PathBuf)> = [
            "a.png",
            "a.jpg",
            "a.tga",
            "a.ppm",
            "a.exr",
            "g.png",
            "x.exr",
            "notes.txt",
            "missing.png",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64 + 1, dir.join(n)))
        .collect();
        let (made, skipped) = make(&files);
        assert_eq!(made.len(), 6, "{skipped:?}");
        for t in &made[..5] {
            let (size, left, right) = look(&t.png);
            assert_eq!(size, (160, 80), "frame {}", t.frame);
            assert!(
                left[0] > 200 && left[2] < 60,
                "frame {}: left {left:?}",
                t.frame
            );
            assert!(
                right[2] > 200 && right[0] < 60,
                "frame {}: right {right:?}",
                t.frame
            );
        }
        assert_eq!(made[5].frame, 6);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("x.exr")), "{skipped:?}");
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("notes.txt") && s.contains("PNG, JPEG")),
            "{skipped:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn linear_light_reads_as_srgb() {
        assert_eq!(linear_to_srgb8(0.0), 0);
        assert_eq!(linear_to_srgb8(1.0), 255);
        assert_eq!(linear_to_srgb8(0.2158), 128); // sRGB mid-grey
        assert_eq!(linear_to_srgb8(f32::NAN), 0);
        assert_eq!(linear_to_srgb8(9.0), 255);
    }
}
