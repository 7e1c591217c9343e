//! What renderers print, as data: one row per renderer, found by the
//! program's file name (what the presets run), with the patterns that give
//! progress and the lines that mean a failure no retry can fix. A renderer
//! that is not here still reports progress with `drqueue_progress: N` (or
//! OpenJD's `openjd_progress: N`) lines, which every task may print.
//!
//! Lines are matched one at a time, `\r` ending a line as `\n` does (POV-Ray
//! redraws its progress with carriage returns).

/// How a progress line gives its number.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// One capture: a percentage, 0–100.
    Percent(&'static str),
    /// Two captures: done and total (`Sample 2/4`, `1024 of 76800 pixels`).
    Fraction(&'static str),
}

#[derive(Debug)]
pub struct Renderer {
    /// Program file names this row is for.
    pub programs: &'static [&'static str],
    pub progress: &'static [Progress],
    /// A line naming the frame being rendered (`Fra:12`): one capture. A
    /// single command that renders several frames then reports progress
    /// across all of them.
    pub frame: Option<&'static str>,
    /// A line naming a file the renderer wrote: one capture, the path.
    pub saved: Option<&'static str>,
    /// Lines after which the same scene fails the same way on every engine:
    /// the task fails at once instead of being retried.
    pub fatal: &'static [&'static str],
    /// Lines log viewers mark as errors and warnings.
    pub errors: &'static [&'static str],
    pub warnings: &'static [&'static str],
}

/// A line any task may print to name a file it wrote.
pub const GENERIC_SAVED: &str = r"^\s*drqueue_output:\s*(.+?)\s*$";

/// Progress lines any task may print.
pub const GENERIC_PROGRESS: &[Progress] = &[Progress::Percent(
    r"^\s*(?:drqueue|openjd)_progress:\s*(\d+(?:\.\d+)?)\s*%?\s*$",
)];

pub static RENDERERS: &[Renderer] = &[
    Renderer {
        programs: &["blender"],
        progress: &[
            // Cycles, Blender 3 and 5 (5 puts `00:00.327  render  | ` first).
            Progress::Fraction(r"\| Sample (\d+)/(\d+)"),
            // EEVEE.
            Progress::Fraction(r"Rendering (\d+) / (\d+) samples"),
        ],
        frame: Some(r"Fra:(-?\d+) "),
        saved: Some(r"^Saved: '(.+)'"),
        fatal: &[
            r"^Error: Build without OpenImageDenoise",
            r"^Error: Cannot read file ",
            r"^Error: File format is not supported",
        ],
        errors: &[r"^Error: ", r"(?i)\berror\b"],
        warnings: &[r"^Warning: ", r"(?i)\bwarning\b"],
    },
    Renderer {
        programs: &["povray", "povray37", "povray3.7"],
        progress: &[Progress::Fraction(r"Rendered (\d+) of (\d+) pixels")],
        frame: None,
        saved: None,
        // "Possible Parse Error" is only a warning.
        fatal: &[r"(?:^|: )Parse Error:", r"^Cannot open input file"],
        errors: &[r"Error:", r"(?i)\berror\b"],
        warnings: &[r"Warning:", r"Possible Parse Error"],
    },
    Renderer {
        programs: &["kick"],
        progress: &[Progress::Percent(r"\|\s+(\d+)% done")],
        frame: None,
        saved: None,
        fatal: &[r"\[ass\] can't (?:open|read) file", r"ERROR \| \[ass\]"],
        errors: &[r"ERROR \|", r"\| ERROR"],
        warnings: &[r"WARNING \|", r"\| WARNING"],
    },
    Renderer {
        programs: &["hrender", "husk", "mantra", "hython"],
        progress: &[Progress::Percent(r"ALF_PROGRESS\s+(\d+)%")],
        frame: None,
        saved: None,
        fatal: &[r"^Error: Unable to open file", r"Cannot find ROP"],
        errors: &[r"^Error", r"(?i)\berror\b"],
        warnings: &[r"^Warning", r"(?i)\bwarning\b"],
    },
    Renderer {
        programs: &["prman"],
        progress: &[Progress::Percent(r"(?:^|\s)(\d+)%\s*$")],
        frame: None,
        saved: None,
        fatal: &[r"R56001", r"cannot open RIB file"],
        errors: &[r"\bS\d{5} ", r"\bR\d{5} .*error"],
        warnings: &[r"\bW\d{5} "],
    },
    Renderer {
        programs: &["Render"],
        progress: &[Progress::Percent(r"(\d+(?:\.\d+)?)% done")],
        frame: None,
        saved: None,
        fatal: &[r"Error: Cannot load scene"],
        errors: &[r"^// Error", r"Error:"],
        warnings: &[r"^// Warning", r"Warning:"],
    },
    Renderer {
        programs: &["nuke", "Nuke"],
        progress: &[Progress::Fraction(r"^Frame \d+ \((\d+) of (\d+)\)")],
        frame: None,
        saved: None,
        fatal: &[r"^ERROR: .*: Cannot open", r"is not a Nuke script"],
        errors: &[r"^ERROR"],
        warnings: &[r"^WARNING"],
    },
];

/// The row (its index in [`RENDERERS`]) for the program a command runs,
/// by its file name, if there is one.
pub fn for_program(program: &str) -> Option<usize> {
    let name = program.rsplit('/').next().unwrap_or(program);
    RENDERERS.iter().position(|r| r.programs.contains(&name))
}
