//! Runs one task attempt: its command lines as child processes.
//!
//! Attempts run on a pool of one thread per slot (made once: creating a thread
//! per task cost more than spawning `true`). A command runs without a shell,
//! in its own process group and in a [`contain`] box (so cancel, timeout and
//! the command's end kill everything it started, even what left the group),
//! with stdout and stderr on one pipe that is copied to the attempt's log
//! file and streamed to the master. `wait4` gives the exit status, CPU time
//! and peak RSS. Per-frame templates run one command per frame and stop at
//! the first failure.

mod assemble;
pub mod contain;
mod log;
mod outputs;
pub mod progress;
pub mod renderers;
pub mod sandbox;
mod spawn;
pub mod thumbnail;
mod tiled;

use contain::{Containment, TaskBox};
use drqueue_common::frames::Block;
use drqueue_common::protocol::{AttemptKey, JobBody, Outcome, OutputFile, MAX_OUTPUTS};
use drqueue_common::signature::failure_signature;
use drqueue_common::template::{self, TaskContext};
use drqueue_common::tiles::TaskRole;
use log::LogSink;
use progress::{Reporter, Tracker};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
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
    /// How far the attempt has got, 0–100: at most every
    /// [`progress::REPORT_EVERY`], and only when it changed.
    Progress(AttemptKey, f32),
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
    /// Files of the tasks this one waits for (a frame's tiles).
    pub inputs: Vec<OutputFile>,
    pub log_path: PathBuf,
    pub control: Arc<Control>,
}

/// The threads that run attempts, one per slot.
pub struct Pool {
    work: std::sync::mpsc::Sender<Attempt>,
}

/// What a pool needs for jobs whose folder was uploaded: the blob cache,
/// the link to the master's content store, and where tasks' folders go.
pub struct Blobs {
    pub cache: sandbox::Cache,
    pub link: Arc<dyn sandbox::BlobLink>,
    pub work: PathBuf,
}

impl Pool {
    pub fn new(
        slots: u32,
        events: mpsc::UnboundedSender<RunnerEvent>,
        contain: Arc<Containment>,
        blobs: Option<Arc<Blobs>>,
    ) -> std::io::Result<Pool> {
        let (work, rx) = std::sync::mpsc::channel::<Attempt>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..slots {
            let rx = rx.clone();
            let events = events.clone();
            let contain = contain.clone();
            let blobs = blobs.clone();
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
                        Ok(attempt) => run(
                            attempt,
                            i as usize,
                            (&contain, blobs.as_deref()),
                            events.clone(),
                        ),
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

fn run(
    mut a: Attempt,
    slot: usize,
    (contain, blobs): (&Containment, Option<&Blobs>),
    events: mpsc::UnboundedSender<RunnerEvent>,
) {
    let _ = events.send(RunnerEvent::Started(a.key));
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut log = LogSink::new(a.key, &a.log_path, a.body.max_log_bytes, &events);
    let role = tiled::role(&a);
    let tile = match role {
        Some((_, TaskRole::Tile { tile, .. })) => Some(tile),
        _ => None,
    };
    let assembling = matches!(role, Some((_, TaskRole::Assemble { .. })));
    if tile.is_some() {
        // Its declared outputs are the tile's files.
        a.body = Arc::new(tiled::tile_body(&a.body));
    }
    let sandbox = lay_out_inputs(&a, blobs, assembling, &mut log, &mut outcome);
    // Where the task runs: its folder (and the job's cwd inside it), else
    // the job's cwd as the engine sees it. (`sandbox` is also where an
    // assembly gathers its tiles.)
    let workdir: Option<PathBuf> = match (&sandbox, &a.body.cwd) {
        // An assembly works in a folder of its own.
        (Some(dir), _) if assembling => Some(dir.clone()),
        (Some(dir), Some(cwd)) => Some(dir.join(cwd)),
        (Some(dir), None) => Some(dir.clone()),
        (None, cwd) => cwd.as_ref().map(PathBuf::from),
    };
    let ctx = TaskContext {
        job: a.body.id,
        task: a.key.task.index,
        block: a.block,
        jobdir: workdir
            .as_ref()
            .map_or_else(|| ".".into(), |d| d.display().to_string()),
        tile,
    };
    if let (None, Some(dir)) = (&outcome.error, &workdir) {
        if !dir.is_dir() {
            outcome.error = Some(format!(
                "working directory {:?} does not exist on this engine",
                dir.display().to_string()
            ));
        }
    }
    if let (Some(dir), None) = (&workdir, &outcome.error) {
        if sandbox.is_some() {
            // A manifest lists files, not empty folders: make the ones the
            // task is declared to write into.
            if let Err(why) = sandbox::make_output_dirs(dir, &a.body, &ctx) {
                outcome.error = Some(why);
            }
        }
    }
    let collect_base = workdir.clone().unwrap_or_else(|| PathBuf::from("."));
    if let (Some(_), None) = (tile, &outcome.error) {
        if let Err(why) = tiled::make_tile_dirs(&a.body, &ctx, &collect_base) {
            outcome.error = Some(why);
        }
    }
    let before = sandbox::snapshot(&collect_base, &a.body.collect);
    let commands = template::commands(&a.body.command, &ctx);
    let program = commands
        .first()
        .and_then(|c| c.first())
        .map_or("", String::as_str);
    let mut watch = Reporter::new(
        Tracker::new(program, a.block, commands.len()),
        a.key,
        events.clone(),
    );
    let mut assembled = Vec::new();
    if let (true, None, Some(dir), Some(b), Some((tiled, _))) =
        (assembling, &outcome.error, &sandbox, blobs, role)
    {
        // Built in: no program runs. The job's own folder is shared only
        // when nothing was uploaded.
        let at = tiled::AssembleAt {
            dir,
            shared: match a.body.inputs {
                None => a.body.cwd.as_deref().map(std::path::Path::new),
                Some(_) => None,
            },
            blobs: b,
        };
        let mut note = |line: &str| log.write(line.as_bytes());
        match tiled::assemble(&a, &tiled, &ctx, at, &mut note) {
            Ok(files) => {
                outcome.exit_code = Some(0);
                assembled = files;
            }
            Err(why) => outcome.error = Some(format!("assembling: {why}")),
        }
    } else if outcome.error.is_none() {
        for (i, argv) in commands.iter().enumerate() {
            if a.control.stopping() {
                break;
            }
            watch.next_command(i);
            let ok = run_one(
                argv,
                (&a, workdir.as_deref()),
                (contain, slot),
                (&mut log, &mut watch),
                &mut outcome,
            );
            if !ok {
                break;
            }
        }
    }
    outcome.fatal = watch.fatal();
    outcome.progress = watch.percent();
    if assembling && outcome.is_success() {
        let written: Vec<(i64, PathBuf)> = assembled
            .iter()
            .map(|(_, local)| (ctx.block.first, local.clone()))
            .collect();
        let (thumbnails, skipped) = thumbnail::make(&written);
        for why in skipped {
            log.write(format!("drqueue-engine: {why}\n").as_bytes());
        }
        outcome.thumbnails = thumbnails;
        outcome.outputs = assembled.into_iter().map(|(file, _)| file).collect();
    } else if outcome.is_success() && !a.control.stopping() {
        match outputs::check(&a.body, &ctx, workdir.as_deref(), &watch.saved()) {
            Ok(mut found) => {
                if tile.is_some() {
                    // Its assemble task may run elsewhere: the tiles go to
                    // the master's content store, always. (No thumbnail:
                    // the frame's comes from its assembly.)
                    match blobs {
                        Some(b) => {
                            if let Err(why) =
                                sandbox::upload_found(&collect_base, &mut found.files, &*b.link)
                            {
                                outcome.error = Some(format!("uploading the tile: {why}"));
                            }
                        }
                        None => outcome.error = Some("this runner cannot upload tiles".into()),
                    }
                } else {
                    let (thumbnails, skipped) = thumbnail::make(&found.by_frame);
                    for why in skipped {
                        log.write(format!("drqueue-engine: {why}\n").as_bytes());
                    }
                    outcome.thumbnails = thumbnails;
                }
                outcome.outputs = found.files;
            }
            Err(why) => outcome.error = Some(why),
        }
    }
    // A tiled job's tasks upload their own files (the tile, the frame).
    if outcome.is_success() && !a.control.stopping() && !a.body.collect.is_empty() && role.is_none()
    {
        match blobs {
            Some(b) => match sandbox::collect(&collect_base, &a.body.collect, &before, &*b.link) {
                Ok(files) => {
                    let room = MAX_OUTPUTS.saturating_sub(outcome.outputs.len());
                    outcome.outputs.extend(files.into_iter().take(room));
                }
                Err(why) => outcome.error = Some(format!("collecting outputs: {why}")),
            },
            None => outcome.error = Some("this runner cannot upload outputs (--collect)".into()),
        }
    }
    if let Some(dir) = &sandbox {
        let _ = std::fs::remove_dir_all(dir);
    }
    // Signed before the engine's own lines below join the log.
    let last_line = log.last_line();
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
    outcome.log_bytes = log.finish();
    if !outcome.is_success() && !outcome.cancelled {
        outcome.signature = Some(failure_signature(&outcome, &last_line));
    }
    let _ = events.send(RunnerEvent::Finished(a.key, outcome));
}

/// Lays out the job's uploaded folder for this attempt, when it has one
/// (an assemble task gets a folder of its own in any case); returns the
/// folder (also when laying it out failed, so it is removed).
fn lay_out_inputs(
    a: &Attempt,
    blobs: Option<&Blobs>,
    assembling: bool,
    log: &mut LogSink,
    outcome: &mut Outcome,
) -> Option<PathBuf> {
    if a.body.inputs.is_none() && !assembling {
        return None;
    }
    let Some(b) = blobs else {
        outcome.error =
            Some("the job has an uploaded folder or tiles, which this runner cannot fetch".into());
        return None;
    };
    let dir = b.work.join(format!(
        "job{}-task{}-attempt{}",
        a.key.task.job, a.key.task.index, a.key.attempt
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // An assembly reads only its tiles: the job's folder is not laid out.
    let Some(manifest) = a.body.inputs.as_ref().filter(|_| !assembling) else {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            outcome.error = Some(format!("cannot make {}: {e}", dir.display()));
        }
        return Some(dir);
    };
    let mut note = |line: &str| log.write(line.as_bytes());
    if let Err(why) = sandbox::lay_out(manifest, &dir, &b.cache, &*b.link, &mut note) {
        outcome.error = Some(format!("cannot lay out the job's folder: {why}"));
    }
    Some(dir)
}

/// Runs one command line; returns whether to go on to the next frame.
fn run_one(
    argv: &[String],
    (a, workdir): (&Attempt, Option<&std::path::Path>),
    (contain, slot): (&Containment, usize),
    (log, watch): (&mut LogSink, &mut Reporter),
    outcome: &mut Outcome,
) -> bool {
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(format!("cannot make a pipe: {e}"));
            return false;
        }
    };
    let mut env: Vec<(OsString, OsString)> = a
        .body
        .env
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    env.push(("DRQUEUE_JOB".into(), a.body.id.to_string().into()));
    env.push(("DRQUEUE_TASK".into(), a.key.task.index.to_string().into()));
    env.push(("DRQUEUE_ATTEMPT".into(), a.key.attempt.to_string().into()));
    if let Some(dir) = workdir {
        // PWD too: programs that read it (Blender resolves relative paths
        // by it) would otherwise see the engine's own folder.
        env.push(("PWD".into(), dir.into()));
    }
    let launch = spawn::Launch {
        argv,
        env,
        cwd: workdir,
        // Ours closes inside `spawn`, or reading would never end.
        output: writer.into(),
    };
    let task_box = contain.open(a.key, slot);
    let pid = match contain.spawn(&task_box, launch) {
        Ok(pid) => pid,
        Err(e) => {
            contain.close(&task_box, 0);
            outcome.error = Some(format!("cannot run {:?}: {e}", argv[0]));
            return false;
        }
    };
    a.control.pgid.store(pid, Ordering::SeqCst);
    if a.control.stopping() {
        a.control.kill();
    }
    copy_output(&mut reader, pid, contain, &task_box, (log, watch));
    let (status, usage) = wait4(pid);
    a.control.pgid.store(0, Ordering::SeqCst);
    // Nothing a task started outlives it.
    // SAFETY: signalling our own child's process group.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    contain.close(&task_box, pid);
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

/// Copies the command's output to the log until the pipe closes. When the
/// command itself has exited but something it started still holds the pipe
/// (it left the process group: `setsid cmd &`), that something is ended,
/// and reading stops soon after even if the pipe stays open.
fn copy_output(
    reader: &mut std::io::PipeReader,
    pid: i32,
    contain: &Containment,
    task_box: &TaskBox,
    (log, watch): (&mut LogSink, &mut Reporter),
) {
    const CHECK_MS: i32 = 100;
    const DRAIN_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);
    let mut buf = vec![0u8; 16 * 1024];
    let mut exited_at: Option<Instant> = None;
    loop {
        let mut pfd = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, CHECK_MS) };
        if ready > 0 {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    log.write(&buf[..n]);
                    watch.feed(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
            continue;
        }
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        match exited_at {
            None if has_exited(pid) => {
                contain.end_escapees(task_box);
                exited_at = Some(Instant::now());
            }
            Some(t) if t.elapsed() > DRAIN_AFTER_EXIT => return,
            _ => {}
        }
    }
}

/// Has the child exited? (It stays waitable: `wait4` collects it.)
fn has_exited(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: WNOWAIT leaves the child to be reaped by wait4.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid when a child has changed state.
    r == 0 && unsafe { info.si_pid() } != 0
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
mod tests;
