//! Email notifications: the dependent task that fires when a job ends.
//!
//! The scheduler decides *when* (a job's [`Notification`] turns `pending` in
//! the same batch that records the job's end, and is retried with backoff);
//! this module does the sending. The core hands each due notification to the
//! mailer only after the batch holding the job's end is committed; the mailer
//! reads the failed tasks' logs through the store thread, writes the mail,
//! sends it with `lettre` over SMTP on a blocking thread, and reports back to
//! the core, which records `sent` or schedules the next try.
//!
//! [`Notification`]: drqueue_common::model::Notification
//!
//! Exactly once, as far as SMTP allows: a notification is in flight at most
//! once, and `sent` is stored as soon as the server accepts the mail. Only a
//! master that dies between the server's acceptance and that commit sends it
//! again after a restart; the Message-ID is the same both times
//! (`<drqueue-JOB-END@HOST>`), so mail clients show one.

use crate::events::{Event, MailReport};
use crate::store::reader::ReadMsg;
use drqueue_common::display::duration;
use drqueue_common::model::{JobId, JobView, TaskKey, TaskStatus, TaskView};
use drqueue_common::protocol::AttemptKey;
use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `smtp://HOST:PORT` (plain), `smtp://HOST:PORT?tls=required`
    /// (STARTTLS) or `smtps://HOST:PORT` (TLS).
    pub smtp: String,
    /// The sender; default `drqueue@HOSTNAME`.
    pub from: Option<String>,
    /// SMTP login, from `DRQUEUE_SMTP_USER` / `DRQUEUE_SMTP_PASSWORD`.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// A notification to send, with what the mail reports.
pub struct MailRequest {
    pub job: JobView,
    pub failed: Vec<TaskView>,
    /// The job in the HTTP API.
    pub link: String,
}

/// How many failed tasks a mail lists, and how many log lines of each.
const FAILED_LISTED: usize = 20;
const LOG_LINES: usize = 20;

/// The mailer's handle, kept by the core.
#[derive(Clone)]
pub struct Mailer {
    requests: mpsc::UnboundedSender<MailRequest>,
}

impl Mailer {
    /// Starts the mailer task. Fails only on a malformed SMTP URL or sender,
    /// which the master reports at start; an unreachable server is a
    /// per-mail error, retried.
    pub fn start(
        cfg: MailConfig,
        reader: mpsc::UnboundedSender<ReadMsg>,
        events: mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Mailer> {
        let transport = transport(&cfg)?;
        let from: Mailbox = match &cfg.from {
            Some(f) => f
                .parse()
                .map_err(|e| anyhow::anyhow!("--mail-from {f:?} is not an address: {e}"))?,
            None => format!("DrQueue <drqueue@{}>", host())
                .parse()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot make a sender address from the hostname ({e}): give --mail-from"
                    )
                })?,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<MailRequest>();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let logs = failed_logs(&reader, req.job.id, &req.failed).await;
                let job = req.job.id;
                let mail = compose(&req, &logs, &from);
                let transport = transport.clone();
                let result = match mail {
                    Ok(m) => tokio::task::spawn_blocking(move || {
                        transport
                            .send(&m)
                            .map(|_| ())
                            .map_err(|e| (format!("SMTP: {e}"), e.is_permanent()))
                    })
                    .await
                    .unwrap_or_else(|e| Err((format!("mailer task failed: {e}"), false))),
                    Err(e) => Err((e, true)),
                };
                match &result {
                    Ok(()) => tracing::info!(%job, "notification sent"),
                    Err((e, permanent)) => {
                        tracing::warn!(%job, permanent, "notification not sent: {e}")
                    }
                }
                let (result, permanent) = match result {
                    Ok(()) => (Ok(()), false),
                    Err((e, p)) => (Err(e), p),
                };
                let report = MailReport {
                    job,
                    result,
                    permanent,
                };
                if events.send(Event::MailReport(report)).is_err() {
                    return; // the master is stopping
                }
            }
        });
        Ok(Mailer { requests: tx })
    }

    pub fn send(&self, req: MailRequest) {
        let _ = self.requests.send(req);
    }
}

fn transport(cfg: &MailConfig) -> anyhow::Result<SmtpTransport> {
    let mut b = SmtpTransport::from_url(&cfg.smtp).map_err(|e| {
        anyhow::anyhow!(
            "--smtp {:?}: {e}; use smtp://HOST:PORT, smtp://HOST:PORT?tls=required or smtps://HOST:PORT",
            cfg.smtp
        )
    })?;
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            p.clone(),
        ));
    }
    Ok(b.timeout(Some(Duration::from_secs(20))).build())
}

fn host() -> String {
    drqueue_common::hostname()
}

/// The last lines of each failed task's latest attempt, read through the
/// store's reader.
async fn failed_logs(
    reader: &mpsc::UnboundedSender<ReadMsg>,
    job: JobId,
    failed: &[TaskView],
) -> Vec<String> {
    let mut out = Vec::new();
    for t in failed.iter().take(FAILED_LISTED) {
        let attempt = AttemptKey {
            task: TaskKey {
                job,
                index: t.index,
            },
            attempt: t.attempts,
        };
        out.push(match last_window(reader, attempt).await {
            Some(bytes) => tail(&String::from_utf8_lossy(&bytes), LOG_LINES),
            None => "(log not available)".into(),
        });
    }
    out
}

/// The last window of an attempt's log (reads window after window, keeping
/// only the latest two, so a long log costs time, not memory).
async fn last_window(
    reader: &mpsc::UnboundedSender<ReadMsg>,
    attempt: AttemptKey,
) -> Option<Vec<u8>> {
    let (mut offset, mut last) = (0u64, Vec::new());
    loop {
        let (reply, rx) = oneshot::channel();
        reader
            .send(ReadMsg::Log {
                attempt,
                offset,
                reply,
            })
            .ok()?;
        let bytes = rx.await.ok()?.ok()?;
        if bytes.is_empty() {
            return Some(last);
        }
        offset += bytes.len() as u64;
        // Keep the end of the previous window too: the last lines may
        // straddle two windows.
        let keep = last.len().saturating_sub(64 << 10);
        last.drain(..keep);
        last.extend_from_slice(&bytes);
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The mail: who, subject, and a plain-text body a wrangler reads on a phone.
fn compose(req: &MailRequest, logs: &[String], from: &Mailbox) -> Result<Message, String> {
    let j = &req.job;
    let Some(note) = &j.notification else {
        return Err("the job has no notification".into());
    };
    let mut b = Message::builder()
        .from(from.clone())
        .subject(format!("[DrQueue] job {} {} {}", j.id, j.name, j.status))
        .message_id(Some(message_id(j)))
        .header(ContentType::TEXT_PLAIN);
    for to in &note.to {
        let mbox: Mailbox = to
            .parse()
            .map_err(|e| format!("{to:?} is not an email address: {e}"))?;
        b = b.to(mbox);
    }
    b.body(body(req, logs))
        .map_err(|e| format!("cannot build the mail: {e}"))
}

fn message_id(j: &JobView) -> String {
    format!(
        "<drqueue-{}-{}@{}>",
        j.id,
        j.finished_ms.unwrap_or(0),
        host()
    )
}

pub fn body(req: &MailRequest, logs: &[String]) -> String {
    let j = &req.job;
    let c = &j.counts;
    let mut s = format!("Job {} \"{}\" ended {}.\n\n", j.id, j.name, j.status);
    s.push_str(&format!(
        "Owner:     {}\nPool:      {}   Priority: {}\nTasks:     {} done, {} failed, {} cancelled, of {}\n",
        j.owner,
        j.pool,
        j.priority,
        c.get(TaskStatus::Done),
        c.get(TaskStatus::Failed),
        c.get(TaskStatus::Cancelled),
        j.tasks_total
    ));
    let start = j.started_ms.unwrap_or(j.submitted_ms);
    if let Some(end) = j.finished_ms {
        s.push_str(&format!(
            "Duration:  {} (submitted to end: {})\n",
            duration(end.saturating_sub(start)),
            duration(end.saturating_sub(j.submitted_ms))
        ));
    }
    if let Some(r) = &j.reason {
        s.push_str(&format!("Reason:    {r}\n"));
    }
    s.push_str(&format!("Link:      {}\n", req.link));
    if !req.failed.is_empty() {
        s.push_str(&format!("\nFailed tasks ({}):\n", req.failed.len()));
        for (t, log) in req.failed.iter().zip(logs) {
            let exit = t.exit_description();
            s.push_str(&format!(
                "\n- task {} (frames {}-{}), {} attempts, {exit}; last {LOG_LINES} lines of its log:\n",
                t.index, t.first, t.last, t.attempts
            ));
            for line in log.lines() {
                s.push_str(&format!("    | {line}\n"));
            }
        }
        if req.failed.len() > logs.len() {
            s.push_str(&format!(
                "\n… and {} more: drqueue tasks {} --status failed\n",
                req.failed.len() - logs.len(),
                j.id
            ));
        }
    }
    s
}
