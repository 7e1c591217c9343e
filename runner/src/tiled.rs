//! The engine's side of a tiled job ([`drqueue_common::tiles`]).
//!
//! - A tile task runs the renderer like any task, but its declared outputs
//!   are the tile's files (`OUT/tiles/r0c1/…`), and those are always
//!   uploaded to the master's content store: its assemble task may run on
//!   another engine, with or without a shared file system.
//! - An assemble task runs no program. It gathers its frame's tiles into its
//!   own folder from the content store (verified, through the blob cache),
//!   stitches them ([`crate::assemble`]), writes the frame's declared output
//!   and uploads it. On a shared file system (the job has a `cwd` and no
//!   uploaded folder) the frame is also written where the job said, and the
//!   tiles there are removed unless the job keeps them.

use crate::sandbox::{self, Note};
use crate::{assemble, Attempt, Blobs};
use drqueue_common::protocol::{JobBody, OutputFile, TiledJob};
use drqueue_common::template::{self, TaskContext};
use drqueue_common::tiles::{tile_path, TaskRole, TileRect};
use std::path::{Path, PathBuf};

/// What a tiled job's attempt does; None for a whole-frame job.
pub(crate) fn role(a: &Attempt) -> Option<(TiledJob, TaskRole)> {
    let tiled = a.body.tiles?;
    Some((tiled, tiled.role(a.key.task.index)))
}

/// The job as a tile task sees it: its declared outputs are the tile's.
pub(crate) fn tile_body(body: &JobBody) -> JobBody {
    JobBody {
        outputs: body
            .outputs
            .iter()
            .map(|o| tile_path(o, "{tile}"))
            .collect(),
        ..body.clone()
    }
}

/// The folders a tile's files go in: the farm named them, so it makes them,
/// wherever the output is (a renderer does not make folders).
pub(crate) fn make_tile_dirs(body: &JobBody, ctx: &TaskContext, base: &Path) -> Result<(), String> {
    for t in &body.outputs {
        let path = template::expand(std::slice::from_ref(t), ctx, Some(ctx.block.first)).remove(0);
        if let Some(parent) = base.join(path).parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
    }
    Ok(())
}

/// The tile `rect`'s file for output pattern `pattern` in this frame.
fn tile_file(pattern: &str, ctx: &TaskContext, rect: TileRect) -> String {
    let ctx = TaskContext {
        tile: Some(rect),
        ..ctx.clone()
    };
    let pattern = tile_path(pattern, "{tile}");
    template::expand(&[pattern], &ctx, Some(ctx.block.first)).remove(0)
}

/// Where an assemble task runs and what it may reach.
pub(crate) struct AssembleAt<'a> {
    /// Its own folder on this engine (tiles are gathered here).
    pub(crate) dir: &'a Path,
    /// The job's folder on a shared file system, when it has one.
    pub(crate) shared: Option<&'a Path>,
    pub(crate) blobs: &'a Blobs,
}

/// Runs an assemble task; returns the frame's files, uploaded, each with
/// where it was written in the task's folder.
pub(crate) fn assemble(
    a: &Attempt,
    tiled: &TiledJob,
    ctx: &TaskContext,
    at: AssembleAt<'_>,
    note: Note,
) -> Result<Vec<(OutputFile, PathBuf)>, String> {
    if a.body.outputs.is_empty() {
        return Err("a tiled job names no output to assemble into".into());
    }
    let tiles = &tiled.tiles;
    let gather = at.dir.join(".drqueue-tiles");
    std::fs::create_dir_all(&gather).map_err(|e| format!("{}: {e}", gather.display()))?;
    let mut made = Vec::new();
    for pattern in &a.body.outputs {
        let whole =
            template::expand(std::slice::from_ref(pattern), ctx, Some(ctx.block.first)).remove(0);
        let mut paths: Vec<PathBuf> = Vec::with_capacity(tiles.count() as usize);
        let mut tile_names = Vec::new();
        for rect in tiles.rects() {
            let name = tile_file(pattern, ctx, rect);
            let Some(hash) = a
                .inputs
                .iter()
                .find(|f| f.path == name)
                .and_then(|f| f.hash)
            else {
                // The tile's task, by the numbering of `drqueue_common::tiles`.
                let frame_pos = a
                    .key
                    .task
                    .index
                    .saturating_sub(tiled.frames * tiles.count());
                let task = frame_pos * tiles.count() + rect.row * tiles.cols + rect.col;
                return Err(format!(
                    "tile {} of frame {} ({name}) is missing: its task reported no such file in the content store; retry that task (`drqueue retry {} --tasks {task}`)",
                    rect.name(),
                    ctx.block.first,
                    a.body.id
                ));
            };
            let ext = Path::new(&name)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("img");
            let dest = gather.join(format!("{}-{}.{ext}", made.len(), rect.name()));
            sandbox::place(
                &hash,
                &name,
                &dest,
                (&at.blobs.cache, &*at.blobs.link),
                &mut *note,
            )?;
            paths.push(dest);
            tile_names.push(name);
        }
        note(&format!(
            "drqueue-engine: stitching {} tiles of frame {} into {whole}\n",
            paths.len(),
            ctx.block.first
        ));
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let image = assemble::stitch(tiles, &refs)?;
        // In the task's folder first (an absolute output by its name alone);
        // uploaded from there.
        let rel = match Path::new(&whole).is_absolute() {
            true => Path::new(&whole)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
            false => whole.clone(),
        };
        let local = at.dir.join(&rel);
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        assemble::write_image(&image, &local)?;
        let mut file = vec![OutputFile {
            path: rel,
            size: 0,
            hash: None,
        }];
        sandbox::upload_found(at.dir, &mut file, &*at.blobs.link)?;
        file[0].path = whole.clone();
        if let Some(shared) = at.shared {
            publish(&local, &shared.join(&whole))?;
            if !tiles.keep {
                for t in &tile_names {
                    let _ = std::fs::remove_file(shared.join(t));
                }
            }
        }
        made.extend(file.into_iter().map(|f| (f, local.clone())));
    }
    Ok(made)
}

/// Copies the frame to its place on the shared file system, atomically.
fn publish(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let tmp = to.with_extension("drqueue-part");
    std::fs::copy(from, &tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("cannot write {}: {e}", to.display()))
}
