//! Stitching a tiled frame: every tile's image is checked (there, readable,
//! of a size that fits, of one pixel format), its overlap cropped off, and
//! its own part pasted into the whole image, written as PNG or EXR in the
//! tiles' own pixel format (no bit depth is lost).
//!
//! A tile's image is either the whole frame's size with only the tile drawn
//! (POV-Ray's partial render) or the size of the tile with its overlap
//! (Blender's crop to border); both are taken.

use drqueue_common::tiles::{TileRect, Tiles};
use image::{imageops, DynamicImage, ImageFormat};
use std::path::Path;

/// Reads one tile and returns the part of it the whole image keeps.
fn own_part(tiles: &Tiles, rect: &TileRect, path: &Path) -> Result<DynamicImage, String> {
    let img = image::open(path).map_err(|e| {
        format!(
            "tile {} ({}) cannot be read: {e}",
            rect.name(),
            path.display()
        )
    })?;
    let (w, h) = (img.width(), img.height());
    let (ow, oh) = (rect.own_x.1 - rect.own_x.0, rect.own_y.1 - rect.own_y.0);
    let at = if (w, h) == (tiles.width, tiles.height) {
        (rect.own_x.0, rect.own_y.0)
    } else if (w, h) == (rect.x.1 - rect.x.0, rect.y.1 - rect.y.0) {
        (rect.own_x.0 - rect.x.0, rect.own_y.0 - rect.y.0)
    } else {
        return Err(format!(
            "tile {} ({}) is {w}x{h}; expected the whole image ({}x{}) or the tile with its overlap ({}x{}): was --resolution the size the renderer drew?",
            rect.name(),
            path.display(),
            tiles.width,
            tiles.height,
            rect.x.1 - rect.x.0,
            rect.y.1 - rect.y.0
        ));
    };
    Ok(img.crop_imm(at.0, at.1, ow, oh))
}

/// Pastes `part` into `whole` at `(x, y)` when both have the same pixel
/// format, keeping it as it is.
fn paste(whole: &mut DynamicImage, part: &DynamicImage, x: u32, y: u32) -> Result<(), ()> {
    macro_rules! same {
        ($($v:ident),*) => {
            match (whole, part) {
                $((DynamicImage::$v(w), DynamicImage::$v(p)) => {
                    imageops::replace(w, p, i64::from(x), i64::from(y));
                    Ok(())
                })*
                _ => Err(()),
            }
        };
    }
    same!(
        ImageLuma8,
        ImageLumaA8,
        ImageRgb8,
        ImageRgba8,
        ImageLuma16,
        ImageLumaA16,
        ImageRgb16,
        ImageRgba16,
        ImageRgb32F,
        ImageRgba32F
    )
}

/// Stitches the tiles (`paths[t]` is tile `t`'s image, row-major) into the
/// whole image.
pub fn stitch(tiles: &Tiles, paths: &[&Path]) -> Result<DynamicImage, String> {
    if paths.len() != tiles.count() as usize {
        return Err(format!(
            "{} tile images for a grid of {}",
            paths.len(),
            tiles.count()
        ));
    }
    let mut whole: Option<DynamicImage> = None;
    for (rect, path) in tiles.rects().zip(paths) {
        let part = own_part(tiles, &rect, path)?;
        let canvas =
            whole.get_or_insert_with(|| DynamicImage::new(tiles.width, tiles.height, part.color()));
        if paste(canvas, &part, rect.own_x.0, rect.own_y.0).is_err() {
            return Err(format!(
                "tile {} ({}) is {:?} but the tiles before it are {:?}: every tile must come from the same renderer settings",
                rect.name(),
                path.display(),
                part.color(),
                canvas.color()
            ));
        }
    }
    whole.ok_or_else(|| "a grid of no tiles".to_string())
}

/// Writes the whole image to `dest` (PNG, or EXR by its name) through a
/// temporary file beside it, so a reader never sees half an image.
pub fn write_image(img: &DynamicImage, dest: &Path) -> Result<(), String> {
    let exr = dest
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("exr"));
    let tmp = dest.with_extension(if exr { "part.exr" } else { "part.png" });
    let result = if exr {
        // OpenEXR holds floats: 8- and 16-bit tiles are widened.
        let img = match img {
            DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => img.clone(),
            other if other.color().has_alpha() => DynamicImage::ImageRgba32F(other.to_rgba32f()),
            other => DynamicImage::ImageRgb32F(other.to_rgb32f()),
        };
        img.save_with_format(&tmp, ImageFormat::OpenExr)
    } else {
        img.save_with_format(&tmp, ImageFormat::Png)
    };
    result.map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, Rgba32FImage};

    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn scratch(name: &str) -> Scratch {
        let d =
            std::env::temp_dir().join(format!("drqueue-assemble-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn grid(overlap: u32) -> Tiles {
        Tiles {
            cols: 3,
            rows: 2,
            overlap,
            width: 31,
            height: 20,
            keep: false,
        }
    }

    /// A pixel that says where it is.
    fn px(x: u32, y: u32) -> Rgb<u8> {
        Rgb([x as u8, y as u8, (x * 7 + y * 3) as u8])
    }

    #[test]
    fn whole_size_and_cropped_tiles_stitch_to_the_same_image() {
        let dir = scratch("stitch");
        for overlap in [0, 3] {
            let t = grid(overlap);
            let mut paths = Vec::new();
            for rect in t.rects() {
                // Even tiles as POV-Ray writes them (whole size, the rest
                // black), odd ones cropped as Blender writes them.
                let img = if (rect.col + rect.row) % 2 == 0 {
                    RgbImage::from_fn(t.width, t.height, |x, y| {
                        let inside =
                            (rect.x.0..rect.x.1).contains(&x) && (rect.y.0..rect.y.1).contains(&y);
                        if inside {
                            px(x, y)
                        } else {
                            Rgb([0, 0, 0])
                        }
                    })
                } else {
                    RgbImage::from_fn(rect.x.1 - rect.x.0, rect.y.1 - rect.y.0, |x, y| {
                        px(x + rect.x.0, y + rect.y.0)
                    })
                };
                let p = dir.path().join(format!("{overlap}-{}.png", rect.name()));
                img.save(&p).unwrap();
                paths.push(p);
            }
            let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
            let whole = stitch(&t, &refs).unwrap().into_rgb8();
            assert_eq!(
                whole,
                RgbImage::from_fn(t.width, t.height, px),
                "overlap {overlap}"
            );
        }
    }

    #[test]
    fn exr_tiles_keep_their_floats() {
        let dir = scratch("exr");
        let t = Tiles {
            cols: 2,
            rows: 1,
            overlap: 0,
            width: 8,
            height: 4,
            keep: false,
        };
        let f = |x: u32, y: u32| Rgba([x as f32 * 0.125 + 1.5, y as f32, 0.25, 1.0]);
        let mut paths = Vec::new();
        for rect in t.rects() {
            let img = Rgba32FImage::from_fn(rect.x.1 - rect.x.0, 4, |x, y| f(x + rect.x.0, y));
            let p = dir.path().join(format!("{}.exr", rect.name()));
            DynamicImage::ImageRgba32F(img).save(&p).unwrap();
            paths.push(p);
        }
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let out = dir.path().join("whole.exr");
        write_image(&stitch(&t, &refs).unwrap(), &out).unwrap();
        let back = image::open(&out).unwrap().into_rgba32f();
        assert_eq!(back, Rgba32FImage::from_fn(8, 4, f));
    }

    #[test]
    fn a_missing_or_misfit_tile_is_named() {
        let dir = scratch("misfit");
        let t = Tiles {
            cols: 2,
            rows: 1,
            overlap: 0,
            width: 8,
            height: 4,
            keep: false,
        };
        let good = dir.path().join("r0c0.png");
        RgbImage::new(4, 4).save(&good).unwrap();
        let odd = dir.path().join("r0c1.png");
        RgbImage::new(5, 4).save(&odd).unwrap();
        let e = stitch(&t, &[&good, &odd]).unwrap_err();
        assert!(e.contains("tile r0c1") && e.contains("5x4"), "{e}");
        let e = stitch(&t, &[&good, &dir.path().join("nope.png")]).unwrap_err();
        assert!(
            e.contains("tile r0c1") && e.contains("cannot be read"),
            "{e}"
        );
        let gray = dir.path().join("gray.png");
        image::GrayImage::new(4, 4).save(&gray).unwrap();
        let e = stitch(&t, &[&good, &gray]).unwrap_err();
        assert!(e.contains("same renderer settings"), "{e}");
    }
}
