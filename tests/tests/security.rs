//! Farm keys (HMAC on every master/engine message, replay refused) and API tokens.

use drqueue_common::model::{EngineFacts, JobId, JobStatus, TaskKey, TaskStatus};
use drqueue_common::protocol::{
    decode, encode, AttemptKey, FarmKey, Finished, FromEngine, Heartbeat, Outcome, Register,
    ToEngine,
};
use drqueue_tests::{eventually, zmq_message, Farm};
use std::time::Duration;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

const LONG: Duration = Duration::from_secs(120);
const KEY: &str = "0123456789abcdef-farm-key-for-tests";

/// A Register from a hand-made engine in a pool no job uses, delivering
/// `finished`.
fn register_as(name: &str, finished: Vec<Finished>) -> FromEngine {
    FromEngine::Register(Register {
        engine: name.into(),
        session: 1,
        time_ms: drqueue_common::now_millis(),
        facts: EngineFacts {
            name: name.into(),
            pools: vec!["nowhere".into()],
            ..Default::default()
        },
        slots: 1,
        hwm: 1,
        held: vec![],
        finished,
    })
}

fn keyed_farm() -> (Farm, String) {
    let dir = std::env::temp_dir().join(format!("drqueue-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("farm.key");
    std::fs::write(&key, KEY).unwrap();
    let key = key.display().to_string();
    (Farm::start_with(&["--key-file", &key]), key)
}

#[test]
fn only_engines_with_the_farm_key_get_work() {
    let (mut farm, key) = keyed_farm();
    let wrong = farm.dir.join("wrong.key");
    std::fs::write(&wrong, "a-different-key-of-enough-length").unwrap();
    farm.engine("nokey", &[]);
    farm.engine("wrongkey", &["--key-file", wrong.to_str().unwrap()]);
    farm.engine("keyed", &["--key-file", &key]);
    let id = farm.submit(&["--frames", "1-4", "--", "true"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let engines = farm.client().engines().unwrap();
    let names: Vec<&str> = engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["keyed"], "only the keyed engine registered");
    eventually(LONG, "the keyless engine to log why it is refused", || {
        farm.engine_log("nokey")
            .contains("farm requires a key")
            .then_some(())
    });
    eventually(
        LONG,
        "the wrong-key engine to log why it is refused",
        || {
            farm.engine_log("wrongkey")
                .contains("different farm keys")
                .then_some(())
        },
    );
}

#[test]
fn a_replayed_message_is_refused() {
    let (farm, _) = keyed_farm();
    let key = FarmKey::new(KEY.as_bytes()).unwrap();
    let endpoint = farm.engines_endpoint.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = DealerSocket::new();
        s.connect(&endpoint).await.unwrap();
        let register = encode(&register_as("replay-test", vec![]), 10, Some(&key));
        s.send(zmq_message(register.clone())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .unwrap()
            .unwrap();
        let (_, answer): (u64, ToEngine) = decode(&reply.into_vec(), Some(&key)).unwrap();
        assert!(matches!(answer, ToEngine::Welcome { .. }), "{answer:?}");
        let hb = encode(
            &FromEngine::Heartbeat(Heartbeat {
                load: 0.0,
                free_ram_mb: 1,
                held: 0,
                peak_held: 0,
            }),
            11,
            Some(&key),
        );
        s.send(zmq_message(hb.clone())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .unwrap()
            .unwrap();
        let (_, answer): (u64, ToEngine) = decode(&reply.into_vec(), Some(&key)).unwrap();
        assert_eq!(answer, ToEngine::Pong);
        // Replays of both: refused, and logged.
        s.send(zmq_message(hb)).await.unwrap();
        s.send(zmq_message(register)).await.unwrap();
        // Keep the socket open (sends are only queued) until the master has judged them.
        let start = std::time::Instant::now();
        loop {
            let log = farm.master_log();
            if log.contains("dropping a replayed message")
                && log.contains("refusing a replayed Register")
            {
                break;
            }
            assert!(
                start.elapsed() < LONG,
                "the master never refused the replays"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
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
    // Reads stay open.
    assert!(farm.drqueue(&["jobs"]).status.success());
    let out = farm.drqueue_env(
        &["submit", "--", "true"],
        &[("DRQUEUE_TOKEN", "s3cret-token")],
    );
    assert!(out.status.success());
    let id: JobId = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    farm.engine("t", &[]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
}

/// An engine (here one with the farm key) that reports success for an
/// attempt another engine holds changes nothing: the task finishes only when
/// the engine running it says so.
#[test]
fn a_result_for_another_engines_attempt_changes_nothing() {
    let (mut farm, key_file) = keyed_farm();
    farm.engine("real", &["--key-file", &key_file]);
    let marker = farm.dir.join("may-finish");
    let wait = format!("while [ ! -e {} ]; do sleep 0.05; done", marker.display());
    let id = farm.submit(&["--frames", "1", "--", "sh", "-c", &wait]);
    let c = farm.client();
    eventually(LONG, "the task to run on the real engine", || {
        let t = c.tasks(id, Some(TaskStatus::Running)).ok()?;
        (!t.is_empty()).then_some(())
    });
    let key = FarmKey::new(KEY.as_bytes()).unwrap();
    let attempt = AttemptKey {
        task: TaskKey { job: id, index: 0 },
        attempt: 1,
    };
    let success = Finished {
        attempt,
        outcome: Outcome {
            exit_code: Some(0),
            ..Outcome::default()
        },
    };
    let endpoint = farm.engines_endpoint.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = DealerSocket::new();
        s.connect(&endpoint).await.unwrap();
        // The forged success rides in the Register, then comes on its own.
        let register = encode(&register_as("forger", vec![success.clone()]), 1, Some(&key));
        s.send(zmq_message(register)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .unwrap()
            .unwrap();
        let (_, answer): (u64, ToEngine) = decode(&reply.into_vec(), Some(&key)).unwrap();
        assert!(matches!(answer, ToEngine::Welcome { .. }), "{answer:?}");
        let forged = encode(&FromEngine::Finished(success), 2, Some(&key));
        s.send(zmq_message(forged)).await.unwrap();
        eventually(LONG, "the master to drop the forged result", || {
            farm.master_log()
                .contains("dropped a result for an attempt this engine does not hold")
                .then_some(())
        });
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
