//! One still split across the farm (`--tiles CxR`): each frame becomes one
//! task per tile, plus an assemble task that depends on that frame's tiles
//! and stitches them, built into the engine.
//!
//! A tiled job's tasks are numbered frame by frame: for frame position `f`
//! (0-based within the frame set) and tile `t` (row-major), the tile task is
//! `f * tiles + t`; the assemble tasks follow all tile tasks, one per frame,
//! at `frames * tiles + f`. The numbering is a function of the stored spec,
//! so the stores keep the dependencies by keeping the spec.
//!
//! Pixel bounds given to the renderer are 1-based and inclusive, counted
//! from the top-left corner, as POV-Ray's `+SC +EC +SR +ER` take them.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Columns and rows at most: 16 × 16 = 256 tiles a frame. (The assembly's
/// assignment names every tile's files: this keeps it small.)
pub const MAX_TILES_PER_SIDE: u32 = 16;
/// The files a tile hands its assembly, at most: those it uploaded.
pub const MAX_FILES_PER_TILE: usize = 8;
/// The largest image side a tiled job may name.
pub const MAX_IMAGE_SIDE: u32 = 65_536;

/// How a job's frames are cut into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tiles {
    pub cols: u32,
    pub rows: u32,
    /// Extra pixels each tile renders past its edges inside the image; the
    /// assemble task crops them off.
    #[serde(default)]
    pub overlap: u32,
    /// The whole image's size in pixels.
    pub width: u32,
    pub height: u32,
    /// Keep the tile images after the frame is assembled (on a shared file
    /// system they are removed otherwise).
    #[serde(default)]
    pub keep: bool,
}

/// One tile: its place in the grid and the pixels it renders (with the
/// overlap) and owns (without it). Pixel ranges are 0-based, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileRect {
    pub col: u32,
    pub row: u32,
    /// What the renderer draws: the owned part grown by the overlap.
    pub x: (u32, u32),
    pub y: (u32, u32),
    /// What ends up in the whole image.
    pub own_x: (u32, u32),
    pub own_y: (u32, u32),
}

impl TileRect {
    /// The tile's name in paths and logs: `r0c2`.
    pub fn name(&self) -> String {
        format!("r{}c{}", self.row, self.col)
    }
}

/// What a task of a tiled job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRole {
    /// Renders one tile of the frame at `frame_pos` in the frame set.
    Tile { frame_pos: u32, tile: TileRect },
    /// Stitches the tiles of the frame at `frame_pos`.
    Assemble { frame_pos: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilesError {
    #[error("--tiles {0:?}: write columns x rows, like 3x3 (each 1 to {MAX_TILES_PER_SIDE})")]
    Grid(String),
    #[error("--resolution {0:?}: write width x height in pixels, like 1920x1080")]
    Resolution(String),
    #[error("tiles: the image of {width}x{height} cannot be cut into {cols}x{rows} tiles of at least 2 pixels a side: use fewer tiles")]
    TooSmall {
        width: u32,
        height: u32,
        cols: u32,
        rows: u32,
    },
    #[error("tiles: image sides are 1 to {MAX_IMAGE_SIDE} pixels; got {0}x{1}")]
    ImageSize(u32, u32),
    #[error("tiles: columns and rows are 1 to {MAX_TILES_PER_SIDE}; got {0}x{1}")]
    GridSize(u32, u32),
    #[error("tiles: the job would have {count} tasks (a task per tile per frame, and an assemble task per frame); the limit is {max}: use fewer frames or tiles")]
    TooManyTasks { count: u64, max: u64 },
    #[error("--tile-overlap {overlap}: at most half a tile ({max} pixels)")]
    Overlap { overlap: u32, max: u32 },
}

/// Parses `AxB` into two numbers.
fn parse_pair(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(['x', 'X'])?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// `--tiles 3x3`: columns, rows.
pub fn parse_grid(s: &str) -> Result<(u32, u32), TilesError> {
    match parse_pair(s) {
        Some((c, r))
            if (1..=MAX_TILES_PER_SIDE).contains(&c) && (1..=MAX_TILES_PER_SIDE).contains(&r) =>
        {
            Ok((c, r))
        }
        _ => Err(TilesError::Grid(s.to_string())),
    }
}

/// `--resolution 1920x1080`: width, height.
pub fn parse_resolution(s: &str) -> Result<(u32, u32), TilesError> {
    match parse_pair(s) {
        Some((w, h)) if (1..=MAX_IMAGE_SIDE).contains(&w) && (1..=MAX_IMAGE_SIDE).contains(&h) => {
            Ok((w, h))
        }
        _ => Err(TilesError::Resolution(s.to_string())),
    }
}

/// The grid from a job file's (or Python's) fields: `tiles = "3x3"`,
/// `resolution = "1920x1080"` (required), `tile_overlap`, `keep_tiles`.
pub fn from_fields(
    grid: &str,
    resolution: Option<&str>,
    overlap: Option<u32>,
    keep: bool,
) -> Result<Tiles, TilesError> {
    let (cols, rows) = parse_grid(grid)?;
    let (width, height) = parse_resolution(resolution.unwrap_or(""))?;
    let tiles = Tiles {
        cols,
        rows,
        overlap: overlap.unwrap_or(0),
        width,
        height,
        keep,
    };
    tiles.check()?;
    Ok(tiles)
}

/// Where the `i`-th of `n` equal parts of `len` starts.
fn cut(len: u32, n: u32, i: u32) -> u32 {
    (u64::from(len) * u64::from(i) / u64::from(n)) as u32
}

impl Tiles {
    pub fn count(&self) -> u32 {
        self.cols * self.rows
    }

    /// Checks the grid against the image; every field named in the error.
    pub fn check(&self) -> Result<(), TilesError> {
        if !(1..=MAX_IMAGE_SIDE).contains(&self.width)
            || !(1..=MAX_IMAGE_SIDE).contains(&self.height)
        {
            return Err(TilesError::ImageSize(self.width, self.height));
        }
        if !(1..=MAX_TILES_PER_SIDE).contains(&self.cols)
            || !(1..=MAX_TILES_PER_SIDE).contains(&self.rows)
        {
            return Err(TilesError::GridSize(self.cols, self.rows));
        }
        if self.width / self.cols < 2 || self.height / self.rows < 2 {
            return Err(TilesError::TooSmall {
                width: self.width,
                height: self.height,
                cols: self.cols,
                rows: self.rows,
            });
        }
        let max = (self.width / self.cols).min(self.height / self.rows) / 2;
        if self.overlap > max {
            return Err(TilesError::Overlap {
                overlap: self.overlap,
                max,
            });
        }
        Ok(())
    }

    /// Tile `t` (row-major) of the grid.
    pub fn rect(&self, t: u32) -> TileRect {
        let (col, row) = (t % self.cols, t / self.cols);
        let own_x = (
            cut(self.width, self.cols, col),
            cut(self.width, self.cols, col + 1),
        );
        let own_y = (
            cut(self.height, self.rows, row),
            cut(self.height, self.rows, row + 1),
        );
        let grow = |(a, b): (u32, u32), len: u32| {
            (a.saturating_sub(self.overlap), (b + self.overlap).min(len))
        };
        TileRect {
            col,
            row,
            x: grow(own_x, self.width),
            y: grow(own_y, self.height),
            own_x,
            own_y,
        }
    }

    /// Every tile, row-major.
    pub fn rects(&self) -> impl Iterator<Item = TileRect> + '_ {
        (0..self.count()).map(|t| self.rect(t))
    }

    /// How many tasks a job of `frames` frames has: a task per tile per
    /// frame and an assemble task per frame.
    pub fn task_count(&self, frames: u64) -> u64 {
        frames * (u64::from(self.count()) + 1)
    }

    /// What task `index` of a job of `frames` frames does.
    pub fn role(&self, index: u32, frames: u32) -> TaskRole {
        let n = self.count();
        let tile_tasks = frames * n;
        if index >= tile_tasks {
            TaskRole::Assemble {
                frame_pos: index - tile_tasks,
            }
        } else {
            TaskRole::Tile {
                frame_pos: index / n,
                tile: self.rect(index % n),
            }
        }
    }

    /// The tasks task `index` waits for: an assemble task waits for its
    /// frame's tiles; a tile waits for nothing.
    pub fn after(&self, index: u32, frames: u32) -> Range<u32> {
        match self.role(index, frames) {
            TaskRole::Assemble { frame_pos } => {
                let n = self.count();
                frame_pos * n..(frame_pos + 1) * n
            }
            TaskRole::Tile { .. } => 0..0,
        }
    }

    /// The task that waits for task `index`, if any.
    pub fn dependent(&self, index: u32, frames: u32) -> Option<u32> {
        match self.role(index, frames) {
            TaskRole::Tile { frame_pos, .. } => Some(frames * self.count() + frame_pos),
            TaskRole::Assemble { .. } => None,
        }
    }
}

/// Where a tile's image goes: the frame's output path with `tiles/TILE/`
/// before the file name (`out/frame.png` → `out/tiles/r0c1/frame.png`), so
/// a renderer that numbers frames itself still finds a folder of its own.
pub fn tile_path(output: &str, tile: &str) -> String {
    match output.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/tiles/{tile}/{file}"),
        None => format!("tiles/{tile}/{output}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(cols: u32, rows: u32, overlap: u32, width: u32, height: u32) -> Tiles {
        Tiles {
            cols,
            rows,
            overlap,
            width,
            height,
            keep: false,
        }
    }

    #[test]
    fn tiles_cover_the_image_once() {
        for (w, h, c, r) in [
            (1920, 1080, 3, 3),
            (64, 48, 4, 4),
            (7, 5, 3, 2),
            (100, 100, 1, 1),
        ] {
            let t = grid(c, r, 0, w, h);
            t.check().unwrap();
            let mut hits = vec![0u8; (w * h) as usize];
            for rect in t.rects() {
                assert_eq!((rect.x, rect.y), (rect.own_x, rect.own_y));
                for y in rect.own_y.0..rect.own_y.1 {
                    for x in rect.own_x.0..rect.own_x.1 {
                        hits[(y * w + x) as usize] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&n| n == 1), "{w}x{h} in {c}x{r}");
        }
    }

    #[test]
    fn overlap_grows_inside_the_image_only() {
        let t = grid(3, 3, 4, 90, 60);
        let corner = t.rect(0);
        assert_eq!((corner.x, corner.y), ((0, 34), (0, 24)));
        let middle = t.rect(4);
        assert_eq!((middle.own_x, middle.x), ((30, 60), (26, 64)));
        let last = t.rect(8);
        assert_eq!((last.x, last.y), ((56, 90), (36, 60)));
        assert_eq!(last.name(), "r2c2");
    }

    #[test]
    fn roles_and_dependencies_follow_the_numbering() {
        let t = grid(2, 2, 0, 10, 10);
        // 3 frames: tiles 0..12, assemble 12..15.
        assert_eq!(t.task_count(3), 15);
        assert!(
            matches!(t.role(5, 3), TaskRole::Tile { frame_pos: 1, tile } if tile.col == 1 && tile.row == 0)
        );
        assert_eq!(t.role(13, 3), TaskRole::Assemble { frame_pos: 1 });
        assert_eq!(t.after(13, 3), 4..8);
        assert_eq!(t.after(5, 3), 0..0);
        assert_eq!(t.dependent(5, 3), Some(13));
        assert_eq!(t.dependent(13, 3), None);
    }

    #[test]
    fn bad_grids_are_refused_naming_the_flag() {
        assert_eq!(parse_grid("3x3"), Ok((3, 3)));
        assert!(parse_grid("0x3")
            .unwrap_err()
            .to_string()
            .contains("--tiles"));
        assert!(parse_grid("17x1").is_err());
        assert!(parse_resolution("1920x")
            .unwrap_err()
            .to_string()
            .contains("--resolution"));
        assert!(matches!(
            grid(8, 8, 0, 10, 10).check(),
            Err(TilesError::TooSmall { .. })
        ));
        let e = grid(2, 2, 30, 100, 100).check().unwrap_err().to_string();
        assert!(e.contains("--tile-overlap 30"), "{e}");
    }

    #[test]
    fn tile_paths_keep_the_file_name() {
        assert_eq!(
            tile_path("out/frame.png", "r0c1"),
            "out/tiles/r0c1/frame.png"
        );
        assert_eq!(tile_path("frame.png", "r1c0"), "tiles/r1c0/frame.png");
        assert_eq!(
            tile_path("/abs/x/f_####.exr", "r0c0"),
            "/abs/x/tiles/r0c0/f_####.exr"
        );
    }
}
