//! Runs one task attempt: its command lines as child processes.
//!
//! Attempts run on a pool of one thread per slot (made once: creating a thread
//! per task cost more than spawning `true`). A command runs without a shell, in its own
//! process group (so cancel and timeout kill the whole tree), with stdout and
//! stderr on one pipe that is copied to the attempt's log file and streamed to
//! the master. `wait4` gives the exit status, CPU time and peak RSS. Per-frame
//! templates run one command per frame and stop at the first failure.

use drqueue_common::frames::Block;
use drqueue_common::protocol::{AttemptKey, JobBody, Outcome};
use drqueue_common::template::{self, TaskContext};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What a running attempt reports back to the engine's loop.
#[derive(Debug)]
pub enum RunnerEvent {
    Started(AttemptKey),
    Log {
        key: AttemptKey,
        offset: u64,
        data: Vec<u8>,
    },
    Finished(AttemptKey, Outcome),
}

/// Shared between the attempt's thread and the engine's loop, which may kill it.
#[derive(Debug, Default)]
pub struct Control {
    /// The process group of the command running now, or 0.
    pgid: AtomicI32,
    cancelled: AtomicBool,
    timed_out: AtomicBool,
}

impl Control {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.kill();
    }

    pub fn time_out(&self) {
        self.timed_out.store(true, Ordering::SeqCst);
        self.kill();
    }

    fn stopping(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.timed_out.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

pub struct Attempt {
    pub key: AttemptKey,
    pub body: Arc<JobBody>,
    pub block: Block,
    pub log_path: PathBuf,
    pub control: Arc<Control>,
}

/// The threads that run attempts, one per slot.
pub struct Pool {
    work: std::sync::mpsc::Sender<Attempt>,
}

impl Pool {
    pub fn new(slots: u32, events: mpsc::UnboundedSender<RunnerEvent>) -> std::io::Result<Pool> {
        let (work, rx) = std::sync::mpsc::channel::<Attempt>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..slots {
            let rx = rx.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name(format!("slot-{i}"))
                .spawn(move || loop {
                    // Only this line holds the lock; a poisoned lock means a
                    // sibling panicked, and the pool carries on without it.
                    let next = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match next {
                        Ok(attempt) => run(attempt, events.clone()),
                        Err(_) => return, // the engine is gone
                    }
                })?;
        }
        Ok(Pool { work })
    }

    /// Runs the attempt on the next free slot thread. The engine only sends
    /// as many as it has slots, so one is always free.
    pub fn start(&self, attempt: Attempt) {
        let _ = self.work.send(attempt);
    }
}

fn run(a: Attempt, events: mpsc::UnboundedSender<RunnerEvent>) {
    let _ = events.send(RunnerEvent::Started(a.key));
    let started = Instant::now();
    let ctx = TaskContext {
        job: a.body.id,
        task: a.key.task.index,
        block: a.block,
    };
    let mut outcome = Outcome::default();
    let mut log = LogSink {
        key: a.key,
        path: &a.log_path,
        file: None,
        offset: 0,
        events: &events,
    };
    if let Some(cwd) = &a.body.cwd {
        if !std::path::Path::new(cwd).is_dir() {
            outcome.error = Some(format!(
                "working directory {cwd:?} does not exist on this engine"
            ));
        }
    }
    if outcome.error.is_none() {
        for argv in template::commands(&a.body.command, &ctx) {
            if a.control.stopping() {
                break;
            }
            let ok = run_one(&argv, &a, &mut log, &mut outcome);
            if !ok {
                break;
            }
        }
    }
    if let Some(e) = &outcome.error {
        log.write(format!("drqueue-engine: {e}\n").as_bytes());
    }
    outcome.wall_ms = started.elapsed().as_millis() as u64;
    outcome.timed_out = a.control.timed_out.load(Ordering::SeqCst);
    outcome.cancelled = a.control.cancelled.load(Ordering::SeqCst);
    if outcome.timed_out {
        log.write(
            format!(
                "drqueue-engine: killed after the job's timeout of {} s\n",
                a.body.timeout_secs
            )
            .as_bytes(),
        );
    }
    outcome.log_bytes = log.offset;
    let _ = events.send(RunnerEvent::Finished(a.key, outcome));
}

/// Copies output to the log file and the master. The file is made on the
/// first output: most quick tasks print nothing, and creating then deleting
/// a file per task was the engine's largest cost.
struct LogSink<'a> {
    key: AttemptKey,
    path: &'a std::path::Path,
    file: Option<std::fs::File>,
    offset: u64,
    events: &'a mpsc::UnboundedSender<RunnerEvent>,
}

impl LogSink<'_> {
    fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = std::fs::File::create(self.path).ok();
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(data);
        }
        let _ = self.events.send(RunnerEvent::Log {
            key: self.key,
            offset: self.offset,
            data: data.to_vec(),
        });
        self.offset += data.len() as u64;
    }
}

/// Runs one command line; returns whether to go on to the next frame.
fn run_one(argv: &[String], a: &Attempt, log: &mut LogSink, outcome: &mut Outcome) -> bool {
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(format!("cannot make a pipe: {e}"));
            return false;
        }
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => {
            outcome.error = Some(format!("cannot make a pipe: {e}"));
            return false;
        }
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(a.body.env.iter().map(|(k, v)| (k, v)))
        .env("DRQUEUE_JOB", a.body.id.to_string())
        .env("DRQUEUE_TASK", a.key.task.index.to_string())
        .env("DRQUEUE_ATTEMPT", a.key.attempt.to_string())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    if let Some(cwd) = &a.body.cwd {
        cmd.current_dir(cwd);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("cannot run {:?}: {e}", argv[0]));
            return false;
        }
    };
    // Our copies of the pipe's write end must close, or reading never ends.
    drop(cmd);
    let pid = child.id() as i32;
    a.control.pgid.store(pid, Ordering::SeqCst);
    if a.control.stopping() {
        a.control.kill();
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => log.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let (status, usage) = wait4(pid);
    a.control.pgid.store(0, Ordering::SeqCst);
    // Nothing a task started outlives it.
    // SAFETY: signalling our own child's process group.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    drop(child);
    if let Some(u) = usage {
        let cpu = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        outcome.cpu_ms += cpu(u.ru_utime) + cpu(u.ru_stime);
        outcome.peak_rss_kb = outcome.peak_rss_kb.max(u.ru_maxrss as u64);
    }
    match status {
        Some(s) if libc::WIFEXITED(s) => {
            let code = libc::WEXITSTATUS(s);
            outcome.exit_code = Some(code);
            outcome.signal = None;
            code == 0
        }
        Some(s) if libc::WIFSIGNALED(s) => {
            outcome.exit_code = None;
            outcome.signal = Some(libc::WTERMSIG(s));
            false
        }
        _ => {
            outcome.error = Some("lost track of the child process".into());
            false
        }
    }
}

/// Waits for one child, returning its status and resource usage.
fn wait4(pid: i32) -> (Option<i32>, Option<libc::rusage>) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return (Some(status), Some(usage));
        }
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return (None, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::model::{JobId, TaskKey};

    fn attempt(cmd: &[&str], first: i64, last: i64, dir: &std::path::Path) -> Attempt {
        Attempt {
            key: AttemptKey {
                task: TaskKey {
                    job: JobId(1),
                    index: 0,
                },
                attempt: 1,
            },
            body: Arc::new(JobBody {
                id: JobId(1),
                command: cmd.iter().map(|s| s.to_string()).collect(),
                env: vec![("GREETING".into(), "hi".into())],
                cwd: Some(dir.display().to_string()),
                timeout_secs: 0,
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
        let (tx, mut rx) = mpsc::unbounded_channel();
        run(a, tx);
        let mut log = Vec::new();
        let mut out = None;
        while let Ok(ev) = rx.try_recv() {
            match ev {
                RunnerEvent::Log { data, .. } => log.extend(data),
                RunnerEvent::Finished(_, o) => out = Some(o),
                RunnerEvent::Started(_) => {}
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
        let pool = Pool::new(2, tx).unwrap();
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
        let t = std::thread::spawn(move || run(a, tx));
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
}
