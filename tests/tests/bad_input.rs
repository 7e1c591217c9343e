//! Bad input gets a clear error, is dropped, and harms nothing: garbage on
//! the engines' socket, bad HTTP bodies, malformed and enormous frame sets.

use bytes::Bytes;
use drqueue_common::model::JobStatus;
use drqueue_common::protocol::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use drqueue_common::session::{self, Kind};
use drqueue_tests::{zmq_message, Farm};
use std::io::{Read, Write};
use std::time::Duration;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

const LONG: Duration = Duration::from_secs(120);

#[test]
fn garbage_on_the_engines_socket_is_dropped_and_the_farm_keeps_working() {
    let mut farm = Farm::start();
    let endpoint = farm.engines_endpoint.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = DealerSocket::new();
        s.connect(&endpoint).await.unwrap();
        let mut wrong_version = 99u16.to_le_bytes().to_vec();
        wrong_version.extend_from_slice(&[0; 20]);
        let mut garbage_body = PROTOCOL_VERSION.to_le_bytes().to_vec();
        garbage_body.extend_from_slice(&[0xff; 64]);
        let attacks: Vec<Vec<Bytes>> = vec![
            vec![Bytes::from_static(b"\x00\x01random bytes\xff\xfe")],
            vec![Bytes::new()],
            vec![Bytes::from(wrong_version)],
            vec![Bytes::from(garbage_body)],
            vec![Bytes::from(vec![7u8; MAX_MESSAGE_BYTES + 1024])],
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c"),
            ],
        ];
        for a in attacks {
            s.send(zmq_message(a)).await.unwrap();
        }
        // A wrong version is answered with a reason (in clear: there is no
        // session), so a stale engine can say why; the garbage gets silence.
        let reply = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .unwrap()
            .unwrap()
            .into_vec();
        assert_eq!(session::kind(&reply), Ok(Kind::Refused));
        assert!(session::refusal_reason(&reply).contains("version"));
        // A sealed message from a stranger (no session) is told to
        // handshake; whatever it claims changes nothing.
        let mut head = PROTOCOL_VERSION.to_le_bytes().to_vec();
        head.push(Kind::Sealed as u8);
        head.extend_from_slice(&0u64.to_le_bytes());
        let sealed = vec![Bytes::from(head), Bytes::from(vec![9u8; 64])];
        s.send(zmq_message(sealed)).await.unwrap();
        // (Random bytes may also read as a wrong version: skip those answers.)
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(10), s.recv())
                .await
                .unwrap()
                .unwrap()
                .into_vec();
            match session::kind(&reply) {
                Ok(Kind::Refused) => continue,
                other => {
                    assert_eq!(other, Ok(Kind::NoSession));
                    break;
                }
            }
        }
    });
    // Raw TCP garbage that is not even ZMTP.
    let addr = farm
        .engines_endpoint
        .trim_start_matches("tcp://")
        .to_string();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    let _ = raw.write_all(&[0x42; 4096]);
    drop(raw);
    // The next valid work is served.
    farm.engine("ok", &[]);
    let id = farm.submit(&["--frames", "1-3", "--", "true"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    assert!(farm
        .master_log()
        .contains("dropping a message from the engines' socket"));
}

fn post(farm: &Farm, path: &str, body: &str) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent
        .post(format!("{}{path}", farm.http))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[test]
fn bad_http_bodies_get_clear_errors_and_harm_nothing() {
    let mut farm = Farm::start();
    let good = farm.submit(&["--name", "keep-me", "--", "true"]);
    let cases = [
        ("not json at all", "bad job"),
        ("{\"command\": [\"true\"], \"framez\": \"1\"}", "framez"),
        ("{\"command\": []}", "no command"),
        (
            "{\"command\": [\"true\"], \"frames\": \"1-x\"}",
            "malformed frame set",
        ),
        (
            "{\"command\": [\"true\"], \"frames\": \"\"}",
            "empty frame set",
        ),
        ("{\"command\": [\"true\"], \"priority\": 5000}", "priority"),
        (
            "{\"command\": [\"true\"], \"frames\": \"1-10000000\"}",
            "limit is 1000000",
        ),
        (
            "{\"command\": [\"true\"], \"frames\": \"1-100000000000\"}",
            "limit is 10000000",
        ),
        (
            "{\"command\": [\"true\"], \"after\": [{\"job\": 999}]}",
            "does not exist",
        ),
        ("[1,2,3]", "bad job"),
    ];
    for (body, expect) in cases {
        let (status, v) = post(&farm, "/api/jobs", body);
        assert_eq!(status, 400, "{body}: {v}");
        let err = v["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(expect),
            "{body}: error {err:?} should mention {expect:?}"
        );
    }
    let (status, v) = post(&farm, "/api/jobs/abc/pause", "");
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(&farm, "/api/jobs/999/pause", "");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no job 999"));
    let (status, _) = post(&farm, "/api/jobs/1/explode", "");
    assert_eq!(status, 400);
    // The CLI refuses a malformed frame set before sending it: a usage
    // error, exit 2.
    let out = farm.drqueue(&["submit", "--frames", "10-1", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends before it starts"));
    // A usage error is exit 2.
    assert_eq!(farm.drqueue(&["submit"]).status.code(), Some(2));
    assert_eq!(
        farm.drqueue(&["show", "not-a-number"]).status.code(),
        Some(2)
    );
    // Nothing stored was harmed, and the next valid request is served.
    assert_eq!(farm.client().jobs(None).unwrap().len(), 1);
    assert_eq!(farm.client().job(good).unwrap().name, "keep-me");
    farm.engine("e", &[]);
    let next = farm.submit(&["--", "true"]);
    assert_eq!(farm.wait_job(next, LONG).status, JobStatus::Done);
}

#[test]
fn ten_million_frames_work_in_blocks_or_are_refused_with_a_clear_limit() {
    let farm = Farm::start();
    let out = farm.drqueue(&["submit", "--frames", "1-10000000", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused before the master is asked"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("raise --blocksize"));
    let id = farm.submit(&[
        "--frames",
        "1-10000000",
        "--blocksize",
        "100",
        "--paused",
        "--",
        "true",
    ]);
    let job = farm.client().job(id).unwrap();
    assert_eq!(job.tasks_total, 100_000);
    let last = farm.client().tasks(id, None).unwrap().pop().unwrap();
    assert_eq!((last.first, last.last), (9_999_901, 10_000_000));
    assert!(farm.drqueue(&["cancel", &id.to_string()]).status.success());
}

/// A ZMTP 3.0 greeting with the NULL mechanism, as any peer sends first.
fn zmtp_greeting() -> Vec<u8> {
    let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    g.extend(mechanism);
    g.push(0); // as-server
    g.resize(64, 0);
    g
}

/// A long command frame's header announcing `len` bytes: 9 bytes.
fn frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x06];
    h.extend(len.to_be_bytes());
    h
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One 9-byte frame header claiming 2^40 bytes, sent before any key is
/// checked, once aborted the master on allocation. Now that connection is
/// dropped at the header and the master goes on serving.
#[test]
fn a_huge_frame_header_drops_the_connection_not_the_master() {
    let mut farm = Farm::start();
    let addr = farm
        .engines_endpoint
        .trim_start_matches("tcp://")
        .to_string();
    for claim in [1u64 << 40, 1 << 31] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&zmtp_greeting()).unwrap();
        s.write_all(&frame_header(claim)).unwrap();
        // What follows the header is never buffered: the master hangs up.
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0u64;
        while sent < 64 << 20 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // ends: the master closed it
        assert!(
            farm.master_exited().is_none(),
            "the master died on a {claim}-byte claim"
        );
    }
    let pid = farm.master_pid().expect("the master runs");
    let peak = peak_rss_kb(pid);
    assert!(peak < 200 * 1024, "the master's peak RSS is {peak} kB");
    farm.engine("after", &[]);
    let id = farm.submit(&["--", "true"]);
    assert_eq!(
        farm.wait_job(id, Duration::from_secs(60)).status,
        JobStatus::Done
    );
}

/// The same header from a hostile "master" kills no engine: it drops that
/// connection and goes on to the next master it was given.
#[test]
fn a_huge_frame_header_from_a_hostile_master_drops_the_link_not_the_engine() {
    let mut farm = Farm::start();
    let hostile = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hostile_addr = hostile.local_addr().unwrap();
    let masters = format!("tcp://{hostile_addr},{}", farm.engines_endpoint);
    farm.engine("target", &["--master", &masters]);
    let (mut s, _) = hostile.accept().unwrap();
    s.write_all(&zmtp_greeting()).unwrap();
    s.write_all(&frame_header(1 << 40)).unwrap();
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut rest);
    drop(s);
    let id = farm.submit(&["--", "true"]);
    assert_eq!(
        farm.wait_job(id, Duration::from_secs(60)).status,
        JobStatus::Done
    );
}
