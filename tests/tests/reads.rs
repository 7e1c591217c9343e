//! Reads cost what they return, and no client can stall or exhaust the
//! API: pages and filters, bounded specs, bodies and headers, and output
//! that cannot act on a terminal. Real master, engines, CLI and sockets.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{raw_http, Farm};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn get(farm: &Farm, path_and_query: &str) -> (u16, Option<String>, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent
        .get(format!("{}{path_and_query}", farm.http))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    (status, link, resp.into_body().read_to_string().unwrap())
}

#[test]
fn task_listings_come_in_pages_the_client_follows() {
    let farm = Farm::start();
    let id = farm.submit(&["--frames", "1-10000", "--paused", "--", "true"]);
    // A page of 1,000 by default, with a link to the next.
    let (status, link, body) = get(&farm, &format!("/api/jobs/{id}/tasks"));
    assert_eq!(status, 200);
    let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(page.len(), 1000);
    assert_eq!(page[999]["index"], 999);
    let link = link.expect("a Link header while more remain");
    assert_eq!(
        link,
        format!("</api/jobs/{id}/tasks?after=999>; rel=\"next\"")
    );
    // The last page has no link.
    let (_, link, body) = get(&farm, &format!("/api/jobs/{id}/tasks?limit=500&after=9499"));
    let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(page.len(), 500);
    assert!(link.is_none(), "{link:?}");
    // The client library (so the CLI and Python) follows every page.
    let all = farm.client().tasks(id, None).unwrap();
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0].index + 1 == w[1].index));
    let out = farm.drqueue(&["tasks", &id.to_string(), "--json"]);
    let cli: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli.len(), 10_000);
    // A status nothing is in: an empty array.
    let (status, link, body) = get(&farm, &format!("/api/jobs/{id}/tasks?status=failed"));
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert!(link.is_none());
    // A bad page is a clear 400.
    let (status, _, body) = get(&farm, &format!("/api/jobs/{id}/tasks?limit=0"));
    assert_eq!(status, 400);
    assert!(body.contains("limit"), "{body}");
}

#[test]
fn a_status_page_holds_only_that_status() {
    let mut farm = Farm::start();
    let id = farm.submit(&[
        "--frames",
        "1-40",
        "--max-attempts",
        "1",
        "--",
        "sh",
        "-c",
        "test {frame} -ne 20",
    ]);
    farm.engine("e", &["--slots", "2"]);
    farm.wait_job(id, LONG);
    let failed = farm.client().tasks(id, Some(TaskStatus::Failed)).unwrap();
    let indices: Vec<u32> = failed.iter().map(|t| t.index).collect();
    assert_eq!(indices, [19], "frame 20 is task 19");
    let (_, link, body) = get(
        &farm,
        &format!("/api/jobs/{id}/tasks?status=done&limit=10&after=15"),
    );
    let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let got: Vec<u64> = page.iter().map(|t| t["index"].as_u64().unwrap()).collect();
    assert_eq!(got, [16, 17, 18, 20, 21, 22, 23, 24, 25, 26]);
    assert!(page.iter().all(|t| t["status"] == "done"));
    assert!(link.unwrap().contains("status=done&limit=10&after=26"));
}

#[test]
fn job_listings_filter_and_carry_summary_rows() {
    let farm = Farm::start();
    let a = farm.submit(&[
        "--name", "shot_010", "--pool", "gpu", "--paused", "--", "true",
    ]);
    let b = farm.submit(&["--name", "shot_020", "--paused", "--", "true"]);
    let c = farm.submit(&["--name", "comp", "--paused", "--", "true"]);
    let (_, _, body) = get(&farm, "/api/jobs");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [c.0, b.0, a.0], "newest first");
    // SPEC's fields are there; the large ones stay in GET /api/jobs/{id}.
    for field in [
        "id",
        "name",
        "owner",
        "status",
        "priority",
        "pool",
        "counts",
        "tasks_total",
        "blocked",
    ] {
        assert!(rows[0].get(field).is_some(), "{field} missing");
    }
    assert!(rows[0].get("command").is_none() && rows[0].get("limits").is_none());
    let (_, _, body) = get(&farm, "/api/jobs?name=shot_*&order=oldest");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [a.0, b.0]);
    let (_, _, body) = get(&farm, "/api/jobs?pool=gpu");
    assert!(body.contains("shot_010") && !body.contains("shot_020"));
    let (_, link, body) = get(&farm, "/api/jobs?limit=2");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        link.unwrap(),
        format!("</api/jobs?limit=2&after={}>; rel=\"next\"", b.0)
    );
    let out = farm.drqueue(&["jobs", "--name", "comp", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], c.0);
    let (status, _, body) = get(&farm, "/api/jobs?order=sideways");
    assert_eq!(status, 400);
    assert!(body.contains("order"), "{body}");
}

#[test]
fn every_field_of_a_spec_is_bounded_and_nul_bytes_are_refused() {
    let farm = Farm::start();
    let long_name = "n".repeat(300);
    let out = farm.drqueue(&["submit", "--name", &long_name, "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("name is too long"), "{err}");
    // Straight to the API, past the CLI's own check.
    let client = farm.client();
    let mut spec = drqueue_common::model::JobSpec {
        command: vec!["true".into()],
        ..Default::default()
    };
    spec.limits = (0..100).map(|i| format!("l{i}")).collect();
    let err = client.submit(&spec).unwrap_err().to_string();
    assert!(
        err.contains("limits: 100 entries, the limit is 64"),
        "{err}"
    );
    spec.limits.clear();
    spec.command.push("a\0b".into());
    let err = client.submit(&spec).unwrap_err().to_string();
    assert!(err.contains("command holds a NUL byte"), "{err}");
    spec.command.pop();
    spec.cwd = Some("/tmp\0".into());
    let err = client.submit(&spec).unwrap_err().to_string();
    assert!(err.contains("cwd holds a NUL byte"), "{err}");
    assert!(client.jobs(None).unwrap().is_empty());
}

#[test]
fn an_oversized_body_gets_413_and_a_slow_header_is_cut_off() {
    let farm = Farm::start_with(&["--http-timeout", "1"]);
    // The declared length is enough: no need to send the 9 MiB.
    let (status, body) = raw_http(
        &farm.http,
        &format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            9 << 20
        ),
    );
    assert_eq!(status, 413, "{body}");
    // Half a header, then nothing: the master hangs up within its timeout.
    let addr = farm.http.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: loc")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the half-sent request held its connection for {:?}",
        started.elapsed()
    );
    // A body that trickles is cut off too (408), and the API still serves.
    let mut trickle = std::net::TcpStream::connect(addr).unwrap();
    trickle
        .write_all(b"POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"com")
        .unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = trickle.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(farm.drqueue(&["jobs"]).status.success());
}

#[test]
fn one_client_cannot_hold_every_connection() {
    let farm = Farm::start_with(&["--http-max-connections", "16"]);
    let addr = farm.http.trim_start_matches("http://").to_string();
    // Sixteen idle connections from one address: its share is eight.
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut refused = 0;
    for mut s in held.iter().skip(8).map(|s| s.try_clone().unwrap()) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 429") {
            refused += 1;
        }
    }
    assert_eq!(refused, 8);
    drop(held);
    assert!(farm.drqueue(&["jobs"]).status.success());
}

#[test]
fn names_from_other_users_cannot_write_to_a_terminal() {
    let farm = Farm::start();
    let id = farm.submit(&[
        "--name",
        "evil\u{1b}]0;owned\u{7}\u{1b}[2J",
        "--paused",
        "--",
        "true",
    ]);
    for args in [vec!["jobs"], vec!["show", &id.to_string()]] {
        let out = farm.drqueue(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("evil\\u{1b}"), "{args:?}: {text}");
    }
    // --json keeps the exact name, escaped as JSON.
    let out = farm.drqueue(&["show", &id.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "evil\u{1b}]0;owned\u{7}\u{1b}[2J");
}

#[test]
fn a_follower_sees_the_whole_log_and_stops_when_the_task_ends() {
    let mut farm = Farm::start();
    let id = farm.submit(&[
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done",
    ]);
    farm.engine("e", &[]);
    let started = Instant::now();
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--follow", "--raw"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    assert!(started.elapsed() < LONG);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
}

#[test]
fn a_log_larger_than_one_window_downloads_whole() {
    let mut farm = Farm::start();
    // 40,000 numbered lines of 80 bytes: 3.2 MB, over three read windows.
    let id = farm.submit(&[
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 40000 ]; do printf '%079d\\n' $i; i=$((i+1)); done",
    ]);
    farm.engine("e", &[]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let url = format!("{}/api/jobs/{id}/tasks/0/log?download=true", farm.http);
    let resp = ureq::get(&url).call().expect("download the log");
    let disposition = resp
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"job{id}-task0-attempt1.log\"")
    );
    let body = resp
        .into_body()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .expect("the whole body");
    assert_eq!(body.len(), 40_000 * 80);
    for (i, line) in body.split(|&b| b == b'\n').take(40_000).enumerate() {
        assert_eq!(line, format!("{i:079}").as_bytes(), "line {i}");
    }
    // Without download=true a read is one window.
    let window = ureq::get(format!("{}/api/jobs/{id}/tasks/0/log", farm.http))
        .call()
        .expect("read the log")
        .into_body()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .expect("one window");
    assert_eq!(window.len(), 1 << 20);
}
