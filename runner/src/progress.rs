//! Following a task's output as it is written: lines (`\n` or `\r`), the
//! renderer's progress across the task's frames, and the first fatal line.
//! Rules come from [`crate::renderers`], compiled once per process.

use crate::renderers::{self, Progress, GENERIC_PROGRESS};
use crate::RunnerEvent;
use drqueue_common::protocol::AttemptKey;
use regex::Regex;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Progress goes to the master at most this often per attempt.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A line longer than this is judged on its first bytes only.
const MAX_LINE: usize = 4096;

enum Rule {
    Percent(Regex),
    Fraction(Regex),
}

struct Compiled {
    progress: Vec<Rule>,
    frame: Option<Regex>,
    saved: Option<Regex>,
    fatal: Vec<Regex>,
}

fn compile(
    progress: &[Progress],
    frame: Option<&str>,
    saved: Option<&str>,
    fatal: &[&str],
) -> Compiled {
    // The patterns are constants a unit test compiles; one that did not
    // would only be skipped.
    Compiled {
        progress: progress
            .iter()
            .filter_map(|p| match p {
                Progress::Percent(s) => Regex::new(s).ok().map(Rule::Percent),
                Progress::Fraction(s) => Regex::new(s).ok().map(Rule::Fraction),
            })
            .collect(),
        frame: frame.and_then(|f| Regex::new(f).ok()),
        saved: saved.and_then(|s| Regex::new(s).ok()),
        fatal: fatal.iter().filter_map(|f| Regex::new(f).ok()).collect(),
    }
}

fn generic() -> &'static Compiled {
    static GENERIC: OnceLock<Compiled> = OnceLock::new();
    GENERIC.get_or_init(|| compile(GENERIC_PROGRESS, None, Some(renderers::GENERIC_SAVED), &[]))
}

/// The rules of `RENDERERS[index]`.
fn compiled(index: usize) -> Option<&'static Compiled> {
    static EACH: OnceLock<Vec<Compiled>> = OnceLock::new();
    EACH.get_or_init(|| {
        renderers::RENDERERS
            .iter()
            .map(|r| compile(r.progress, r.frame, r.saved, r.fatal))
            .collect()
    })
    .get(index)
}

/// One attempt's output, followed.
pub struct Tracker {
    generic: &'static Compiled,
    renderer: Option<&'static Compiled>,
    /// The task's frames, first and step: to place a `Fra:N` line.
    first: i64,
    step: i64,
    frames: u64,
    /// Command lines the task runs (one per frame with `{frame}`), and
    /// which one runs now.
    commands: usize,
    command: usize,
    /// The frame (0-based in the task) a multi-frame command is on.
    frame_index: Option<u64>,
    /// Progress within the current command or frame, 0–1.
    within: f64,
    seen: bool,
    line: Vec<u8>,
    fatal: Option<String>,
    /// Files the renderer said it wrote.
    saved: Vec<String>,
}

impl Tracker {
    pub fn new(program: &str, block: drqueue_common::frames::Block, commands: usize) -> Tracker {
        let step = block.step.max(1);
        Tracker {
            generic: generic(),
            renderer: renderers::for_program(program).and_then(compiled),
            first: block.first,
            step,
            frames: ((block.last - block.first) / step + 1).max(1) as u64,
            commands: commands.max(1),
            command: 0,
            frame_index: None,
            within: 0.0,
            seen: false,
            line: Vec::new(),
            fatal: None,
            saved: Vec::new(),
        }
    }

    /// The next command line of a per-frame task starts.
    pub fn next_command(&mut self, index: usize) {
        self.end_line();
        self.command = index.min(self.commands - 1);
        self.within = 0.0;
        self.frame_index = None;
    }

    /// More output.
    pub fn feed(&mut self, data: &[u8]) {
        for part in data.split_inclusive(|b| *b == b'\n' || *b == b'\r') {
            let ends = matches!(part.last(), Some(b'\n' | b'\r'));
            let body = if ends { &part[..part.len() - 1] } else { part };
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&body[..body.len().min(room)]);
            if ends {
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.judge(&line);
    }

    fn judge(&mut self, line: &str) {
        let saved = self.renderer.iter().chain([&self.generic]).find_map(|r| {
            r.saved
                .as_ref()?
                .captures(line)?
                .get(1)
                .map(|m| m.as_str().to_string())
        });
        if let Some(path) = saved {
            if self.saved.len() < drqueue_common::protocol::MAX_OUTPUTS
                && !self.saved.contains(&path)
            {
                self.saved.push(path);
            }
            return;
        }
        if let Some(r) = self.renderer {
            if self.fatal.is_none() && r.fatal.iter().any(|f| f.is_match(line)) {
                self.fatal = Some(line.trim().chars().take(300).collect());
            }
            if let Some(n) = r.frame.as_ref().and_then(|f| number(f, line, 1)) {
                let offset = ((n as i64 - self.first) / self.step).clamp(0, self.frames as i64 - 1);
                if self.frame_index != Some(offset as u64) {
                    self.frame_index = Some(offset as u64);
                    self.within = 0.0;
                }
            }
        }
        let rules = self
            .renderer
            .iter()
            .flat_map(|r| &r.progress)
            .chain(&self.generic.progress);
        for rule in rules {
            let fraction = match rule {
                Rule::Percent(re) => number(re, line, 1).map(|p| p / 100.0),
                Rule::Fraction(re) => match (number(re, line, 1), number(re, line, 2)) {
                    (Some(done), Some(total)) if total > 0.0 => Some(done / total),
                    _ => None,
                },
            };
            if let Some(f) = fraction {
                self.within = f.clamp(0.0, 1.0);
                self.seen = true;
                return;
            }
        }
    }

    /// The task's progress, 0–100, once anything reported it.
    pub fn percent(&self) -> Option<f32> {
        if !self.seen {
            return None;
        }
        let overall = if self.commands > 1 {
            (self.command as f64 + self.within) / self.commands as f64
        } else if let Some(i) = self.frame_index.filter(|_| self.frames > 1) {
            (i as f64 + self.within) / self.frames as f64
        } else {
            self.within
        };
        Some((overall * 100.0).clamp(0.0, 100.0) as f32)
    }

    /// The files the renderer said it wrote, in order.
    pub fn saved(&mut self) -> Vec<String> {
        self.end_line();
        self.saved.clone()
    }

    /// The first line that means no retry can help, if one was printed.
    pub fn fatal(&mut self) -> Option<String> {
        self.end_line();
        self.fatal.clone()
    }
}

/// A [`Tracker`] that tells the engine's loop how far the attempt has got,
/// at most every [`REPORT_EVERY`] and only when the number changed.
pub struct Reporter {
    tracker: Tracker,
    key: AttemptKey,
    events: mpsc::UnboundedSender<RunnerEvent>,
    sent: Option<(Instant, f32)>,
}

impl Reporter {
    pub fn new(
        tracker: Tracker,
        key: AttemptKey,
        events: mpsc::UnboundedSender<RunnerEvent>,
    ) -> Reporter {
        Reporter {
            tracker,
            key,
            events,
            sent: None,
        }
    }

    pub fn next_command(&mut self, index: usize) {
        self.tracker.next_command(index);
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.tracker.feed(data);
        let Some(p) = self.tracker.percent() else {
            return;
        };
        let due = match self.sent {
            None => true,
            Some((at, last)) => last != p && at.elapsed() >= REPORT_EVERY,
        };
        if due {
            self.sent = Some((Instant::now(), p));
            let _ = self.events.send(RunnerEvent::Progress(self.key, p));
        }
    }

    pub fn fatal(&mut self) -> Option<String> {
        self.tracker.fatal()
    }

    pub fn saved(&mut self) -> Vec<String> {
        self.tracker.saved()
    }

    /// The task's progress by the last line read.
    pub fn percent(&self) -> Option<f32> {
        self.tracker.percent()
    }
}

fn number(re: &Regex, line: &str, group: usize) -> Option<f64> {
    re.captures(line)?.get(group)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::frames::Block;

    fn block(first: i64, last: i64) -> Block {
        Block {
            first,
            last,
            step: 1,
        }
    }

    fn after(program: &str, b: Block, text: &str) -> (Option<f32>, Option<String>) {
        let mut t = Tracker::new(program, b, 1);
        t.feed(text.as_bytes());
        (t.percent(), t.fatal())
    }

    #[test]
    fn every_pattern_compiles() {
        for r in renderers::RENDERERS {
            let c = compile(r.progress, r.frame, r.saved, r.fatal);
            assert_eq!(c.progress.len(), r.progress.len(), "{:?}", r.programs);
            assert_eq!(c.fatal.len(), r.fatal.len(), "{:?}", r.programs);
            assert_eq!(c.frame.is_some(), r.frame.is_some());
            assert_eq!(c.saved.is_some(), r.saved.is_some());
            for p in r.errors.iter().chain(r.warnings) {
                assert!(Regex::new(p).is_ok(), "{p}");
            }
        }
    }

    #[test]
    fn what_the_renderers_print_gives_progress() {
        let one = block(1, 1);
        let cycles = "Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.06 | Remaining:00:01.20 | Mem:1.2M | Sample 2/4\n";
        assert_eq!(after("blender", one, cycles).0, Some(50.0));
        let blender5 = "00:00.327  render  | Fra:1 Mem:9.9M | Sample 3/4\n";
        assert_eq!(after("/usr/bin/blender", one, blender5).0, Some(75.0));
        assert_eq!(
            after("blender", one, "Fra:1 Rendering 16 / 64 samples\n").0,
            Some(25.0)
        );
        let pov = "Rendered 1024 of 76800 pixels (1%)\rRendered 38400 of 76800 pixels (50%)\r";
        assert_eq!(after("povray", one, pov).0, Some(50.0));
        assert_eq!(
            after("kick", one, "00:00:03  1020MB | 40% done - 12 rays/pixel\n").0,
            Some(40.0)
        );
        assert_eq!(after("husk", one, "ALF_PROGRESS 63%\n").0, Some(63.0));
        assert_eq!(after("prman", one, "R90000  87%\n").0, Some(87.0));
        assert_eq!(after("sh", one, "drqueue_progress: 12.5\n").0, Some(12.5));
        assert_eq!(after("blender", one, "openjd_progress: 30\n").0, Some(30.0));
        assert_eq!(after("sh", one, "nothing to see\n").0, None);
    }

    #[test]
    fn a_multi_frame_command_reports_across_its_frames() {
        // Frames 11-14 in one Blender command: on the third frame, half done.
        let text = "Fra:13 Mem:1M | Sample 8/16\n";
        assert_eq!(after("blender", block(11, 14), text).0, Some(62.5));
        // A per-frame task: command 2 of 4, at 50 %.
        let mut t = Tracker::new("sh", block(1, 4), 4);
        t.next_command(2);
        t.feed(b"drqueue_progress: 50\n");
        assert_eq!(t.percent(), Some(62.5));
    }

    #[test]
    fn fatal_lines_are_quoted_and_lines_split_anywhere() {
        let mut t = Tracker::new("blender", block(1, 1), 1);
        t.feed(b"Fra:1 Mem:1M\nError: Build without Open");
        t.feed(b"ImageDenoiser\nBlender quit\n");
        assert_eq!(
            t.fatal().as_deref(),
            Some("Error: Build without OpenImageDenoiser")
        );
        assert_eq!(
            after(
                "povray",
                block(1, 1),
                "scene.pov:3: Parse Error: Expected 'object'\n"
            )
            .1
            .as_deref(),
            Some("scene.pov:3: Parse Error: Expected 'object'")
        );
        assert_eq!(
            after(
                "sh",
                block(1, 1),
                "Error: Build without OpenImageDenoiser\n"
            )
            .1,
            None,
            "rules are per renderer"
        );
        assert_eq!(
            after(
                "povray",
                block(1, 1),
                "Possible Parse Error: undefined camera\n"
            )
            .1,
            None,
            "only a warning"
        );
        let long = "x".repeat(10 * MAX_LINE);
        assert_eq!(
            after("sh", block(1, 1), &format!("{long}\ndrqueue_progress: 5\n")).0,
            Some(5.0)
        );
    }
}
