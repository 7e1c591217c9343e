//! The CLI as a wrangler lives in it: exit codes as documented, messages
//! that name the real problem, quiet ends into closed pipes, short job
//! listings. Real master and CLI.

use drqueue_tests::Farm;
use std::process::{Command, Stdio};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn anything_refused_before_the_master_is_asked_exits_2() {
    let farm = Farm::start();
    for args in [
        vec!["submit", "--frames", "1-", "--", "true"],
        vec!["submit", "--frames", "a-b", "--", "true"],
        vec!["submit", "--priority", "5000", "--", "true"],
        vec!["submit", "--blocksize", "0", "--", "true"],
        vec!["submit", "--after", "3:finished", "--", "true"],
        vec!["jobs", "--limit", "0"],
        vec!["audit", "--since", "yesterday-ish"],
    ] {
        let out = farm.drqueue(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(farm.client().jobs(None).unwrap().is_empty());
    // What the master refuses is a failed operation: exit 1.
    let out = farm.drqueue(&["cancel", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no job 99"), "{}", stderr(&out));
}

#[test]
fn log_messages_name_what_is_missing() {
    let farm = Farm::start();
    let id = farm.submit(&["--paused", "--", "true"]);
    let out = farm.drqueue(&["log", &id.to_string(), "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has not run yet"), "{}", stderr(&out));
    let out = farm.drqueue(&["log", "99999", "0"]);
    assert!(stderr(&out).contains("no job 99999"), "{}", stderr(&out));
    let out = farm.drqueue(&["log", &id.to_string(), "7"]);
    assert!(stderr(&out).contains("no task 7"), "{}", stderr(&out));
}

#[test]
fn an_address_without_a_scheme_or_on_the_wrong_port_is_explained() {
    let farm = Farm::start();
    let bare = farm.http.trim_start_matches("http://").to_string();
    let out = farm.drqueue_env(&["jobs"], &[("DRQUEUE_URL", &bare)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let engines = farm.engines_endpoint.replace("tcp://", "http://");
    let out = farm.drqueue_env(&["jobs"], &[("DRQUEUE_URL", &engines)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("engines port"), "{}", stderr(&out));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let farm = Farm::start();
    for _ in 0..3 {
        farm.submit(&["--paused", "--", "true"]);
    }
    let mut child = Command::new(drqueue_tests::bin("drqueue"))
        .args(["jobs"])
        .env("DRQUEUE_URL", &farm.http)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone, as `| head -0` leaves it
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn jobs_shows_the_newest_fifty_unless_asked_for_more() {
    let farm = Farm::start();
    let ids: Vec<_> = (0..4)
        .map(|_| farm.submit(&["--paused", "--", "true"]))
        .collect();
    let out = farm.drqueue(&["--json", "jobs", "--limit", "2"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(got, [ids[3].0, ids[2].0], "newest first");
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    let out = farm.drqueue(&["--json", "jobs", "--all"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
}

#[test]
fn job_commands_take_several_ids_ranges_and_filters() {
    let farm = Farm::start();
    let ids: Vec<String> = (0..5)
        .map(|_| farm.submit(&["--paused", "--", "true"]).to_string())
        .collect();
    // Ids act at once, each reported.
    let out = farm.drqueue(&["cancel", &ids[0], &ids[1]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("job {} is cancelled", ids[0])),
        "{said}"
    );
    assert!(
        said.contains(&format!("job {} is cancelled", ids[1])),
        "{said}"
    );
    // A range, with one id that does not exist: the others are done, the
    // missing one reported, exit 1.
    let range = format!("{}-{}", ids[0], ids[1]);
    let out = farm.drqueue(&["delete", &range, "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("job 999: no job 999"),
        "{}",
        stderr(&out)
    );
    assert_eq!(farm.client().jobs(None).unwrap().len(), 3);
    // A filter without a terminal to ask on wants --yes: a usage error.
    let out = farm.drqueue(&["resume", "--status", "paused"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    let out = farm.drqueue(&["cancel", "--status", "paused", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left = farm.client().jobs(None).unwrap();
    assert!(left.iter().all(|j| j.status.as_str() == "cancelled"));
    // Ids and filters together, or nothing at all, are usage errors.
    assert_eq!(
        farm.drqueue(&["pause", &ids[2], "--all"]).status.code(),
        Some(2)
    );
    assert_eq!(farm.drqueue(&["pause"]).status.code(), Some(2));
}

#[test]
fn a_limit_can_be_shown_and_deleted() {
    let mut farm = Farm::start();
    assert!(farm
        .drqueue(&["limit", "set", "nuke", "0"])
        .status
        .success());
    // Held back by a limit of 0 tokens...
    let id = farm.submit(&["--limit", "nuke", "--", "true"]);
    farm.engine("e", &[]);
    let out = farm.drqueue(&["--json", "limit", "show", "nuke"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown[0]["count"], 0);
    // ...until the limit is gone.
    let out = farm.drqueue(&["limit", "delete", "nuke"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        farm.wait_job(id, std::time::Duration::from_secs(60))
            .status
            .as_str(),
        "done"
    );
    let out = farm.drqueue(&["limit", "show", "nuke"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no limit \"nuke\""),
        "{}",
        stderr(&out)
    );
    // Gone for good: a restarted master does not bring it back.
    farm.stop_master();
    farm.start_master();
    let out = farm.drqueue(&["--json", "limits"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn table_columns_line_up_whatever_the_status() {
    let farm = Farm::start();
    farm.submit(&["--paused", "--", "true"]);
    farm.submit(&["--", "true"]);
    let out = farm.drqueue(&["jobs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let pri = lines[0].find("PRI").expect("a PRI column");
    for row in &lines[1..] {
        // The priority (500) ends where the PRI heading ends.
        assert_eq!(&row[pri..pri + 3], "500", "{text}");
    }
}
