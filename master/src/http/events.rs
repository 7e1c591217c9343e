//! `GET /api/events`: the live feed as Server-Sent Events, and `GET
//! /api/farm`, the farm's totals.
//!
//! A client names its topics (`?topics=jobs,job:12,log:12.3,engines,farm`;
//! default `jobs,engines,farm`) and gets each batch of changes as events
//! named after the topic, numbered by `id:`. A reconnect with
//! `Last-Event-ID` resumes after that event; when it has left the ring the
//! client gets a `reload` event and should fetch afresh. Comments keep the
//! connection alive every 15 s.

use super::{ask, error, ApiResult, ApiState};
use crate::events::Request;
use crate::feed::{Feed, FeedEvent, Listening, Resume, Topics};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;

/// Events read from the ring at a time, per subscriber.
const READ_AT_ONCE: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(serde::Deserialize)]
pub(super) struct EventsQuery {
    topics: Option<String>,
}

/// One subscriber's place in the feed.
struct Subscriber {
    feed: Feed,
    topics: Topics,
    newest: watch::Receiver<u64>,
    at: u64,
    reload: bool,
    queue: VecDeque<Event>,
    _listening: Listening,
}

pub(super) async fn stream(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult {
    let topics: Topics = q
        .topics
        .as_deref()
        .unwrap_or("jobs,engines,farm")
        .parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, e))?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (resume, newest, listening) = s.feed.subscribe(last_id);
    let (at, reload) = match resume {
        Resume::From(n) => (n, false),
        Resume::Reload => (s.feed.newest(), true),
    };
    let sub = Subscriber {
        feed: s.feed.clone(),
        topics,
        newest,
        at,
        reload,
        queue: VecDeque::new(),
        _listening: listening,
    };
    let events = futures_util::stream::unfold(sub, |mut sub| async move {
        let event = sub.next().await?;
        Some((Ok::<_, Infallible>(event), sub))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

impl Subscriber {
    /// The next event to send; None when the master shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.reload {
                self.reload = false;
                self.at = self.feed.newest();
                return Some(
                    Event::default()
                        .event("reload")
                        .id(self.at.to_string())
                        .data("{}"),
                );
            }
            match self.feed.read(self.at, &self.topics, READ_AT_ONCE) {
                None => self.reload = true,
                Some((events, upto)) => {
                    let read_something = upto > self.at;
                    self.at = upto;
                    self.queue.extend(events.into_iter().map(sse_event));
                    if read_something {
                        continue;
                    }
                    self.newest.changed().await.ok()?;
                }
            }
        }
    }
}

fn sse_event(e: FeedEvent) -> Event {
    Event::default()
        .event(e.topic.event_name())
        .id(e.seq.to_string())
        .data(&*e.data)
}

pub(super) async fn farm(State(s): State<ApiState>) -> ApiResult {
    let totals = ask(&s, |reply| Request::Farm { reply }).await?;
    Ok(Json(totals).into_response())
}

/// The renderers' error and warning line patterns, for the log viewer to
/// colour lines: JavaScript regular expressions (source and flags), by
/// program file name, and the ones for any other program.
pub(super) async fn log_rules() -> ApiResult {
    use drqueue_runner::renderers::RENDERERS;
    let js = |patterns: &[&str]| -> Vec<serde_json::Value> {
        patterns
            .iter()
            .map(|p| {
                let (source, flags) = p.strip_prefix("(?i)").map_or((*p, ""), |r| (r, "i"));
                serde_json::json!({ "source": source, "flags": flags })
            })
            .collect()
    };
    let renderers: Vec<serde_json::Value> = RENDERERS
        .iter()
        .map(|r| {
            serde_json::json!({
                "programs": r.programs,
                "errors": js(r.errors),
                "warnings": js(r.warnings),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "renderers": renderers,
        "default": {
            "errors": js(&[r"(?i)\b(?:error|fatal)\b"]),
            "warnings": js(&[r"(?i)\bwarning\b"]),
        },
    }))
    .into_response())
}
