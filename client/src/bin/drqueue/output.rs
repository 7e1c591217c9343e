//! One output layer for every command, in the manner of HyperQueue's
//! `Output`: a command gathers its data and hands it here; [`Human`] prints
//! aligned tables and sentences, [`Json`] prints the same data as JSON
//! (`--json`, global). Streams (logs, progress bars) are not listings and
//! go their own way.

use crate::error::{CliError, CliResult};
use crate::table::{self, Align::*, Cell, Table};
use drqueue_client::local::JobProgress;
use drqueue_common::listing::JobSummary;
use drqueue_common::model::EngineId;
use drqueue_common::model::{
    EngineAccepted, EngineState, EngineView, JobId, JobView, JoinTokenView, LimitView, PoolView,
    TaskStatus, TaskView,
};
use drqueue_common::users::{AuditEntry, NewToken, UserView, WhoAmI};
use drqueue_scheduler::records::AttemptRecord;
use std::collections::HashMap;
use std::path::Path;

/// A file a task wrote, as `drqueue outputs` lists it.
#[derive(serde::Serialize)]
pub struct OutputRow {
    pub task: u32,
    pub attempt: u32,
    pub path: String,
    pub size: u64,
}

/// Engine names by id, for tables (tasks carry ids; people use names).
#[derive(Default)]
pub struct EngineNames(pub HashMap<EngineId, String>);

impl EngineNames {
    pub fn of(engines: &[EngineView]) -> EngineNames {
        EngineNames(
            engines
                .iter()
                .map(|e| (e.id.clone(), e.name.clone()))
                .collect(),
        )
    }

    /// The engine's name; its id when the master no longer knows it.
    pub fn name(&self, id: Option<&EngineId>) -> String {
        match id {
            None => "-".into(),
            Some(id) => self.0.get(id).cloned().unwrap_or_else(|| id.to_string()),
        }
    }
}

fn clock(ms: drqueue_common::Millis, now: drqueue_common::Millis) -> String {
    drqueue_common::display::clock_time(ms, now, &chrono::Local)
}

fn dash<T: std::fmt::Display>(v: Option<T>) -> Cell {
    v.map_or_else(|| Cell::from("-"), Cell::from)
}

/// A job with what `show` adds for people: blacklisted engines by name and
/// the failed tasks.
pub struct JobDetail {
    pub view: JobView,
    pub blacklisted: Vec<String>,
    pub failed: Vec<TaskView>,
}

/// What happened to an engine a user controlled.
#[derive(Debug, Clone, Copy)]
pub enum EngineChange {
    Disabled,
    Enabled,
    Drained,
    Revoked,
}

pub trait Output {
    fn submitted(&self, job: &JobView) -> CliResult<()>;
    fn submitted_graph(&self, jobs: &[JobView]) -> CliResult<()>;
    fn jobs(&self, jobs: &[JobSummary]) -> CliResult<()>;
    fn job(&self, job: &JobDetail) -> CliResult<()>;
    fn job_changed(&self, job: &JobView) -> CliResult<()>;
    fn job_deleted(&self, id: JobId) -> CliResult<()>;
    /// A job `wait` saw end.
    fn job_ended(&self, job: &JobView) -> CliResult<()>;
    fn tasks(&self, tasks: &[TaskView], engines: &EngineNames) -> CliResult<()>;
    /// Files tasks wrote (`drqueue outputs JOB [TASK]`).
    fn outputs(&self, rows: &[OutputRow]) -> CliResult<()>;
    /// One task's attempts (`drqueue attempts JOB TASK`).
    fn attempts(&self, attempts: &[AttemptRecord], engines: &EngineNames) -> CliResult<()>;
    fn engines(&self, engines: &[EngineView]) -> CliResult<()>;
    fn engine(&self, engine: &EngineView) -> CliResult<()>;
    fn engine_changed(&self, engine: &EngineView, change: EngineChange) -> CliResult<()>;
    fn engine_accepted(&self, accepted: &EngineAccepted) -> CliResult<()>;
    fn join_token(&self, token: &JoinTokenView) -> CliResult<()>;
    fn pools(&self, pools: &[PoolView]) -> CliResult<()>;
    fn limits(&self, limits: &[LimitView]) -> CliResult<()>;
    fn limit_set(&self, limit: &LimitView) -> CliResult<()>;
    fn local_run(&self, jobs: &[JobProgress], log_dir: &Path) -> CliResult<()>;
    /// A token just made: the only time it is shown.
    fn new_token(&self, token: &NewToken) -> CliResult<()>;
    fn users(&self, users: &[UserView]) -> CliResult<()>;
    fn audit(&self, entries: &[AuditEntry]) -> CliResult<()>;
    fn whoami(&self, me: &WhoAmI) -> CliResult<()>;
    /// A change with nothing to list: `json` for --json, `said` for people.
    fn done(&self, json: &serde_json::Value, said: &str) -> CliResult<()>;
    /// Whether stdout is for a program (`--json`): progress stays off it.
    fn is_json(&self) -> bool {
        false
    }
}

/// The output `--json` asks for.
pub fn for_mode(json: bool) -> Box<dyn Output> {
    if json {
        Box::new(Json)
    } else {
        Box::new(Human)
    }
}

pub struct Json;

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> CliResult<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::Local(e.to_string()))?;
    println!("{s}");
    Ok(())
}

impl Output for Json {
    fn is_json(&self) -> bool {
        true
    }
    fn submitted(&self, job: &JobView) -> CliResult<()> {
        print_json(job)
    }
    fn submitted_graph(&self, jobs: &[JobView]) -> CliResult<()> {
        print_json(jobs)
    }
    fn jobs(&self, jobs: &[JobSummary]) -> CliResult<()> {
        print_json(jobs)
    }
    fn job(&self, job: &JobDetail) -> CliResult<()> {
        print_json(&job.view)
    }
    fn job_changed(&self, job: &JobView) -> CliResult<()> {
        print_json(job)
    }
    fn job_deleted(&self, id: JobId) -> CliResult<()> {
        print_json(&serde_json::json!({ "deleted": id }))
    }
    fn job_ended(&self, job: &JobView) -> CliResult<()> {
        print_json(job)
    }
    fn tasks(&self, tasks: &[TaskView], _: &EngineNames) -> CliResult<()> {
        print_json(tasks)
    }
    fn attempts(&self, attempts: &[AttemptRecord], _: &EngineNames) -> CliResult<()> {
        print_json(attempts)
    }
    fn outputs(&self, rows: &[OutputRow]) -> CliResult<()> {
        print_json(rows)
    }
    fn engines(&self, engines: &[EngineView]) -> CliResult<()> {
        print_json(engines)
    }
    fn engine(&self, engine: &EngineView) -> CliResult<()> {
        print_json(engine)
    }
    fn engine_changed(&self, engine: &EngineView, _: EngineChange) -> CliResult<()> {
        print_json(engine)
    }
    fn engine_accepted(&self, accepted: &EngineAccepted) -> CliResult<()> {
        print_json(accepted)
    }
    fn join_token(&self, token: &JoinTokenView) -> CliResult<()> {
        print_json(token)
    }
    fn pools(&self, pools: &[PoolView]) -> CliResult<()> {
        print_json(pools)
    }
    fn limits(&self, limits: &[LimitView]) -> CliResult<()> {
        print_json(limits)
    }
    fn limit_set(&self, limit: &LimitView) -> CliResult<()> {
        print_json(limit)
    }
    fn local_run(&self, jobs: &[JobProgress], _: &Path) -> CliResult<()> {
        print_json(jobs)
    }
    fn new_token(&self, token: &NewToken) -> CliResult<()> {
        print_json(token)
    }
    fn users(&self, users: &[UserView]) -> CliResult<()> {
        print_json(users)
    }
    fn audit(&self, entries: &[AuditEntry]) -> CliResult<()> {
        print_json(entries)
    }
    fn whoami(&self, me: &WhoAmI) -> CliResult<()> {
        print_json(me)
    }
    fn done(&self, json: &serde_json::Value, _: &str) -> CliResult<()> {
        print_json(json)
    }
}

pub struct Human;

impl Output for Human {
    fn submitted(&self, job: &JobView) -> CliResult<()> {
        println!("{}", job.id);
        Ok(())
    }

    /// Ids one per line, dependencies first; names on stderr.
    fn submitted_graph(&self, jobs: &[JobView]) -> CliResult<()> {
        for j in jobs {
            println!("{}", j.id);
            eprintln!("job {}: {}", j.id, j.name);
        }
        Ok(())
    }

    fn jobs(&self, jobs: &[JobSummary]) -> CliResult<()> {
        let now = drqueue_common::now_millis();
        let mut t = Table::new(&[
            ("ID", Right),
            ("NAME", Left),
            ("OWNER", Left),
            ("STATUS", Left),
            ("PRI", Right),
            ("POOL", Left),
            ("DONE/TOTAL", Right),
            ("SUBMITTED", Left),
            ("TOOK", Right),
        ]);
        for j in jobs {
            let took = j
                .started_ms
                .map(|s| table::duration(j.finished_ms.unwrap_or(now).saturating_sub(s)));
            t.row(vec![
                j.id.into(),
                truncate(&j.name, 32).into(),
                truncate(&j.owner, 16).into(),
                Cell::status(j.status),
                j.priority.into(),
                truncate(&j.pool, 12).into(),
                format!("{}/{}", j.counts.get(TaskStatus::Done), j.tasks_total).into(),
                clock(j.submitted_ms, now).into(),
                took.unwrap_or_else(|| "-".into()).into(),
            ]);
        }
        t.print();
        Ok(())
    }

    fn job(&self, job: &JobDetail) -> CliResult<()> {
        crate::show::print_job(job);
        Ok(())
    }

    fn job_changed(&self, job: &JobView) -> CliResult<()> {
        println!("job {} is {}", job.id, job.status);
        Ok(())
    }

    fn job_deleted(&self, id: JobId) -> CliResult<()> {
        println!("job {id} deleted");
        Ok(())
    }

    fn job_ended(&self, _: &JobView) -> CliResult<()> {
        Ok(()) // the exit code says it; a failure is explained on stderr
    }

    fn tasks(&self, tasks: &[TaskView], engines: &EngineNames) -> CliResult<()> {
        let now = drqueue_common::now_millis();
        let mut t = Table::new(&[
            ("TASK", Right),
            ("FRAMES", Right),
            ("STATUS", Left),
            ("PROGRESS", Right),
            ("TRIES", Right),
            ("FAILED", Right),
            ("ENGINE", Left),
            ("STARTED", Left),
            ("TOOK", Right),
            ("CPU", Right),
            ("PEAK RSS", Right),
            ("EXIT", Right),
        ]);
        for task in tasks {
            let frames = if task.first == task.last {
                task.first.to_string()
            } else {
                format!("{}-{}", task.first, task.last)
            };
            let took = task
                .started_ms
                .map(|s| table::duration(task.ended_ms.unwrap_or(now).saturating_sub(s)));
            t.row(vec![
                task.index.into(),
                frames.into(),
                Cell::status(task.status),
                dash(task.progress.map(|p| format!("{p:.0}%"))),
                task.attempts.into(),
                task.failures.into(),
                truncate(&engines.name(task.engine.as_ref()), 20).into(),
                dash(task.started_ms.map(|ms| clock(ms, now))),
                dash(took),
                dash(task.cpu_ms.map(table::duration)),
                dash(task.peak_rss_kb.map(table::memory_kb)),
                dash(task.exit_code),
            ]);
        }
        t.print();
        if tasks.iter().any(|t| t.attempts > t.failures + 1) {
            eprintln!("(TRIES counts every attempt; FAILED only those that count against --max-attempts: a cancel or a lost engine does not. `drqueue attempts JOB TASK` lists them)");
        }
        Ok(())
    }

    fn outputs(&self, rows: &[OutputRow]) -> CliResult<()> {
        let mut t = Table::new(&[
            ("TASK", Right),
            ("ATTEMPT", Right),
            ("SIZE", Right),
            ("PATH", Left),
        ]);
        for r in rows {
            t.row(vec![
                r.task.into(),
                r.attempt.into(),
                table::bytes(r.size).into(),
                r.path.as_str().into(),
            ]);
        }
        t.print();
        Ok(())
    }

    fn attempts(&self, attempts: &[AttemptRecord], engines: &EngineNames) -> CliResult<()> {
        let now = drqueue_common::now_millis();
        let mut t = Table::new(&[
            ("ATTEMPT", Right),
            ("ENGINE", Left),
            ("STARTED", Left),
            ("TOOK", Right),
            ("CPU", Right),
            ("PEAK RSS", Right),
            ("REACHED", Right),
            ("COUNTED", Left),
            ("ENDED", Left),
        ]);
        for a in attempts {
            let o = &a.outcome;
            t.row(vec![
                a.attempt.attempt.into(),
                truncate(&engines.name(Some(&a.engine)), 20).into(),
                clock(a.ended_ms.saturating_sub(o.wall_ms), now).into(),
                table::duration(o.wall_ms).into(),
                table::duration(o.cpu_ms).into(),
                table::memory_kb(o.peak_rss_kb).into(),
                dash(o.progress.map(|p| format!("{p:.0}%"))),
                if a.counted { "yes" } else { "no" }.into(),
                if o.is_success() {
                    Cell::status("done")
                } else {
                    truncate(&o.describe(), 60).into()
                },
            ]);
        }
        t.print();
        Ok(())
    }

    fn engines(&self, engines: &[EngineView]) -> CliResult<()> {
        let mut t = Table::new(&[
            ("NAME", Left),
            ("HOST", Left),
            ("STATE", Left),
            ("POOLS", Left),
            ("CORES", Right),
            ("RAM MB", Right),
            ("LOAD", Right),
            ("SPEED", Right),
            ("RUN/HWM", Right),
            ("DONE", Right),
            ("FAILED", Right),
        ]);
        for e in engines {
            t.row(vec![
                truncate(&e.name, 24).into(),
                truncate(&e.hostname, 20).into(),
                Cell::status(e.state),
                truncate(&e.pools.join(","), 20).into(),
                e.cores.into(),
                e.ram_mb.into(),
                format!("{:.2}", e.load).into(),
                dash(e.speed.map(|s| format!("{s:.2}×"))),
                format!("{}/{}", e.running, e.hwm).into(),
                e.tasks_done.into(),
                e.tasks_failed.into(),
            ]);
        }
        t.print();
        for e in engines.iter().filter(|e| e.state == EngineState::Pending) {
            println!(
                "pending: {} with key {}: if the engine logs the same key, `drqueue engine accept {}`",
                e.name, e.fingerprint, e.name
            );
        }
        Ok(())
    }

    fn engine_accepted(&self, a: &EngineAccepted) -> CliResult<()> {
        println!(
            "engine {} accepted (key {}); it joins the farm on its next try, within seconds",
            a.name, a.fingerprint
        );
        Ok(())
    }

    fn join_token(&self, t: &JoinTokenView) -> CliResult<()> {
        // The token alone on stdout, so `$(drqueue engine join-token)` works;
        // what it is goes to stderr.
        println!("{}", t.token);
        let expiry = match t.expires_ms {
            0 => "does not expire".to_string(),
            ms => format!(
                "expires {}",
                drqueue_common::display::clock_time(
                    ms,
                    drqueue_common::now_millis(),
                    &chrono::Local
                )
            ),
        };
        eprintln!(
            "join token for {} engine(s), {expiry}; it trusts master key {}. Give it to an engine as DRQUEUE_JOIN_TOKEN (or --join-token-file)",
            t.uses, t.master_fingerprint
        );
        Ok(())
    }

    fn engine(&self, e: &EngineView) -> CliResult<()> {
        crate::show::print_engine(e);
        Ok(())
    }

    fn engine_changed(&self, e: &EngineView, change: EngineChange) -> CliResult<()> {
        match change {
            EngineChange::Disabled => println!(
                "engine {} disabled; its {} running task(s) finish",
                e.name, e.running
            ),
            EngineChange::Enabled => println!("engine {} enabled", e.name),
            EngineChange::Drained => println!("engine {} drained and disabled", e.name),
            EngineChange::Revoked => println!(
                "engine {} revoked: its tasks run elsewhere and it is refused from now on",
                e.name
            ),
        }
        Ok(())
    }

    fn pools(&self, pools: &[PoolView]) -> CliResult<()> {
        println!("{:<20} {:>7}", "POOL", "ENGINES");
        for p in pools {
            println!("{:<20} {:>7}", p.name, p.engines);
        }
        Ok(())
    }

    fn limits(&self, limits: &[LimitView]) -> CliResult<()> {
        println!("{:<20} {:>7} {:>7}", "LIMIT", "IN USE", "COUNT");
        for l in limits {
            println!("{:<20} {:>7} {:>7}", l.name, l.in_use, l.count);
        }
        Ok(())
    }

    fn limit_set(&self, l: &LimitView) -> CliResult<()> {
        println!("limit {} set to {} ({} in use)", l.name, l.count, l.in_use);
        Ok(())
    }

    fn local_run(&self, jobs: &[JobProgress], log_dir: &Path) -> CliResult<()> {
        for j in jobs {
            println!(
                "job {} {}: {} ({} of {} tasks done)",
                j.id,
                j.name,
                j.status,
                j.counts.get(TaskStatus::Done),
                j.tasks
            );
        }
        println!("logs in {}", log_dir.display());
        Ok(())
    }

    fn new_token(&self, t: &NewToken) -> CliResult<()> {
        // The token alone on stdout, so `$(drqueue user add …)` captures it.
        println!("{}", t.token);
        eprintln!(
            "API token {} for {}: shown only now. Give it as DRQUEUE_TOKEN",
            t.id, t.user
        );
        Ok(())
    }

    fn users(&self, users: &[UserView]) -> CliResult<()> {
        println!("{:<24} {:<9} {:<20} TOKENS", "USER", "ROLE", "CREATED");
        let now = drqueue_common::now_millis();
        for u in users {
            let ids: Vec<&str> = u.tokens.iter().map(|t| t.id.as_str()).collect();
            println!(
                "{:<24} {:<9} {:<20} {}",
                truncate(&u.name, 24),
                u.role,
                drqueue_common::display::clock_time(u.created_ms, now, &chrono::Local),
                if ids.is_empty() {
                    "-".into()
                } else {
                    ids.join(",")
                }
            );
        }
        Ok(())
    }

    fn audit(&self, entries: &[AuditEntry]) -> CliResult<()> {
        println!(
            "{:<20} {:<16} {:<15} {:>6} {:>4}  ACTION",
            "WHEN", "USER", "FROM", "JOB", "HTTP"
        );
        let now = drqueue_common::now_millis();
        for e in entries {
            let job = e.job.map_or_else(|| "-".into(), |j| j.to_string());
            let detail = if e.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", truncate(&e.detail, 80))
            };
            println!(
                "{:<20} {:<16} {:<15} {:>6} {:>4}  {}{}",
                drqueue_common::display::clock_time(e.at_ms, now, &chrono::Local),
                truncate(&e.user, 16),
                truncate(&e.remote, 15),
                job,
                e.status,
                truncate(&e.action, 60),
                detail
            );
        }
        Ok(())
    }

    fn whoami(&self, me: &WhoAmI) -> CliResult<()> {
        println!("{} ({})", me.user, me.role);
        Ok(())
    }

    fn done(&self, _: &serde_json::Value, said: &str) -> CliResult<()> {
        println!("{said}");
        Ok(())
    }
}

/// Cuts `s` to `n` characters, marking the cut, with control characters
/// shown escaped (see [`clean`]).
pub fn truncate(s: &str, n: usize) -> String {
    let s = clean(s);
    if s.chars().count() <= n {
        s
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What another user wrote (a job name, an owner, an engine's host), safe
/// for a terminal: control characters, escape sequences among them, are
/// shown as `\u{1b}` instead of acting on the reader's terminal.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
