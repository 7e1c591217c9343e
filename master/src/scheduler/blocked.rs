//! "Why isn't it running?": human-readable reasons that a job's ready tasks
//! are not on engines. Computed on demand for `show`, never on the dispatch path.

use super::fitness::eligible;
use super::{Engine, Scheduler};
use drqueue_common::model::{JobId, JobStatus, TaskStatus};
use drqueue_common::Millis;

impl Scheduler {
    pub fn blocked_reasons(&self, id: JobId, now: Millis) -> Vec<String> {
        let Some(job) = self.jobs.get(&id) else {
            return Vec::new();
        };
        let mut reasons = Vec::new();
        match job.status {
            JobStatus::Paused => {
                reasons.push("paused".to_string());
                return reasons;
            }
            JobStatus::Waiting => {
                for dep in &job.spec.after {
                    if self
                        .jobs
                        .get(&dep.job)
                        .is_some_and(|d| !d.status.is_terminal())
                    {
                        reasons.push(format!("waiting for job {}", dep.job));
                    }
                }
                if let Some(t) = job.spec.start_after.filter(|t| *t > now) {
                    reasons.push(format!(
                        "starts at {} (in {})",
                        clock_time(t, now),
                        human_duration(t - now)
                    ));
                }
                return reasons;
            }
            JobStatus::Queued | JobStatus::Running => {}
            _ => return reasons,
        }
        if job.counts.get(TaskStatus::Ready) == 0 {
            return reasons;
        }
        if self.recovering(now) {
            reasons.push("the master restarted and is waiting for engines to reconnect".into());
            return reasons;
        }
        let spec = &job.spec;
        let in_pool: Vec<_> = self
            .engines
            .iter()
            .filter(|e| e.facts.pools.contains(&spec.pool))
            .collect();
        let online: Vec<_> = in_pool.iter().filter(|e| e.online).collect();
        if in_pool.is_empty() {
            reasons.push(format!("no engine in pool `{}`", spec.pool));
            return reasons;
        }
        if online.is_empty() {
            reasons.push(format!(
                "no online engine in pool `{}` ({} offline)",
                spec.pool,
                in_pool.len()
            ));
            return reasons;
        }
        let usable: Vec<_> = online
            .iter()
            .filter(|e| !e.disabled && e.sick.is_none())
            .collect();
        if usable.is_empty() {
            let sick = online.iter().filter(|e| e.sick.is_some()).count();
            let disabled = online.len() - sick;
            reasons.push(format!(
                "every online engine in pool `{}` is disabled ({disabled}) or sick ({sick}): `drqueue engine enable ENGINE`",
                spec.pool
            ));
            return reasons;
        }
        let r = &spec.requirements;
        if let Some(os) = &r.os {
            let n = usable
                .iter()
                .filter(|e| !e.facts.os.eq_ignore_ascii_case(os))
                .count();
            if n == usable.len() {
                reasons.push(format!(
                    "needs OS `{os}`; no engine in pool `{}` runs it",
                    spec.pool
                ));
            }
        }
        if r.min_cores > 0 {
            let max = usable.iter().map(|e| e.facts.cores).max().unwrap_or(0);
            if max < r.min_cores {
                reasons.push(format!(
                    "needs {} cores, the largest engine has {max}",
                    r.min_cores
                ));
            }
        }
        if r.min_ram_mb > 0 {
            let max = usable.iter().map(|e| e.facts.ram_mb).max().unwrap_or(0);
            if max < r.min_ram_mb {
                reasons.push(format!(
                    "needs {} MB RAM, the largest engine has {max} MB",
                    r.min_ram_mb
                ));
            }
        }
        for cap in &r.capabilities {
            let lacking = usable
                .iter()
                .filter(|e| !e.facts.capabilities.contains(cap))
                .count();
            if lacking > 0 && lacking == usable.len() {
                let noun = if lacking == 1 {
                    "engine lacks"
                } else {
                    "engines lack"
                };
                reasons.push(format!("{lacking} {noun} capability `{cap}`"));
            }
        }
        if !reasons.is_empty() {
            return reasons;
        }
        let limits = self.limit_views();
        for name in &spec.limits {
            if let Some(l) = limits.iter().find(|l| l.name == *name) {
                if l.in_use >= l.count {
                    reasons.push(format!(
                        "limit `{}` {}/{} in use",
                        l.name, l.in_use, l.count
                    ));
                }
            }
        }
        if !reasons.is_empty() {
            return reasons;
        }
        if spec.max_engines > 0 && self.engines_running(id) >= spec.max_engines {
            reasons.push(format!("max_engines {} reached", spec.max_engines));
            return reasons;
        }
        // Blacklisted engines count only when no other could run the job
        // (they then keep it, so it fails rather than waits forever).
        let fitting: Vec<&Engine> = usable
            .iter()
            .map(|e| ***e)
            .filter(|e| eligible(e, spec))
            .collect();
        let unbanned: Vec<&Engine> = fitting
            .iter()
            .copied()
            .filter(|e| {
                let idx = self.engine_index.get(&e.id).copied().unwrap_or(u32::MAX);
                !job.is_blacklisted(idx, &self.cfg)
            })
            .collect();
        let fitting = if unbanned.is_empty() {
            fitting
        } else {
            unbanned
        };
        let need = r.min_ram_mb;
        if need > 0 && fitting.iter().all(|e| self.ram_room(e, need) == 0) {
            let most = fitting
                .iter()
                .map(|e| self.free_ram_estimate(e))
                .max()
                .unwrap_or(0);
            reasons.push(format!(
                "needs {need} MB RAM free; the most free on an eligible engine is {most} MB"
            ));
            return reasons;
        }
        if !fitting.is_empty() && fitting.iter().all(|e| e.credit() == 0) {
            reasons.push(format!(
                "all {} eligible engine{} busy",
                fitting.len(),
                if fitting.len() == 1 { " is" } else { "s are" }
            ));
        }
        reasons
    }
}

/// `22:00` today, or the date too when it is not today (the master's time zone).
fn clock_time(t: Millis, now: Millis) -> String {
    use chrono::{Local, TimeZone};
    let (Some(at), Some(today)) = (
        Local.timestamp_millis_opt(t as i64).single(),
        Local.timestamp_millis_opt(now as i64).single(),
    ) else {
        return format!("{t} ms");
    };
    if at.date_naive() == today.date_naive() {
        at.format("%H:%M").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    }
}

fn human_duration(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
