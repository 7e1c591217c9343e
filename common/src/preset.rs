//! Renderer presets: `drqueue submit --preset blender --scene shot.blend`
//! expands to the renderer's own command line and the capability an engine
//! needs to run it. Each line below is the one README documents, so a user
//! can check it against the renderer's manual.
//!
//! | preset    | capability  | command (per task; `{frame}` ones run per frame) |
//! |-----------|-------------|--------------------------------------------------|
//! | blender   | `blender`   | `blender -b SCENE [-o OUTPUT] -s {start} -e {end} -j {step} -a` |
//! | povray    | `povray`    | `povray +ISCENE [+OOUTPUT] +KFI<first> +KFF<last> +SF{frame} +EF{frame} -D` |
//! | hrender   | `houdini`   | `hrender -e -f {start} {end} -i {step} -d NODE [-o OUTPUT] SCENE` |
//! | maya      | `maya`      | `Render -r file -s {start} -e {end} -b {step} [-rd OUTPUT] SCENE` |
//! | nuke      | `nuke`      | `nuke -x [-X NODE] -F {start}-{end}x{step} SCENE` |
//! | kick      | `arnold`    | `kick -i SCENE -dw -dp [-o OUTPUT]` (per frame) |
//! | prman     | `renderman` | `prman -progress SCENE` (per frame) |
//!
//! A run of `#` in a per-frame scene or output name becomes the frame number
//! padded to that many digits (`shot.####.ass` → `shot.0001.ass`); Houdini's
//! output takes `$F4` for `####`; Blender reads `#` itself.

use crate::frames::FrameSet;
use std::fmt;

/// A renderer the CLI knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Blender,
    Povray,
    Hrender,
    Maya,
    Nuke,
    Kick,
    Prman,
}

impl Preset {
    pub const ALL: &'static [Preset] = &[
        Preset::Blender,
        Preset::Povray,
        Preset::Hrender,
        Preset::Maya,
        Preset::Nuke,
        Preset::Kick,
        Preset::Prman,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Blender => "blender",
            Preset::Povray => "povray",
            Preset::Hrender => "hrender",
            Preset::Maya => "maya",
            Preset::Nuke => "nuke",
            Preset::Kick => "kick",
            Preset::Prman => "prman",
        }
    }

    /// The capability (as engines report it) the renderer gives.
    pub fn capability(self) -> &'static str {
        match self {
            Preset::Blender => "blender",
            Preset::Povray => "povray",
            Preset::Hrender => "houdini",
            Preset::Maya => "maya",
            Preset::Nuke => "nuke",
            Preset::Kick => "arnold",
            Preset::Prman => "renderman",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!("unknown preset {s:?}; known: {}", names.join(", "))
            })
    }
}

/// What the user gave besides the preset.
#[derive(Debug, Clone, Default)]
pub struct PresetArgs {
    pub scene: String,
    pub output: Option<String>,
    /// Houdini's ROP (default `/out/mantra1`) or Nuke's Write node.
    pub node: Option<String>,
    /// Appended to the renderer's command line as written.
    pub extra: Vec<String>,
}

/// A preset's expansion: the command template and the capability it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub command: Vec<String>,
    pub capability: String,
    /// The files each frame writes, where the renderer's naming is known
    /// (`{padframe:N}` for the frame): checked when each task ends.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    #[error("--preset {0} needs --scene FILE")]
    NoScene(Preset),
    #[error("--preset {preset} does not use --{flag}: {why}")]
    Unused {
        preset: Preset,
        flag: &'static str,
        why: &'static str,
    },
    #[error("--preset {0} renders one scene file per frame: put #### in the scene name for the frame number (shot.####.{1})")]
    NeedsFramePattern(Preset, &'static str),
}

/// Expands `preset` for a job over `frames`.
pub fn expand(
    preset: Preset,
    args: &PresetArgs,
    frames: &FrameSet,
) -> Result<Expanded, PresetError> {
    if args.scene.is_empty() {
        return Err(PresetError::NoScene(preset));
    }
    let scene = args.scene.clone();
    let output = args.output.clone();
    let no_node = |why| {
        if args.node.is_some() {
            Err(PresetError::Unused {
                preset,
                flag: "render-node",
                why,
            })
        } else {
            Ok(())
        }
    };
    let mut cmd: Vec<String> = Vec::new();
    let mut outputs: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| cmd.extend(parts.iter().map(|s| s.to_string()));
    match preset {
        Preset::Blender => {
            no_node("Blender renders the scene's active camera")?;
            push(&["blender", "-b", &scene]);
            if let Some(o) = &output {
                push(&["-o", o]);
            }
            push(&["-s", "{start}", "-e", "{end}", "-j", "{step}", "-a"]);
        }
        Preset::Povray => {
            no_node("POV-Ray has no render nodes")?;
            // The clock runs over the whole job, so each task passes the
            // job's first and last frame and renders its own subset.
            let (first, last) = frames.bounds();
            push(&["povray", &format!("+I{scene}")]);
            if let Some(o) = &output {
                push(&[&format!("+O{o}")]);
                outputs.push(povray_frame_file(o, first, last));
            }
            push(&[
                &format!("+KFI{first}"),
                &format!("+KFF{last}"),
                "+SF{frame}",
                "+EF{frame}",
                "-D",
            ]);
        }
        Preset::Hrender => {
            let node = args.node.as_deref().unwrap_or("/out/mantra1");
            push(&[
                "hrender", "-e", "-f", "{start}", "{end}", "-i", "{step}", "-d", node,
            ]);
            if let Some(o) = &output {
                push(&["-o", &hashes_to(o, |n| format!("$F{n}"))]);
            }
            push(&[&scene]);
        }
        Preset::Maya => {
            no_node("Maya renders the scene's renderable cameras")?;
            push(&[
                "Render", "-r", "file", "-s", "{start}", "-e", "{end}", "-b", "{step}",
            ]);
            if let Some(o) = &output {
                push(&["-rd", o]);
            }
            push(&[&scene]);
        }
        Preset::Nuke => {
            if output.is_some() {
                return Err(PresetError::Unused {
                    preset,
                    flag: "output",
                    why: "the Write node names the file; pick the node with --render-node",
                });
            }
            push(&["nuke", "-x"]);
            if let Some(n) = &args.node {
                push(&["-X", n]);
            }
            push(&["-F", "{start}-{end}x{step}", &scene]);
        }
        Preset::Kick | Preset::Prman => {
            no_node("the scene file is one frame's render")?;
            let ext = if preset == Preset::Kick { "ass" } else { "rib" };
            if !scene.contains('#') && frames.len() > 1 {
                return Err(PresetError::NeedsFramePattern(preset, ext));
            }
            let per_frame = |s: &str| hashes_to(s, |n| format!("{{padframe:{n}}}"));
            if preset == Preset::Kick {
                push(&["kick", "-i", &per_frame(&scene), "-dw", "-dp"]);
                if let Some(o) = &output {
                    push(&["-o", &per_frame(o)]);
                    outputs.push(per_frame(o));
                }
            } else {
                if output.is_some() {
                    return Err(PresetError::Unused {
                        preset,
                        flag: "output",
                        why: "the RIB file's Display line names the image",
                    });
                }
                push(&["prman", "-progress", &per_frame(&scene)]);
            }
        }
    }
    cmd.extend(args.extra.iter().cloned());
    Ok(Expanded {
        command: cmd,
        capability: preset.capability().to_string(),
        outputs,
    })
}

/// The file POV-Ray writes for a frame of an animation: the frame number,
/// padded to as many digits as the last frame has, before the extension
/// (`frame.png`, frames 1-48 → `frame01.png`; a single frame keeps the name).
fn povray_frame_file(output: &str, first: i64, last: i64) -> String {
    // One frame is no animation to POV-Ray: the name stays as given.
    let digits = first.abs().max(last.abs()).to_string().len();
    let number = if first == last {
        String::new()
    } else {
        format!("{{padframe:{digits}}}")
    };
    let name_at = output.rfind('/').map_or(0, |i| i + 1);
    match output[name_at..].rfind('.') {
        Some(dot) => {
            let (stem, ext) = output.split_at(name_at + dot);
            format!("{stem}{number}{ext}")
        }
        None => format!("{output}{number}.png"),
    }
}

/// An output name as a per-frame template: each run of `#` becomes the
/// frame padded to that many digits (`f_####.png` → `f_{padframe:4}.png`).
pub fn frame_template(name: &str) -> String {
    hashes_to(name, |n| format!("{{padframe:{n}}}"))
}

/// Replaces each run of `#` with `f(run length)`.
fn hashes_to(s: &str, f: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = 0;
    for c in s.chars() {
        if c == '#' {
            run += 1;
            continue;
        }
        if run > 0 {
            out.push_str(&f(run));
            run = 0;
        }
        out.push(c);
    }
    if run > 0 {
        out.push_str(&f(run));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(scene: &str, output: Option<&str>) -> PresetArgs {
        PresetArgs {
            scene: scene.into(),
            output: output.map(String::from),
            ..Default::default()
        }
    }

    fn line(p: Preset, a: &PresetArgs, frames: &str) -> String {
        let f = FrameSet::parse(frames).unwrap();
        expand(p, a, &f).unwrap().command.join(" ")
    }

    #[test]
    fn each_preset_expands_to_its_documented_line() {
        let a = args("shot.blend", Some("//out/f_####"));
        assert_eq!(
            line(Preset::Blender, &a, "1-250"),
            "blender -b shot.blend -o //out/f_#### -s {start} -e {end} -j {step} -a"
        );
        let a = args("anim.pov", Some("out/frame.png"));
        assert_eq!(
            line(Preset::Povray, &a, "1-8"),
            "povray +Ianim.pov +Oout/frame.png +KFI1 +KFF8 +SF{frame} +EF{frame} -D"
        );
        let a = args("shot.hip", Some("$HIP/render/shot.####.exr"));
        assert_eq!(
            line(Preset::Hrender, &a, "1-10"),
            "hrender -e -f {start} {end} -i {step} -d /out/mantra1 -o $HIP/render/shot.$F4.exr shot.hip"
        );
        let a = args("shot.mb", Some("/renders/shot"));
        assert_eq!(
            line(Preset::Maya, &a, "1-10"),
            "Render -r file -s {start} -e {end} -b {step} -rd /renders/shot shot.mb"
        );
        let mut a = args("comp.nk", None);
        a.node = Some("Write1".into());
        assert_eq!(
            line(Preset::Nuke, &a, "1-10"),
            "nuke -x -X Write1 -F {start}-{end}x{step} comp.nk"
        );
        let a = args("shot.####.ass", Some("img.####.exr"));
        assert_eq!(
            line(Preset::Kick, &a, "1-10"),
            "kick -i shot.{padframe:4}.ass -dw -dp -o img.{padframe:4}.exr"
        );
        let a = args("shot.###.rib", None);
        assert_eq!(
            line(Preset::Prman, &a, "1-10"),
            "prman -progress shot.{padframe:3}.rib"
        );
    }

    #[test]
    fn capabilities_match_what_engines_report() {
        let f = FrameSet::parse("1").unwrap();
        let e = expand(Preset::Hrender, &args("a.hip", None), &f).unwrap();
        assert_eq!(e.capability, "houdini");
        assert_eq!(Preset::Kick.capability(), "arnold");
    }

    #[test]
    fn mistakes_get_clear_errors() {
        let f = FrameSet::parse("1-10").unwrap();
        assert_eq!(
            expand(Preset::Blender, &args("", None), &f),
            Err(PresetError::NoScene(Preset::Blender))
        );
        let err = expand(Preset::Kick, &args("shot.ass", None), &f).unwrap_err();
        assert!(err.to_string().contains("####"), "{err}");
        let err = expand(Preset::Nuke, &args("c.nk", Some("x.exr")), &f).unwrap_err();
        assert!(err.to_string().contains("Write node"), "{err}");
        assert!("maya2".parse::<Preset>().unwrap_err().contains("blender"));
    }

    #[test]
    fn known_output_names_become_expected_files() {
        let frames = FrameSet::parse("1-48").unwrap();
        let pov = expand(
            Preset::Povray,
            &args("s.pov", Some("out/frame.png")),
            &frames,
        )
        .unwrap();
        assert_eq!(pov.outputs, vec!["out/frame{padframe:2}.png"]);
        let kick = expand(
            Preset::Kick,
            &args("s.####.ass", Some("r/f.####.exr")),
            &frames,
        )
        .unwrap();
        assert_eq!(kick.outputs, vec!["r/f.{padframe:4}.exr"]);
        let blender = expand(Preset::Blender, &args("s.blend", Some("//r/####")), &frames).unwrap();
        assert!(
            blender.outputs.is_empty(),
            "Blender's Saved: lines name its files"
        );
        assert_eq!(frame_template("f_##.png"), "f_{padframe:2}.png");
    }

    #[test]
    fn extra_arguments_follow_the_preset() {
        let f = FrameSet::parse("1-8").unwrap();
        let mut a = args("s.pov", None);
        a.extra = vec!["+W160".into(), "+H120".into()];
        let cmd = expand(Preset::Povray, &a, &f).unwrap().command;
        assert_eq!(&cmd[cmd.len() - 2..], ["+W160", "+H120"]);
    }
}
