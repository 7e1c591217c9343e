//! The live feed behind the web monitor: `GET /api/events` over real HTTP
//! from a real master while real engines run tasks.

use drqueue_tests::Farm;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One Server-Sent Event as read off the wire.
#[derive(Debug, Clone, Default)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: String,
}

/// Reads `url` as an event stream on a thread; events arrive on the channel.
fn subscribe(url: &str, last_id: Option<u64>) -> mpsc::Receiver<Sse> {
    let (tx, rx) = mpsc::channel();
    let mut req = ureq::get(url).header("Accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.call().expect("the event stream opens");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    std::thread::spawn(move || {
        let mut ev = Sse::default();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !ev.event.is_empty() && tx.send(std::mem::take(&mut ev)).is_err() {
                    return;
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                ev.id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    });
    rx
}

/// Waits for an event `f` accepts, returning it and everything before it.
fn wait_for(rx: &mpsc::Receiver<Sse>, what: &str, f: impl Fn(&Sse) -> bool) -> (Sse, Vec<Sse>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ev) if f(&ev) => return (ev, seen),
            Ok(ev) => seen.push(ev),
            Err(_) => break,
        }
    }
    panic!("no event: {what}; saw {seen:?}");
}

fn json(ev: &Sse) -> serde_json::Value {
    serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{e}: {}", ev.data))
}

#[test]
fn the_feed_pushes_job_task_log_and_farm_changes_and_resumes() {
    let mut farm = Farm::start();
    farm.engine("m1", &["--slots", "2"]);
    farm.wait_engines(1);
    let jobs = subscribe(&format!("{}/api/events?topics=jobs,farm", farm.http), None);
    let id = farm.submit(&[
        "--frames",
        "1-4",
        "--",
        "sh",
        "-c",
        "echo rendering {frame}; sleep 0.3; echo finished {frame}",
    ]);
    let per_job = subscribe(
        &format!("{}/api/events?topics=job:{id},log:{id}.3", farm.http),
        None,
    );
    // The job list hears the job end, with its counts.
    let (done, _) = wait_for(&jobs, "the job done in the list", |e| {
        e.event == "jobs"
            && json(e)["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|j| j["id"] == id.0 && j["status"] == "done"))
    });
    let last_id = done.id.expect("events are numbered");
    // The job's own topic carries its tasks as they change, and task 3's
    // log arrives as it is written.
    let (_, before) = wait_for(&per_job, "the job's view saying done", |e| {
        e.event == "job" && json(e)["job"]["status"] == "done"
    });
    assert!(
        before.iter().chain([&done]).any(|e| e.event == "job"
            && json(e)["tasks"].as_array().is_some_and(|t| !t.is_empty())),
        "task changes came with the job"
    );
    let logs: String = before
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| json(e)["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        logs.contains("rendering 4"),
        "task 3 renders frame 4: {logs:?}"
    );
    // Farm totals come with each batch.
    let (farm_ev, _) = wait_for(&jobs, "farm totals", |e| e.event == "farm");
    let totals = json(&farm_ev);
    assert_eq!(totals["slots"], 2);
    assert!(totals["done_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_u64() >= Some(4)));
    // A reconnect with Last-Event-ID resumes after that event: the next job
    // is seen, nothing before it is sent again.
    let resumed = subscribe(
        &format!("{}/api/events?topics=jobs", farm.http),
        Some(last_id),
    );
    let second = farm.submit(&["--", "true"]);
    let (ev, _) = wait_for(&resumed, "the second job", |e| {
        json(e)["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|j| j["id"] == second.0))
    });
    assert!(ev.id.unwrap() > last_id);
    // An id the feed never gave (or long gone) says: reload.
    let stale = subscribe(
        &format!("{}/api/events?topics=jobs", farm.http),
        Some(u64::MAX / 2),
    );
    let (ev, _) = wait_for(&stale, "reload", |_| true);
    assert_eq!(ev.event, "reload");
    // The farm totals are also a plain read.
    let totals: serde_json::Value = ureq::get(format!("{}/api/farm", farm.http))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(totals["jobs"]["done"], 2);
}

#[test]
fn bad_topics_are_refused_with_the_field_named() {
    let farm = Farm::start();
    let err = ureq::get(format!("{}/api/events?topics=jobs,job:abc", farm.http))
        .call()
        .unwrap_err();
    assert!(matches!(err, ureq::Error::StatusCode(400)), "{err:?}");
    let mut resp = ureq::get(format!("{}/api/events?topics=nope", farm.http))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(
        body.contains("topics") && body.contains("\\\"nope\\\""),
        "{body}"
    );
}

/// A whole-job cancel writes one record, not a row per task, so its event
/// cannot list the tasks: it says `tasks_truncated`, and a watcher that
/// reads the tasks again finds every unfinished one cancelled.
#[test]
fn a_cancelled_jobs_watchers_are_told_to_read_its_tasks_again() {
    let mut farm = Farm::start();
    farm.engine("c1", &[]);
    farm.wait_engines(1);
    let id = farm.submit(&["--frames", "1-300", "--", "sleep", "30"]);
    let per_job = subscribe(&format!("{}/api/events?topics=job:{id}", farm.http), None);
    let c = farm.client();
    drqueue_tests::eventually(Duration::from_secs(60), "a task running", || {
        (c.job(id)
            .ok()?
            .counts
            .get(drqueue_common::model::TaskStatus::Running)
            > 0)
        .then_some(())
    });
    let out = farm.drqueue(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let (ev, _) = wait_for(&per_job, "the job's view saying cancelled", |e| {
        e.event == "job" && json(e)["job"]["status"] == "cancelled"
    });
    let ev = json(&ev);
    let listed = ev["tasks"].as_array().map_or(0, Vec::len);
    assert!(
        ev["tasks_truncated"] == true || listed == 300,
        "the event neither lists the 300 tasks nor says to read them again: {ev}"
    );
    let tasks = c.tasks(id, None).expect("tasks");
    assert_eq!(tasks.len(), 300);
    assert!(tasks
        .iter()
        .all(|t| t.status == drqueue_common::model::TaskStatus::Cancelled));
}
