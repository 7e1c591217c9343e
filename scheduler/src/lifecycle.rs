//! A job's status from its tasks, dependencies and controls; what
//! happens when it ends, and its email notification.

use super::{Effects, Scheduler};
use drqueue_common::model::{JobId, JobStatus, NotifyState, TaskKey, TaskStatus};
use drqueue_common::Millis;

impl Scheduler {
    /// Recomputes a job's status from its tasks, dependencies and controls.
    pub(super) fn update_job_status(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status.is_terminal() && job.counts.terminal() == job.tasks.len() as u64 {
            return;
        }
        let total = job.tasks.len() as u64;
        let new = if job.counts.terminal() == total {
            if job.counts.get(TaskStatus::Done) == total {
                JobStatus::Done
            } else if job.counts.get(TaskStatus::Failed) > 0 {
                JobStatus::Failed
            } else {
                JobStatus::Cancelled
            }
        } else if job.spec.paused {
            JobStatus::Paused
        } else {
            match self.dependency_state(id, now) {
                DepState::Blocked => JobStatus::Waiting,
                DepState::Broken(reason) => {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.reason = Some(reason);
                    }
                    self.cancel_tasks(id, now, fx);
                    JobStatus::Cancelled
                }
                DepState::Met => {
                    let job = &self.jobs[&id];
                    if !job.released && job.counts.get(TaskStatus::Waiting) > 0 {
                        self.release_waiting_tasks(id, fx);
                    }
                    let job = &self.jobs[&id];
                    let active = job.counts.get(TaskStatus::Assigned)
                        + job.counts.get(TaskStatus::Running)
                        + job.counts.terminal();
                    if active > 0 {
                        JobStatus::Running
                    } else {
                        JobStatus::Queued
                    }
                }
            }
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.status != new {
            job.status = new;
            if new == JobStatus::Running {
                job.started_ms.get_or_insert(now);
            }
            self.dirty_jobs.insert(id);
            if new.is_terminal() {
                job.finished_ms = Some(now);
                fx.ended_jobs.push(id);
                self.on_job_ended(id, now, fx);
            }
        }
    }

    pub(super) fn release_waiting_tasks(&mut self, id: JobId, fx: &mut Effects) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.released = true;
        self.dirty_jobs.insert(id);
        // Stored as the job's `released`, for tasks that start alike.
        let implied = job.tasks_start_alike();
        if implied {
            fx.tasks_changed_unrecorded.push(id);
        }
        for i in 0..job.tasks.len() as u32 {
            // A task waiting for other tasks of the job stays waiting.
            if job.tasks[i as usize].status == TaskStatus::Waiting
                && job.start_status(i) == TaskStatus::Ready
            {
                job.set_task_status(i, TaskStatus::Ready);
                job.ready.push_back(i);
                if !implied {
                    self.dirty_tasks.insert(TaskKey { job: id, index: i });
                }
            }
        }
    }

    pub(super) fn dependency_state(&self, id: JobId, now: Millis) -> DepState {
        let job = &self.jobs[&id];
        for dep in &job.spec.after {
            match self.jobs.get(&dep.job) {
                Some(other) if other.status.is_terminal() && !dep.on.contains(&other.status) => {
                    return DepState::Broken(format!(
                        "job {} ended {}, which this job's --after does not accept",
                        dep.job, other.status
                    ));
                }
                Some(other) if other.status.is_terminal() => {}
                Some(_) => return DepState::Blocked,
                // A deleted dependency cannot be waited for; treat as met.
                None => {}
            }
        }
        if job.spec.start_after.is_some_and(|t| now < t) {
            return DepState::Blocked;
        }
        DepState::Met
    }

    /// Jobs waiting on this one may now start (or be cancelled), and its
    /// notification becomes due.
    pub(super) fn on_job_ended(&mut self, id: JobId, now: Millis, fx: &mut Effects) {
        if let Some(job) = self.jobs.get_mut(&id) {
            let status = job.status;
            if let Some(n) = job.notification.as_mut() {
                n.attempts = 0;
                n.last_error = None;
                if n.on.fires_on(status) {
                    n.state = NotifyState::Pending;
                    n.next_try_ms = Some(now);
                } else {
                    n.state = NotifyState::Skipped;
                    n.next_try_ms = None;
                }
                self.dirty_jobs.insert(id);
            }
        }
        let dependents: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.status == JobStatus::Waiting && j.spec.after.iter().any(|d| d.job == id)
            })
            .map(|(jid, _)| *jid)
            .collect();
        for d in dependents {
            self.update_job_status(d, now, fx);
        }
    }

    /// Notifications due now: marked `sending` (in memory only) and returned
    /// for the mailer. Each is in flight at most once.
    pub(crate) fn due_notifications(&mut self, now: Millis) -> Vec<JobId> {
        let mut due = Vec::new();
        for (id, job) in self.jobs.iter_mut() {
            if let Some(n) = job.notification.as_mut() {
                if n.state == NotifyState::Pending && n.next_try_ms.is_none_or(|t| t <= now) {
                    n.state = NotifyState::Sending;
                    n.attempts += 1;
                    due.push(*id);
                }
            }
        }
        due
    }

    /// How a sending attempt went. A failure is retried with backoff (1 s,
    /// doubling, at most 5 min) until `mail_attempts` are used, or at once
    /// given up when `permanent` (no SMTP server configured, bad address).
    pub fn notification_result(
        &mut self,
        id: JobId,
        result: Result<(), String>,
        permanent: bool,
        now: Millis,
    ) {
        let Some(n) = self.jobs.get_mut(&id).and_then(|j| j.notification.as_mut()) else {
            return;
        };
        if n.state != NotifyState::Sending {
            return;
        }
        match result {
            Ok(()) => {
                n.state = NotifyState::Sent;
                n.sent_ms = Some(now);
                n.next_try_ms = None;
                n.last_error = None;
            }
            Err(e) => {
                if permanent || n.attempts >= self.cfg.mail_attempts {
                    n.state = NotifyState::Failed;
                    n.next_try_ms = None;
                } else {
                    let backoff = 1000u64 << n.attempts.saturating_sub(1).min(9);
                    n.state = NotifyState::Pending;
                    n.next_try_ms = Some(now + backoff.min(300_000));
                }
                n.last_error = Some(e);
            }
        }
        self.dirty_jobs.insert(id);
    }
}

pub(super) enum DepState {
    Met,
    Blocked,
    Broken(String),
}
