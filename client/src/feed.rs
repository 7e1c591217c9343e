//! The master's live feed (`GET /api/events`) as the client reads it: a
//! reader thread parses the Server-Sent Events and hands them over a
//! channel, so a caller can wait with a timeout. Lines are bounded before
//! they are kept; a stream that says nothing (not even its keep-alive) for
//! [`SILENT_LIMIT`] counts as gone.

use crate::{Client, ClientError, Result};
use drqueue_common::model::{JobId, JobView};
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The master sends a keep-alive every 15 s: three missed is a dead stream.
pub const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// The longest event data kept (the master's are far smaller).
const MAX_EVENT_BYTES: usize = 8 << 20;

/// One event: its name, number and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub name: String,
    pub id: Option<u64>,
    pub data: String,
}

/// What the reader thread passes on.
#[derive(Debug, PartialEq)]
enum Msg {
    Event(FeedEvent),
    /// A keep-alive: the stream lives.
    Alive,
    End,
}

/// An open subscription.
pub struct EventStream {
    rx: mpsc::Receiver<Msg>,
}

/// What waiting on a stream gave.
#[derive(Debug)]
pub enum Next {
    Event(FeedEvent),
    /// Nothing within the time asked.
    Quiet,
    /// The stream ended (the master went, or it was silent too long).
    Closed,
}

impl EventStream {
    /// The next event, waiting at most `wait` (keep-alives reset the wait
    /// for [`SILENT_LIMIT`] but are not events).
    pub fn next(&self, wait: Duration) -> Next {
        let until = std::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Event(e)) => return Next::Event(e),
                Ok(Msg::Alive) => continue,
                Ok(Msg::End) | Err(mpsc::RecvTimeoutError::Disconnected) => return Next::Closed,
                Err(mpsc::RecvTimeoutError::Timeout) => return Next::Quiet,
            }
        }
    }
}

impl Client {
    /// Subscribes to `topics` (`jobs`, `job:ID`, `log:ID.TASK`, `engines`,
    /// `farm`). Errors as any request's (a master without the feed: 404).
    pub fn events(&self, topics: &[String]) -> Result<EventStream> {
        let query = [("topics", topics.join(","))];
        let resp = self.open_stream("/api/events", &query)?;
        let (tx, rx) = mpsc::channel();
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        std::thread::spawn(move || read_events(reader, &tx));
        Ok(EventStream { rx })
    }
}

/// Parses the stream into events until it ends or the receiver goes; a
/// keep-alive comment is passed on as nothing, so the waiter knows the
/// stream lives.
fn read_events(mut reader: impl BufRead, tx: &mpsc::Sender<Msg>) {
    let mut event = FeedEvent {
        name: String::new(),
        id: None,
        data: String::new(),
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded: a line past the limit ends the stream.
        let mut limited = std::io::Read::take(reader.by_ref(), MAX_EVENT_BYTES as u64 + 1);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) if n > MAX_EVENT_BYTES => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if !event.name.is_empty() || !event.data.is_empty() {
                if event.name.is_empty() {
                    event.name = "message".into();
                }
                let done = std::mem::replace(
                    &mut event,
                    FeedEvent {
                        name: String::new(),
                        id: None,
                        data: String::new(),
                    },
                );
                if tx.send(Msg::Event(done)).is_err() {
                    return;
                }
            }
            continue;
        }
        if text.starts_with(':') {
            if tx.send(Msg::Alive).is_err() {
                return;
            }
            continue;
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.name = value.to_string(),
            "id" => event.id = value.parse().ok(),
            "data" => {
                if event.data.len() + value.len() > MAX_EVENT_BYTES {
                    break;
                }
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            _ => {}
        }
    }
    let _ = tx.send(Msg::End);
}

impl Client {
    /// The job's views as the feed pushes them, until it ends: the last
    /// view; None when the feed closed or went silent (the caller polls).
    pub(crate) fn wait_by_feed(
        &self,
        id: JobId,
        timeout: Option<Duration>,
        start: Instant,
        progress: &mut dyn FnMut(&JobView),
    ) -> Result<Option<JobView>> {
        let stream = self.events(&[format!("job:{id}")])?;
        // Read after subscribing: no change falls between the two.
        let mut view = self.job(id)?;
        loop {
            progress(&view);
            if view.status.is_terminal() {
                return Ok(Some(view));
            }
            let wait = match timeout {
                Some(t) => t
                    .checked_sub(start.elapsed())
                    .ok_or(ClientError::Timeout(t))?
                    .min(SILENT_LIMIT),
                None => SILENT_LIMIT,
            };
            match stream.next(wait) {
                Next::Event(e) if e.name == "job" => {
                    let update: JobUpdate = serde_json::from_str(&e.data)
                        .map_err(|e| ClientError::Protocol(format!("a job event: {e}")))?;
                    match update.job {
                        Some(v) => view = *v,
                        None => {
                            return Err(ClientError::NotFound(format!(
                                "job {id} was deleted while waiting"
                            )))
                        }
                    }
                }
                Next::Event(e) if e.name == "reload" => view = self.job(id)?,
                Next::Event(_) => {}
                Next::Quiet => match timeout {
                    Some(t) if start.elapsed() >= t => return Err(ClientError::Timeout(t)),
                    _ => return Ok(None),
                },
                Next::Closed => return Ok(None),
            }
        }
    }
}

/// A `job` event: the job's view, absent when it was deleted.
#[derive(serde::Deserialize)]
struct JobUpdate {
    job: Option<Box<JobView>>,
}

/// A feed error worth falling back from (a master without the feed).
pub(crate) fn unsupported(e: &ClientError) -> bool {
    matches!(e, ClientError::NotFound(_) | ClientError::BadRequest(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_and_keep_alives_skipped() {
        let text =
            ": keep-alive\n\nevent: job\nid: 7\ndata: {\"a\":1}\n\nevent: reload\ndata: {}\n\n";
        let (tx, rx) = mpsc::channel();
        read_events(std::io::Cursor::new(text.as_bytes().to_vec()), &tx);
        let got: Vec<Msg> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Msg::Alive,
                Msg::Event(FeedEvent {
                    name: "job".into(),
                    id: Some(7),
                    data: "{\"a\":1}".into()
                }),
                Msg::Event(FeedEvent {
                    name: "reload".into(),
                    id: None,
                    data: "{}".into()
                }),
                Msg::End
            ]
        );
    }

    #[test]
    fn an_endless_line_ends_the_stream() {
        let text = format!("data: {}", "x".repeat(MAX_EVENT_BYTES + 10));
        let (tx, rx) = mpsc::channel();
        read_events(std::io::Cursor::new(text.into_bytes()), &tx);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![Msg::End]);
    }
}
