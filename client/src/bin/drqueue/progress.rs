//! Job progress for people: `watch`, `wait` on a terminal, and `run-local`.
//!
//! It says what is true: the bar counts done tasks only, so it is full only
//! when everything is done; it turns red as soon as a task failed; "running"
//! counts tasks whose process runs, and tasks sent to an engine that has not
//! started them yet count as queued. On a terminal it draws bars on stderr;
//! elsewhere (a pipe, a log file, CI) it prints a plain line on stdout when
//! something changes.

use drqueue_common::model::{Counts, JobId, JobStatus, TaskStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// One job's state, as either a farm job or a run-local job gives it.
pub struct Snapshot<'a> {
    pub id: JobId,
    pub name: &'a str,
    pub status: JobStatus,
    pub counts: &'a Counts,
    pub total: u64,
    /// The first reason ready tasks are not running, if any.
    pub blocked: Option<String>,
    /// Percent done and the estimate, where the farm reports them.
    pub percent: Option<f32>,
    pub eta: Option<String>,
}

impl Snapshot<'_> {
    /// `12/48 done, 4 running, 32 queued, 1 failed`: every non-zero count.
    pub fn summary(&self) -> String {
        let c = self.counts;
        let mut s = format!("{}/{} done", c.get(TaskStatus::Done), self.total);
        let queued = c.get(TaskStatus::Ready) + c.get(TaskStatus::Assigned);
        for (n, what) in [
            (c.get(TaskStatus::Running), "running"),
            (queued, "queued"),
            (c.get(TaskStatus::Waiting), "waiting"),
            (c.get(TaskStatus::Failed), "failed"),
            (c.get(TaskStatus::Cancelled), "cancelled"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }

    /// ` | 42% | ends in 3m – 5m`, when known.
    fn extra(&self) -> String {
        let mut s = String::new();
        if let Some(p) = self.percent {
            s.push_str(&format!(" | {p:.0}%"));
        }
        if let Some(e) = &self.eta {
            s.push_str(&format!(" | {e}"));
        }
        s
    }

    fn line(&self) -> String {
        let mut s = format!(
            "job {} {}: {} | {}{}",
            self.id,
            crate::output::clean(self.name),
            self.status,
            self.summary(),
            self.extra()
        );
        if let Some(b) = &self.blocked {
            s.push_str(&format!(" | {b}"));
        }
        s
    }
}

/// Where progress goes: bars on a terminal, plain lines elsewhere, or
/// nowhere (`wait` in a script).
pub enum Progress {
    Bars {
        multi: MultiProgress,
        bars: Vec<(ProgressBar, bool)>,
    },
    Lines {
        last: Vec<String>,
        /// On stderr: stdout carries `--json`.
        to_stderr: bool,
    },
    Quiet,
}

impl Progress {
    /// `watch` and `run-local`: always shown, in the form the output suits.
    /// With `--json` (`json_out`) plain lines go to stderr, so stdout stays
    /// one JSON document.
    pub fn shown(json_out: bool) -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Vec::new(),
            }
        } else {
            Progress::Lines {
                last: Vec::new(),
                to_stderr: json_out,
            }
        }
    }

    /// `wait`: bars on a terminal, silence in scripts.
    pub fn on_terminal() -> Progress {
        match Progress::shown(true) {
            Progress::Lines { .. } => Progress::Quiet,
            p => p,
        }
    }

    /// The jobs' states now, in a fixed order.
    pub fn update(&mut self, jobs: &[Snapshot<'_>]) {
        match self {
            Progress::Bars { multi, bars } => {
                while bars.len() < jobs.len() {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(style(false));
                    bars.push((bar, false));
                }
                for ((bar, red), j) in bars.iter_mut().zip(jobs) {
                    let failed = j.counts.get(TaskStatus::Failed) > 0;
                    if failed && !*red {
                        bar.set_style(style(true));
                        *red = true;
                    }
                    bar.set_prefix(format!(
                        "job {} {}",
                        j.id,
                        crate::output::truncate(j.name, 24)
                    ));
                    // Known only once the job is read; a bar of 0/0 would be full.
                    bar.set_length(j.total.max(1));
                    bar.set_position(j.counts.get(TaskStatus::Done));
                    let mut msg = format!("{} | {}{}", j.status, j.summary(), j.extra());
                    if let Some(b) = &j.blocked {
                        msg.push_str(&format!(" | {b}"));
                    }
                    bar.set_message(msg);
                }
            }
            Progress::Lines { last, to_stderr } => {
                last.resize(jobs.len(), String::new());
                let mut out: Box<dyn Write> = if *to_stderr {
                    Box::new(std::io::stderr().lock())
                } else {
                    Box::new(std::io::stdout().lock())
                };
                for (seen, j) in last.iter_mut().zip(jobs) {
                    let line = j.line();
                    if *seen != line {
                        let _ = writeln!(out, "{line}");
                        *seen = line;
                    }
                }
                let _ = out.flush();
            }
            Progress::Quiet => {}
        }
    }

    /// A line above the bars (or among the lines).
    pub fn println(&self, line: &str) {
        match self {
            Progress::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Progress::Lines {
                to_stderr: true, ..
            } => eprintln!("{line}"),
            Progress::Lines { .. } => println!("{line}"),
            Progress::Quiet => {}
        }
    }

    /// The end: bars stay drawn for `watch` (`keep`), or are cleared.
    pub fn finish(&self, keep: bool) {
        if let Progress::Bars { bars, .. } = self {
            for (bar, _) in bars {
                if keep {
                    bar.abandon();
                } else {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn style(failed: bool) -> ProgressStyle {
    let colour = if failed { "red" } else { "green" };
    ProgressStyle::with_template(&format!(
        "{{prefix}} [{{bar:40.{colour}/white}}] {{msg}} ({{elapsed}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}
