//! Email notifications end to end: a real master sends through `lettre` to a
//! real SMTP server (aiosmtpd) started by the test.

use drqueue_common::model::{JobId, JobStatus};
use drqueue_tests::{eventually, Farm, TestSmtp};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn notification(farm: &Farm, job: JobId) -> Value {
    let out = farm.drqueue(&["show", &job.to_string(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("show --json");
    v["notification"].clone()
}

/// A header's value in a received mail.
fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
}

#[test]
fn an_ended_job_mails_its_status_counts_and_failed_tasks_with_their_logs() {
    let dir = std::env::temp_dir().join(format!("drqueue-smtp-{}-a", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut smtp) = TestSmtp::new(&dir) else {
        return;
    };
    smtp.start();
    let mut farm = Farm::start_with(&["--smtp", &smtp.url(), "--mail-from", "farm@example.com"]);
    farm.engine("m", &[]);
    // Frame 2 fails after printing 31 lines; the mail shows its last 20.
    let job = farm.submit(&[
        "--name",
        "shot010",
        "--frames",
        "1-3",
        "--max-attempts",
        "1",
        "--notify",
        "ana@example.com",
        "--notify",
        "wrangler@example.com",
        "--",
        "sh",
        "-c",
        "echo start {frame}; for i in $(seq 1 30); do echo noise $i; done; test {frame} -ne 2",
    ]);
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Failed);
    let mail = eventually(LONG, "the notification to arrive", || {
        smtp.messages().into_iter().next()
    });
    assert_eq!(
        header(&mail, "X-RcptTo"),
        "ana@example.com, wrangler@example.com"
    );
    assert_eq!(header(&mail, "X-MailFrom"), "farm@example.com");
    assert_eq!(
        header(&mail, "Subject"),
        format!("[DrQueue] job {job} shot010 failed")
    );
    for want in [
        format!("Job {job} \"shot010\" ended failed."),
        "Tasks:     2 done, 1 failed, 0 cancelled, of 3".to_string(),
        "Duration:  ".to_string(),
        format!("Link:      {}/api/jobs/{job}", farm.http),
        "- task 1 (frames 2-2), 1 attempts, exit code 1; last 20 lines of its log:".to_string(),
        "    | noise 11\n".to_string(),
        "    | noise 30\n".to_string(),
    ] {
        assert!(mail.contains(&want), "the mail lacks {want:?}:\n{mail}");
    }
    assert!(
        !mail.contains("| noise 10\n"),
        "more than 20 lines:\n{mail}"
    );
    let n = notification(&farm, job);
    assert_eq!(
        (n["state"].as_str(), n["attempts"].as_u64()),
        (Some("sent"), Some(1))
    );

    // --notify-on done: a failed job sends nothing, and says so.
    let quiet = farm.submit(&[
        "--notify",
        "ana@example.com",
        "--notify-on",
        "done",
        "--",
        "false",
    ]);
    farm.wait_job(quiet, LONG);
    eventually(LONG, "the notification to be skipped", || {
        (notification(&farm, quiet)["state"] == "skipped").then_some(())
    });
    let human =
        String::from_utf8_lossy(&farm.drqueue(&["show", &quiet.to_string()]).stdout).to_string();
    assert!(
        human.contains("notify     ana@example.com (on done): skipped"),
        "{human}"
    );
    assert_eq!(smtp.messages().len(), 1);
}

#[test]
fn smtp_down_at_the_end_and_a_master_restart_still_deliver_exactly_once() {
    let dir = std::env::temp_dir().join(format!("drqueue-smtp-{}-b", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut smtp) = TestSmtp::new(&dir) else {
        return;
    };
    // The server is down when the job ends.
    let mut farm = Farm::start_with(&["--smtp", &smtp.url()]);
    farm.engine("m", &[]);
    let job = farm.submit(&["--notify", "ana@example.com", "--", "true"]);
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Done);
    let ended = std::time::Instant::now();
    let n = eventually(LONG, "a failed sending attempt to show", || {
        let n = notification(&farm, job);
        (n["state"] == "pending" && n["last_error"].as_str().is_some()).then_some(n)
    });
    assert!(n["last_error"].as_str().unwrap().contains("SMTP"), "{n}");
    // The master dies meanwhile; its successor must neither lose nor repeat it.
    farm.kill_master();
    farm.start_master();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(ended.elapsed()));
    smtp.start();
    eventually(LONG, "the notification to be sent", || {
        (notification(&farm, job)["state"] == "sent").then_some(())
    });
    // Time for a duplicate to show up, were there one.
    std::thread::sleep(Duration::from_secs(3));
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(notification(&farm, job)["attempts"].as_u64().unwrap() >= 2);
}

#[test]
fn a_notification_that_cannot_be_sent_ends_failed_with_the_smtp_error() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{port}");
    let mut farm = Farm::start_with(&["--smtp", &url, "--mail-attempts", "2"]);
    farm.engine("m", &[]);
    let job = farm.submit(&["--notify", "ana@example.com", "--", "true"]);
    farm.wait_job(job, LONG);
    let n = eventually(LONG, "the notification to fail", || {
        let n = notification(&farm, job);
        (n["state"] == "failed").then_some(n)
    });
    assert_eq!(n["attempts"], 2);
    assert!(
        n["last_error"].as_str().unwrap().starts_with("SMTP: "),
        "{n}"
    );

    // And a master without --smtp refuses --notify at submit, saying what
    // to do, rather than failing the mail when the job ends.
    let bare = Farm::start();
    let out = bare.drqueue(&["submit", "--notify", "ana@example.com", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("started without --smtp"), "{err}");
    assert!(bare.client().jobs(None).unwrap().is_empty());
}
