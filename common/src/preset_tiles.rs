//! Presets for tiled stills (`--tiles`): the renderer draws one tile of the
//! image into a folder of its own (`OUT/tiles/r0c1/…`), and the assemble
//! task stitches the tiles into the frame's declared output.
//!
//! | preset  | how a tile is rendered |
//! |---------|------------------------|
//! | povray  | `+W +H` the whole image, `+SC{tile_left} +EC{tile_right} +SR{tile_top} +ER{tile_bottom}` (POV-Ray's partial render; it writes the whole-size image with only the tile drawn) |
//! | blender | `--python-expr` sets the resolution, the render border and crop to border (the image is the tile's size), then `-o … -F PNG\|OPEN_EXR -a` |

use crate::frames::FrameSet;
use crate::preset::{frame_template, Expanded, Preset, PresetArgs, PresetError};
use crate::tiles::{tile_path, Tiles};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TiledPresetError {
    #[error(transparent)]
    Preset(#[from] PresetError),
    #[error("--tiles works with --preset povray or blender, not {0}: other renderers' region flags differ; render whole frames instead")]
    Unsupported(Preset),
    #[error("--tiles needs --output: the assemble task writes the whole image there (e.g. out/frame.png)")]
    NoOutput,
    #[error(
        "--output {0:?}: a tiled frame is written as PNG or EXR; end the name with .png or .exr"
    )]
    Format(String),
}

/// Expands `preset` for a tiled job over `frames`: the command renders tile
/// `{tile}`; `outputs` names the whole frame the assemble task writes.
pub fn expand_tiled(
    preset: Preset,
    args: &PresetArgs,
    frames: &FrameSet,
    tiles: &Tiles,
) -> Result<Expanded, TiledPresetError> {
    let output = args.output.clone().ok_or(TiledPresetError::NoOutput)?;
    let lower = output.to_ascii_lowercase();
    let exr = lower.ends_with(".exr");
    if !exr && !lower.ends_with(".png") {
        return Err(TiledPresetError::Format(output));
    }
    // The whole frame, as the renderer would name it untiled.
    let whole = crate::preset::expand(preset, args, frames)?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (w, h) = (tiles.width, tiles.height);
    let tile_out = tile_path(&output, "{tile}");
    let mut command = match preset {
        Preset::Povray => {
            // As untiled, with the tile's own output and region.
            let mut cmd: Vec<String> = whole
                .command
                .iter()
                .take(whole.command.len() - args.extra.len())
                .map(|a| {
                    if a.starts_with("+O") {
                        format!("+O{tile_out}")
                    } else {
                        a.clone()
                    }
                })
                .collect();
            cmd.extend(s(&[
                &format!("+W{w}"),
                &format!("+H{h}"),
                "+SC{tile_left}",
                "+EC{tile_right}",
                "+SR{tile_top}",
                "+ER{tile_bottom}",
            ]));
            cmd
        }
        Preset::Blender => {
            // Blender's border runs from the bottom left, in fractions; it
            // rounds them back to the same pixels.
            let expr = format!(
                "import bpy\n\
                 r = bpy.context.scene.render\n\
                 r.resolution_x, r.resolution_y, r.resolution_percentage = {w}, {h}, 100\n\
                 r.use_border, r.use_crop_to_border = True, True\n\
                 r.border_min_x, r.border_max_x = ({{tile_left}} - 1) / {w}, {{tile_right}} / {w}\n\
                 r.border_min_y, r.border_max_y = 1 - {{tile_bottom}} / {h}, 1 - ({{tile_top}} - 1) / {h}\n"
            );
            s(&[
                "blender",
                "-b",
                &args.scene,
                "--python-expr",
                &expr,
                "-o",
                &tile_out,
                "-F",
                if exr { "OPEN_EXR" } else { "PNG" },
                "-x",
                "0",
                "-s",
                "{start}",
                "-e",
                "{end}",
                "-j",
                "{step}",
                "-a",
            ])
        }
        other => return Err(TiledPresetError::Unsupported(other)),
    };
    command.extend(args.extra.iter().cloned());
    let outputs = match preset {
        // POV-Ray numbers the frames itself; the untiled expansion knows how.
        Preset::Povray => whole.outputs,
        _ => vec![frame_template(&output)],
    };
    Ok(Expanded {
        command,
        capability: whole.capability,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles() -> Tiles {
        Tiles {
            cols: 3,
            rows: 3,
            overlap: 0,
            width: 1920,
            height: 1080,
            keep: false,
        }
    }

    fn args(output: Option<&str>) -> PresetArgs {
        PresetArgs {
            scene: "scene.pov".into(),
            output: output.map(String::from),
            extra: vec!["-A".into()],
            ..Default::default()
        }
    }

    #[test]
    fn povray_renders_its_region_into_the_tile_folder() {
        let f = FrameSet::parse("1-8").unwrap();
        let e = expand_tiled(Preset::Povray, &args(Some("out/frame.png")), &f, &tiles()).unwrap();
        assert_eq!(
            e.command.join(" "),
            "povray +Iscene.pov +Oout/tiles/{tile}/frame.png +KFI1 +KFF8 +SF{frame} +EF{frame} -D \
             +W1920 +H1080 +SC{tile_left} +EC{tile_right} +SR{tile_top} +ER{tile_bottom} -A"
        );
        assert_eq!(e.outputs, vec!["out/frame{padframe:1}.png".to_string()]);
    }

    #[test]
    fn blender_sets_a_cropped_border() {
        let f = FrameSet::parse("1").unwrap();
        let mut a = args(Some("out/f_####.exr"));
        a.scene = "shot.blend".into();
        a.extra.clear();
        let e = expand_tiled(Preset::Blender, &a, &f, &tiles()).unwrap();
        let expr = &e.command[4];
        assert!(expr.contains("r.use_crop_to_border = True"), "{expr}");
        assert!(expr.contains("({tile_left} - 1) / 1920"), "{expr}");
        assert_eq!(e.command[6], "out/tiles/{tile}/f_####.exr");
        assert_eq!(e.command[8], "OPEN_EXR");
        assert_eq!(e.outputs, vec!["out/f_{padframe:4}.exr".to_string()]);
    }

    #[test]
    fn refusals_name_what_to_change() {
        let f = FrameSet::parse("1").unwrap();
        let no_out = expand_tiled(Preset::Povray, &args(None), &f, &tiles()).unwrap_err();
        assert!(no_out.to_string().contains("--output"));
        let tif = expand_tiled(Preset::Povray, &args(Some("o.tif")), &f, &tiles()).unwrap_err();
        assert!(tif.to_string().contains(".png or .exr"));
        let kick = expand_tiled(Preset::Kick, &args(Some("o.png")), &f, &tiles()).unwrap_err();
        assert!(kick.to_string().contains("povray or blender"));
    }
}
