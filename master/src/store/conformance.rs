//! One test suite for every [`Store`] backend. Each backend's tests call
//! [`run_all`] with a factory that opens a store by name: the same name opens
//! the same store again (to check persistence), a new name a fresh one.

use super::*;
use crate::users::TokenRecord;
use drqueue_common::model::{EngineFacts, JobId, JobSpec, JobStatus, TaskStatus};
use drqueue_common::protocol::Outcome;
use drqueue_common::users::Role;

mod collected;
mod thumbnails;
mod usage;

pub type Open<'a> = &'a dyn Fn(&str) -> Box<dyn Store>;

pub fn run_all(open: Open) {
    empty_store_loads_nothing(open);
    a_batch_round_trips_and_replaces(open);
    state_survives_reopening(open);
    deleting_a_job_removes_everything_of_it(open);
    logs_are_stitched_from_resent_chunks(open);
    attempts_are_listed_in_order_and_idempotent(open);
    large_batches_commit(open);
    one_master_holds_the_lease(open);
    users_are_put_replaced_and_removed(open);
    the_audit_trail_is_numbered_and_filtered(open);
    a_deleted_limit_is_gone(open);
    thumbnails::thumbnails_are_replaced_capped_and_go_with_their_job(open);
    collected::collected_blobs_are_listed_and_go_with_their_job(open);
    collected::a_tiled_job_keeps_its_grid_and_handed_on_files(open);
    usage::usage_is_kept_when_its_job_goes(open);
}

fn a_deleted_limit_is_gone(open: Open) {
    let mut s = open("limits-deleted");
    let limit = |name: &str, count| LimitRecord {
        name: name.into(),
        count,
    };
    s.commit(&Batch {
        limits: vec![limit("nuke", 2), limit("maya", 5)],
        ..Batch::default()
    })
    .expect("commit");
    // Deleted, then set again in one merged batch: the last word counts.
    let mut merged = Batch {
        deleted_limits: vec!["nuke".into(), "maya".into()],
        ..Batch::default()
    };
    merged.append(Batch {
        limits: vec![limit("maya", 7)],
        ..Batch::default()
    });
    s.commit(&merged).expect("commit");
    let snap = s.load().expect("load");
    assert_eq!(snap.limits, vec![limit("maya", 7)]);
}

fn user(name: &str, role: Role, tokens: &[&str]) -> UserRecord {
    UserRecord {
        name: name.into(),
        role,
        tokens: tokens
            .iter()
            .map(|t| TokenRecord {
                sha256: t.to_string(),
                created_ms: 5,
            })
            .collect(),
        created_ms: 4,
    }
}

fn users_are_put_replaced_and_removed(open: Open) {
    let mut s = open("users");
    assert!(s.users().expect("users").is_empty());
    let alice = user("alice", Role::Artist, &["aa11"]);
    let bob = user("bob", Role::Admin, &["bb22", "bb33"]);
    s.change_user(&UserChange::Put(alice.clone())).expect("put");
    s.change_user(&UserChange::Put(bob)).expect("put");
    let bob = user("bob", Role::Admin, &["bb33"]);
    s.change_user(&UserChange::Put(bob.clone()))
        .expect("replace");
    drop(s);
    let mut s = open("users");
    assert_eq!(s.users().expect("users"), vec![alice, bob.clone()]);
    s.change_user(&UserChange::Remove("alice".into()))
        .expect("remove");
    s.change_user(&UserChange::Remove("nobody".into()))
        .expect("removing nobody is no error");
    assert_eq!(s.users().expect("users"), vec![bob]);
}

fn entry(at_ms: u64, user: &str, job: Option<u64>) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at_ms,
        user: user.into(),
        remote: "127.0.0.1:5000".into(),
        action: "POST /api/jobs".into(),
        job: job.map(JobId),
        status: 200,
        detail: String::new(),
    }
}

fn the_audit_trail_is_numbered_and_filtered(open: Open) {
    let mut s = open("audit");
    assert!(s
        .audit(&AuditQuery::default(), 10)
        .expect("audit")
        .is_empty());
    s.append_audit(&[entry(10, "alice", Some(1)), entry(20, "bob", None)])
        .expect("append");
    s.append_audit(&[]).expect("nothing to append");
    s.append_audit(&[entry(30, "alice", Some(2))])
        .expect("append");
    drop(s);
    let mut s = open("audit");
    let all = s.audit(&AuditQuery::default(), 10).expect("audit");
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(
        all[0],
        AuditEntry {
            seq: all[0].seq,
            ..entry(30, "alice", Some(2))
        }
    );
    let q = |job: Option<u64>, user: Option<&str>, since_ms: Option<u64>| AuditQuery {
        job: job.map(JobId),
        user: user.map(String::from),
        since_ms,
        limit: None,
    };
    let mut at = |q: AuditQuery, limit: usize| -> Vec<u64> {
        s.audit(&q, limit)
            .expect("audit")
            .iter()
            .map(|e| e.at_ms)
            .collect()
    };
    assert_eq!(at(q(None, Some("alice"), None), 10), vec![30, 10]);
    assert_eq!(at(q(Some(1), None, None), 10), vec![10]);
    assert_eq!(at(q(None, None, Some(20)), 10), vec![30, 20]);
    assert_eq!(at(q(None, Some("bob"), Some(25)), 10), Vec::<u64>::new());
    assert_eq!(at(q(None, None, None), 2), vec![30, 20]);
}

fn one_master_holds_the_lease(open: Open) {
    let mut a = open("lease");
    let mut b = open("lease");
    assert_eq!(
        a.acquire_lease("A", 1_000, 5_000).expect("lease"),
        Lease::Held
    );
    assert!(matches!(
        b.acquire_lease("B", 1_000, 5_000).expect("lease"),
        Lease::Taken { .. }
    ));
    // Renewing is taking it again.
    assert_eq!(
        a.acquire_lease("A", 3_000, 5_000).expect("lease"),
        Lease::Held
    );
    assert!(matches!(
        b.acquire_lease("B", 4_000, 5_000).expect("lease"),
        Lease::Taken { .. }
    ));
    if a.lease_needs_renewal() {
        // Renewed at 3 s, the lease runs to 8 s: past the first lease's end
        // (6 s) it is still A's.
        assert!(matches!(
            b.acquire_lease("B", 7_000, 5_000).expect("lease"),
            Lease::Taken { .. }
        ));
        // A shared store's lease expires unless renewed: then another master
        // takes it, and the old one learns it has lost it.
        assert_eq!(
            b.acquire_lease("B", 8_001, 5_000).expect("lease"),
            Lease::Held
        );
        assert!(
            matches!(a.acquire_lease("A", 8_002, 5_000).expect("lease"), Lease::Taken { owner, .. } if owner == "B")
        );
    } else {
        // A local lock lasts as long as its holder has the store open.
        drop(a);
        assert_eq!(
            b.acquire_lease("B", 4_000, 5_000).expect("lease"),
            Lease::Held
        );
    }
}

pub(super) fn job(id: u64) -> JobRecord {
    JobRecord {
        id: JobId(id),
        spec: JobSpec {
            name: format!("job{id}"),
            command: vec!["true".into()],
            frames: "1-3".into(),
            ..JobSpec::default()
        },
        status: JobStatus::Queued,
        submitted_ms: 1000 + id,
        started_ms: None,
        finished_ms: None,
        reason: None,
        // Stored and loaded back as it is (tasks without rows are ready).
        released: true,
        // A dotted id: safe as a value, not as a MongoDB field name.
        engine_failures: vec![EngineFailures {
            engine: "render.node-1".into(),
            count: 2,
        }],
        notification: Some(drqueue_common::model::Notification {
            state: drqueue_common::model::NotifyState::Pending,
            to: vec!["wrangler@example.com".into()],
            on: drqueue_common::model::NotifyOn::Failed,
            attempts: 2,
            last_error: Some("connection refused".into()),
            next_try_ms: Some(5000),
            sent_ms: None,
        }),
    }
}

pub(super) fn task(job: u64, index: u32) -> TaskRecord {
    let job = JobId(job);
    TaskRecord {
        job,
        index,
        first: index as i64 + 1,
        last: index as i64 + 1,
        step: 1,
        status: TaskStatus::Ready,
        attempts: 0,
        failures: 0,
        engine: None,
        started_ms: None,
        ended_ms: None,
        exit_code: None,
        peak_rss_kb: None,
        cpu_ms: None,
        outputs: Vec::new(),
    }
}

pub(super) fn engine(id: &str) -> EngineRecord {
    EngineRecord {
        id: id.into(),
        facts: EngineFacts {
            name: id.into(),
            pools: vec!["default".into(), "gpu".into()],
            cores: 16,
            ram_mb: 64000,
            versions: [("povray".to_string(), "3.7.0.10".to_string())].into(),
            ..Default::default()
        },
        slots: 2,
        hwm: 3,
        online: true,
        disabled: false,
        last_seen_ms: 5,
        tasks_done: 7,
        tasks_failed: 1,
        failures_in_row: 5,
        streak_job: Some(JobId(7)),
        streak_mixed: true,
        sick: Some("failed 5 tasks in a row".into()),
        revoked: true,
    }
}

fn attempt(job: u64, index: u32, n: u32) -> AttemptKey {
    let job = JobId(job);
    AttemptKey {
        task: TaskKey { job, index },
        attempt: n,
    }
}

fn sorted(mut s: Snapshot) -> Snapshot {
    s.jobs.sort_by_key(|j| j.id);
    s.tasks.sort_by_key(|t| (t.job, t.index));
    s.engines.sort_by(|a, b| a.id.cmp(&b.id));
    s
}

fn empty_store_loads_nothing(open: Open) {
    let snap = open("empty").load().expect("load");
    assert!(snap.jobs.is_empty() && snap.tasks.is_empty() && snap.engines.is_empty());
    assert_eq!(snap.next_job_id, JobId::FIRST);
}

fn a_batch_round_trips_and_replaces(open: Open) {
    let mut s = open("round-trip");
    let batch = Batch {
        jobs: vec![job(1), job(2)],
        tasks: vec![task(1, 0), task(1, 1), task(2, 0)],
        engines: vec![engine("e1")],
        next_job_id: Some(JobId(3)),
        limits: vec![
            LimitRecord {
                name: "nuke".into(),
                count: 5,
            },
            LimitRecord {
                name: "houdini".into(),
                count: 2,
            },
        ],
        pools: Some(vec![
            PoolRecord {
                name: "default".into(),
                engines: vec!["e1".into()],
            },
            PoolRecord {
                name: "gpu".into(),
                engines: vec!["e1".into(), "e2".into()],
            },
        ]),
        ..Batch::default()
    };
    s.commit(&batch).expect("commit");
    // A later batch replaces whole records: fields set, then cleared.
    let mut running = task(1, 0);
    running.status = TaskStatus::Running;
    running.attempts = 1;
    running.engine = Some("e1".into());
    running.started_ms = Some(77);
    let mut done = running.clone();
    done.status = TaskStatus::Done;
    done.exit_code = Some(0);
    done.peak_rss_kb = Some(1 << 40);
    let mut requeued = task(1, 1);
    requeued.engine = Some("e1".into());
    s.commit(&Batch {
        tasks: vec![running, done.clone(), requeued],
        ..Batch::default()
    })
    .expect("commit");
    let mut cleared = task(1, 1);
    cleared.failures = 2;
    let mut j1 = job(1);
    j1.status = JobStatus::Running;
    j1.started_ms = Some(9);
    let mut e1 = engine("e1");
    e1.online = false;
    e1.disabled = true;
    s.commit(&Batch {
        jobs: vec![j1.clone()],
        tasks: vec![cleared.clone()],
        engines: vec![e1.clone()],
        ..Batch::default()
    })
    .expect("commit");
    let snap = sorted(s.load().expect("load"));
    assert_eq!(snap.jobs, vec![j1, job(2)]);
    assert_eq!(snap.tasks, vec![done, cleared, task(2, 0)]);
    assert_eq!(snap.engines, vec![e1]);
    assert_eq!(snap.next_job_id, JobId(3));
    let pools: Vec<(String, usize)> = snap
        .pools
        .iter()
        .map(|p| (p.name.clone(), p.engines.len()))
        .collect();
    assert_eq!(
        pools,
        vec![("default".to_string(), 1), ("gpu".to_string(), 2)]
    );
    let mut limits = snap.limits.clone();
    limits.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        limits,
        vec![
            LimitRecord {
                name: "houdini".into(),
                count: 2
            },
            LimitRecord {
                name: "nuke".into(),
                count: 5
            },
        ]
    );
    // A later pool set replaces the whole of it.
    s.commit(&Batch {
        pools: Some(vec![PoolRecord {
            name: "lookdev".into(),
            engines: vec!["e3".into()],
        }]),
        ..Batch::default()
    })
    .expect("commit");
    let pools: Vec<String> = s
        .load()
        .expect("load")
        .pools
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(pools, vec!["lookdev".to_string()]);
}

fn state_survives_reopening(open: Open) {
    {
        let mut s = open("reopen");
        s.commit(&Batch {
            jobs: vec![job(5)],
            tasks: vec![task(5, 0)],
            next_job_id: Some(JobId(6)),
            ..Batch::default()
        })
        .expect("commit");
    }
    let snap = open("reopen").load().expect("load");
    assert_eq!(
        (snap.jobs.len(), snap.tasks.len(), snap.next_job_id),
        (1, 1, JobId(6))
    );
}

fn deleting_a_job_removes_everything_of_it(open: Open) {
    let mut s = open("delete");
    s.commit(&Batch {
        jobs: vec![job(1), job(2)],
        tasks: vec![task(1, 0), task(2, 0)],
        attempts: vec![AttemptRecord {
            attempt: attempt(1, 0, 1),
            engine: "e".into(),
            ended_ms: 3,
            outcome: Outcome::default(),
            counted: true,
        }],
        logs: vec![LogChunk {
            attempt: attempt(1, 0, 1),
            offset: 0,
            data: b"x".to_vec(),
        }],
        ..Batch::default()
    })
    .expect("commit");
    s.commit(&Batch {
        deleted_jobs: vec![JobId(1)],
        ..Batch::default()
    })
    .expect("commit");
    let snap = s.load().expect("load");
    assert_eq!(
        snap.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![JobId(2)]
    );
    assert_eq!(snap.tasks.len(), 1);
    assert!(s
        .attempts(TaskKey {
            job: JobId(1),
            index: 0
        })
        .expect("attempts")
        .is_empty());
    assert!(s.read_log(attempt(1, 0, 1), 0).expect("log").is_empty());
    // Ids are never reused, even past deleted jobs.
    assert!(snap.next_job_id > JobId(2));
}

fn logs_are_stitched_from_resent_chunks(open: Open) {
    let mut s = open("logs");
    let a = attempt(3, 1, 2);
    let chunk = |offset: u64, data: &[u8]| LogChunk {
        attempt: a,
        offset,
        data: data.to_vec(),
    };
    s.commit(&Batch {
        logs: vec![chunk(0, b"frame 1\n"), chunk(8, b"frame 2\n")],
        ..Batch::default()
    })
    .expect("commit");
    // After a reconnect the engine re-sends the whole log, chunked differently.
    s.commit(&Batch {
        logs: vec![chunk(0, b"frame 1\nframe 2\nframe 3\n")],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(
        s.read_log(a, 0).expect("log"),
        b"frame 1\nframe 2\nframe 3\n"
    );
    assert_eq!(s.read_log(a, 8).expect("log"), b"frame 2\nframe 3\n");
    assert!(s.read_log(attempt(3, 1, 1), 0).expect("log").is_empty());
    // Binary output survives as bytes.
    let b = attempt(3, 1, 3);
    let bytes: Vec<u8> = (0..=255).collect();
    s.commit(&Batch {
        logs: vec![LogChunk {
            attempt: b,
            offset: 0,
            data: bytes.clone(),
        }],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(s.read_log(b, 0).expect("log"), bytes);
}

fn attempts_are_listed_in_order_and_idempotent(open: Open) {
    let mut s = open("attempts");
    let rec = |n: u32, code: i32, counted: bool| AttemptRecord {
        attempt: attempt(4, 0, n),
        engine: format!("e{n}").into(),
        ended_ms: n as u64,
        outcome: Outcome {
            exit_code: Some(code),
            timed_out: n == 2,
            ..Outcome::default()
        },
        counted,
    };
    s.commit(&Batch {
        attempts: vec![rec(2, 1, true), rec(1, 3, false)],
        ..Batch::default()
    })
    .expect("commit");
    // The same result delivered twice (a lost ack) is one record, and the
    // second delivery, which changed nothing and so is uncounted, does not
    // unmark the first.
    s.commit(&Batch {
        attempts: vec![rec(2, 1, true)],
        ..Batch::default()
    })
    .expect("commit");
    let mut again = rec(2, 1, false);
    again.ended_ms = 99;
    s.commit(&Batch {
        attempts: vec![again],
        ..Batch::default()
    })
    .expect("commit");
    let got = s
        .attempts(TaskKey {
            job: JobId(4),
            index: 0,
        })
        .expect("attempts");
    assert_eq!(got, vec![rec(1, 3, false), rec(2, 1, true)]);
}

fn large_batches_commit(open: Open) {
    let mut s = open("large");
    let tasks: Vec<TaskRecord> = (0..20_000).map(|i| task(1, i)).collect();
    s.commit(&Batch {
        jobs: vec![job(1)],
        tasks,
        ..Batch::default()
    })
    .expect("commit");
    let snap = s.load().expect("load");
    assert_eq!(snap.tasks.len(), 20_000);
}
