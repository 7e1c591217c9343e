//! "Why isn't it running?": typed reasons that a job's ready tasks are not
//! on engines. Computed on demand for `show`, never on the dispatch path.

use super::fitness::eligible;
use super::{Engine, Scheduler};
use drqueue_common::model::{Blocked, JobId, JobSpec, JobStatus, TaskStatus};
use drqueue_common::Millis;

impl Scheduler {
    pub fn blocked_reasons(&self, id: JobId, now: Millis) -> Vec<Blocked> {
        let Some(job) = self.jobs.get(&id) else {
            return Vec::new();
        };
        let mut reasons = Vec::new();
        match job.status {
            JobStatus::Paused => {
                reasons.push(Blocked::Paused);
                return reasons;
            }
            JobStatus::Waiting => {
                for dep in &job.spec.after {
                    if self
                        .jobs
                        .get(&dep.job)
                        .is_some_and(|d| !d.status.is_terminal())
                    {
                        reasons.push(Blocked::WaitingFor { job: dep.job });
                    }
                }
                if let Some(t) = job.spec.start_after.filter(|t| *t > now) {
                    reasons.push(Blocked::StartsAt { at_ms: t });
                }
                return reasons;
            }
            JobStatus::Queued | JobStatus::Running => {}
            _ => return reasons,
        }
        reasons.extend(self.running_notes(id, now));
        if job.counts.get(TaskStatus::Ready) == 0 {
            return reasons;
        }
        if self.recovering(now) {
            reasons.push(Blocked::Recovering);
            return reasons;
        }
        let spec = &job.spec;
        let gaps = self.engine_gaps(spec);
        if !gaps.is_empty() {
            reasons.extend(gaps);
            return reasons;
        }
        let limits = self.limit_views();
        for name in &spec.limits {
            if let Some(l) = limits.iter().find(|l| l.name == *name) {
                if l.in_use >= l.count {
                    reasons.push(Blocked::LimitInUse {
                        limit: l.name.clone(),
                        in_use: l.in_use,
                        count: l.count,
                    });
                }
            }
        }
        if !reasons.is_empty() {
            return reasons;
        }
        if spec.max_engines > 0 && self.engines_running(id) >= spec.max_engines {
            reasons.push(Blocked::MaxEngines {
                max: spec.max_engines,
            });
            return reasons;
        }
        // Blacklisted engines count only when no other could run the job
        // (they then keep it, so it fails rather than waits forever).
        let fitting: Vec<&Engine> = self
            .usable_in_pool(&spec.pool)
            .into_iter()
            .filter(|e| eligible(e, spec))
            .collect();
        let unbanned: Vec<&Engine> = fitting
            .iter()
            .copied()
            .filter(|e| {
                self.engine_index
                    .get(&e.id)
                    .is_none_or(|&idx| !job.is_blacklisted(idx, &self.cfg))
            })
            .collect();
        let fitting = if unbanned.is_empty() {
            fitting
        } else {
            unbanned
        };
        let need = spec.requirements.min_ram_mb;
        if need > 0 && fitting.iter().all(|e| self.ram_room(e, need) == Some(0)) {
            let most = fitting
                .iter()
                .map(|e| self.free_ram_estimate(e))
                .max()
                .unwrap_or(0);
            reasons.push(Blocked::NeedsFreeRam {
                need_mb: need,
                most_free_mb: most,
            });
            return reasons;
        }
        // Busy engines block a job only when none of its tasks runs: a job
        // that is running is simply waiting its turn for more slots.
        let started = job.counts.get(TaskStatus::Running) + job.counts.get(TaskStatus::Assigned);
        if started == 0 && !fitting.is_empty() && fitting.iter().all(|e| e.credit() == 0) {
            reasons.push(Blocked::AllBusy {
                engines: fitting.len() as u32,
            });
        }
        reasons
    }

    /// The pool's engines that take work: online, enabled and well.
    fn usable_in_pool(&self, pool: &str) -> Vec<&Engine> {
        self.engines
            .iter()
            .filter(|e| e.facts.pools.iter().any(|p| p == pool))
            .filter(|e| e.online && !e.disabled && e.sick.is_none())
            .collect()
    }

    /// Why no engine the master knows could run a job of this spec at all
    /// (pool, state, OS, cores, RAM, capabilities): what `submit` warns of,
    /// and `--require-runnable` refuses on. Empty when some engine fits.
    pub fn engine_gaps(&self, spec: &JobSpec) -> Vec<Blocked> {
        let mut reasons = Vec::new();
        let in_pool: Vec<_> = self
            .engines
            .iter()
            .filter(|e| e.facts.pools.contains(&spec.pool))
            .collect();
        let online: Vec<_> = in_pool.iter().filter(|e| e.online).collect();
        if in_pool.is_empty() {
            reasons.push(Blocked::NoEngineInPool {
                pool: spec.pool.clone(),
            });
            return reasons;
        }
        if online.is_empty() {
            reasons.push(Blocked::NoOnlineEngineInPool {
                pool: spec.pool.clone(),
                offline: in_pool.len() as u32,
            });
            return reasons;
        }
        let usable = self.usable_in_pool(&spec.pool);
        if usable.is_empty() {
            let sick = online.iter().filter(|e| e.sick.is_some()).count();
            let disabled = online.len() - sick;
            reasons.push(Blocked::NoUsableEngineInPool {
                pool: spec.pool.clone(),
                disabled: disabled as u32,
                sick: sick as u32,
            });
            return reasons;
        }
        let r = &spec.requirements;
        if let Some(os) = &r.os {
            let n = usable
                .iter()
                .filter(|e| !e.facts.os.eq_ignore_ascii_case(os))
                .count();
            if n == usable.len() {
                reasons.push(Blocked::NeedsOs {
                    os: os.clone(),
                    pool: spec.pool.clone(),
                });
            }
        }
        if r.min_cores > 0 {
            let max = usable.iter().map(|e| e.facts.cores).max().unwrap_or(0);
            if max < r.min_cores {
                reasons.push(Blocked::NeedsCores {
                    need: r.min_cores,
                    largest: max,
                });
            }
        }
        if r.min_ram_mb > 0 {
            let max = usable.iter().map(|e| e.facts.ram_mb).max().unwrap_or(0);
            if max < r.min_ram_mb {
                reasons.push(Blocked::NeedsRam {
                    need_mb: r.min_ram_mb,
                    largest_mb: max,
                });
            }
        }
        for cap in &r.capabilities {
            let lacking = usable
                .iter()
                .filter(|e| !e.facts.capabilities.contains(cap))
                .count();
            if lacking > 0 && lacking == usable.len() {
                reasons.push(Blocked::LacksCapability {
                    capability: cap.clone(),
                    engines: lacking as u32,
                });
            }
        }
        if !reasons.is_empty() {
            return reasons;
        }
        reasons
    }
}
