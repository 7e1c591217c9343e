//! What an attempt wrote, checked when it ends: every file the job expects
//! of each frame (`--output`, or a preset's known naming) and every file the
//! renderer said it saved must exist and hold at least `min_output_bytes`.
//! A command that exits 0 without its image has not rendered it.

use drqueue_common::protocol::{JobBody, OutputFile, MAX_OUTPUTS};
use drqueue_common::template::{self, TaskContext};
use std::path::Path;

/// The attempt's outputs, or why it failed: the first file missing or too
/// small. Paths are as the job or the renderer named them.
pub fn check(
    body: &JobBody,
    ctx: &TaskContext,
    saved: &[String],
) -> Result<Vec<OutputFile>, String> {
    let mut wanted: Vec<String> = Vec::new();
    for frame in ctx.block.frames() {
        for t in &body.outputs {
            let path = template::expand(std::slice::from_ref(t), ctx, Some(frame)).remove(0);
            if !wanted.contains(&path) {
                wanted.push(path);
            }
        }
        if wanted.len() >= MAX_OUTPUTS {
            break;
        }
    }
    for s in saved {
        if wanted.len() >= MAX_OUTPUTS {
            break;
        }
        if !wanted.contains(s) {
            wanted.push(s.clone());
        }
    }
    let base = body.cwd.as_deref().map(Path::new);
    let mut found = Vec::with_capacity(wanted.len());
    for path in wanted {
        let full = match base {
            Some(b) if Path::new(&path).is_relative() => b.join(&path),
            _ => Path::new(&path).to_path_buf(),
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
        found.push(OutputFile { path, size });
    }
    Ok(found)
}
