//! The runner with real child processes.

use super::*;
use contain::{Choice, Mechanism};
use drqueue_common::model::{JobId, TaskKey};
use std::sync::OnceLock;

/// An attempt of its own number: tests run at once, and one attempt's box
/// must not be another's.
fn attempt(cmd: &[&str], first: i64, last: i64, dir: &std::path::Path) -> Attempt {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    Attempt {
        key: AttemptKey {
            task: TaskKey {
                job: JobId(1),
                index: 0,
            },
            attempt: NEXT.fetch_add(1, Ordering::SeqCst),
        },
        inputs: Vec::new(),
        body: Arc::new(JobBody {
            outputs: Vec::new(),
            min_output_bytes: 1,
            id: JobId(1),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            cwd: Some(dir.display().to_string()),
            timeout_secs: 0,
            max_log_bytes: 1 << 20,
            inputs: None,
            collect: Vec::new(),
            tiles: None,
        }),
        block: Block {
            first,
            last,
            step: 1,
        },
        log_path: dir.join("log"),
        control: Arc::new(Control::default()),
    }
}

fn collect(a: Attempt) -> (Outcome, Vec<u8>) {
    collect_in(a, &contain(Choice::Best))
}

/// One containment per mechanism for the whole test binary, as an engine has.
fn contain(choice: Choice) -> Arc<Containment> {
    static BEST: OnceLock<Arc<Containment>> = OnceLock::new();
    static MARKER: OnceLock<Arc<Containment>> = OnceLock::new();
    // Fixed tags: a run reuses (and sweeps) what an earlier run left.
    let tag = |name: &str| format!("runner-test-{name}");
    let cell = match choice {
        Choice::Best => &BEST,
        Choice::Marker => &MARKER,
    };
    let name = if choice == Choice::Best {
        "best"
    } else {
        "marker"
    };
    cell.get_or_init(|| Arc::new(Containment::new(&tag(name), choice)))
        .clone()
}

/// Runs one attempt on a slot of its own (tests run at once; a slot's box
/// is one attempt's at a time).
fn collect_in(a: Attempt, contain: &Containment) -> (Outcome, Vec<u8>) {
    static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);
    let slot = NEXT_SLOT.fetch_add(1, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::unbounded_channel();
    run(a, slot, (contain, None), tx);
    let mut log = Vec::new();
    let mut out = None;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            RunnerEvent::Log { data, .. } => log.extend(data),
            RunnerEvent::Finished(_, o) => out = Some(o),
            RunnerEvent::Started(_) | RunnerEvent::Progress(..) => {}
        }
    }
    (out.expect("finished"), log)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("drqueue-runner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn runs_per_frame_with_env_and_captures_output() {
    let d = tmp("frames");
    let (o, log) = collect(attempt(
        &["sh", "-c", "echo $GREETING frame $0 >&2", "{frame}"],
        1,
        3,
        &d,
    ));
    assert!(o.is_success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&log),
        "hi frame 1\nhi frame 2\nhi frame 3\n"
    );
    assert_eq!(std::fs::read(d.join("log")).unwrap(), log);
}

#[test]
fn a_silent_task_leaves_no_log_file() {
    let d = tmp("silent");
    let (o, log) = collect(attempt(&["true"], 1, 1, &d));
    assert!(o.is_success() && log.is_empty());
    assert!(!d.join("log").exists());
}

#[test]
fn the_pool_runs_attempts_on_its_slot_threads() {
    let d = tmp("pool");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pool = Pool::new(2, tx, contain(Choice::Best), None).unwrap();
    for i in 0..4 {
        let mut a = attempt(&["sh", "-c", "echo $0", "{frame}"], i, i, &d);
        a.key.task.index = i as u32;
        a.log_path = d.join(format!("log{i}"));
        pool.start(a);
    }
    let mut finished = 0;
    while finished < 4 {
        if let Some(RunnerEvent::Finished(_, o)) = rx.blocking_recv() {
            assert!(o.is_success());
            finished += 1;
        }
    }
}

#[test]
fn stops_at_the_first_failing_frame() {
    let d = tmp("fail");
    let (o, log) = collect(attempt(
        &["sh", "-c", "echo $0; test $0 -lt 2", "{frame}"],
        1,
        3,
        &d,
    ));
    assert_eq!(o.exit_code, Some(1));
    assert_eq!(String::from_utf8_lossy(&log), "1\n2\n");
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let d = tmp("missing");
    let (o, log) = collect(attempt(&["/no/such/renderer"], 1, 1, &d));
    assert!(o.error.as_deref().unwrap().contains("/no/such/renderer"));
    assert!(String::from_utf8_lossy(&log).contains("cannot run"));
}

/// However it was spawned, a task starts as std would start it: the leader
/// of its own process group, no signal blocked, SIGPIPE not ignored (Rust
/// ignores it in the runner), in its slot's cgroup when there is one, in
/// its folder, and found along its own PATH.
#[test]
fn a_task_starts_clean_in_its_group_cgroup_and_folder() {
    for choice in [Choice::Best, Choice::Marker] {
        let d = tmp(&format!("clean-{choice:?}"));
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let tool = bin.join("drqueue-test-tool");
        std::fs::write(&tool, "#!/bin/sh\necho tool ran in $(pwd)\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let script = "set -e; s=/proc/$$/status; \
            echo blocked $(grep ^SigBlk $s | cut -f2); \
            echo ignored $(grep ^SigIgn $s | cut -f2); \
            echo group $(cut -d' ' -f5 /proc/$$/stat) pid $$; \
            echo cgroup $(cat /proc/$$/cgroup); \
            drqueue-test-tool";
        let mut a = attempt(&["/bin/sh", "-c", script], 1, 1, &d);
        let path = format!("{}:/usr/bin:/bin", bin.display());
        Arc::get_mut(&mut a.body)
            .unwrap()
            .env
            .push(("PATH".into(), path));
        let c = contain(choice);
        let (o, log) = collect_in(a, &c);
        let log = String::from_utf8_lossy(&log).to_string();
        assert!(o.is_success(), "{choice:?}: {o:?} {log}");
        let field = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{choice:?}: no {name} in {log}"))
                .trim()
                .to_string()
        };
        assert_eq!(field("blocked "), "0000000000000000", "{choice:?}");
        let ignored = u64::from_str_radix(&field("ignored "), 16).unwrap();
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "{choice:?}: SIGPIPE ignored"
        );
        let ids: Vec<&str> = log
            .lines()
            .find(|l| l.starts_with("group "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            ids[1], ids[3],
            "{choice:?}: not its own group leader: {log}"
        );
        if let Mechanism::Cgroup(base) = c.mechanism() {
            let cgroup = field("cgroup ");
            let base = base.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                cgroup.contains(&format!("{base}/slot-")),
                "{choice:?}: not in a slot's cgroup: {cgroup}"
            );
        }
        assert!(
            log.contains(&format!("tool ran in {}", d.display())),
            "{choice:?}: {log}"
        );
    }
}

/// A program named without a slash and found nowhere on the task's PATH is
/// the same clear error, whichever way the task is spawned.
#[test]
fn a_program_not_on_the_path_is_a_clear_error() {
    for choice in [Choice::Best, Choice::Marker] {
        let d = tmp(&format!("nopath-{choice:?}"));
        let mut a = attempt(&["drqueue-no-such-renderer"], 1, 1, &d);
        Arc::get_mut(&mut a.body)
            .unwrap()
            .env
            .push(("PATH".into(), d.display().to_string()));
        let (o, log) = collect_in(a, &contain(choice));
        let why = o.error.unwrap_or_default();
        assert!(
            why.contains("drqueue-no-such-renderer") && why.contains("No such file"),
            "{choice:?}: {why}"
        );
        assert!(String::from_utf8_lossy(&log).contains("cannot run"));
    }
}

#[test]
fn cancel_kills_the_whole_process_tree() {
    let d = tmp("cancel");
    let a = attempt(
        &["sh", "-c", "sleep 600 & echo $! > child.pid; wait"],
        1,
        1,
        &d,
    );
    let control = a.control.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t = std::thread::spawn(move || run(a, 99, (&contain(Choice::Best), None), tx));
    let pid_file = d.join("child.pid");
    while std::fs::read_to_string(&pid_file)
        .map(|s| s.trim().is_empty())
        .unwrap_or(true)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let grandchild: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    control.cancel();
    t.join().unwrap();
    let mut cancelled = false;
    while let Ok(ev) = rx.try_recv() {
        if let RunnerEvent::Finished(_, o) = ev {
            cancelled = o.cancelled && !o.is_success();
        }
    }
    assert!(cancelled);
    // The grandchild `sleep 600` is gone too (or a zombie awaiting init).
    let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "sleep survived: {stat}"
    );
}

/// Processes whose command line holds `marker`, alive (not zombies).
fn alive_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
        })
        .collect()
}

/// A task that leaves its process group (`setsid`) and double-forks: when
/// the task's command ends, so does the escapee, and the attempt is not
/// held up by the pipe the escapee kept open.
fn escapees_end_with_the_task(choice: Choice, name: &str) {
    let d = tmp(name);
    let marker = format!("drqueue-escapee-{}-{name}", std::process::id());
    let script = format!("(setsid sh -c 'sleep 300; : {marker}' &); echo started");
    let start = Instant::now();
    let (o, log) = collect_in(attempt(&["sh", "-c", &script], 1, 1, &d), &contain(choice));
    assert!(o.is_success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&log), "started\n");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "the attempt waited for its escapee"
    );
    assert_eq!(
        alive_with(&marker),
        Vec::<i32>::new(),
        "an escapee survived"
    );
}

#[test]
fn escapees_end_with_the_task_in_a_cgroup() {
    let c = contain(Choice::Best);
    if !matches!(c.mechanism(), Mechanism::Cgroup(_)) {
        // The CI machine has a writable cgroup v2 tree; say so loudly elsewhere.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs a writable cgroup v2 tree: {}",
            c.describe()
        );
        return;
    }
    eprintln!("containment: {}", c.describe());
    escapees_end_with_the_task(Choice::Best, "cgroup");
}

#[test]
fn escapees_end_with_the_task_by_their_marker() {
    escapees_end_with_the_task(Choice::Marker, "marker");
}

/// What a previous life left running (an engine killed with -9) is ended by
/// the next start's sweep.
#[test]
fn a_sweep_ends_what_a_previous_life_left() {
    for (choice, name) in [
        (Choice::Best, "sweep-best"),
        (Choice::Marker, "sweep-marker"),
    ] {
        let tag = format!("runner-test-{name}");
        let first = Containment::new(&tag, choice);
        let marker = format!("drqueue-left-{}-{name}", std::process::id());
        let key = AttemptKey {
            task: TaskKey {
                job: JobId(9),
                index: 0,
            },
            attempt: 1,
        };
        let task_box = first.open(key, 0);
        let argv = [
            "sh".to_string(),
            "-c".into(),
            format!("sleep 300; : {marker}"),
        ];
        let (_reader, writer) = std::io::pipe().unwrap();
        let launch = spawn::Launch {
            argv: &argv,
            env: Vec::new(),
            cwd: None,
            output: writer.into(),
        };
        let pid = first.spawn(&task_box, launch).unwrap();
        while alive_with(&marker).is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The runner "dies" without closing the box; its next life sweeps.
        let next = Containment::new(&tag, choice);
        assert!(next.sweep() >= 1, "{name}: the sweep found nothing");
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_eq!(
            alive_with(&marker),
            Vec::<i32>::new(),
            "{name}: it survived"
        );
    }
}

/// Past its cap a log keeps its head and tail and marks the gap, on disk and
/// in what is streamed to the master alike.
#[test]
fn a_log_past_its_cap_keeps_head_and_tail() {
    let d = tmp("cap");
    let mut a = attempt(&["seq", "1", "200000"], 1, 1, &d);
    let cap = 64 * 1024;
    Arc::get_mut(&mut a.body).unwrap().max_log_bytes = cap;
    let (o, streamed) = collect(a);
    assert!(o.is_success(), "{o:?}");
    let on_disk = std::fs::read(d.join("log")).unwrap();
    assert_eq!(on_disk, streamed);
    let text = String::from_utf8_lossy(&on_disk);
    assert!(on_disk.len() as u64 <= cap + 200, "{} bytes", on_disk.len());
    assert!(text.starts_with("1\n2\n3\n"), "{}", &text[..40]);
    assert!(text.ends_with("199999\n200000\n"));
    assert!(
        text.contains("bytes of output dropped here"),
        "no gap marker"
    );
    assert_eq!(o.log_bytes, on_disk.len() as u64);
    assert!(!d.join("log.tail").exists(), "the spool was left behind");
}

/// Under the cap nothing is cut or marked.
#[test]
fn a_log_under_its_cap_is_whole() {
    let d = tmp("uncapped");
    let (o, log) = collect(attempt(&["seq", "1", "1000"], 1, 1, &d));
    assert!(o.is_success());
    let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&log), expected);
}
