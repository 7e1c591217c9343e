//! Who may be an engine (enrollment, join tokens, takeover), replays, forged
//! results, and API tokens.

use drqueue_common::model::{EngineState, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::protocol::{AttemptKey, Finished, FromEngine, Heartbeat, Outcome, ToEngine};
use drqueue_common::session::Kind;
use drqueue_tests::raw_engine::{kind_of, register_as, replay, RawEngine};
use drqueue_tests::{eventually, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// As [`eventually`], inside async code: it yields, so the socket's sends
/// go out while it waits.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < LONG, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fingerprint an engine logs for its own key.
fn logged_key(farm: &Farm, name: &str) -> String {
    eventually(LONG, "the engine to log its key", || {
        let log = farm.engine_log(name);
        let at = log.find("key=")?;
        Some(log[at + 4..].split_whitespace().next()?.to_string())
    })
}

/// On a master that requires enrollment, an unknown engine gets no work: it
/// shows as pending with its key's fingerprint until someone accepts it.
#[test]
fn an_engine_gets_no_work_until_accepted() {
    let mut farm = Farm::start_with(&["--require-enrollment"]);
    // A hand-made engine is kept pending too, and what it then says is
    // not heard: its Register makes no engine.
    let endpoint = farm.engines_endpoint.clone();
    runtime().block_on(async {
        let (mut raw, verdict) = RawEngine::connect(&endpoint, "stranger").await;
        assert!(matches!(verdict, ToEngine::Pending { .. }), "{verdict:?}");
        raw.send(&register_as("stranger", vec![])).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    farm.engine("newbie", &[]);
    let c = farm.client();
    let pending = eventually(LONG, "the engine to show as pending", || {
        c.engines()
            .ok()?
            .into_iter()
            .find(|e| e.name == "newbie" && e.state == EngineState::Pending)
    });
    assert_eq!(pending.fingerprint, logged_key(&farm, "newbie"));
    let id = farm.submit(&["--frames", "1-3", "--", "true"]);
    // It has been turned away at least twice (it retries every 5 s) and
    // nothing ran.
    eventually(
        LONG,
        "the engine to be told twice it is not enrolled",
        || {
            (farm
                .engine_log("newbie")
                .matches("not enrolled yet")
                .count()
                >= 2)
                .then_some(())
        },
    );
    assert_eq!(c.job(id).unwrap().status, JobStatus::Queued);
    let engines = c.engines().unwrap();
    let stranger = engines.iter().find(|e| e.name == "stranger").unwrap();
    assert_eq!(stranger.state, EngineState::Pending, "its Register counted");
    let out = farm.drqueue(&["engine", "accept", "newbie"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pending.fingerprint));
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let out = farm.drqueue(&["engine", "accept", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pending engine"));
}

/// A join token enrolls as many engines as it has uses, then no more; an
/// engine whose token names another master's key will not talk to this one.
#[test]
fn a_join_token_enrolls_its_uses_and_names_the_master() {
    let mut farm = Farm::start_with(&["--require-enrollment"]);
    let out = farm.drqueue(&["engine", "join-token", "--uses", "1", "--expires", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("DRQ1."), "{token}");
    farm.engine_with_env("first", &[], &[("DRQUEUE_JOIN_TOKEN", &token)]);
    let id = farm.submit(&["--frames", "1-2", "--", "true"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    // Spent: the next engine waits to be accepted.
    let file = farm.dir.join("join.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    farm.engine("second", &["--join-token-file", file.to_str().unwrap()]);
    let c = farm.client();
    eventually(LONG, "the second engine to be pending", || {
        c.engines()
            .ok()?
            .into_iter()
            .find(|e| e.name == "second" && e.state == EngineState::Pending)
    });
    // A token for another master: the engine refuses this one.
    let secret = token.rsplit('.').next().unwrap();
    let foreign = format!("DRQ1.{}.{secret}", "0".repeat(32));
    farm.engine_with_env("misled", &[], &[("DRQUEUE_JOIN_TOKEN", &foreign)]);
    eventually(LONG, "the misled engine to refuse the master", || {
        farm.engine_log("misled")
            .contains("not trusting this master")
            .then_some(())
    });
    assert!(!c.engines().unwrap().iter().any(|e| e.name == "misled"));
    let out = farm.drqueue(&["--json", "engine", "join-token", "--expires", "soon"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad --expires is a usage error"
    );
}

/// A recorded session (handshake, Register, heartbeat) replayed into a
/// restarted master gets nowhere: the session keys died with the
/// connection, so nothing in the recording opens.
#[test]
fn a_recorded_stream_replayed_into_a_restarted_master_is_refused() {
    let mut farm = Farm::start();
    let endpoint = farm.engines_endpoint.clone();
    let rt = runtime();
    let recorded = rt.block_on(async {
        let (mut raw, verdict) = RawEngine::connect(&endpoint, "recorded").await;
        assert_eq!(verdict, ToEngine::Admitted);
        raw.send(&register_as("recorded", vec![])).await;
        assert!(matches!(raw.recv().await, ToEngine::Welcome { .. }));
        raw.send(&FromEngine::Heartbeat(Heartbeat {
            load: 0.0,
            free_ram_mb: 1,
            held: 0,
            peak_held: 0,
        }))
        .await;
        assert_eq!(raw.recv().await, ToEngine::Pong);
        // Within the session, too, a replay is dropped.
        let again = raw.sent.last().unwrap().clone();
        raw.resend(again).await;
        until("the master to drop the replay", || {
            farm.master_log().contains("replayed within its session")
        })
        .await;
        raw.sent
    });
    farm.kill_master();
    farm.start_master();
    let endpoint = farm.engines_endpoint.clone();
    let answers = rt.block_on(replay(&endpoint, &recorded));
    // The replayed Hello is answered (a fresh handshake costs nothing), the
    // rest is refused: the old finish does not complete it, and sealed
    // messages without a session are told to handshake again.
    assert_eq!(kind_of(&answers[0]), Some(Kind::HelloReply));
    assert!(answers[1..]
        .iter()
        .all(|a| kind_of(a) == Some(Kind::NoSession)));
    eventually(LONG, "the master to log the failed handshake", || {
        farm.master_log().contains("handshake failed").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let engines = farm.client().engines().unwrap();
    let e = engines.iter().find(|e| e.name == "recorded").unwrap();
    assert_eq!(e.state, EngineState::Offline, "the replay brought it back");
}

/// Two processes on one state dir prove one identity: the second takes
/// over, the first is told, exits with 78 and does not come back.
#[test]
fn a_second_process_with_the_same_identity_takes_over() {
    let mut farm = Farm::start();
    let first = farm.engine_at("twin-a", "engine-twin", &[], &[]);
    farm.wait_engines(1);
    farm.engine_at("twin-b", "engine-twin", &[], &[]);
    let status = eventually(LONG, "the first process to stop", || {
        farm.engine_exited(first)
    });
    assert_eq!(status.code(), Some(78));
    assert!(farm.engine_log("twin-a").contains("took over"));
    eventually(LONG, "the master to log the takeover", || {
        farm.master_log().contains("takes over").then_some(())
    });
    let id = farm.submit(&["--frames", "1-3", "--", "true"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let engines = farm.client().engines().unwrap();
    assert_eq!(engines.len(), 1);
    assert_eq!(engines[0].name, "twin-b");
}

#[test]
fn writes_need_an_api_token_when_the_master_has_tokens() {
    let dir = std::env::temp_dir().join(format!("drqueue-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# API tokens\ns3cret-token\n").unwrap();
    let mut farm = Farm::start_with(&["--token-file", tokens.to_str().unwrap()]);
    let out = farm.drqueue(&["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set DRQUEUE_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = farm.drqueue_env(&["submit", "--", "true"], &[("DRQUEUE_TOKEN", "guess")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    // Once the farm has a token, reads need one too (no --public-read).
    let out = farm.drqueue(&["jobs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DRQUEUE_TOKEN"));
    let out = farm.drqueue_env(&["jobs"], &[("DRQUEUE_TOKEN", "s3cret-token")]);
    assert!(out.status.success());
    let out = farm.drqueue_env(
        &["submit", "--", "true"],
        &[("DRQUEUE_TOKEN", "s3cret-token")],
    );
    assert!(out.status.success());
    let id: JobId = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    farm.token = Some("s3cret-token".into());
    farm.engine("t", &[]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
}

/// An enrolled engine that reports success for an attempt another engine
/// holds changes nothing: the task finishes only when the engine running it
/// says so.
#[test]
fn a_result_for_another_engines_attempt_changes_nothing() {
    let mut farm = Farm::start();
    farm.engine("real", &[]);
    let marker = farm.dir.join("may-finish");
    let wait = format!("while [ ! -e {} ]; do sleep 0.05; done", marker.display());
    let id = farm.submit(&["--frames", "1", "--", "sh", "-c", &wait]);
    let c = farm.client();
    eventually(LONG, "the task to run on the real engine", || {
        let t = c.tasks(id, Some(TaskStatus::Running)).ok()?;
        (!t.is_empty()).then_some(())
    });
    let success = Finished {
        attempt: AttemptKey {
            task: TaskKey { job: id, index: 0 },
            attempt: 1,
        },
        outcome: Outcome {
            exit_code: Some(0),
            ..Outcome::default()
        },
    };
    let endpoint = farm.engines_endpoint.clone();
    runtime().block_on(async {
        let (mut raw, verdict) = RawEngine::connect(&endpoint, "forger").await;
        assert_eq!(verdict, ToEngine::Admitted);
        // The forged success rides in the Register, then comes on its own.
        raw.send(&register_as("forger", vec![success.clone()]))
            .await;
        assert!(matches!(raw.recv().await, ToEngine::Welcome { .. }));
        raw.send(&FromEngine::Finished(success)).await;
        // A Register for another engine's id on this session is dropped.
        raw.send(&register_as("real", vec![])).await;
        until("the master to drop the forgeries", || {
            let log = farm.master_log();
            log.contains("dropped a result for an attempt this engine does not hold")
                && log.contains("on a session that proved engine forger")
        })
        .await;
    });
    let task = &c.tasks(id, None).unwrap()[0];
    assert_eq!(
        task.status,
        TaskStatus::Running,
        "the forged success counted"
    );
    std::fs::write(&marker, "").unwrap();
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let task = &c.tasks(id, None).unwrap()[0];
    let real = c.engines().unwrap().into_iter().find(|e| e.name == "real");
    assert_eq!(task.engine, real.map(|e| e.id));
}

/// An engine started on a copy of another engine's state directory (a
/// cloned disk) refuses to start, says why, and says how to enroll afresh;
/// the original keeps working.
#[test]
fn a_copied_state_dir_is_refused() {
    let mut farm = Farm::start();
    farm.engine("orig", &[]);
    farm.wait_engines(1);
    let orig = farm.dir.join("engine-orig");
    let copy = farm.dir.join("engine-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["engine-id", "home"] {
        std::fs::copy(orig.join(f), copy.join(f)).unwrap();
    }
    let out = std::process::Command::new(drqueue_tests::bin("drqueue-engine"))
        .args(["--master", &farm.engines_endpoint, "--state-dir"])
        .arg(&copy)
        .env("PATH", drqueue_tests::base_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it was copied here") && err.contains("--state-dir"),
        "{err}"
    );
    let id = farm.submit(&["--", "true"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    assert_eq!(farm.client().engines().unwrap().len(), 1);
}
