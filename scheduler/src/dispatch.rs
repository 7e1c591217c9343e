//! Dispatch: which ready tasks go to which engine, by priority, owner
//! turns, fitness, limits and credit (HWM).

use super::fitness::eligible;
use super::state::Held;
use super::{Effects, EngineIdx, Scheduler};
use drqueue_common::model::{EngineId, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::protocol::{Assign, Assignment, AttemptKey, ToEngine};
use drqueue_common::Millis;
use std::collections::{BTreeMap, HashMap};

impl Scheduler {
    /// Hands ready tasks to engines with credit. Two rounds: first fill idle
    /// slots everywhere (so one engine cannot hog a job it could only queue),
    /// then top each engine up to its HWM so its next task is already there
    /// when a slot frees. Within a priority, owners take turns.
    pub fn dispatch(&mut self, now: Millis, fx: &mut Effects) -> u32 {
        if self.recovering(now) {
            return 0;
        }
        let levels = self.priority_levels();
        if levels.is_empty() {
            return 0;
        }
        let first_message = fx.messages.len();
        // Attempts each owner holds: computed only when owners must share.
        let mut owner_load: Option<HashMap<String, u32>> = None;
        let mut tally = Tally::default();
        let mut total = 0;
        for round in 0..2 {
            let mut engines: Vec<EngineIdx> = EngineIdx::all(self.engines.len())
                .filter(|e| self.engines[*e].accepts_work())
                .collect();
            // Idle slots: the fastest engine picks first, so it takes the
            // front of the queue, the longest work left. Prefetch: least
            // loaded first, so it spreads evenly.
            let speed =
                |e: &EngineIdx| std::cmp::Reverse(Speed(self.speed_score(*e).unwrap_or(1.0)));
            if round == 0 {
                engines.sort_by_key(|e| (speed(e), self.engines[*e].outstanding()));
            } else {
                engines.sort_by_key(|e| (self.engines[*e].outstanding(), speed(e)));
            }
            for e in engines {
                let engine = &self.engines[e];
                let mut want = if round == 0 {
                    engine.idle_slots()
                } else {
                    engine.credit()
                };
                for level in &levels {
                    if want == 0 {
                        break;
                    }
                    let n = match level.as_slice() {
                        [(_, jobs)] => self.assign_in_order(jobs, e, want, &mut tally, now, fx),
                        owners => {
                            let load = owner_load.get_or_insert_with(|| self.owner_load());
                            self.assign_by_turns(owners, load, e, want, &mut tally, now, fx)
                        }
                    };
                    want -= n;
                    total += n;
                }
            }
        }
        coalesce_assigns(&mut fx.messages, first_message);
        total
    }

    /// Jobs with ready tasks, grouped by priority (highest first), then by
    /// owner (in order of each owner's oldest job), each owner's jobs in
    /// submission order.
    pub(super) fn priority_levels(&self) -> Vec<Vec<(String, Vec<JobId>)>> {
        let mut by_priority: BTreeMap<std::cmp::Reverse<u32>, Vec<(String, Vec<JobId>)>> =
            BTreeMap::new();
        // Job ids ascend, so each owner's list is in submission order and
        // owners appear in order of their oldest job.
        for (id, j) in &self.jobs {
            if !j.is_dispatchable() || j.counts.get(TaskStatus::Ready) == 0 {
                continue;
            }
            let owners = by_priority
                .entry(std::cmp::Reverse(j.spec.priority))
                .or_default();
            match owners.iter_mut().find(|(o, _)| *o == j.spec.owner) {
                Some((_, jobs)) => jobs.push(*id),
                None => owners.push((j.spec.owner.clone(), vec![*id])),
            }
        }
        by_priority.into_values().collect()
    }

    /// Live attempts held per owner, farm-wide.
    pub(super) fn owner_load(&self) -> HashMap<String, u32> {
        let mut load: HashMap<String, u32> = HashMap::new();
        for e in &self.engines {
            for (k, h) in &e.held {
                if let (false, Some(job)) = (h.cancelling, self.jobs.get(&k.task.job)) {
                    *load.entry(job.spec.owner.clone()).or_default() += 1;
                }
            }
        }
        load
    }

    /// Gives engine `e` up to `want` tasks from `jobs`, oldest job first.
    pub(super) fn assign_in_order(
        &mut self,
        jobs: &[JobId],
        e: EngineIdx,
        mut want: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let mut n = 0;
        for &job in jobs {
            if want == 0 {
                break;
            }
            let got = self.assign_from(job, e, want, tally, now, fx);
            want -= got;
            n += got;
        }
        n
    }

    /// Owners of one priority take turns: each task goes to the owner
    /// holding the fewest attempts (ties to the owner with the oldest job),
    /// so equal owners alternate and a newcomer catches up first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn assign_by_turns(
        &mut self,
        owners: &[(String, Vec<JobId>)],
        load: &mut HashMap<String, u32>,
        e: EngineIdx,
        mut want: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let mut able: Vec<usize> = (0..owners.len()).collect();
        let mut n = 0;
        while want > 0 {
            let Some((pos, &o)) = able
                .iter()
                .enumerate()
                .min_by_key(|(_, &o)| (load.get(&owners[o].0).copied().unwrap_or(0), o))
            else {
                break;
            };
            if self.assign_in_order(&owners[o].1, e, 1, tally, now, fx) == 0 {
                able.remove(pos); // nothing of theirs fits this engine now
                continue;
            }
            *load.entry(owners[o].0.clone()).or_default() += 1;
            want -= 1;
            n += 1;
        }
        n
    }

    /// Gives engine `e` up to `max` ready tasks of one job; returns how many.
    pub(super) fn assign_from(
        &mut self,
        job_id: JobId,
        e: EngineIdx,
        max: u32,
        tally: &mut Tally,
        now: Millis,
        fx: &mut Effects,
    ) -> u32 {
        let Some(job) = self.jobs.get(&job_id) else {
            return 0;
        };
        let engine = &self.engines[e];
        if !job.is_dispatchable()
            || job.counts.get(TaskStatus::Ready) == 0
            || !eligible(engine, &job.spec)
        {
            return 0;
        }
        let new_engine_for_job = job.spec.max_engines > 0 && !engine.runs_job(job_id);
        if new_engine_for_job {
            let on = *tally
                .engines_on
                .entry(job_id)
                .or_insert_with(|| self.engines_running(job_id));
            if on >= job.spec.max_engines {
                return 0;
            }
        }
        // Retries avoid the engine that failed them, and a blacklisted
        // engine gets none of the job, unless no other engine could run it:
        // then the job fails by its max_attempts instead of waiting forever.
        let able = *tally
            .able
            .entry(job_id)
            .or_insert_with(|| self.unbanned_engines(job));
        let e_counts = engine.accepts_work() && !job.is_blacklisted(e, &self.cfg);
        let others_can_run = able > u32::from(e_counts);
        if job.is_blacklisted(e, &self.cfg) && others_can_run {
            return 0;
        }
        let limited = self.has_set_limits(&job.spec);
        let limit_room = if limited {
            let used = tally.tokens.get_or_insert_with(|| self.tokens_in_use());
            self.limit_room_with(&job.spec, used)
        } else {
            None
        };
        let ram_room = self.ram_room(engine, job.spec.requirements.min_ram_mb);
        let max = [ram_room, limit_room]
            .into_iter()
            .flatten()
            .fold(max, u32::min);
        if max == 0 {
            return 0;
        }
        let cut_to = self.auto_task_frames(job_id, e);
        let ghost = match (cut_to, self.jobs.get(&job_id)) {
            (Some(_), Some(j)) => self.ghost_attempt(job_id, j.tasks.len() as u32),
            _ => 0,
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return 0;
        };
        let engine = &mut self.engines[e];
        let mut batch = Vec::new();
        let mut skipped = Vec::new();
        while (batch.len() as u32) < max {
            let Some(i) = job.ready.pop_front() else {
                break;
            };
            let t = &job.tasks[i as usize];
            if t.status != TaskStatus::Ready {
                continue; // stale entry
            }
            if t.avoid == Some(e) && others_can_run {
                skipped.push(i);
                continue;
            }
            if let Some(rest) = cut_to.and_then(|n| job.cut_task(i, n, ghost)) {
                self.dirty_tasks.insert(TaskKey {
                    job: job_id,
                    index: rest,
                });
            }
            job.set_task_status(i, TaskStatus::Assigned);
            let t = &mut job.tasks[i as usize];
            let task = TaskKey {
                job: job_id,
                index: i,
            };
            // A new attempt gets a number no engine has used for the task:
            // after a lost commit one may still be stopping the next number.
            t.highest_attempt += 1;
            t.attempts = t.highest_attempt;
            t.engine = Some(e);
            t.started_ms = None;
            t.ended_ms = None;
            t.exit_code = None;
            let key = AttemptKey {
                task,
                attempt: t.attempts,
            };
            engine.held.insert(
                key,
                Held {
                    assigned_ms: Some(now),
                    started: false,
                    cancelling: false,
                },
            );
            self.dirty_tasks.insert(key.task);
            batch.push(Assignment {
                index: i,
                attempt: t.attempts,
                block: t.block,
                inputs: job.inputs_of(i),
            });
        }
        for i in skipped.into_iter().rev() {
            job.ready.push_front(i);
        }
        let n = batch.len() as u32;
        if n > 0 {
            if let (true, Some(used)) = (limited, tally.tokens.as_mut()) {
                for l in &job.spec.limits {
                    *used.entry(l.clone()).or_default() += n;
                }
            }
            if new_engine_for_job {
                *tally.engines_on.entry(job_id).or_default() += 1;
            }
            engine.peak_outstanding = engine.peak_outstanding.max(engine.outstanding());
            if job.status == JobStatus::Queued {
                job.status = JobStatus::Running;
                job.started_ms.get_or_insert(now);
                self.dirty_jobs.insert(job_id);
            }
            fx.messages.push((
                engine.id.clone(),
                ToEngine::Assign(Box::new(Assign {
                    job: job.body.clone(),
                    tasks: batch,
                })),
            ));
        }
        n
    }
}

/// Counts one dispatch call keeps as it assigns, so that each decision does
/// not recount every held attempt. Valid for one call only: within it,
/// attempts are only added, and no engine changes state.
#[derive(Default)]
pub(super) struct Tally {
    /// Tokens in use per limit (computed when a limited job is first seen).
    tokens: Option<HashMap<String, u32>>,
    /// Engines running each capped job.
    engines_on: HashMap<JobId, u32>,
    /// Engines that could run each job without a blacklist waiver.
    able: HashMap<JobId, u32>,
}

/// Merges the Assign messages from `from` on that go to the same engine for
/// the same job (owners taking turns, or the two dispatch rounds, produce
/// several): the job's command then travels once.
fn coalesce_assigns(messages: &mut Vec<(EngineId, ToEngine)>, from: usize) {
    if messages.len() - from < 2 {
        return;
    }
    let tail = messages.split_off(from);
    let mut first: HashMap<(EngineId, JobId), usize> = HashMap::new();
    for (engine, msg) in tail {
        if let ToEngine::Assign(a) = msg {
            let key = (engine, a.job.id);
            if let Some(&i) = first.get(&key) {
                if let ToEngine::Assign(earlier) = &mut messages[i].1 {
                    earlier.tasks.extend(a.tasks);
                }
                continue;
            }
            first.insert(key.clone(), messages.len());
            messages.push((key.0, ToEngine::Assign(a)));
        } else {
            messages.push((engine, msg));
        }
    }
}

/// A speed score ordered as a number (scores are finite and positive).
struct Speed(f32);

impl PartialEq for Speed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Speed {}

impl PartialOrd for Speed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Speed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
