//! Starting one command line of an attempt: its own process group, stdin
//! from /dev/null, stdout and stderr on the log pipe, the runner's
//! environment with the attempt's on top, and (with cgroup containment) in
//! its slot's cgroup from before `exec`.
//!
//! Joining a cgroup before `exec` needs code in the child. `std`'s
//! `pre_exec` would force a `fork`: the engine's page tables copied for
//! every task, and torn down again at `exec` (measured: 2.5 times the
//! engine's CPU per short task, `unmap_page_range` on top of the profile).
//! So [`start`] starts the child as `posix_spawn` does, with
//! `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the runner's memory on
//! a stack of its own, makes only system calls on memory prepared before,
//! and the runner goes on once it has exec'd. Both containment mechanisms
//! use it (marker mode just joins no cgroup).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// What to run for one command line of an attempt.
pub(crate) struct Launch<'a> {
    pub argv: &'a [String],
    /// Set on top of the runner's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<&'a Path>,
    /// Where stdout and stderr both go.
    pub output: OwnedFd,
}

/// Spawns, into the cgroup whose `cgroup.procs` is `procs` if one is
/// given; returns the pid once the child has exec'd. A failure before
/// `exec` (the cgroup, the folder, the program) comes back as that step's
/// error.
pub(crate) fn start(launch: Launch, procs: Option<&Path>) -> io::Result<i32> {
    let Some(program) = launch.argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty command",
        ));
    };
    // Everything the child touches is made here, before it exists.
    let env = environment(&launch.env);
    let path = resolve(
        program,
        env.iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str()),
    )?;
    let argv = cstrings(launch.argv.iter().map(|a| a.as_bytes()))?;
    let envp = cstrings(
        env.iter()
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()),
    )?;
    let argv_ptrs = pointers(&argv);
    let envp_ptrs = pointers(&envp);
    let cwd = launch
        .cwd
        .map(|d| cstring(d.as_os_str().as_bytes()))
        .transpose()?;
    let procs = procs
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .transpose()?;
    let stdin = above_stdio(std::fs::File::open("/dev/null")?.into())?;
    let output = above_stdio(launch.output)?;
    let args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: stdin.as_raw_fd(),
        output: output.as_raw_fd(),
        cgroup_procs: procs.as_ref().map_or(-1, |f| f.as_raw_fd()),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack is ours and outlives the child's use of it (with
    // CLONE_VFORK this thread waits until the child has exec'd or exited);
    // `child` makes only async-signal-safe calls on `args`, which lives
    // until then too. Signals are blocked across the clone so that no
    // handler of the runner runs in the child before it resets them.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ChildArgs).cast_mut().cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    match args.error.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            // SAFETY: reaping the child that just failed to exec.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Signals are 1 to 64 on Linux.
const NSIG: libc::c_int = 65;

/// The child's stack until `exec`: a few system calls deep, with room.
const CHILD_STACK: usize = 64 * 1024;

/// What the child needs, all prepared by the runner.
#[repr(C)]
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    output: libc::c_int,
    /// -1 without a cgroup.
    cgroup_procs: libc::c_int,
    /// The errno of the step that failed; 0 while all goes well.
    error: AtomicI32,
}

/// The child, on its own stack in the runner's memory: joins the cgroup and
/// its own process group, sets up stdio and the folder, restores default
/// signal handling, and execs. Only system calls, on prepared memory.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the runner's `ChildArgs`, alive until this exits or
    // execs; every call below is async-signal-safe.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |a: &ChildArgs| -> libc::c_int {
            a.error.store(*libc::__errno_location(), Ordering::Release);
            libc::_exit(127)
        };
        // Handlers the runner installed must not run here, and the task
        // gets SIGPIPE back (Rust ignores it); other ignored signals stay
        // ignored, as std leaves them.
        for sig in 1..NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // "0": the writing process itself.
        if a.cgroup_procs >= 0 && libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            return fail(a);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(a);
        }
        // Both are above 2 (see `above_stdio`), so no dup2 clobbers the other.
        for (from, to) in [(a.stdin, 0), (a.output, 1), (a.output, 2)] {
            if libc::dup2(from, to) < 0 {
                return fail(a);
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            return fail(a);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a)
    }
}

/// `fd`, moved above stdin, stdout and stderr if it is one of them (a
/// runner started with those closed): the child's dup2s must not overwrite
/// one another's source.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own; the copy is owned below.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) })
}

/// The runner's environment with `over` on top (later entries win).
fn environment(over: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.extend(over.iter().cloned());
    env.into_iter().collect()
}

/// The program to exec: a name with a slash as it is (relative to the
/// task's folder), else the first executable file of that name along
/// `PATH` (the task's own), as `execvp` would find it.
fn resolve(program: &str, path: Option<&OsStr>) -> io::Result<CString> {
    if program.contains('/') {
        return cstring(program.as_bytes());
    }
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = cstring(dir.join(program).as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path.
        let executable = unsafe { libc::access(candidate.as_ptr(), libc::X_OK) } == 0;
        if executable && !dir.join(program).is_dir() {
            return Ok(candidate);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the command, its folder or its environment",
        )
    })
}

fn cstrings<B: AsRef<[u8]>>(items: impl Iterator<Item = B>) -> io::Result<Vec<CString>> {
    items.map(|b| cstring(b.as_ref())).collect()
}

/// A NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}
