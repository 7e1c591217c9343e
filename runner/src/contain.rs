//! Containment: no process a task starts outlives the task.
//!
//! A process group is not enough: `setsid` or a double fork leaves it, and
//! the escapee keeps the log pipe open. Two mechanisms, picked once per
//! runner:
//! - **cgroup v2** (where the tree is writable): each runner slot has a
//!   cgroup under `drqueue-<tag>` beside the runner's own; a task's command
//!   joins its slot's before `exec`, so every descendant is inside, and
//!   `cgroup.kill` ends them all at once when the task ends.
//! - **marker** (the fallback): every task process carries
//!   `DRQUEUE_CONTAIN=<tag>/<attempt>` in its environment, which descendants
//!   inherit; ending an attempt kills every process whose environment holds
//!   its marker. The runner is also a child subreaper, so orphans come back
//!   to it, and when no attempt runs it ends those it did not start. Only a
//!   process that leaves the group *and* clears its environment while
//!   another attempt runs can slip past this.
//!
//! `sweep` at start ends what a previous life of the same runner (same tag)
//! left running.

use crate::spawn::{self, Launch};
use drqueue_common::protocol::AttemptKey;
use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable that marks a task's processes.
pub const MARKER_VAR: &str = "DRQUEUE_CONTAIN";

/// How long ending an attempt waits for its processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// Attempts' cgroups live under this directory.
    Cgroup(PathBuf),
    Marker,
}

/// Which mechanism to use: the best available, or the fallback on purpose
/// (to test it, or where cgroups misbehave).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Best,
    Marker,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Best),
            "marker" => Ok(Choice::Marker),
            other => Err(format!(
                "unknown containment {other:?}: use auto (cgroup v2 when writable) or marker"
            )),
        }
    }
}

#[derive(Debug)]
pub struct Containment {
    mechanism: Mechanism,
    tag: String,
    /// Set when another process took this identity over: its boxes are
    /// that process's now, and must be left alone.
    handed_over: std::sync::atomic::AtomicBool,
}

/// The process's own children that runners started and will wait for. The
/// lock is held across a spawn, so an orphan sweep never mistakes a child
/// that is just starting for an orphan (nor reaps it under its runner).
static CHILDREN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn children() -> std::sync::MutexGuard<'static, Option<HashSet<i32>>> {
    // A poisoned lock means a slot thread panicked; the set is still sound.
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containment {
    /// `tag` names this runner across restarts (the engine's id): what a
    /// previous life left is found by it.
    pub fn new(tag: &str, choice: Choice) -> Containment {
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cgroup = match choice {
            Choice::Best => cgroup_base(&tag),
            Choice::Marker => None,
        };
        let mechanism = match cgroup {
            Some(dir) => Mechanism::Cgroup(dir),
            None => {
                // SAFETY: prctl with these arguments only sets a flag on us.
                unsafe {
                    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
                }
                Mechanism::Marker
            }
        };
        Containment {
            mechanism,
            tag,
            handed_over: Default::default(),
        }
    }

    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }

    /// One line for `engine show` and the log.
    pub fn describe(&self) -> String {
        match &self.mechanism {
            Mechanism::Cgroup(dir) => format!("cgroup v2 ({})", dir.display()),
            Mechanism::Marker => {
                format!("process marker {MARKER_VAR} and child subreaper (no writable cgroup v2)")
            }
        }
    }

    /// Ends whatever a previous life of this runner left running.
    pub fn sweep(&self) -> usize {
        match &self.mechanism {
            Mechanism::Cgroup(base) => {
                let Ok(entries) = std::fs::read_dir(base) else {
                    return 0;
                };
                let mut ended = 0;
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        ended += kill_cgroup(&entry.path());
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
                ended
            }
            // A previous life's processes went to init: look everywhere.
            Mechanism::Marker => kill_marked(&format!("{MARKER_VAR}={}/", self.tag), Scope::All),
        }
    }

    /// A box for one attempt's processes, run on runner slot `slot`. The
    /// cgroup is the slot's, made once and reused: one slot runs one
    /// command at a time, and making and removing a cgroup per task cost
    /// more than the rest of the containment together.
    pub(crate) fn open(&self, key: AttemptKey, slot: usize) -> TaskBox {
        let name = format!("{}.{}.{}", key.task.job, key.task.index, key.attempt);
        let marker = format!("{}/{name}", self.tag);
        let cgroup = match &self.mechanism {
            Mechanism::Cgroup(base) => {
                let dir = base.join(format!("slot-{slot}"));
                match std::fs::create_dir(&dir) {
                    Ok(()) => Some(dir),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
                    Err(_) => None,
                }
            }
            Mechanism::Marker => None,
        };
        TaskBox { cgroup, marker }
    }

    /// Starts one command line of an attempt in its box (marked, and in
    /// its cgroup from before `exec`) as a tracked child; returns its pid.
    pub(crate) fn spawn(&self, b: &TaskBox, mut launch: Launch) -> std::io::Result<i32> {
        launch
            .env
            .push((MARKER_VAR.into(), b.marker.clone().into()));
        let mut tracked = children();
        let procs = b.cgroup.as_ref().map(|dir| dir.join("cgroup.procs"));
        let pid = spawn::start(launch, procs.as_deref())?;
        tracked.get_or_insert_default().insert(pid);
        Ok(pid)
    }

    /// Ends every process left in the box (the command itself has exited).
    /// Without a cgroup, what survives its command has been handed to the
    /// runner (a subreaper): only the runner's own children are looked at.
    pub(crate) fn end_escapees(&self, b: &TaskBox) -> usize {
        match &b.cgroup {
            Some(dir) => kill_cgroup(dir),
            None => kill_marked(&format!("{MARKER_VAR}={}", b.marker), Scope::OwnChildren),
        }
    }

    /// The command `pid` has been waited for: ends what is left in its box.
    /// For the marker mechanism, when no other attempt runs, also the
    /// orphans that came back to the runner.
    pub(crate) fn close(&self, b: &TaskBox, pid: i32) {
        let idle = {
            let mut tracked = children();
            let set = tracked.get_or_insert_default();
            set.remove(&pid);
            set.is_empty()
        };
        self.end_escapees(b);
        if b.cgroup.is_none() && idle {
            end_orphans();
        }
    }
}

impl Containment {
    /// At a clean stop, once nothing runs: ends what is left and removes the
    /// runner's cgroups. (A runner that is killed leaves them for the next
    /// start's sweep.)
    pub fn tidy(&self) {
        if self.handed_over.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Mechanism::Cgroup(base) = &self.mechanism {
            for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
                kill_cgroup(&entry.path());
                let _ = std::fs::remove_dir(entry.path());
            }
            let _ = std::fs::remove_dir(base);
        }
    }
}

impl Containment {
    /// Another process now runs under this identity (it took over): from
    /// here on, tidying would end its tasks, so it is skipped.
    pub fn hand_over(&self) {
        self.handed_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        self.tidy();
    }
}

/// One attempt's containment.
#[derive(Debug)]
pub(crate) struct TaskBox {
    cgroup: Option<PathBuf>,
    marker: String,
}

/// The directory for this runner's cgroups, made beside its own cgroup, if
/// the cgroup v2 tree is mounted and writable here.
fn cgroup_base(tag: &str) -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let parent = mount.join(own.trim_start_matches('/'));
    let base = parent.join(format!("drqueue-{tag}"));
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    // It must really take processes: a probe child joins a test cgroup.
    let probe = base.join("probe");
    let _ = std::fs::create_dir(&probe);
    let ok = probe.join("cgroup.kill").exists() && child_can_join(&probe.join("cgroup.procs"));
    let _ = std::fs::remove_dir(&probe);
    ok.then_some(base)
}

/// Forks a child that joins the cgroup and exits: did it get in?
fn child_can_join(procs: &Path) -> bool {
    let Ok(path) = CString::new(procs.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: the child calls only open, write, close and _exit, which are
    // async-signal-safe, on memory allocated before the fork.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let joined = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::_exit(if joined { 0 } else { 1 });
        }
        if pid < 0 {
            return false;
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0) == pid
            && libc::WIFEXITED(status)
            && libc::WEXITSTATUS(status) == 0
    }
}

fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "... mount-point options - fstype source super-options"
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Kills everything in a cgroup and waits until it is empty; returns how
/// many processes were there.
fn kill_cgroup(dir: &Path) -> usize {
    let procs = || {
        std::fs::read(dir.join("cgroup.procs"))
            .map(|s| s.iter().filter(|b| **b == b'\n').count())
            .unwrap_or(0)
    };
    let found = procs();
    if found == 0 {
        return 0;
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let start = Instant::now();
    while procs() > 0 && start.elapsed() < KILL_WAIT {
        std::thread::sleep(Duration::from_millis(2));
    }
    found
}

/// Where to look for marked processes.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Every process on the machine.
    All,
    /// The runner's own children (orphans come back to it as subreaper).
    OwnChildren,
}

/// Kills every process in `scope` whose environment holds `needle` (a
/// `VAR=value` prefix), until none is left; returns how many there were.
fn kill_marked(needle: &str, scope: Scope) -> usize {
    let me = std::process::id() as i32;
    let mut ended = HashSet::new();
    let start = Instant::now();
    loop {
        let candidates: Vec<i32> = match scope {
            Scope::All => pids().collect(),
            Scope::OwnChildren => own_children(),
        };
        let found: Vec<i32> = candidates
            .into_iter()
            .filter(|&p| p != me && environ_has(p, needle.as_bytes()))
            .collect();
        if found.is_empty() || start.elapsed() > KILL_WAIT {
            return ended.len();
        }
        for p in found {
            // SAFETY: sending a signal has no memory effects.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
            ended.insert(p);
        }
        reap_orphans(false);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Orphans reparented to the runner (it is a subreaper) that it did not
/// start: killed and reaped.
fn end_orphans() {
    reap_orphans(true);
}

/// Reaps the runner's dead children that no runner started (orphans given
/// to it as subreaper), and with `kill`, ends the live ones first. Tracked
/// children are left to the slot threads that wait for them.
fn reap_orphans(kill: bool) {
    let me = std::process::id() as i32;
    let tracked = children();
    let orphans: Vec<i32> = own_children()
        .into_iter()
        .filter(|&p| p != me && !tracked.as_ref().is_some_and(|t| t.contains(&p)))
        .collect();
    for p in orphans {
        // SAFETY: a signal, then a non-blocking reap of one pid that is our
        // child and that no runner waits for.
        unsafe {
            if kill {
                libc::kill(p, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(p, &mut status, 0);
            } else {
                let mut status = 0;
                libc::waitpid(p, &mut status, libc::WNOHANG);
            }
        }
    }
}

/// The runner's children, from each of its threads' `children` list.
fn own_children() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

fn environ_has(pid: i32, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var.starts_with(needle)))
        .unwrap_or(false)
}
