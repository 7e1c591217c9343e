//! Many people on one farm: users and roles, owners, the audit trail, the
//! single-machine mode and what a browser could be made to send. Real
//! master, real CLI, real HTTP.

use drqueue_common::model::{JobId, JobStatus};
use drqueue_tests::{farm_with_admin, raw_http, Farm};
use std::process::Output;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `drqueue user add` prints the new user's token alone on stdout.
fn add_user(farm: &Farm, name: &str, role: &str) -> String {
    let out = farm.drqueue(&["user", "add", name, "--role", role]);
    assert!(out.status.success(), "user add: {}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert!(token.starts_with("drqt_"), "{token:?}");
    token
}

fn as_user(farm: &Farm, token: &str, args: &[&str]) -> Output {
    farm.drqueue_env(args, &[("DRQUEUE_TOKEN", token)])
}

fn submitted(out: &Output) -> JobId {
    assert!(out.status.success(), "submit: {}", stderr(out));
    stdout(out).trim().parse().expect("a job id")
}

#[test]
fn artists_control_their_own_jobs_and_wranglers_any() {
    let (mut farm, _admin) = farm_with_admin(&[]);
    let alice = add_user(&farm, "alice", "artist");
    let bob = add_user(&farm, "bob", "artist");
    let wally = add_user(&farm, "wally", "wrangler");
    let vic = add_user(&farm, "vic", "viewer");

    let job = submitted(&as_user(
        &farm,
        &alice,
        &["submit", "--paused", "--", "true"],
    ));
    assert_eq!(farm.client().job(job).unwrap().owner, "alice");

    // Bob may not touch Alice's job, and hears why.
    for action in ["cancel", "pause", "delete"] {
        let out = as_user(&farm, &bob, &[action, &job.to_string()]);
        assert_eq!(out.status.code(), Some(1), "{action}");
        let err = stderr(&out);
        assert!(
            err.contains("belongs to \"alice\"") && err.contains("wrangler"),
            "{action}: {err}"
        );
    }
    // Nor submit as her.
    let out = as_user(&farm, &bob, &["submit", "--owner", "alice", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only as themselves"),
        "{}",
        stderr(&out)
    );
    // Nor change limits or engines.
    let out = as_user(&farm, &bob, &["limit", "set", "blender", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrangler role"), "{}", stderr(&out));
    // A viewer reads but changes nothing.
    assert!(as_user(&farm, &vic, &["jobs"]).status.success());
    let out = as_user(&farm, &vic, &["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("artist role"), "{}", stderr(&out));
    // Without a token nothing is read once the farm has users.
    let out = farm.drqueue_env(&["jobs"], &[("DRQUEUE_TOKEN", "")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DRQUEUE_TOKEN"), "{}", stderr(&out));

    // A wrangler may do both: submit for Alice (a pipeline daemon) and
    // resume her job.
    let daemon = submitted(&as_user(
        &farm,
        &wally,
        &["submit", "--owner", "alice", "--", "true"],
    ));
    assert_eq!(farm.client().job(daemon).unwrap().owner, "alice");
    assert!(as_user(&farm, &wally, &["resume", &job.to_string()])
        .status
        .success());
    // Alice resumes... her own job is already resumed; she cancels nothing
    // of Bob's either way, but her own works.
    farm.engine("e1", &[]);
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Done);

    // The audit trail names who did what, the refusals with their reason.
    let out = as_user(&farm, &wally, &["audit", "--user", "bob", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let entries = entries.as_array().unwrap();
    let cancel = entries
        .iter()
        .find(|e| e["action"] == format!("POST /api/jobs/{job}/cancel"))
        .expect("bob's cancel is in the audit trail");
    assert_eq!(cancel["status"], 403);
    assert_eq!(cancel["job"], job.0);
    assert!(cancel["detail"].as_str().unwrap().contains("alice"));
    assert_eq!(cancel["remote"], "127.0.0.1");
    assert!(entries.iter().all(|e| e["user"] == "bob"));
    let out = as_user(
        &farm,
        &wally,
        &["audit", "--job", &daemon.to_string(), "--json"],
    );
    let entries: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(entries[0]["user"], "wally");
    assert_eq!(entries[0]["status"], 201);
    // An artist may not read it, and nothing in the API changes it.
    assert_eq!(as_user(&farm, &alice, &["audit"]).status.code(), Some(1));
    let (status, _) = raw_http(
        &farm.http,
        &format!(
            "DELETE /api/audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            farm.token.as_deref().unwrap()
        ),
    );
    assert!(status == 404 || status == 405, "{status}");
}

#[test]
fn admins_manage_users_and_tokens_and_a_revoked_token_is_refused() {
    let (farm, _admin) = farm_with_admin(&[]);
    let carol = add_user(&farm, "carol", "artist");
    let out = farm.drqueue(&["user", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "carol"]);
    // The token itself is never listed, only its id.
    assert!(!stdout(&out).contains(&carol));
    // An artist manages no users.
    let out = as_user(
        &farm,
        &carol,
        &["user", "add", "mallory", "--role", "admin"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("admin role"), "{}", stderr(&out));
    // Who am I.
    let out = as_user(&farm, &carol, &["whoami"]);
    assert_eq!(stdout(&out).trim(), "carol (artist)");
    // Revoke her token: she is refused from then on.
    let id = users[1]["tokens"][0]["id"].as_str().unwrap().to_string();
    assert!(farm.drqueue(&["token", "revoke", &id]).status.success());
    let out = as_user(&farm, &carol, &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
    // A new token works; removing the user ends it.
    let out = farm.drqueue(&["token", "create", "--user", "carol"]);
    let fresh = stdout(&out).trim().to_string();
    assert!(as_user(&farm, &fresh, &["whoami"]).status.success());
    assert!(farm.drqueue(&["user", "remove", "carol"]).status.success());
    assert_eq!(as_user(&farm, &fresh, &["whoami"]).status.code(), Some(1));
}

#[test]
fn users_survive_a_master_restart() {
    let (mut farm, _admin) = farm_with_admin(&[]);
    let dana = add_user(&farm, "dana", "wrangler");
    farm.stop_master();
    farm.start_master();
    let out = as_user(&farm, &dana, &["whoami"]);
    assert_eq!(stdout(&out).trim(), "dana (wrangler)", "{}", stderr(&out));
}

#[test]
fn a_token_file_that_names_no_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("drqueue-empty-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# only a comment\n\n   \n").unwrap();
    let out = std::process::Command::new(drqueue_tests::bin("drqueue-master"))
        .args(["--db", dir.join("db").to_str().unwrap()])
        .args(["--http", "127.0.0.1:0", "--engines", "tcp://127.0.0.1:0"])
        .arg("--token-file")
        .arg(&tokens)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("names no token"), "{}", stderr(&out));
}

#[test]
fn a_farm_without_users_serves_this_machine_alone() {
    let dir = std::env::temp_dir().join(format!("drqueue-open-bind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Refused before it binds: no address outside loopback is touched.
    let out = std::process::Command::new(drqueue_tests::bin("drqueue-master"))
        .args(["--db", dir.join("db").to_str().unwrap()])
        .args(["--http", "0.0.0.0:0", "--engines", "tcp://127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no users yet") && stderr(&out).contains("--admin-token-file"),
        "{}",
        stderr(&out)
    );

    // On loopback every local caller is the admin "local", no token needed.
    let farm = Farm::start();
    let out = farm.drqueue(&["whoami"]);
    assert_eq!(stdout(&out).trim(), "local (admin)");
    let job = farm.submit(&["--paused", "--", "true"]);
    assert_eq!(farm.client().job(job).unwrap().owner, "local");
}

#[test]
fn a_browser_cannot_be_made_to_act_on_a_local_farm() {
    let farm = Farm::start();
    let body = r#"{"command":["true"]}"#;
    // DNS rebinding: a page on evil.example, its name now pointing here.
    let (status, text) = raw_http(
        &farm.http,
        &format!(
            "POST /api/jobs HTTP/1.1\r\nHost: evil.example:5580\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not an address of this master"), "{text}");
    // The same for a read: the page could not even look.
    let (status, _) = raw_http(
        &farm.http,
        "GET /api/jobs HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403);
    // A cross-site form post: the right Host, but a form, from another origin.
    let form = "command=true";
    let (status, text) = raw_http(
        &farm.http,
        &format!(
            "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 415, "{text}");
    // JSON from another origin (a fetch that a CORS preflight would stop,
    // were the browser asked): refused by its Origin.
    let (status, text) = raw_http(
        &farm.http,
        &format!(
            "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 403, "{text}");
    assert!(farm.client().jobs(None).unwrap().is_empty(), "a job got in");
    // The farm's own page, from its own origin, works.
    let (status, text) = raw_http(
        &farm.http,
        &format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 201, "{text}");
}

#[test]
fn a_bearer_token_reaches_the_master_by_any_name() {
    let (farm, admin) = farm_with_admin(&[]);
    let (status, text) = raw_http(
        &farm.http,
        &format!("GET /api/whoami HTTP/1.1\r\nHost: render-master.alias\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"admin\""), "{text}");
}

/// Requests in flight are shared per user: Alice holding her whole share
/// in long polls gets 429 for one more, and Bob, from the same address, is
/// still served.
#[test]
fn one_user_cannot_hold_every_request() {
    use std::io::{Read, Write};
    // 400 connections: 100 per address, 50 requests in flight per user.
    let (mut farm, _admin) = farm_with_admin(&["--http-max-connections", "400"]);
    let alice = add_user(&farm, "alice", "artist");
    let bob = add_user(&farm, "bob", "artist");
    let job = submitted(&as_user(&farm, &alice, &["submit", "--", "sleep", "60"]));
    farm.engine("e", &[]);
    let client = drqueue_client::Client::new(Some(&farm.http), Some(&alice));
    drqueue_tests::eventually(LONG, "the task to run", || {
        let t = client.tasks(job, None).ok()?;
        (t[0].status == drqueue_common::model::TaskStatus::Running).then_some(())
    });
    let addr = farm.http.trim_start_matches("http://").to_string();
    let follow = format!(
        "GET /api/jobs/{job}/tasks/0/log?wait=20 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
    );
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(follow.as_bytes()).unwrap();
        held.push(s);
    }
    // Let the master take all fifty in.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (status, body) = raw_http(&farm.http, &follow);
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("requests in flight"), "{body}");
    let (status, body) = raw_http(
        &farm.http,
        &format!("GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    for mut s in held {
        let _ = s.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(as_user(&farm, &alice, &["cancel", &job.to_string()])
        .status
        .success());
}

#[test]
fn public_read_opens_reads_and_nothing_else() {
    let (farm, _admin) = farm_with_admin(&["--public-read"]);
    let anon = [("DRQUEUE_TOKEN", "")];
    let out = farm.drqueue_env(&["jobs", "--json"], &anon);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = farm.drqueue_env(&["whoami"], &anon);
    assert_eq!(stdout(&out).trim(), "anonymous (viewer)");
    let out = farm.drqueue_env(&["submit", "--", "true"], &anon);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DRQUEUE_TOKEN"), "{}", stderr(&out));
}
