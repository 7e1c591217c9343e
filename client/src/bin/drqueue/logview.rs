//! `drqueue log`: an attempt's output between a header (engine, command
//! line, start) and a footer (exit, signal, wall time, CPU, peak RSS). Both
//! come from the attempt's record when the log is read: the log file holds
//! only what the task printed, so an engine still creates it only on the
//! first output. `--raw` prints the output alone.

use crate::error::CliResult;
use crate::output::EngineNames;
use crate::table::{colour_on, duration, memory_kb};
use drqueue_client::{Client, ClientError};
use drqueue_common::model::JobId;
use drqueue_common::template::{commands, TaskContext};
use drqueue_scheduler::records::AttemptRecord;
use std::io::Write;
use std::time::Duration;

/// How long one follower's request waits for more log at the master.
const FOLLOW_WAIT_SECS: u64 = 20;

pub struct LogArgs {
    pub job: JobId,
    pub task: u32,
    pub attempt: Option<u32>,
    pub follow: bool,
    pub raw: bool,
}

/// Prints an attempt's log (window after window); with `follow`, keeps
/// printing until the attempt ends.
pub fn log(client: &Client, a: &LogArgs) -> CliResult<()> {
    // A follower subscribes before its first read, so nothing falls between;
    // without the feed (an older master) it long-polls.
    let feed = if a.follow {
        client
            .events(&[
                format!("log:{}.{}", a.job, a.task),
                format!("job:{}", a.job),
            ])
            .ok()
    } else {
        None
    };
    let mut offset = 0u64;
    let mut attempt = a.attempt;
    let mut stdout = std::io::stdout().lock();
    let mut headed = a.raw;
    // The attempt's record, once known (an ended attempt's, read with the
    // header, serves the footer too), and the last byte printed.
    let mut known: Option<AttemptRecord> = None;
    let mut last_byte = None;
    loop {
        // A follower long-polls (without the feed): the master answers once
        // there is more.
        let wait = if a.follow && feed.is_none() {
            FOLLOW_WAIT_SECS
        } else {
            0
        };
        let chunk = match client.log_window(a.job, a.task, attempt, offset, wait) {
            // Following a task that has not started yet: wait for it.
            Err(ClientError::NotFound(m))
                if a.follow && attempt.is_none() && m.contains("has not run yet") =>
            {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            other => other?,
        };
        // Stay with the attempt the first answer named, should a retry start.
        attempt = Some(chunk.attempt);
        if !headed {
            headed = true;
            known = record(client, a, chunk.attempt)?;
            let lines = header(client, a, chunk.attempt, known.as_ref())?;
            let _ = write!(stdout, "{}", rule(&lines));
        }
        last_byte = chunk.data.last().copied().or(last_byte);
        let _ = stdout.write_all(&chunk.data);
        let _ = stdout.flush();
        offset += chunk.data.len() as u64;
        if let (Some(feed), true, true) = (&feed, chunk.data.is_empty(), chunk.live) {
            // Print what the feed brings until it shows a gap or the task
            // changes; then read again.
            follow_feed(
                feed,
                chunk.attempt,
                &mut offset,
                &mut last_byte,
                &mut stdout,
            );
            continue;
        }
        if chunk.data.is_empty() && (!a.follow || !chunk.live) {
            if !a.raw {
                if last_byte.is_some_and(|b| b != b'\n') {
                    let _ = writeln!(stdout);
                }
                // A followed attempt ended after the header was read.
                if known.is_none() {
                    known = record(client, a, chunk.attempt)?;
                }
                let lines = footer(chunk.attempt, known.as_ref());
                let _ = write!(stdout, "{}", rule(&lines));
            }
            return Ok(());
        }
    }
}

/// Prints the log text of `attempt` the feed pushes from `offset` on;
/// returns on a gap (bytes the event does not hold), a change of the job's
/// tasks (the attempt may have ended), or a quiet or closed feed.
fn follow_feed(
    feed: &drqueue_client::feed::EventStream,
    attempt: u32,
    offset: &mut u64,
    last_byte: &mut Option<u8>,
    out: &mut impl Write,
) {
    use drqueue_client::feed::{Next, SILENT_LIMIT};
    loop {
        let Next::Event(e) = feed.next(SILENT_LIMIT) else {
            return;
        };
        if e.name != "log" {
            return;
        }
        let Ok(ev) = serde_json::from_str::<LogEvent>(&e.data) else {
            return;
        };
        let exact = ev.bytes == ev.text.len() as u64;
        if ev.attempt != attempt || ev.offset > *offset || !exact {
            return;
        }
        let skip = (*offset - ev.offset) as usize;
        if let Some(fresh) = ev.text.as_bytes().get(skip..) {
            let _ = out.write_all(fresh);
            let _ = out.flush();
            *offset += fresh.len() as u64;
            *last_byte = fresh.last().copied().or(*last_byte);
        }
    }
}

/// A `log` event of the live feed.
#[derive(serde::Deserialize)]
struct LogEvent {
    attempt: u32,
    offset: u64,
    bytes: u64,
    text: String,
}

/// `── text ──`, dimmed on a terminal.
fn rule(lines: &[String]) -> String {
    let (on, off) = if colour_on() {
        ("\x1b[2m", "\x1b[0m")
    } else {
        ("", "")
    };
    lines.iter().map(|l| format!("{on}── {l}{off}\n")).collect()
}

fn record(client: &Client, a: &LogArgs, attempt: u32) -> CliResult<Option<AttemptRecord>> {
    Ok(client
        .attempts(a.job, a.task)?
        .into_iter()
        .find(|r| r.attempt.attempt == attempt))
}

fn header(
    client: &Client,
    a: &LogArgs,
    attempt: u32,
    ended: Option<&AttemptRecord>,
) -> CliResult<Vec<String>> {
    let job = client.job(a.job)?;
    let task = client.task(a.job, a.task)?;
    let names = EngineNames::of(&client.engines()?);
    let now = drqueue_common::now_millis();
    let (engine, started) = match ended {
        Some(r) => (
            Some(r.engine.clone()),
            Some(r.ended_ms.saturating_sub(r.outcome.wall_ms)),
        ),
        None => (task.engine.clone(), task.started_ms),
    };
    let started = started.map_or_else(
        || "not started".to_string(),
        |ms| {
            format!(
                "started {}",
                drqueue_common::display::clock_time(ms, now, &chrono::Local)
            )
        },
    );
    let mut lines = vec![format!(
        "job {} task {} (frames {}-{}), attempt {attempt} of {}, on {}, {started}",
        a.job,
        a.task,
        task.first,
        task.last,
        task.attempts,
        names.name(engine.as_ref()),
    )];
    let ctx = TaskContext {
        job: a.job,
        task: a.task,
        block: drqueue_common::frames::Block {
            first: task.first,
            last: task.last,
            step: task.step,
        },
        // The engine's folder for the task is not known here.
        jobdir: "{jobdir}".into(),
        // A tile's pixels are shown as the placeholders the job wrote.
        tile: None,
    };
    for argv in commands(&job.command, &ctx) {
        let line: Vec<String> = argv.iter().map(|a| shell_quoted(a)).collect();
        let line = line.join(" ");
        lines.push(format!("$ {}", crate::output::truncate(&line, 400)));
    }
    Ok(lines)
}

/// An argument as a shell would need it typed, to copy and run by hand.
fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=+,@%-{}".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn footer(attempt: u32, ended: Option<&AttemptRecord>) -> Vec<String> {
    let Some(r) = ended else {
        return vec![format!(
            "attempt {attempt} is still running (--follow to keep reading)"
        )];
    };
    let o = &r.outcome;
    let mut how = o.describe();
    if let Some(sig) = o.signal {
        if !how.contains("signal") {
            how.push_str(&format!(" (signal {sig})"));
        }
    }
    let counted = if r.counted {
        ""
    } else {
        "; did not count against --max-attempts"
    };
    vec![format!(
        "{how} · wall {} · CPU {} · peak RSS {}{counted}",
        duration(o.wall_ms),
        duration(o.cpu_ms),
        memory_kb(o.peak_rss_kb)
    )]
}
