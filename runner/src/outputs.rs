//! What an attempt wrote, checked when it ends: every file the job expects
//! of each frame (`--output`, or a preset's known naming) and every file the
//! renderer said it saved must exist and hold at least `min_output_bytes`.
//! A command that exits 0 without its image has not rendered it.

use drqueue_common::protocol::{JobBody, OutputFile, MAX_OUTPUTS};
use drqueue_common::template::{self, TaskContext};
use std::path::{Path, PathBuf};

/// What an attempt left: its files as recorded, and each file with its
/// frame and full path (for thumbnails).
pub struct Found {
    pub files: Vec<OutputFile>,
    pub by_frame: Vec<(i64, PathBuf)>,
}

/// The attempt's outputs, or why it failed: the first file missing or too
/// small. Paths are as the job or the renderer named them. A file the
/// renderer said it saved belongs to the task's frames in the order saved.
pub fn check(
    body: &JobBody,
    ctx: &TaskContext,
    base: Option<&Path>,
    saved: &[String],
) -> Result<Found, String> {
    let frames: Vec<i64> = ctx.block.frames().collect();
    let mut wanted: Vec<(i64, String)> = Vec::new();
    for &frame in &frames {
        for t in &body.outputs {
            let path = template::expand(std::slice::from_ref(t), ctx, Some(frame)).remove(0);
            if !wanted.iter().any(|(_, p)| *p == path) {
                wanted.push((frame, path));
            }
        }
        if wanted.len() >= MAX_OUTPUTS {
            break;
        }
    }
    for (i, s) in saved.iter().enumerate() {
        if wanted.len() >= MAX_OUTPUTS {
            break;
        }
        if !wanted.iter().any(|(_, p)| p == s) {
            let frame = frames
                .get(i)
                .or(frames.last())
                .copied()
                .unwrap_or(ctx.block.first);
            wanted.push((frame, s.clone()));
        }
    }
    let mut found = Found {
        files: Vec::with_capacity(wanted.len()),
        by_frame: Vec::with_capacity(wanted.len()),
    };
    for (frame, path) in wanted {
        let full = match base {
            Some(b) if Path::new(&path).is_relative() => b.join(&path),
            _ => PathBuf::from(&path),
        };
        let size = match std::fs::metadata(&full) {
            Ok(m) if m.is_file() => m.len(),
            _ => {
                return Err(format!(
                    "expected output {path} is missing, though the command exited 0"
                ))
            }
        };
        if size < body.min_output_bytes {
            return Err(format!(
                "output {path} has {size} bytes, fewer than --min-output-bytes {}",
                body.min_output_bytes
            ));
        }
        found.by_frame.push((frame, full));
        found.files.push(OutputFile {
            path,
            size,
            hash: None,
        });
    }
    Ok(found)
}
