//! The scheduler's notices, logged here (the scheduler does no logging), and
//! due notifications handed to the mailer.

use super::Core;
use crate::notify::MailRequest;
use crate::scheduler::Notice;
use drqueue_common::model::TaskStatus;
use drqueue_common::Millis;

/// Logs one notice at the level its harm deserves.
pub fn log_notice(notice: &Notice) {
    match notice {
        Notice::SkippedStoredJob { job, error } => {
            tracing::error!(%job, "skipping stored job whose spec is invalid: {error}")
        }
        Notice::EngineLost { engine, host, held } => {
            tracing::warn!(%engine, %host, held, "engine lost; its tasks go back to the queue")
        }
        Notice::Blacklisted {
            engine,
            job,
            failures,
        } => tracing::warn!(
            %engine,
            %job,
            "engine failed this job {failures} times; it gets no more of its tasks while other engines can run them"
        ),
        Notice::Sick { engine, why } => tracing::warn!(
            %engine,
            "engine is sick: {why}; it gets no work until enabled or until it passes a check task"
        ),
        Notice::CheckPassed { engine } => {
            tracing::info!(%engine, "engine passed its check task; it gets work again")
        }
        Notice::CheckFailed { engine, detail } => {
            tracing::warn!(%engine, "engine failed its check task: {detail}")
        }
        Notice::JobsFault {
            engine,
            job,
            signature,
        } => tracing::info!(
            %engine,
            %job,
            "engine is well again: its failures ({signature}) happen on other engines too, so they are the job's fault"
        ),
        Notice::Stalled {
            engine,
            attempt,
            quiet_ms,
        } => tracing::warn!(
            %engine,
            task = %attempt.task,
            attempt = attempt.attempt,
            "stalled: nothing printed for {} s; stopping it to run it again",
            quiet_ms / 1000
        ),
        Notice::ForeignAttempt {
            engine,
            attempt,
            what,
        } => tracing::warn!(
            %engine,
            task = %attempt.task,
            attempt = attempt.attempt,
            "dropped a {what} for an attempt this engine does not hold"
        ),
    }
}

/// Lets through at most [`RateLimit::BURST`] lines a minute of one noisy
/// kind (a hostile engine can send thousands); the rest are counted, and
/// the count is told with the next line let through.
#[derive(Debug, Default)]
pub(super) struct RateLimit {
    window_start: Millis,
    shown: u32,
    suppressed: u64,
}

impl RateLimit {
    const BURST: u32 = 10;
    const WINDOW_MS: Millis = 60_000;

    /// `Some(n)` to log now, `n` having been held back since the last one.
    pub(super) fn allow(&mut self, now: Millis) -> Option<u64> {
        if now.saturating_sub(self.window_start) >= Self::WINDOW_MS {
            self.window_start = now;
            self.shown = 0;
        }
        if self.shown >= Self::BURST {
            self.suppressed += 1;
            return None;
        }
        self.shown += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Core {
    /// Logs the round's notices; foreign-attempt ones rate-limited.
    pub(super) fn log_notices(&mut self) {
        let now = self.now;
        for notice in std::mem::take(&mut self.fx.notices) {
            if matches!(notice, Notice::ForeignAttempt { .. }) {
                match self.foreign_notices.allow(now) {
                    None => continue,
                    Some(0) => {}
                    Some(n) => tracing::warn!(
                        "{n} more messages about attempts their engines do not hold were dropped"
                    ),
                }
            }
            log_notice(&notice);
        }
    }
}

impl Core {
    /// Queues the notifications that are due, to go out after the current
    /// batch commits (so the job's end is stored before anyone hears of it).
    pub(super) fn send_due_notifications(&mut self) {
        let now = self.now;
        for id in std::mem::take(&mut self.fx.mail_due) {
            let Some(mailer) = self.mailer.clone() else {
                self.sched.notification_result(
                    id,
                    Err("no SMTP server: start drqueue-master with --smtp smtp://HOST:PORT".into()),
                    true,
                    now,
                );
                continue;
            };
            let Some(job) = self.sched.job_view(id, now) else {
                continue;
            };
            let failed = self
                .sched
                .task_views(id, Some(TaskStatus::Failed))
                .unwrap_or_default();
            let req = MailRequest {
                link: format!("{}/api/jobs/{id}", self.public_url),
                job,
                failed,
            };
            self.after_commit(move || mailer.send(req));
        }
    }
}
