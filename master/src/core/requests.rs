//! The API's requests, one arm each: what the core asks of the scheduler
//! and the store for every [`Request`].

use super::Core;
use crate::events::{EngineAction, JobAction, LogTarget, Reply, Request};
use crate::scheduler::RequestError;
use crate::store::writer::WriterMsg;
use drqueue_common::model::{JobId, JobSpec, JobView, TaskKey};

impl Core {
    /// An artist's request names a job: it must be theirs.
    fn check_owner(&self, id: JobId, only_owner: Option<String>) -> Result<(), RequestError> {
        let (Some(caller), Some(owner)) = (only_owner, self.sched.job_owner(id)) else {
            // No rule, or no job (which the request itself reports).
            return Ok(());
        };
        if owner == caller {
            return Ok(());
        }
        Err(RequestError::NotYours {
            job: id,
            owner: owner.to_string(),
            caller,
        })
    }

    /// A job that asks for mail is refused by a master that cannot send any,
    /// at submit rather than when the job ends.
    fn can_mail(&self, notify: &[Vec<String>]) -> Result<(), RequestError> {
        if self.mailer.is_some() || notify.iter().all(Vec::is_empty) {
            return Ok(());
        }
        Err(RequestError::Invalid(
            "--notify: this master sends no mail (it was started without --smtp). Start drqueue-master with --smtp smtp://HOST:PORT, or submit without --notify".into(),
        ))
    }

    /// `--require-runnable`: refuse a job no engine could run now, naming why.
    fn runnable(&self, required: bool, specs: &[JobSpec]) -> Result<(), RequestError> {
        if !required {
            return Ok(());
        }
        for spec in specs {
            let gaps = self.sched.engine_gaps(spec);
            if !gaps.is_empty() {
                return Err(RequestError::Unrunnable {
                    name: spec.name.clone(),
                    reasons: gaps
                        .iter()
                        .map(|b| b.text(self.now, &chrono::Utc))
                        .collect(),
                });
            }
        }
        Ok(())
    }

    /// The task and attempt (the latest when None) a log read is for.
    fn log_target(&self, key: TaskKey, attempt: Option<u32>) -> Result<LogTarget, RequestError> {
        let task = self.sched.task_record(key).ok_or(
            // Name what is missing: the job, or the task in it.
            match self.sched.job_status(key.job) {
                None => RequestError::NoJob(key.job),
                Some(_) => RequestError::NoTask(key),
            },
        )?;
        let attempt = attempt.unwrap_or(task.attempts);
        if attempt == 0 || attempt > task.attempts {
            return Err(RequestError::NoAttempt {
                task: key,
                attempts: task.attempts,
                asked: attempt,
            });
        }
        Ok(LogTarget {
            task: task.view(),
            attempt,
        })
    }

    pub(super) fn on_request(&mut self, request: Request) {
        let now = self.now;
        match request {
            Request::ListJobs {
                filter,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.sched.job_page(&filter, after, limit, now));
            }
            Request::Submit {
                spec,
                require_runnable,
                reply,
            } => {
                let created = self
                    .can_mail(std::slice::from_ref(&spec.notify))
                    .and_then(|()| self.runnable(require_runnable, std::slice::from_ref(&*spec)))
                    .and_then(|()| self.sched.submit(*spec, now, &mut self.fx));
                self.reply_when_committed(created.map(|id| vec![id]), reply);
            }
            Request::SubmitGraph {
                graph,
                require_runnable,
                reply,
            } => {
                let notify: Vec<Vec<String>> =
                    graph.jobs.iter().map(|j| j.spec.notify.clone()).collect();
                let specs: Vec<JobSpec> = graph.jobs.iter().map(|j| j.spec.clone()).collect();
                let created = self
                    .can_mail(&notify)
                    .and_then(|()| self.runnable(require_runnable, &specs))
                    .and_then(|()| self.sched.submit_graph(graph, now, &mut self.fx));
                let ids = created.map(|jobs| jobs.into_iter().map(|(_, id)| id).collect());
                self.reply_when_committed(ids, reply);
            }
            Request::ShowJob { id, reply } => {
                let _ = reply.send(self.sched.job_view(id, now).ok_or(RequestError::NoJob(id)));
            }
            Request::ListTasks {
                id,
                status,
                after,
                limit,
                reply,
            } => {
                let tasks = self.sched.task_page(id, status, after, limit, now);
                let _ = reply.send(tasks.ok_or(RequestError::NoJob(id)));
            }
            Request::TaskLog {
                task,
                attempt,
                reply,
            } => {
                // Answered once what the core has taken in is committed, so
                // the read that follows (on the store's reader) sees every
                // chunk up to the state the caller was shown.
                let target = self.log_target(task, attempt);
                self.reply_after_commit(reply, target);
            }
            Request::WatchLog { attempt, reply } => {
                let live = self.log_target(attempt.task, Some(attempt.attempt));
                if live.is_ok_and(|t| t.is_live()) {
                    self.log_watchers.add(attempt, reply);
                } else {
                    let _ = reply.send(());
                }
            }
            Request::TaskRecord { task, reply } => {
                let record = self.sched.task_record(task);
                self.reply_after_commit(reply, record.ok_or(RequestError::NoTask(task)));
            }
            Request::ControlJob {
                id,
                action,
                tasks,
                only_owner,
                reply,
            } => {
                if let Err(e) = self.check_owner(id, only_owner) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let fx = &mut self.fx;
                let done = match (action, tasks) {
                    (JobAction::Pause, None) => self.sched.pause(id),
                    (JobAction::Resume, None) => self.sched.resume(id, now, fx),
                    (JobAction::Cancel, None) => self.sched.cancel(id, now, fx),
                    (JobAction::Retry, None) => self.sched.retry(id, now, fx).map(|_| ()),
                    (JobAction::Cancel, Some(t)) => {
                        self.sched.cancel_some(id, &t, now, fx).map(|_| ())
                    }
                    (JobAction::Retry, Some(t)) => self.sched.retry_some(id, &t, now, fx).map(|_| ()),
                    (JobAction::Pause | JobAction::Resume, Some(_)) => Err(RequestError::Invalid(
                        "tasks: only cancel and retry take a task set; pause and resume act on the whole job".into(),
                    )),
                };
                let view =
                    done.and_then(|()| self.sched.job_view(id, now).ok_or(RequestError::NoJob(id)));
                self.reply_after_commit(reply, view);
            }
            Request::SetPriority {
                id,
                priority,
                only_owner,
                reply,
            } => {
                let view = self
                    .check_owner(id, only_owner)
                    .and_then(|()| self.sched.set_priority(id, priority))
                    .and_then(|()| self.sched.job_view(id, now).ok_or(RequestError::NoJob(id)));
                self.reply_after_commit(reply, view);
            }
            Request::DeleteJob {
                id,
                force,
                only_owner,
                reply,
            } => {
                if let Err(e) = self.check_owner(id, only_owner) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let deleted = self.sched.delete(id, force, now, &mut self.fx);
                self.reply_after_commit(reply, deleted);
            }
            Request::Farm { reply } => {
                let _ = reply.send(self.farm_totals());
            }
            Request::Metrics { reply } => {
                let _ = reply.send(self.metrics_text());
            }
            Request::ListEngines { reply } => {
                let views = self
                    .sched
                    .engines()
                    .iter()
                    .map(|e| self.sched.engine_view(e));
                let _ = reply.send(views.collect());
            }
            Request::ShowEngine { engine, reply } => {
                let view = self
                    .sched
                    .find_engine(&engine)
                    .map(|e| self.sched.engine_view(e));
                let _ = reply.send(view.ok_or(RequestError::NoEngine(engine)));
            }
            Request::ControlEngine {
                engine,
                action,
                reply,
            } => {
                let changed = self.control_engine(&engine, action);
                self.reply_after_commit(reply, changed);
            }
            Request::ListPools { reply } => {
                let _ = reply.send(self.sched.pool_views());
            }
            Request::InputManifests { owner, reply } => {
                let _ = reply.send(self.sched.input_manifests(owner.as_deref()));
            }
            Request::ListLimits { reply } => {
                let _ = reply.send(self.sched.limit_views());
            }
            Request::SetLimit { name, count, reply } => {
                let set = self.sched.set_limit(&name, count).and_then(|()| {
                    let view = self
                        .sched
                        .limit_views()
                        .into_iter()
                        .find(|l| l.name == name);
                    view.ok_or(RequestError::Invalid(format!("limit {name:?} vanished")))
                });
                self.reply_after_commit(reply, set);
            }
            Request::DeleteLimit { name, reply } => {
                let deleted = self.sched.delete_limit(&name);
                self.reply_after_commit(reply, deleted);
            }
            Request::Flush { reply } => self.ask_store(WriterMsg::Flush(reply)),
        }
    }

    /// A change is confirmed only once it is committed: what a user was told
    /// survives a crash.
    fn reply_after_commit<T: Send + 'static>(&mut self, reply: Reply<T>, answer: T) {
        self.after_commit(move || {
            let _ = reply.send(answer);
        });
    }

    /// New jobs are announced only once they are committed: a client that
    /// got an id can rely on the job surviving a crash.
    fn reply_when_committed(
        &mut self,
        created: Result<Vec<JobId>, RequestError>,
        reply: Reply<Result<Vec<JobView>, RequestError>>,
    ) {
        match created {
            Ok(ids) => {
                let views: Vec<JobView> = ids
                    .iter()
                    .filter_map(|id| self.sched.job_view(*id, self.now))
                    .collect();
                tracing::info!(jobs = ?ids, "submitted");
                self.reply_after_commit(reply, Ok(views));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn control_engine(
        &mut self,
        engine: &str,
        action: EngineAction,
    ) -> Result<drqueue_common::model::EngineView, RequestError> {
        let id = self
            .sched
            .find_engine(engine)
            .map(|e| e.id.clone())
            .ok_or_else(|| RequestError::NoEngine(engine.to_string()))?;
        match action {
            EngineAction::Revoke => {
                tracing::warn!(engine = %id, "engine revoked: refused from now on; its tasks go elsewhere");
                self.sched.revoke_engine(&id, self.now, &mut self.fx)?;
            }
            EngineAction::Disable | EngineAction::Drain | EngineAction::Enable => {
                let disabled = action != EngineAction::Enable;
                self.sched
                    .set_engine_disabled(&id, disabled, self.now, &mut self.fx)?;
            }
        }
        self.sched
            .engine(&id)
            .map(|e| self.sched.engine_view(e))
            .ok_or(RequestError::NoEngine(id.into()))
    }
}
