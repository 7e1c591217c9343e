//! How one job and one engine read for people (`show`, `engine show`).

use crate::output::{clean, JobDetail};
use drqueue_common::model::{EngineView, TaskStatus};

/// A time in this machine's zone, or `-`.
fn ms(t: Option<u64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp_millis(t as i64))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `drqueue show`: the job, its rules, and why it is not running.
/// `ends in 4m 10s – 6m 2s`: an estimate as a range.
pub fn eta_text(e: &drqueue_common::model::Eta) -> String {
    let d = |s: u64| drqueue_common::display::duration(s * 1000);
    if e.low_s == e.high_s {
        format!("ends in about {}", d(e.low_s))
    } else {
        format!("ends in {} – {}", d(e.low_s), d(e.high_s))
    }
}

pub fn print_job(detail: &JobDetail) {
    let j = &detail.view;
    println!("job {}  {}", j.id, clean(&j.name));
    println!("  status     {}", j.status);
    println!(
        "  owner      {}   priority {}   pool {}",
        clean(&j.owner),
        j.priority,
        clean(&j.pool)
    );
    println!("  command    {}", clean(&j.command.join(" ")));
    println!(
        "  frames     {} ({}, {} tasks)",
        j.frames,
        match j.target_task_minutes {
            Some(m) => format!("blocksize auto, about {m} min a task"),
            None => format!("blocksize {}", j.blocksize),
        },
        j.tasks_total
    );
    let counts: Vec<String> = TaskStatus::ALL
        .iter()
        .filter(|s| j.counts.get(**s) > 0)
        .map(|s| format!("{} {}", j.counts.get(*s), s))
        .collect();
    println!("  tasks      {}", counts.join(", "));
    if let Some(p) = j.progress {
        let eta = j
            .eta
            .as_ref()
            .map_or_else(String::new, |e| format!("   {}", eta_text(e)));
        println!("  progress   {p:.0}%{eta}");
    }
    println!(
        "  submitted  {}   started {}   finished {}",
        ms(Some(j.submitted_ms)),
        ms(j.started_ms),
        ms(j.finished_ms)
    );
    if !j.after.is_empty() {
        let deps: Vec<String> = j
            .after
            .iter()
            .map(|d| {
                format!(
                    "{} ({})",
                    d.job,
                    d.on.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        println!("  after      {}", deps.join(", "));
    }
    if !j.dependents.is_empty() {
        let ids: Vec<String> = j.dependents.iter().map(|d| d.to_string()).collect();
        println!("  needed by  {}", ids.join(", "));
    }
    if let Some(t) = &j.tiles {
        println!(
            "  tiles      {}x{} of {}x{} px{}, then an assemble task per frame{}",
            t.cols,
            t.rows,
            t.width,
            t.height,
            if t.overlap > 0 {
                format!(", overlap {}", t.overlap)
            } else {
                String::new()
            },
            if t.keep { " (tiles kept)" } else { "" }
        );
    }
    let mut rules = Vec::new();
    if j.max_engines > 0 {
        rules.push(format!("max_engines {}", j.max_engines));
    }
    if !j.limits.is_empty() {
        rules.push(format!("limits {}", j.limits.join(", ")));
    }
    let r = &j.requirements;
    if let Some(os) = &r.os {
        rules.push(format!("os {os}"));
    }
    if r.min_cores > 0 {
        rules.push(format!("{}+ cores", r.min_cores));
    }
    if r.min_ram_mb > 0 {
        rules.push(format!("{}+ MB RAM", r.min_ram_mb));
    }
    if !r.capabilities.is_empty() {
        rules.push(format!("needs {}", r.capabilities.join(", ")));
    }
    if !rules.is_empty() {
        println!("  rules      {}", rules.join("; "));
    }
    if let Some(reason) = &j.reason {
        println!("  reason     {reason}");
    }
    if let Some(n) = &j.notification {
        let mut line = format!("{} (on {}): {}", n.to.join(", "), n.on, n.state);
        if n.attempts > 0 {
            line.push_str(&format!(", {} attempt(s)", n.attempts));
        }
        if let Some(t) = n.sent_ms {
            line.push_str(&format!(" at {}", ms(Some(t))));
        }
        if let Some(t) = n.next_try_ms {
            line.push_str(&format!(", next try {}", ms(Some(t))));
        }
        if let Some(e) = &n.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        println!("  notify     {line}");
    }
    let blocked = j.blocked_here(drqueue_common::now_millis());
    if !blocked.is_empty() {
        println!("  not running because:");
        for r in &blocked {
            println!("    - {r}");
        }
    }
    if !detail.blacklisted.is_empty() {
        println!(
            "  blacklisted {} (failed this job too often; `drqueue retry {}` forgives them)",
            detail.blacklisted.join(", "),
            j.id
        );
    }
    if !j.job_faults.is_empty() {
        println!("  the job's own faults (the same failure on two or more engines; they blacklist and sicken no engine):");
        for s in &j.job_faults {
            println!("    - {s}");
        }
    }
    if !detail.failed.is_empty() {
        println!("  failed tasks:");
        for t in detail.failed.iter().take(10) {
            println!(
                "    - task {} (frames {}-{}), {} attempts, {}: drqueue log {} {}",
                t.index,
                t.first,
                t.last,
                t.attempts,
                t.exit_description(),
                j.id,
                t.index
            );
        }
        if detail.failed.len() > 10 {
            println!(
                "    … and {} more: drqueue tasks {} --status failed",
                detail.failed.len() - 10,
                j.id
            );
        }
    }
}

/// `drqueue engine show`.
pub fn print_engine(e: &EngineView) {
    println!("engine {} ({})", e.name, e.id);
    println!("  host      {} ({} {})", e.hostname, e.os, e.arch);
    println!("  state     {}", e.state);
    println!("  pools     {}", e.pools.join(", "));
    if let Some(why) = &e.sick {
        println!(
            "  sick      {why} (`drqueue engine enable {}` clears it)",
            e.name
        );
    }
    let caps: Vec<String> = e
        .capabilities
        .iter()
        .map(|c| match e.versions.get(c) {
            Some(v) => format!("{c} {v}"),
            None => c.clone(),
        })
        .collect();
    println!("  caps      {}", caps.join(", "));
    if !e.containment.is_empty() {
        println!("  contain   {}", e.containment);
    }
    println!(
        "  cores     {}   RAM {} MB ({} MB free)   load {:.2}",
        e.cores, e.ram_mb, e.free_ram_mb, e.load
    );
    println!(
        "  slots     {}   HWM {}   holding {}",
        e.slots, e.hwm, e.running
    );
    println!(
        "  tasks     {} done, {} failed ({} failed in a row)",
        e.tasks_done, e.tasks_failed, e.failures_in_row
    );
    for held in &e.tasks {
        println!(
            "  holds     job {} task {} attempt {} ({})",
            held.job, held.task, held.attempt, held.state
        );
    }
    match e.speed {
        Some(s) => {
            println!("  speed     {s:.2}× the engines it shared jobs with (1.00 is typical)")
        }
        None => println!(
            "  speed     unknown until it renders part of a job another engine renders too"
        ),
    }
    println!(
        "            (only the engine's own faults count toward sickness: a job failing the same way on other engines is the job's fault)"
    );
}
