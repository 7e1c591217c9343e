//! Thumbnails of what a task rendered: each output image the engine can
//! decode (PNG, 8 or 16 bits, grey or colour, with or without alpha) is
//! scaled to fit [`SIDE`] pixels and sent with the result, capped in size.
//! Anything else is skipped, and the log says why.

use drqueue_common::protocol::{Thumbnail, MAX_THUMBNAILS, MAX_THUMBNAIL_BYTES};
use std::io::BufWriter;
use std::path::Path;

/// The longest side of a thumbnail.
pub const SIDE: u32 = 160;
/// Images larger than this are not decoded (a 16k × 16k plate).
const MAX_PIXELS: u64 = 64 * 1024 * 1024;

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

fn one(path: &Path) -> Result<Vec<u8>, String> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err("only PNG images are decoded for thumbnails".into());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("{w}×{h} is too large to decode"));
    }
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = info.color_type.samples();
    let rgb = scaled(&buf[..info.buffer_size()], w, h, channels);
    let png = encode(&rgb.pixels, rgb.width, rgb.height)?;
    if png.len() > MAX_THUMBNAIL_BYTES {
        return Err(format!(
            "its thumbnail takes {} bytes, over the cap",
            png.len()
        ));
    }
    Ok(png)
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
    {
        let mut encoder = png::Encoder::new(BufWriter::new(&mut out), w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut e = png::Encoder::new(BufWriter::new(file), w, h);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(data).unwrap();
    }

    #[test]
    fn images_become_small_pngs_and_others_say_why() {
        let dir = std::env::temp_dir().join(format!("drqueue-thumb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 640×320 RGBA, left half red, right half blue.
        let mut data = Vec::new();
        for _y in 0..320 {
            for x in 0..640 {
                data.extend(if x < 320 {
                    [255, 0, 0, 255]
                } else {
                    [0, 0, 255, 255]
                });
            }
        }
        write_png(&dir.join("a.png"), 640, 320, png::ColorType::Rgba, &data);
        write_png(
            &dir.join("g.png"),
            2,
            2,
            png::ColorType::Grayscale,
            &[0, 255, 255, 0],
        );
        std::fs::write(dir.join("x.exr"), b"not decoded").unwrap();
        let files = vec![
            (1, dir.join("a.png")),
            (2, dir.join("g.png")),
            (3, dir.join("x.exr")),
            (4, dir.join("missing.png")),
        ];
        let (made, skipped) = make(&files);
        assert_eq!(made.len(), 2);
        let decoder = png::Decoder::new(std::io::Cursor::new(&made[0].png));
        let mut reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (160, 80));
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..3], &[255, 0, 0], "left stays red");
        assert_eq!(&buf[159 * 3..160 * 3], &[0, 0, 255], "right stays blue");
        assert_eq!(made[1].frame, 2);
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].contains("only PNG"), "{skipped:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
