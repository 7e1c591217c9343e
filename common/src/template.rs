//! Command templates: an argument vector with placeholders, expanded per task
//! on the engine. Never passed through a shell.
//!
//! `{start}` `{end}` `{step}` describe the task's block of frames; `{job}` and
//! `{task}` name it; `{jobdir}` is the folder the task runs in (its copy of
//! the job's uploaded folder). `{frame}` and `{padframe:N}` make the command run once per
//! frame of the block, in order. Anything else in braces is left as written,
//! so arguments such as Houdini expressions pass through untouched.

use crate::frames::Block;
use crate::model::JobId;

/// Which task a command is expanded for.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub job: JobId,
    pub task: u32,
    pub block: Block,
    /// The folder the task runs in (`{jobdir}`): its copy of the job's
    /// uploaded folder, else the job's `cwd`, else `.`.
    pub jobdir: String,
    /// The tile a task of a tiled job renders: `{tile}` is its name and
    /// `{tile_left}`, `{tile_right}`, `{tile_top}`, `{tile_bottom}` its
    /// pixels, 1-based and inclusive from the top left (POV-Ray's `+SC`…).
    pub tile: Option<crate::tiles::TileRect>,
}

/// True when the template holds a per-frame placeholder.
pub fn is_per_frame(argv: &[String]) -> bool {
    argv.iter()
        .any(|a| a.contains("{frame}") || a.contains("{padframe:"))
}

/// The command lines one task runs, in order: one per frame when the
/// template is per-frame, else one for the whole block.
pub fn commands(argv: &[String], ctx: &TaskContext) -> Vec<Vec<String>> {
    if is_per_frame(argv) {
        ctx.block
            .frames()
            .map(|f| expand(argv, ctx, Some(f)))
            .collect()
    } else {
        vec![expand(argv, ctx, None)]
    }
}

/// Expands every argument for one frame (or for the block when `frame` is None).
pub fn expand(argv: &[String], ctx: &TaskContext, frame: Option<i64>) -> Vec<String> {
    argv.iter().map(|a| expand_arg(a, ctx, frame)).collect()
}

fn expand_arg(arg: &str, ctx: &TaskContext, frame: Option<i64>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        match value(name, ctx, frame) {
            Some(v) => out.push_str(&v),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn value(name: &str, ctx: &TaskContext, frame: Option<i64>) -> Option<String> {
    let frame_or_start = frame.unwrap_or(ctx.block.first);
    Some(match name {
        "start" => ctx.block.first.to_string(),
        "end" => ctx.block.last.to_string(),
        "step" => ctx.block.step.to_string(),
        "job" => ctx.job.to_string(),
        "task" => ctx.task.to_string(),
        "jobdir" => ctx.jobdir.clone(),
        "frame" => frame_or_start.to_string(),
        "tile" => ctx.tile?.name(),
        "tile_left" => (ctx.tile?.x.0 + 1).to_string(),
        "tile_right" => ctx.tile?.x.1.to_string(),
        "tile_top" => (ctx.tile?.y.0 + 1).to_string(),
        "tile_bottom" => ctx.tile?.y.1.to_string(),
        _ => {
            let width: usize = name.strip_prefix("padframe:")?.parse().ok()?;
            if width > 32 {
                return None;
            }
            if frame_or_start < 0 {
                format!(
                    "-{:0width$}",
                    -frame_or_start,
                    width = width.saturating_sub(1)
                )
            } else {
                format!("{frame_or_start:0width$}")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(first: i64, last: i64) -> TaskContext {
        TaskContext {
            job: JobId(7),
            task: 3,
            block: Block {
                first,
                last,
                step: 1,
            },
            jobdir: "/work/j7".into(),
            tile: None,
        }
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn block_placeholders() {
        let cmd = commands(
            &argv(&["r", "-s", "{start}", "-e", "{end}", "j{job}t{task}x{step}"]),
            &ctx(10, 19),
        );
        assert_eq!(cmd, vec![argv(&["r", "-s", "10", "-e", "19", "j7t3x1"])]);
        let cmd = commands(&argv(&["povray", "+I{jobdir}/scene.pov"]), &ctx(1, 1));
        assert_eq!(cmd, vec![argv(&["povray", "+I/work/j7/scene.pov"])]);
    }

    #[test]
    fn per_frame_runs_once_per_frame() {
        let cmd = commands(
            &argv(&["touch", "out.{padframe:4}.png", "{frame}"]),
            &ctx(1, 3),
        );
        assert_eq!(cmd.len(), 3);
        assert_eq!(cmd[0], argv(&["touch", "out.0001.png", "1"]));
        assert_eq!(cmd[2], argv(&["touch", "out.0003.png", "3"]));
    }

    #[test]
    fn unknown_braces_pass_through() {
        let cmd = expand(
            &argv(&["{x}", "$F{", "{padframe:zz}", "a}b"]),
            &ctx(1, 1),
            None,
        );
        assert_eq!(cmd, argv(&["{x}", "$F{", "{padframe:zz}", "a}b"]));
    }

    #[test]
    fn negative_padded_frames() {
        let c = ctx(-5, -5);
        assert_eq!(
            expand(&argv(&["{padframe:4}"]), &c, Some(-5)),
            argv(&["-005"])
        );
    }

    #[test]
    fn tile_placeholders_are_one_based_and_inclusive() {
        let tiles = crate::tiles::Tiles {
            cols: 3,
            rows: 3,
            overlap: 0,
            width: 90,
            height: 60,
            keep: false,
        };
        let mut c = ctx(1, 1);
        let line = argv(&[
            "+SC{tile_left}",
            "+EC{tile_right}",
            "+SR{tile_top}",
            "+ER{tile_bottom}",
            "{tile}",
        ]);
        c.tile = Some(tiles.rect(5));
        assert_eq!(
            expand(&line, &c, None),
            argv(&["+SC61", "+EC90", "+SR21", "+ER40", "r1c2"])
        );
        // Outside a tiled job the placeholders stay as written.
        c.tile = None;
        assert_eq!(expand(&line, &c, None), line);
    }
}
